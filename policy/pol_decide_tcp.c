/* Decisions for the socket hooks, on plain structs. */
#include "pol_tcp.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Next comma-separated item of *p into buf (trimmed); false at the end. */
static bool next_item(const char **p, char *buf, size_t len)
{
    const char *s = *p;

    while (*s == ',' || isspace((unsigned char)*s))
        s++;
    if (!*s)
        return false;
    const char *e = s;
    while (*e && *e != ',')
        e++;
    *p = e;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    size_t n = (size_t)(e - s);
    if (n >= len)
        n = len - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return true;
}

static int parse_port(const char *s, uint16_t *out)
{
    char *end;
    long v;

    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (*end || errno || v < 0 || v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

static int parse_port_range(const char *item, struct pol_tcp_port_range *r)
{
    char lo[16], *dash;

    if (strlen(item) >= sizeof(lo))
        return -EINVAL;
    snprintf(lo, sizeof(lo), "%s", item);
    dash = strchr(lo, '-');
    if (!dash)
        return parse_port(lo, &r->lo) ? -EINVAL : (r->hi = r->lo, 0);
    *dash = '\0';
    if (parse_port(lo, &r->lo) || parse_port(dash + 1, &r->hi) || r->lo > r->hi)
        return -EINVAL;
    return 0;
}

static int parse_cidr(const char *item, struct pol_tcp_cidr *c)
{
    char addr[64], *slash;
    unsigned max;

    if (strlen(item) >= sizeof(addr))
        return -EINVAL;
    snprintf(addr, sizeof(addr), "%s", item);
    slash = strchr(addr, '/');
    if (slash)
        *slash = '\0';
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, addr, c->addr) == 1) {
        c->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, c->addr) == 1) {
        c->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    c->prefix = max;
    if (slash) {
        char *end;
        const char *p = slash + 1;
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        unsigned long v = strtoul(p, &end, 10);
        if (*end || v > max)
            return -EINVAL;
        c->prefix = (unsigned)v;
    }
    return 0;
}

int pol_tcp_scope_parse(const char *ports, const char *peers, struct pol_tcp_scope *scope,
                        char *err, size_t errlen)
{
    char item[128];
    const char *p;
    int rc = 0;

    memset(scope, 0, sizeof(*scope));
    if (err && errlen)
        err[0] = '\0';
    for (p = ports ? ports : ""; next_item(&p, item, sizeof(item));) {
        if (scope->nports == POL_TCP_MAX_RANGES) {
            rc = -E2BIG;
            snprintf(err, errlen, "tcp.ports: more than %d ranges", POL_TCP_MAX_RANGES);
            goto err_clear;
        }
        if (parse_port_range(item, &scope->ports[scope->nports])) {
            rc = -EINVAL;
            snprintf(err, errlen,
                     "tcp.ports: '%s' is not a port or range (accepted: N or LO-HI, 0..65535)",
                     item);
            goto err_clear;
        }
        scope->nports++;
    }
    for (p = peers ? peers : ""; next_item(&p, item, sizeof(item));) {
        if (scope->npeers == POL_TCP_MAX_RANGES) {
            rc = -E2BIG;
            snprintf(err, errlen, "tcp.peers: more than %d ranges", POL_TCP_MAX_RANGES);
            goto err_clear;
        }
        if (parse_cidr(item, &scope->peers[scope->npeers])) {
            rc = -EINVAL;
            snprintf(err, errlen,
                     "tcp.peers: '%s' is not an address range (accepted: A.B.C.D[/0-32] or "
                     "IPv6[/0-128])",
                     item);
            goto err_clear;
        }
        scope->npeers++;
    }
    return 0;

err_clear:
    memset(scope, 0, sizeof(*scope));
    return rc;
}

bool pol_tcp_scope_empty(const struct pol_tcp_scope *scope)
{
    return scope->nports == 0 && scope->npeers == 0;
}

bool pol_tcp_v4mapped(const struct sockaddr *addr)
{
    if (!addr || addr->sa_family != AF_INET6)
        return false;
    return IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr);
}

/* Port of an AF_INET/AF_INET6 address in host order; -1 for anything else. */
static int addr_port(const struct sockaddr *a)
{
    if (!a)
        return -1;
    if (a->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)a)->sin_port);
    if (a->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)a)->sin6_port);
    return -1;
}

static bool port_match(const struct pol_tcp_scope *s, int port)
{
    if (port < 0)
        return false;
    for (unsigned i = 0; i < s->nports; i++)
        if (port >= s->ports[i].lo && port <= s->ports[i].hi)
            return true;
    return false;
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t m = (uint8_t)(0xff << (8 - rest));
    return (a[full] & m) == (net[full] & m);
}

static bool peer_match(const struct pol_tcp_scope *s, const struct sockaddr *a)
{
    uint8_t v4[4], v6[16];
    bool has4 = false, has6 = false;

    if (!a)
        return false;
    if (a->sa_family == AF_INET) {
        memcpy(v4, &((const struct sockaddr_in *)(const void *)a)->sin_addr, 4);
        has4 = true;
    } else if (a->sa_family == AF_INET6) {
        memcpy(v6, &((const struct sockaddr_in6 *)(const void *)a)->sin6_addr, 16);
        has6 = true;
        if (pol_tcp_v4mapped(a)) {
            memcpy(v4, v6 + 12, 4);
            has4 = true;
        }
    }
    for (unsigned i = 0; i < s->npeers; i++) {
        const struct pol_tcp_cidr *c = &s->peers[i];
        if (c->family == AF_INET && has4 && prefix_match(v4, c->addr, c->prefix))
            return true;
        if (c->family == AF_INET6 && has6 && prefix_match(v6, c->addr, c->prefix))
            return true;
    }
    return false;
}

bool pol_tcp_in_scope(const struct pol_tcp_scope *scope, const struct sockaddr *local,
                      const struct sockaddr *remote)
{
    if (pol_tcp_scope_empty(scope))
        return false;
    if (scope->nports && !port_match(scope, addr_port(local)) &&
        !port_match(scope, addr_port(remote)))
        return false;
    if (scope->npeers && !peer_match(scope, remote))
        return false;
    return true;
}

/* ---- options ---------------------------------------------------------- */

static const struct {
    int level, name;
    const char *text;
} pol_tcp_opts[POL_TCP_O_COUNT] = {
    [POL_TCP_O_TOS] = {IPPROTO_IP, IP_TOS, "IP_TOS"},
    [POL_TCP_O_TCLASS] = {IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS"},
    [POL_TCP_O_PRIORITY] = {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY"},
    [POL_TCP_O_NODELAY] = {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"},
    [POL_TCP_O_SNDBUF] = {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"},
    [POL_TCP_O_RCVBUF] = {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"},
    [POL_TCP_O_KEEPALIVE] = {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"},
    [POL_TCP_O_KEEPIDLE] = {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"},
    [POL_TCP_O_KEEPINTVL] = {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"},
    [POL_TCP_O_KEEPCNT] = {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"},
    [POL_TCP_O_USER_TIMEOUT] = {IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"},
};

void pol_tcp_opt_id(enum pol_tcp_opt o, int *level, int *name)
{
    *level = pol_tcp_opts[o].level;
    *name = pol_tcp_opts[o].name;
}

const char *pol_tcp_opt_name(enum pol_tcp_opt o)
{
    return pol_tcp_opts[o].text;
}

static void want(struct pol_tcp_plan *plan, enum pol_tcp_opt o, int64_t v)
{
    plan->mask |= 1u << o;
    plan->value[o] = (int)v;
}

void pol_tcp_plan(const struct pol_config *cfg, int family, bool v4mapped,
                  struct pol_tcp_plan *plan)
{
    memset(plan, 0, sizeof(*plan));
    if (pol_is_set(cfg, POL_TCP_DSCP)) {
        int tos = (int)pol_int(cfg, POL_TCP_DSCP) << 2;
        if (family == AF_INET || (family == AF_INET6 && v4mapped))
            want(plan, POL_TCP_O_TOS, tos);
        if (family == AF_INET6)
            want(plan, POL_TCP_O_TCLASS, tos);
    }
    if (pol_is_set(cfg, POL_TCP_PRIORITY))
        want(plan, POL_TCP_O_PRIORITY, pol_int(cfg, POL_TCP_PRIORITY));
    if (pol_int(cfg, POL_TCP_NODELAY))
        want(plan, POL_TCP_O_NODELAY, 1);
    if (pol_is_set(cfg, POL_TCP_SNDBUF))
        want(plan, POL_TCP_O_SNDBUF, pol_int(cfg, POL_TCP_SNDBUF));
    if (pol_is_set(cfg, POL_TCP_RCVBUF))
        want(plan, POL_TCP_O_RCVBUF, pol_int(cfg, POL_TCP_RCVBUF));
    bool ka = false;
    if (pol_is_set(cfg, POL_TCP_KEEPALIVE_IDLE_S)) {
        want(plan, POL_TCP_O_KEEPIDLE, pol_int(cfg, POL_TCP_KEEPALIVE_IDLE_S));
        ka = true;
    }
    if (pol_is_set(cfg, POL_TCP_KEEPALIVE_INTERVAL_S)) {
        want(plan, POL_TCP_O_KEEPINTVL, pol_int(cfg, POL_TCP_KEEPALIVE_INTERVAL_S));
        ka = true;
    }
    if (pol_is_set(cfg, POL_TCP_KEEPALIVE_COUNT)) {
        want(plan, POL_TCP_O_KEEPCNT, pol_int(cfg, POL_TCP_KEEPALIVE_COUNT));
        ka = true;
    }
    if (ka)
        want(plan, POL_TCP_O_KEEPALIVE, 1);
    if (pol_is_set(cfg, POL_TCP_USER_TIMEOUT_MS))
        want(plan, POL_TCP_O_USER_TIMEOUT, pol_int(cfg, POL_TCP_USER_TIMEOUT_MS));
}

bool pol_tcp_configured(const struct pol_config *cfg)
{
    struct pol_tcp_plan plan;

    pol_tcp_plan(cfg, AF_INET6, true, &plan);
    return plan.mask != 0 || pol_int(cfg, POL_TCP_CONNECT_RETRIES) > 0 ||
           pol_int(cfg, POL_TCP_MAX_CONNECTIONS) > 0;
}

/* What getsockopt reads back after setsockopt(value): Linux doubles the
 * buffer sizes it is given to account for its own bookkeeping. */
static int64_t readback(enum pol_tcp_opt o, int value)
{
    if (o == POL_TCP_O_SNDBUF || o == POL_TCP_O_RCVBUF)
        return (int64_t)value * 2;
    return value;
}

unsigned pol_tcp_to_set(const struct pol_config *cfg, const struct pol_tcp_plan *plan,
                        const int *cur, const int *app, const int *deflt, unsigned known)
{
    bool override = pol_int(cfg, POL_TCP_OVERRIDE) != 0;
    unsigned set = 0;

    for (int o = 0; o < POL_TCP_O_COUNT; o++) {
        unsigned bit = 1u << o;
        if (!(plan->mask & bit) || !(known & bit))
            continue;
        int64_t want = readback((enum pol_tcp_opt)o, plan->value[o]);
        if (cur[o] == want)
            continue; /* already what we want */
        if (!override && app[o] != deflt[o] && app[o] != want)
            continue; /* the application's own value wins */
        set |= bit;
    }
    return set;
}

/* ---- verdicts --------------------------------------------------------- */

enum pol_verdict pol_tcp_verdict(const struct pol_config *cfg, const struct pol_tcp_scope *scope,
                                 const struct sockaddr *local, const struct sockaddr *remote)
{
    enum pol_verdict gate = pol_gate_verdict(cfg);

    if (gate == POL_SKIP_POLICY || !pol_tcp_configured(cfg))
        return POL_SKIP_POLICY;
    if (!pol_tcp_in_scope(scope, local, remote))
        return POL_SKIP_POLICY;
    return gate;
}

/* ---- connect backoff --------------------------------------------------- */

int64_t pol_tcp_backoff_delay_ms(int64_t base_ms, int retry, int retries, int64_t elapsed_ms,
                                 int64_t max_ms, uint32_t r)
{
    int64_t left = max_ms - elapsed_ms;

    if (retry < 0 || retry >= retries || left <= 0)
        return -1;
    /* Doubling stops once it passes the bound: the delay is cut to it anyway. */
    int64_t d = base_ms;
    for (int i = 0; i < retry && d < max_ms; i++)
        d *= 2;
    int64_t half = d / 2;
    d = half + (int64_t)(r % (uint64_t)(d - half + 1));
    return d < left ? d : left;
}

int pol_tcp_backoff_schedule(const struct pol_config *cfg, pol_rand_fn rnd, void *arg, int64_t *out,
                             int cap)
{
    int64_t base = pol_int(cfg, POL_TCP_CONNECT_BACKOFF_MS);
    int64_t max = pol_int(cfg, POL_TCP_CONNECT_MAX_MS);
    int retries = (int)pol_int(cfg, POL_TCP_CONNECT_RETRIES);
    int64_t elapsed = 0;
    int n = 0;

    for (int k = 0;; k++) {
        int64_t d = pol_tcp_backoff_delay_ms(base, k, retries, elapsed, max, rnd(arg));
        if (d < 0)
            break;
        if (n < cap)
            out[n] = d;
        n++;
        elapsed += d;
    }
    return n;
}
