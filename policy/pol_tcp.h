/*
 * Decisions for the socket hooks: scope (port ranges and CIDR ranges matched
 * on plain sockaddr structs), which socket options to set, and the connect
 * backoff schedule. Pure functions of their arguments and the configuration.
 */
#ifndef TESHIM_POL_TCP_H
#define TESHIM_POL_TCP_H

#include "pol.h"

#include <netinet/in.h>
#include <sys/socket.h>

#define POL_TCP_MAX_RANGES 32

struct pol_tcp_port_range {
    uint16_t lo, hi; /* inclusive */
};

struct pol_tcp_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order; 4 bytes used for AF_INET */
    unsigned prefix;  /* 0..32 or 0..128 */
};

/* The parsed scope: tcp.ports and tcp.peers. */
struct pol_tcp_scope {
    unsigned nports, npeers;
    struct pol_tcp_port_range ports[POL_TCP_MAX_RANGES];
    struct pol_tcp_cidr peers[POL_TCP_MAX_RANGES];
};

/*
 * Parse tcp.ports ("80, 5000-5999") and tcp.peers ("10.0.0.0/8, ::1, fd00::/8";
 * an address without a prefix is a single host). On a bad item returns
 * -EINVAL and writes the item and the expected form into err; *scope is then
 * empty (nothing in scope: the default). -E2BIG when a list has more than
 * POL_TCP_MAX_RANGES items.
 */
int pol_tcp_scope_parse(const char *ports, const char *peers, struct pol_tcp_scope *scope,
                        char *err, size_t errlen);

/* True when the scope names nothing: no socket is in scope. */
bool pol_tcp_scope_empty(const struct pol_tcp_scope *scope);

/*
 * Whether a connection is in scope. local and remote may be NULL (unknown, for
 * example a listener has no peer). Ports match the local or the remote port;
 * peers match the remote address (an IPv4-mapped IPv6 address matches IPv4
 * ranges). With both lists set, both must match; with one set, that one
 * decides; with none, nothing is in scope.
 */
bool pol_tcp_in_scope(const struct pol_tcp_scope *scope, const struct sockaddr *local,
                      const struct sockaddr *remote);

/* True when addr is an AF_INET6 address of the form ::ffff:a.b.c.d. */
bool pol_tcp_v4mapped(const struct sockaddr *addr);

/* ---- options ---------------------------------------------------------- */

/* The socket options teshim may set, in the order they are set: IP_TOS also
 * resets SO_PRIORITY in the kernel, so the priority comes after it. */
enum pol_tcp_opt {
    POL_TCP_O_TOS,    /* IPPROTO_IP IP_TOS */
    POL_TCP_O_TCLASS, /* IPPROTO_IPV6 IPV6_TCLASS */
    POL_TCP_O_PRIORITY,
    POL_TCP_O_NODELAY,
    POL_TCP_O_SNDBUF,
    POL_TCP_O_RCVBUF,
    POL_TCP_O_KEEPALIVE,
    POL_TCP_O_KEEPIDLE,
    POL_TCP_O_KEEPINTVL,
    POL_TCP_O_KEEPCNT,
    POL_TCP_O_USER_TIMEOUT,
    POL_TCP_O_COUNT
};

/* Level and name of option o for setsockopt/getsockopt. */
void pol_tcp_opt_id(enum pol_tcp_opt o, int *level, int *name);
const char *pol_tcp_opt_name(enum pol_tcp_opt o);

/* What the configuration asks for on one socket. */
struct pol_tcp_plan {
    unsigned mask;              /* bit o set: option o is wanted */
    int value[POL_TCP_O_COUNT]; /* the value passed to setsockopt */
};

/*
 * The options wanted on a TCP socket of family (AF_INET/AF_INET6) whose peer
 * is IPv4-mapped when v4mapped (the packets are IPv4: IP_TOS as well).
 */
void pol_tcp_plan(const struct pol_config *cfg, int family, bool v4mapped,
                  struct pol_tcp_plan *plan);

/* True when some TCP option, backoff or the cap is configured. */
bool pol_tcp_configured(const struct pol_config *cfg);

/*
 * Which wanted options to set on a socket holding cur, when the application
 * chose app (the socket's own values before connect/listen, or for an
 * accepted socket those of its listener) and a fresh socket of the family
 * holds deflt; bits of known say which entries of all three could be read.
 * An option already at the wanted value is left; one the application set to
 * something else than the kernel default and ours is left unless
 * tcp.override is on; unknown ones are left.
 */
unsigned pol_tcp_to_set(const struct pol_config *cfg, const struct pol_tcp_plan *plan,
                        const int *cur, const int *app, const int *deflt, unsigned known);

/* ---- verdicts --------------------------------------------------------- */

/*
 * The verdict for one socket: SKIP_POLICY when the gate is closed, nothing
 * TCP is configured, or the connection is out of scope; otherwise the gate's
 * INJECT or OBSERVED.
 */
enum pol_verdict pol_tcp_verdict(const struct pol_config *cfg, const struct pol_tcp_scope *scope,
                                 const struct sockaddr *local, const struct sockaddr *remote);

/* ---- connect backoff --------------------------------------------------- */

/* A source of uniform 32-bit random numbers; tests inject a fixed one. */
typedef uint32_t (*pol_rand_fn)(void *arg);

/*
 * Delay before retry number retry (0 = the first retry) of a connect that
 * started elapsed_ms ago: base * 2^retry milliseconds, jittered uniformly in
 * [half, all] of it by r, and cut to what is left of max_ms. Returns -1 when
 * no retry may start: retry >= retries or the bound is reached.
 */
int64_t pol_tcp_backoff_delay_ms(int64_t base_ms, int retry, int retries, int64_t elapsed_ms,
                                 int64_t max_ms, uint32_t r);

/*
 * The whole schedule assuming attempts take no time: writes up to cap delays
 * into out and returns how many retries there are.
 */
int pol_tcp_backoff_schedule(const struct pol_config *cfg, pol_rand_fn rnd, void *arg, int64_t *out,
                             int cap);

#endif
