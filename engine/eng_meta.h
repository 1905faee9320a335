/*
 * The metadata service: where an engine publishes its segment and how a
 * segment's name is resolved to an address to handshake with. Two
 * implementations behind one ops table: p2p (eng_meta.c: nothing is
 * published, a name is its own host:port) and etcd (eng_meta_etcd.c: a
 * record per engine under a lease, names resolved and watched through
 * etcd's v3 JSON gateway). Services layer; used by the public API. Not
 * installed.
 */
#ifndef TESHIM_ENG_META_H
#define TESHIM_ENG_META_H

#include "eng_tp.h"

#include <stdatomic.h>
#include <stdint.h>

/* What an engine publishes under its name; what resolving a name gives. */
struct eng_meta_rec {
    char addr[300];          /* host:port to handshake with */
    uint8_t instance_id[16]; /* random per engine start */
    uint32_t nregions;       /* remote-accessible regions at publication */
    uint64_t bytes;          /* and their total length */
};

struct eng_meta;
/* A watch; an implementation embeds it first. */
struct eng_meta_watch {
    atomic_int state; /* 0 live, -ESTALE restarted, -EHOSTDOWN gone */
};

struct eng_meta_ops {
    const char *name;
    /* Publish (first call: synchronously; later calls: an update the
     * service sends in the background) r under the engine's name. */
    int (*publish)(struct eng_meta *m, const struct eng_meta_rec *r);
    /* Resolve name: 0 and *r (and the store's revision in *rev), -ENOENT
     * when nothing is published under it, another -errno (logged) when the
     * store cannot be asked. */
    int (*resolve)(struct eng_meta *m, const char *name, struct eng_meta_rec *r, uint64_t *rev);
    /* Watch name, resolved to r at revision rev: its state becomes
     * -ESTALE when another instance publishes under it, -EHOSTDOWN when it
     * is removed. 0 and *w, or -errno. */
    int (*watch)(struct eng_meta *m, const char *name, const struct eng_meta_rec *r, uint64_t rev,
                 struct eng_meta_watch **w);
    void (*unwatch)(struct eng_meta_watch *w);
    /* Withdraw what was published, stop every thread, free m. */
    void (*close)(struct eng_meta *m);
};

struct eng_meta {
    const struct eng_meta_ops *ops;
    struct eng_ctx *eng;
};

/* The service named by spec ("p2p" or "etcd://HOST:PORT[,HOST:PORT...]"),
 * or -EINVAL (logged) for another spec; -errno when etcd cannot be reached
 * (logged, naming the endpoints). */
int eng_meta_open(struct eng_ctx *eng, const char *spec, struct eng_meta **m_p);
int eng_meta_p2p_open(struct eng_ctx *eng, struct eng_meta **m_p);
int eng_meta_etcd_open(struct eng_ctx *eng, const char *endpoints, struct eng_meta **m_p);
/* A watched segment's state: 0 live, -ESTALE restarted, -EHOSTDOWN gone;
 * 0 for NULL (a segment opened by host:port is not watched). */
static inline int eng_meta_watch_state(struct eng_meta_watch *w)
{
    return w ? atomic_load(&w->state) : 0;
}

#endif
