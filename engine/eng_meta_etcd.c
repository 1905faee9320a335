/*
 * etcd metadata (engine.metadata = etcd://HOST:PORT[,HOST:PORT...]),
 * through etcd's v3 gRPC gateway: JSON over HTTP (libcurl, json-c), keys
 * and values base64-encoded, 64-bit numbers as strings.
 *
 * A listening engine publishes one record under PREFIX + its name: a JSON
 * object with its address, instance id and a summary of its regions, put
 * with a lease of engine.etcd.ttl_s granted at creation. A thread keeps the
 * lease alive (every third of the TTL), sends updates of the record
 * (registrations changed) and, when the lease expired while etcd was
 * unreachable, grants a new one and publishes again. Destroying the engine
 * revokes the lease, which deletes the key at once.
 *
 * A segment opened by a published name is watched by a thread of its own
 * holding a /v3/watch stream from the revision it was resolved at: a PUT
 * with another instance id marks it restarted (-ESTALE), a DELETE (revoke,
 * lease expiry, deleterange) departed (-EHOSTDOWN). When the stream breaks
 * (etcd lost) the segment keeps working; the thread resolves the name again
 * with backoff until etcd answers, then watches on.
 *
 * The endpoints are tried in order from the last one that answered.
 */
#include "eng_meta.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ETCD_MAX_EPS 16
#define ETCD_WHY 512

struct etcd {
    struct eng_meta base;
    char *eps[ETCD_MAX_EPS];
    int neps;
    atomic_int cur; /* the endpoint that answered last */
    char prefix[256];
    int ttl_s;
    long timeout_ms;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread; /* lease keeper, once published */
    bool running, stop, dirty, unreachable;
    char key[320];
    char *value;   /* the record (JSON) under lock */
    int64_t lease; /* 0: none; the keeper's after the first publish */
};

struct etcd_watch {
    struct eng_meta_watch base;
    struct etcd *e;
    char name[300];
    uint8_t instance_id[16];
    uint64_t rev; /* events after this revision are news */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool stop;
    curl_socket_t fd; /* the stream's socket, shut down to stop it */
    char *line;       /* the stream's incomplete line */
    size_t nline;
};

/* ---- base64 (the gateway's encoding of bytes) ----------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const char *s)
{
    size_t n = strlen(s), j = 0;
    char *o = malloc(4 * ((n + 2) / 3) + 1);

    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(uint8_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(uint8_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (uint8_t)s[i + 2];
        o[j++] = b64[v >> 18];
        o[j++] = b64[(v >> 12) & 63];
        o[j++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        o[j++] = i + 2 < n ? b64[v & 63] : '=';
    }
    o[j] = '\0';
    return o;
}

/* NUL-terminated decoding of s; NULL when s is not base64. */
static char *b64_decode(const char *s)
{
    size_t n = strlen(s), j = 0;
    char *o = malloc(n / 4 * 3 + 1);
    uint32_t v = 0;
    int bits = 0;

    if (!o || n % 4) {
        free(o);
        return NULL;
    }
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *p = strchr(b64, s[i]);
        if (!p || !s[i]) {
            free(o);
            return NULL;
        }
        v = v << 6 | (uint32_t)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[j++] = (char)((v >> bits) & 0xff);
        }
    }
    o[j] = '\0';
    return o;
}

/* ---- one request ------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct membuf {
    char *p;
    size_t n;
};

static size_t membuf_write(char *d, size_t sz, size_t nm, void *u)
{
    struct membuf *b = u;
    size_t len = sz * nm;
    char *p = realloc(b->p, b->n + len + 1);

    if (!p)
        return 0;
    memcpy(p + b->n, d, len);
    b->n += len;
    p[b->n] = '\0';
    b->p = p;
    return len;
}

static CURL *etcd_handle(struct etcd *e, int ep, const char *path, const char *body,
                         struct curl_slist *hdr)
{
    char url[512];
    CURL *c = curl_easy_init();

    if (!c)
        return NULL;
    snprintf(url, sizeof(url), "http://%s%s", e->eps[ep], path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->timeout_ms);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    return c;
}

static int curl_errno(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
        return -EHOSTUNREACH;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

/* POST body to path, trying the endpoints from the one that answered
 * last; the parsed answer in *out. On failure why says what failed. */
static int etcd_post(struct etcd *e, const char *path, const char *body, struct json_object **out,
                     char *why)
{
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    int first = atomic_load(&e->cur), ret = -EIO;
    size_t w = 0;

    for (int k = 0; k < e->neps; k++) {
        int ep = (first + k) % e->neps;
        struct membuf b = {0};
        long code = 0;
        CURL *c = etcd_handle(e, ep, path, body, hdr);
        if (!c) {
            ret = -ENOMEM;
            break;
        }
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, e->timeout_ms);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, membuf_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        CURLcode rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
        if (rc != CURLE_OK) {
            ret = curl_errno(rc);
            w += (size_t)snprintf(why + w, w < ETCD_WHY ? ETCD_WHY - w : 0, "%setcd at %s: %s",
                                  k ? "; " : "", e->eps[ep], curl_easy_strerror(rc));
            free(b.p);
            continue;
        }
        atomic_store(&e->cur, ep);
        *out = b.p && code == 200 ? json_tokener_parse(b.p) : NULL;
        ret = *out ? 0 : -EPROTO;
        if (ret)
            snprintf(why, ETCD_WHY, "etcd at %s answered %s %ld: %.200s", e->eps[ep], path, code,
                     b.p ? b.p : "");
        free(b.p);
        break;
    }
    curl_slist_free_all(hdr);
    return ret;
}

/* A member of a JSON object by path "a.b" (NULL if missing). */
static struct json_object *jget(struct json_object *o, const char *a, const char *b)
{
    struct json_object *v = NULL;

    if (!o || !json_object_object_get_ex(o, a, &v))
        return NULL;
    if (b && !json_object_object_get_ex(v, b, &v))
        return NULL;
    return v;
}

/* ---- records ---------------------------------------------------------- */

static char *rec_encode(const struct eng_meta_rec *r, const char *name, int ttl_s)
{
    char id[33];
    struct json_object *o = json_object_new_object();
    char *s;

    for (int i = 0; i < 16; i++)
        snprintf(id + 2 * i, 3, "%02x", r->instance_id[i]);
    json_object_object_add(o, "name", json_object_new_string(name));
    json_object_object_add(o, "addr", json_object_new_string(r->addr));
    json_object_object_add(o, "instance_id", json_object_new_string(id));
    json_object_object_add(o, "regions", json_object_new_int64(r->nregions));
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)r->bytes));
    json_object_object_add(o, "pid", json_object_new_int(getpid()));
    json_object_object_add(o, "ttl_s", json_object_new_int(ttl_s));
    s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

/* A kv's base64 value into *r; -EBADMSG when it is not one of our records. */
static int rec_decode(struct json_object *kv, struct eng_meta_rec *r)
{
    struct json_object *v = jget(kv, "value", NULL), *o;
    char *s = v ? b64_decode(json_object_get_string(v)) : NULL;
    const char *addr, *id;
    int ret = -EBADMSG;

    o = s ? json_tokener_parse(s) : NULL;
    free(s);
    addr = json_object_get_string(jget(o, "addr", NULL));
    id = json_object_get_string(jget(o, "instance_id", NULL));
    memset(r, 0, sizeof(*r));
    if (addr && id && strlen(addr) < sizeof(r->addr) && strlen(id) == 32) {
        strcpy(r->addr, addr);
        ret = 0;
        for (int i = 0; i < 16 && !ret; i++)
            if (sscanf(id + 2 * i, "%2hhx", &r->instance_id[i]) != 1)
                ret = -EBADMSG;
        r->nregions = (uint32_t)json_object_get_int64(jget(o, "regions", NULL));
        r->bytes = (uint64_t)json_object_get_int64(jget(o, "bytes", NULL));
    }
    json_object_put(o);
    return ret;
}

/* ms from now on CLOCK_MONOTONIC (the clock of the condition variables). */
static struct timespec deadline_in(long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += ms % 1000 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- the lease and the published record --------------------------------- */

/* POST {"field":"v"} to path; the answer's number at a(.b) in *out (0 when
 * missing: an expired lease has no TTL). */
static int etcd_post_num(struct etcd *e, const char *path, const char *field, long long v,
                         const char *a, const char *b, int64_t *out, char *why)
{
    char body[96];
    struct json_object *ans;
    int ret;

    snprintf(body, sizeof(body), "{\"%s\":\"%lld\"}", field, v);
    ret = etcd_post(e, path, body, &ans, why);
    if (ret)
        return ret;
    *out = json_object_get_int64(jget(ans, a, b));
    json_object_put(ans);
    return 0;
}

static int lease_grant(struct etcd *e, char *why)
{
    int ret = etcd_post_num(e, "/v3/lease/grant", "TTL", e->ttl_s, "ID", NULL, &e->lease, why);

    if (ret || e->lease)
        return ret;
    snprintf(why, ETCD_WHY, "etcd granted no lease");
    return -EPROTO;
}

static int record_put(struct etcd *e, const char *value, char *why)
{
    char *k = b64_encode(e->key), *v = b64_encode(value), *body = NULL;
    struct json_object *a = NULL;
    int ret = -ENOMEM;

    if (k && v &&
        asprintf(&body, "{\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%lld\"}", k, v,
                 (long long)e->lease) > 0)
        ret = etcd_post(e, "/v3/kv/put", body, &a, why);
    json_object_put(a);
    free(body);
    free(k);
    free(v);
    return ret;
}

/* 0: the lease lives; -ENOENT: it expired; else etcd could not be asked. */
static int lease_keepalive(struct etcd *e, char *why)
{
    int64_t ttl = 0;
    int ret = etcd_post_num(e, "/v3/lease/keepalive", "ID", (long long)e->lease, "result", "TTL",
                            &ttl, why);

    return ret ? ret : ttl > 0 ? 0 : -ENOENT;
}

/* One round of the keeper: keep the lease alive, republish when it was
 * lost or the record changed. */
static int keeper_round(struct etcd *e, const char *value, bool dirty, char *why)
{
    int ret = e->lease ? lease_keepalive(e, why) : -ENOENT;

    if (ret == -ENOENT) {
        eng_warn(e->base.eng, "etcd: the lease of %s expired; publishing it again", e->key);
        e->lease = 0;
        ret = lease_grant(e, why);
        dirty = true;
    }
    if (!ret && dirty)
        ret = record_put(e, value, why);
    return ret;
}

static void *keeper_main(void *arg)
{
    struct etcd *e = arg;
    char why[ETCD_WHY];

    pthread_mutex_lock(&e->lock);
    while (!e->stop) {
        long step = e->ttl_s * 1000L / 3;
        struct timespec ts = deadline_in(step);
        int w = 0;
        while (!e->stop && !e->dirty && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&e->cond, &e->lock, &ts);
        if (e->stop)
            break;
        bool dirty = e->dirty;
        char *value = strdup(e->value);
        e->dirty = false;
        pthread_mutex_unlock(&e->lock);
        int ret = value ? keeper_round(e, value, dirty, why) : -ENOMEM;
        free(value);
        pthread_mutex_lock(&e->lock);
        if (ret) {
            e->dirty |= dirty;
            if (!e->unreachable)
                eng_warn(e->base.eng,
                         "etcd: cannot refresh %s (%s); open segments keep working, retrying "
                         "every %d ms",
                         e->key, why, (int)step);
            e->unreachable = true;
        } else if (e->unreachable) {
            eng_info(e->base.eng, "etcd: %s refreshed again", e->key);
            e->unreachable = false;
        }
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static int etcd_publish(struct eng_meta *m, const struct eng_meta_rec *r)
{
    struct etcd *e = (struct etcd *)m;
    char *value = rec_encode(r, m->eng->name, e->ttl_s), why[ETCD_WHY] = "";
    int ret = 0;

    if (!value)
        return -ENOMEM;
    pthread_mutex_lock(&e->lock);
    free(e->value);
    e->value = value;
    if (e->running) { /* an update: the keeper sends it */
        e->dirty = true;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
        return 0;
    }
    pthread_mutex_unlock(&e->lock);
    ret = lease_grant(e, why);
    if (!ret)
        ret = record_put(e, value, why);
    if (!ret && (ret = -pthread_create(&e->thread, NULL, keeper_main, e)))
        snprintf(why, sizeof(why), "no thread for the lease: %s", strerror(-ret));
    if (ret) {
        eng_err(m->eng, "engine_create: cannot publish %s in etcd: %s", e->key, why);
        return ret;
    }
    e->running = true;
    eng_info(m->eng, "etcd: published %s (%s, lease %lld, TTL %d s)", e->key, r->addr,
             (long long)e->lease, e->ttl_s);
    return 0;
}

/* ---- resolving and watching names ---------------------------------------- */

static int etcd_resolve(struct eng_meta *m, const char *name, struct eng_meta_rec *r, uint64_t *rev)
{
    struct etcd *e = (struct etcd *)m;
    char key[600], why[ETCD_WHY] = "", *k, *body = NULL;
    struct json_object *a = NULL, *kvs;
    int ret = -ENOMEM;

    snprintf(key, sizeof(key), "%s%s", e->prefix, name);
    k = b64_encode(key);
    if (k && asprintf(&body, "{\"key\":\"%s\"}", k) > 0)
        ret = etcd_post(e, "/v3/kv/range", body, &a, why);
    free(k);
    free(body);
    if (ret) {
        eng_err(m->eng, "segment %s: cannot look it up: %s", name, why);
        return ret;
    }
    *rev = (uint64_t)json_object_get_int64(jget(a, "header", "revision"));
    kvs = jget(a, "kvs", NULL);
    if (!kvs || !json_object_array_length(kvs))
        ret = -ENOENT;
    else if ((ret = rec_decode(json_object_array_get_idx(kvs, 0), r)))
        eng_err(m->eng, "segment %s: the value of %s in etcd is not a teshim record", name, key);
    json_object_put(a);
    return ret;
}

static void watch_set(struct etcd_watch *w, int state, const char *why)
{
    int zero = 0;

    if (atomic_compare_exchange_strong(&w->base.state, &zero, state))
        eng_warn(w->e->base.eng, "segment %s: %s; requests to it fail until it is reopened",
                 w->name, why);
}

/* One event of the stream; false when watching it is over. */
static bool watch_event(struct etcd_watch *w, struct json_object *ev)
{
    const char *type = json_object_get_string(jget(ev, "type", NULL));
    struct json_object *kv = jget(ev, "kv", NULL);
    struct eng_meta_rec r;

    w->rev = (uint64_t)json_object_get_int64(jget(kv, "mod_revision", NULL));
    if (type && !strcmp(type, "DELETE")) {
        watch_set(w, -EHOSTDOWN, "its peer left (etcd key deleted: revoked or lease expired)");
        return false;
    }
    if (rec_decode(kv, &r) || memcmp(r.instance_id, w->instance_id, 16)) {
        watch_set(w, -ESTALE, "its peer restarted (another instance published under its name)");
        return false;
    }
    return true; /* the same instance updated its record */
}

/* One line of the stream; false to end the stream. */
static bool watch_line(struct etcd_watch *w, const char *line)
{
    struct json_object *o = json_tokener_parse(line), *res = jget(o, "result", NULL), *evs;
    bool go = res && !json_object_get_boolean(jget(res, "canceled", NULL));

    evs = jget(res, "events", NULL);
    for (size_t i = 0; go && evs && i < json_object_array_length(evs); i++)
        go = watch_event(w, json_object_array_get_idx(evs, i));
    json_object_put(o);
    return go;
}

static size_t watch_write(char *d, size_t sz, size_t nm, void *u)
{
    struct etcd_watch *w = u;
    size_t len = sz * nm;
    char *p = realloc(w->line, w->nline + len + 1), *nl;

    if (!p)
        return 0;
    w->line = p;
    memcpy(p + w->nline, d, len);
    w->nline += len;
    p[w->nline] = '\0';
    while ((nl = memchr(w->line, '\n', w->nline))) {
        *nl = '\0';
        if (!watch_line(w, w->line))
            return 0;
        w->nline -= (size_t)(nl + 1 - w->line);
        memmove(w->line, nl + 1, w->nline + 1);
    }
    return len;
}

static curl_socket_t watch_open_socket(void *u, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct etcd_watch *w = u;
    curl_socket_t fd = CURL_SOCKET_BAD;

    (void)purpose;
    pthread_mutex_lock(&w->lock);
    if (!w->stop)
        fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    w->fd = fd;
    pthread_mutex_unlock(&w->lock);
    return fd;
}

static int watch_close_socket(void *u, curl_socket_t fd)
{
    struct etcd_watch *w = u;

    pthread_mutex_lock(&w->lock);
    w->fd = CURL_SOCKET_BAD;
    close(fd);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* Hold one watch stream from w->rev + 1 until it ends. */
static void watch_stream(struct etcd_watch *w)
{
    struct etcd *e = w->e;
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    char key[600], *k, *body = NULL;
    CURL *c = NULL;

    snprintf(key, sizeof(key), "%s%s", e->prefix, w->name);
    k = b64_encode(key);
    if (k && asprintf(&body, "{\"create_request\":{\"key\":\"%s\",\"start_revision\":\"%llu\"}}", k,
                      (unsigned long long)w->rev + 1) > 0)
        c = etcd_handle(e, atomic_load(&e->cur), "/v3/watch", body, hdr);
    if (c) {
        w->nline = 0;
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, w);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, watch_open_socket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, w);
        curl_easy_setopt(c, CURLOPT_CLOSESOCKETFUNCTION, watch_close_socket);
        curl_easy_setopt(c, CURLOPT_CLOSESOCKETDATA, w);
        CURLcode rc = curl_easy_perform(c);
        eng_dbg(e->base.eng, "segment %s: watch stream ended (%s)", w->name,
                curl_easy_strerror(rc));
        curl_easy_cleanup(c);
    }
    free(body);
    free(k);
    curl_slist_free_all(hdr);
}

/* Sleep ms unless stopped; true when stopped. */
static bool watch_sleep(struct etcd_watch *w, long ms)
{
    struct timespec ts = deadline_in(ms);
    bool stop;

    pthread_mutex_lock(&w->lock);
    while (!w->stop && pthread_cond_timedwait(&w->cond, &w->lock, &ts) != ETIMEDOUT)
        ;
    stop = w->stop;
    pthread_mutex_unlock(&w->lock);
    return stop;
}

static void *watch_main(void *arg)
{
    struct etcd_watch *w = arg;
    long backoff = 100;

    for (;;) {
        watch_stream(w);
        if (atomic_load(&w->base.state) || watch_sleep(w, backoff))
            break;
        /* the stream broke (etcd lost, compaction): what is there now? */
        struct eng_meta_rec r;
        uint64_t rev;
        int ret = etcd_resolve(&w->e->base, w->name, &r, &rev);
        if (ret == -ENOENT) {
            watch_set(w, -EHOSTDOWN, "its peer left (no etcd key any more)");
        } else if (!ret && memcmp(r.instance_id, w->instance_id, 16)) {
            watch_set(w, -ESTALE, "its peer restarted (another instance published its name)");
        } else if (!ret) {
            w->rev = rev;
            backoff = 100;
            continue;
        }
        if (atomic_load(&w->base.state))
            break;
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
    return NULL;
}

static int etcd_watch(struct eng_meta *m, const char *name, const struct eng_meta_rec *r,
                      uint64_t rev, struct eng_meta_watch **w_p)
{
    struct etcd_watch *w = calloc(1, sizeof(*w));
    pthread_condattr_t ca;
    int ret;

    if (!w)
        return -ENOMEM;
    w->e = (struct etcd *)m;
    snprintf(w->name, sizeof(w->name), "%s", name);
    memcpy(w->instance_id, r->instance_id, 16);
    w->rev = rev;
    w->fd = CURL_SOCKET_BAD;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    ret = -pthread_create(&w->thread, NULL, watch_main, w);
    if (ret) {
        eng_err(m->eng, "segment %s: no thread to watch it: %s", name, strerror(-ret));
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return ret;
    }
    *w_p = &w->base;
    return 0;
}

static void etcd_unwatch(struct eng_meta_watch *base)
{
    struct etcd_watch *w = (struct etcd_watch *)base;

    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    if (w->fd != CURL_SOCKET_BAD)
        shutdown(w->fd, SHUT_RDWR); /* ends the stream at once */
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->line);
    free(w);
}

/* ---- the service -------------------------------------------------------- */

static void etcd_close(struct eng_meta *m)
{
    struct etcd *e = (struct etcd *)m;
    char why[ETCD_WHY] = "";
    int64_t id;

    pthread_mutex_lock(&e->lock);
    e->stop = true;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
    if (e->running)
        pthread_join(e->thread, NULL);
    if (e->lease && etcd_post_num(e, "/v3/lease/revoke", "ID", (long long)e->lease, "header",
                                  "revision", &id, why))
        eng_warn(m->eng, "etcd: cannot withdraw %s (%s); it goes when its lease expires", e->key,
                 why);
    for (int i = 0; i < e->neps; i++)
        free(e->eps[i]);
    free(e->value);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

static const struct eng_meta_ops etcd_ops = {
    .name = "etcd",
    .publish = etcd_publish,
    .resolve = etcd_resolve,
    .watch = etcd_watch,
    .unwatch = etcd_unwatch,
    .close = etcd_close,
};

/* "HOST:PORT[,HOST:PORT...]" into e->eps; -EINVAL (logged) if malformed. */
static int parse_endpoints(struct etcd *e, const char *list)
{
    const char *s = list;

    while (*s) {
        size_t n = strcspn(s, ",");
        const char *colon = memrchr(s, ':', n);
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!n || !colon || colon == s || end != s + n || port < 1 || port > 65535 ||
            e->neps == ETCD_MAX_EPS || !(e->eps[e->neps] = strndup(s, n))) {
            eng_err(e->base.eng,
                    "engine_create: etcd endpoint '%.*s' of '%s' is not HOST:PORT (at most %d)",
                    (int)n, s, list, ETCD_MAX_EPS);
            return -EINVAL;
        }
        e->neps++;
        s += n + (s[n] == ',');
    }
    if (!e->neps) {
        eng_err(e->base.eng, "engine_create: etcd:// names no endpoint (etcd://HOST:PORT)");
        return -EINVAL;
    }
    return 0;
}

int eng_meta_etcd_open(struct eng_ctx *eng, const char *endpoints, struct eng_meta **m_p)
{
    struct etcd *e = calloc(1, sizeof(*e));
    struct json_object *a = NULL;
    char why[ETCD_WHY] = "";
    pthread_condattr_t ca;
    int ret;

    if (!e) {
        eng_err(eng, "engine_create: no memory for the etcd client");
        return -ENOMEM;
    }
    pthread_once(&curl_once, curl_init);
    e->base.ops = &etcd_ops;
    e->base.eng = eng;
    e->ttl_s = eng->p.etcd_ttl_s;
    e->timeout_ms = eng->p.connect_timeout_ms;
    snprintf(e->prefix, sizeof(e->prefix), "%s", eng->p.etcd_prefix);
    snprintf(e->key, sizeof(e->key), "%s%s", e->prefix, eng->name);
    pthread_mutex_init(&e->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cond, &ca);
    pthread_condattr_destroy(&ca);
    ret = parse_endpoints(e, endpoints);
    if (!ret) {
        /* is anyone there? (a range of our own key: cheap, changes nothing) */
        char *k = b64_encode(e->key), *body = NULL;
        ret = -ENOMEM;
        if (k && asprintf(&body, "{\"key\":\"%s\",\"count_only\":true}", k) > 0)
            ret = etcd_post(e, "/v3/kv/range", body, &a, why);
        json_object_put(a);
        free(body);
        free(k);
        if (ret)
            eng_err(eng, "engine_create: metadata etcd://%s: %s", endpoints, why);
    }
    if (ret) {
        etcd_close(&e->base);
        return ret;
    }
    *m_p = &e->base;
    return 0;
}
