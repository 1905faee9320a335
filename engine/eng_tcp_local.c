/*
 * tcp: same-host peers, target-checked (engine.local.mode = target). The
 * initiator sends LOCAL_READ/LOCAL_WRITE frames on its tcp connections:
 * the request as a READ/WRITE names it, and the address of its own buffer
 * instead of the data. The target checks the whole request against its
 * remote-accessible registrations, exactly as for READ/WRITE, copies
 * between the registration and the initiator's buffer with
 * process_vm_writev/readv, and answers LOCAL_ACK with the status. The
 * target needs ptrace rights on the initiator, never the reverse: the
 * initiator lets its target's pid ptrace it (Yama's PR_SET_PTRACER), and
 * the target checks that the pid a frame names owns the other end of the
 * connection (/proc/net/tcp{,6} and /proc/PID/fd) before it copies a
 * byte, so a peer cannot direct the target's copies into a third process.
 */
#include "eng_tcp_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif

/* The one pid Yama's PR_SET_PTRACER lets ptrace this process (process
 * wide, as the setting is); 0: none yet; -1: no Yama, nothing to grant. */
static pthread_mutex_t grant_lock = PTHREAD_MUTEX_INITIALIZER;
static long granted;

/* Fields of a "Uid:"/"Gid:" line of /proc/PID/status: real, effective,
 * saved, filesystem. */
static int proc_ids(uint32_t pid, const char *key, unsigned long id[4])
{
    char path[64], line[256];
    size_t kl = strlen(key);
    int ret = -ENOENT;

    snprintf(path, sizeof(path), "/proc/%" PRIu32 "/status", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, key, kl)) {
            ret = sscanf(line + kl, "%lu %lu %lu %lu", &id[0], &id[1], &id[2], &id[3]) == 4
                      ? 0
                      : -EBADMSG;
            break;
        }
    }
    fclose(f);
    return ret;
}

/* The kernel lets the target (pid) ptrace us: it is root, or its real ids
 * are all of ours, and we are dumpable. A cheap look, not a proof: the
 * target's answer is the proof. */
static bool target_may_trace_us(uint32_t pid)
{
    unsigned long u[4], g[4];

    if (proc_ids(pid, "Uid:", u) || proc_ids(pid, "Gid:", g))
        return false;
    if (u[0] == 0)
        return true;
    return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 && u[0] == getuid() && u[0] == geteuid() &&
           g[0] == getgid() && g[0] == getegid();
}

/* Let pid ptrace us under Yama. PR_SET_PTRACER names one pid: a second
 * live target is refused (its segment sends plain READ/WRITE), rather
 * than opening this process to everyone with PR_SET_PTRACER_ANY. */
static int grant_ptrace(uint32_t pid)
{
    int ret = 0;

    pthread_mutex_lock(&grant_lock);
    if (granted != -1 && granted != (long)pid) {
        /* alive: keeps it (one we may not signal is root's, which needs
         * none); Yama drops a grant when its tracer exits */
        if (granted > 0 && kill((pid_t)granted, 0) == 0) {
            ret = -EBUSY;
        } else if (prctl(PR_SET_PTRACER, (unsigned long)pid, 0, 0, 0) == 0) {
            granted = (long)pid;
        } else if (errno == EINVAL) {
            granted = -1; /* no Yama: ptrace needs the same ids only */
        } else {
            ret = -errno;
        }
    }
    pthread_mutex_unlock(&grant_lock);
    return ret;
}

/* "%08X...:%04X" as /proc/net/tcp{,6} print an endpoint. */
static void endpoint_str(const struct sockaddr_storage *ss, char *buf, size_t n)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        snprintf(buf, n, "%08X:%04X", a->sin_addr.s_addr, ntohs(a->sin_port));
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uint32_t w[4];
        memcpy(w, &a->sin6_addr, sizeof(w));
        snprintf(buf, n, "%08X%08X%08X%08X:%04X", w[0], w[1], w[2], w[3], ntohs(a->sin6_port));
    }
}

#define MAX_INODES 64

/* Inodes of this network namespace's tcp sockets (family's table) whose
 * local endpoint is local and remote one is remote; a NULL local matches
 * any listening socket on port. The count found, at most max. */
static int tcp_inodes(int family, const char *local, const char *remote, unsigned port,
                      unsigned long *inodes, int max)
{
    char l[64], r[64], line[512];
    unsigned long inode;
    unsigned st;
    int n = 0;

    FILE *f = fopen(family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6", "re");
    if (!f)
        return 0;
    while (n < max && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%*s %63s %63s %x %*s %*s %*s %*s %*s %lu", l, r, &st, &inode) != 4)
            continue;
        char *colon = strrchr(l, ':');
        if (local ? !strcmp(l, local) && !strcmp(r, remote)
                  : st == 0x0A && colon && strtoul(colon + 1, NULL, 16) == port)
            inodes[n++] = inode;
    }
    fclose(f);
    return n;
}

/* pid holds one of the sockets inodes[n]. */
static bool pid_holds(uint32_t pid, const unsigned long *inodes, int n)
{
    char path[64], link[64];
    struct dirent *e;
    bool own = false;

    snprintf(path, sizeof(path), "/proc/%" PRIu32 "/fd", pid);
    DIR *d = n ? opendir(path) : NULL;
    if (!d)
        return false;
    while (!own && (e = readdir(d))) {
        ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
        unsigned long ino;
        if (len <= 0)
            continue;
        link[len] = '\0';
        if (sscanf(link, "socket:[%lu]", &ino) != 1)
            continue;
        for (int i = 0; i < n && !own; i++)
            own = ino == inodes[i];
    }
    closedir(d);
    return own;
}

/* pid holds the socket at the other end of c's connection (same host,
 * same network namespace). */
static bool owns_peer_end(struct tcp_conn *c, uint32_t pid)
{
    struct sockaddr_storage me, peer;
    socklen_t ml = sizeof(me), pl = sizeof(peer);
    char want_l[64], want_r[64];
    unsigned long inodes[MAX_INODES];

    if (getsockname(c->fd, (struct sockaddr *)&me, &ml) ||
        getpeername(c->fd, (struct sockaddr *)&peer, &pl) ||
        (peer.ss_family != AF_INET && peer.ss_family != AF_INET6))
        return false;
    endpoint_str(&peer, want_l, sizeof(want_l));
    endpoint_str(&me, want_r, sizeof(want_r));
    return pid_holds(pid, inodes,
                     tcp_inodes(peer.ss_family, want_l, want_r, 0, inodes, MAX_INODES));
}

/* The process at pid here is the segment's target: it listens on the
 * port we reach it at in our network namespace (so it is in our pid
 * namespace too, and the pid it announced is the one we see). */
static bool pid_is_target(const struct eng_segment *seg)
{
    unsigned long inodes[MAX_INODES];
    int fam = seg->sa.ss_family;
    unsigned port = ntohs(fam == AF_INET ? ((const struct sockaddr_in *)&seg->sa)->sin_port
                                         : ((const struct sockaddr_in6 *)&seg->sa)->sin6_port);
    int n;

    if (fam != AF_INET && fam != AF_INET6)
        return false;
    /* a dual-stack listener is in tcp6 even for IPv4 peers */
    n = tcp_inodes(AF_INET, NULL, NULL, port, inodes, MAX_INODES);
    n += tcp_inodes(AF_INET6, NULL, NULL, port, inodes + n, MAX_INODES - n);
    return pid_holds(seg->hello.pid, inodes, n);
}

bool tcp_local_usable(struct eng_ctx *eng, struct eng_segment *seg)
{
    const struct eng_hello *h = &seg->hello;
    int ret;

    if (eng->p.transport == ENG_TP_TCP || !h->probe_addr || memcmp(h->boot_id, eng->boot_id, 16))
        return false;
    if (eng->p.local_mode != ENG_LOCAL_TARGET && !(h->flags & ENG_HELLO_LOCAL_TARGET))
        return false; /* the local transport copies, or the peer is elsewhere */
    if (!pid_is_target(seg)) {
        eng_info(eng,
                 "segment %s: pid %u is not the process listening at the segment's port here "
                 "(another pid or network namespace, or not readable): data goes over tcp",
                 seg->name, h->pid);
        return false;
    }
    if (!target_may_trace_us(h->pid)) {
        eng_info(eng,
                 "segment %s: pid %u (same host) may not ptrace this process (other user, or "
                 "not dumpable): data goes over tcp",
                 seg->name, h->pid);
        return false;
    }
    ret = grant_ptrace(h->pid);
    if (ret) {
        eng_info(eng,
                 "segment %s: cannot let pid %u ptrace this process (%s; Yama's PR_SET_PTRACER "
                 "names one pid, another target has it): data goes over tcp",
                 seg->name, h->pid, ret == -EBUSY ? "taken" : strerror(-ret));
        return false;
    }
    eng_dbg(eng, "segment %s: same host, target-checked copies (pid %u)", seg->name, h->pid);
    return true;
}

int tcp_local_header(struct tcp_conn *c)
{
    c->rdst = (char *)c->lreq;
    c->rleft = ENG_LOCAL_BYTES;
    c->rstatus = 0;
    c->rstage = R_PAYLOAD;
    return 0;
}

/* 0, or why pid may not be copied to or from on c. */
static int check_initiator(struct tcp_conn *c, uint32_t pid)
{
    struct eng_ctx *eng = tcp_conn_eng(c);

    if (!c->lpid) {
        c->lpid = owns_peer_end(c, pid) ? (int64_t)pid : -1;
        if (c->lpid < 0)
            eng_warn(eng,
                     "peer %s: same-host requests name pid %" PRIu32
                     ", which does not hold the connection (or is not on this host): refused",
                     c->pname, pid);
    }
    if (c->lpid != (int64_t)pid) {
        atomic_fetch_add(&eng->st.peer_rejected, 1);
        return -EPERM;
    }
    return 0;
}

/* Copy len bytes between our registration at raddr and the initiator's
 * buffer at laddr; 0 or -errno. */
static int local_copy(pid_t pid, bool read, uint64_t raddr, uint64_t laddr, uint64_t len)
{
    uint64_t done = 0;

    while (done < len) {
        struct iovec mine = {(void *)(uintptr_t)(raddr + done), len - done};
        struct iovec theirs = {(void *)(uintptr_t)(laddr + done), len - done};
        ssize_t n = read ? process_vm_writev(pid, &mine, 1, &theirs, 1, 0)
                         : process_vm_readv(pid, &mine, 1, &theirs, 1, 0);
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        done += (uint64_t)n;
    }
    return 0;
}

int tcp_local_serve(struct tcp_conn *c)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    struct eng_frame *f = &c->rf;
    bool read = f->type == ENG_F_LOCAL_READ;
    struct eng_local_req lr;
    struct eng_region *reg = NULL;
    int status;

    if (eng_local_req_parse(c->lreq, &lr)) {
        eng_warn(eng, "peer %s: malformed same-host request, closing the connection", c->pname);
        atomic_fetch_add(&eng->st.peer_rejected, 1);
        return -EBADMSG;
    }
    /* engine.local.serve = off: same-host peers get plain READ/WRITE only */
    status = eng->p.local_serve ? check_initiator(c, lr.pid) : -EOPNOTSUPP;
    if (!status) {
        reg = eng_region_get(eng, f->req_addr, f->req_len);
        if (!reg) {
            tcp_target_reject(c, read ? "local read" : "local write");
            status = -EFAULT;
        } else if (reg->cuda_dev >= 0) {
            /* process_vm_* cannot reach it: the initiator sends READ/WRITE */
            status = -EOPNOTSUPP;
        }
    }
    if (!status) {
        status = local_copy((pid_t)lr.pid, read, f->addr, lr.addr, f->len);
        if (status)
            eng_err(eng, "peer %s: process_vm_%sv of %llu bytes at 0x%llx in pid %" PRIu32 ": %s",
                    c->pname, read ? "write" : "read", (unsigned long long)f->len,
                    (unsigned long long)lr.addr, lr.pid, strerror(-status));
    }
    eng_region_put(reg);
    return tcp_send_answer(c, ENG_F_LOCAL_ACK, f, status, NULL, NULL, 0);
}
