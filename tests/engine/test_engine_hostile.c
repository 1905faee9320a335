/*
 * Hostile and careless peers (issue 14): answers a peer never reads,
 * connections that never handshake, unregister while answers are held,
 * shared-secret authentication of the handshake, a peer restarted at the
 * same address, and the log of a burst of failing requests. Raw peers
 * speak the wire protocol over loopback with bounded loops.
 */
#include "eng_auth.h"
#include "eng_raw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* ---- helpers --------------------------------------------------------------- */

/*
 * An engine with engine.* settings the options cannot carry: env holds
 * NAME=VALUE pairs (NULL-terminated) set for the create only, with no
 * config file. Returns teshim_engine_create's result.
 */
static int create_env(struct teshim_engine_opts o, const char *const *env,
                      struct teshim_engine **e_p)
{
    char name[128];
    int ret;

    setenv("TESHIM_CONFIG", "/dev/null", 1);
    for (int i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - env[i]), env[i]);
        setenv(name, eq + 1, 1);
    }
    o.no_policy = false;
    ret = teshim_engine_create(&o, e_p);
    for (int i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - env[i]), env[i]);
        unsetenv(name);
    }
    unsetenv("TESHIM_CONFIG");
    return ret;
}

/* A listening tcp target made with env, serving a new buffer of len bytes
 * filled with fill (in *tbuf_p, freed by the caller). */
static struct teshim_engine *target_env(const char *const *env, size_t len, int fill, char **tbuf_p)
{
    struct teshim_engine *e = NULL;
    char *tbuf = aligned_alloc(4096, len);

    ck_assert_ptr_nonnull(tbuf);
    memset(tbuf, fill, len);
    ck_assert_int_eq(create_env(eng_test_opts(TESHIM_TRANSPORT_TCP, true), env, &e), 0);
    ck_assert_int_eq(teshim_register(e, tbuf, len, "cpu", true), 0);
    *tbuf_p = tbuf;
    return e;
}

/* Resident memory of this process, bytes. */
static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%ld %ld", &pages, &rss), 2);
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

/* Wait up to 5 s for a line containing what (another thread logs it). */
static int log_wait(const struct eng_test_log *log, const char *what)
{
    int n = 0;
    for (int i = 0; i < 500 && !(n = eng_test_log_lines(log, what)); i++)
        usleep(10000);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Read and drop what the target sends until it closes; false if it did
 * not close within max_s. */
static bool drained_to_eof(int fd, double max_s)
{
    static char sink[1 << 16];
    double t0 = now_s();
    while (now_s() - t0 < max_s) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
    return false;
}

/* ---- finding 3: answers never read --------------------------------------- */

#define FLOOD_FRAMES 1000000 /* 56 MB of requests */

/*
 * A peer sends READ requests and never reads the answers. The target
 * stops reading its requests once engine.serve.max_queued answers wait:
 * the peer cannot send them all, and the target's memory stays bounded
 * (the old engine read all of them, ~200 bytes of queue each). Then
 * teshim_unregister of the region the answers read from returns
 * -ETIMEDOUT after engine.unregister_timeout_ms instead of waiting for
 * ever, the peer's connection is closed, and the engine is destroyed.
 */
START_TEST(unread_answers_stay_bounded_and_unregister_returns)
{
    static const char *const env[] = {"TESHIM_ENGINE_UNREGISTER_TIMEOUT_MS=500",
                                      "TESHIM_ENGINE_SERVE_STALL_TIMEOUT_MS=600000", NULL};
    char *tbuf;
    struct teshim_engine *t = target_env(env, 1 << 20, 0x5a, &tbuf);
    uint64_t base = (uint64_t)(uintptr_t)tbuf;
    int fd = raw_connect(teshim_engine_port(t));
    raw_hello(fd);

    long rss0 = rss_bytes();
    uint8_t batch[64 * ENG_FRAME_BYTES];
    size_t off = sizeof(batch), bytes = 0;
    long sent = 0, made = 0;
    double t0 = now_s(), blocked_since = 0;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    /* bounded: all frames, 30 s, or 2 s without room to send */
    while (made <= FLOOD_FRAMES && now_s() - t0 < 30) {
        if (off == sizeof(batch)) {
            for (int i = 0; i < 64; i++, made++) {
                struct eng_frame f =
                    raw_read((uint64_t)made, base + (uint64_t)(made % 16384) * 64, 64);
                eng_frame_encode(&f, batch + i * ENG_FRAME_BYTES);
            }
            off = 0;
        }
        ssize_t n = send(fd, batch + off, sizeof(batch) - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            bytes += (size_t)n;
            blocked_since = 0;
            continue;
        }
        ck_assert_msg(n < 0 && errno == EAGAIN, "send: %s", strerror(errno));
        if (!blocked_since)
            blocked_since = now_s();
        else if (now_s() - blocked_since > 2)
            break;
        usleep(1000);
    }
    sent = (long)(bytes / ENG_FRAME_BYTES);
    long grown = rss_bytes() - rss0;
    printf("unread answers: %ld of %d requests sent in %.1f s, memory grew %ld KiB\n", sent,
           FLOOD_FRAMES, now_s() - t0, grown / 1024);
    ck_assert_msg(sent < FLOOD_FRAMES, "the target read every request (%ld)", sent);
    ck_assert_msg(grown < (48l << 20), "the target grew %ld KiB", grown / 1024);

    /* unregister: bounded wait, then the holders' connections close */
    double u0 = now_s();
    ck_assert_int_eq(teshim_unregister(t, tbuf), -ETIMEDOUT);
    double took = now_s() - u0;
    ck_assert_msg(took >= 0.4 && took < 10, "unregister took %.1f s", took);
    ck_assert(drained_to_eof(fd, 20));
    close(fd);

    /* what a SIGTERM handler does, with answers held again: returns */
    ck_assert_int_eq(teshim_register(t, tbuf, 1 << 20, "cpu", true), 0);
    fd = raw_connect(teshim_engine_port(t));
    raw_hello(fd);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 20000; i++) {
        struct eng_frame f = raw_read((uint64_t)i, base + (uint64_t)(i % 16384) * 64, 64);
        uint8_t h[ENG_FRAME_BYTES];
        eng_frame_encode(&f, h);
        if (send(fd, h, sizeof(h), MSG_NOSIGNAL) != (ssize_t)sizeof(h))
            break; /* blocked (a cut frame is the peer's own loss) */
    }
    u0 = now_s();
    teshim_engine_destroy(t);
    ck_assert_msg(now_s() - u0 < 10, "destroy took %.1f s", now_s() - u0);
    close(fd);
    free(tbuf);
}
END_TEST

/* A peer that stops reading its answers is disconnected after
 * engine.serve.stall_timeout_ms; one that sends nothing after
 * engine.serve.idle_timeout_ms. */
START_TEST(stalled_and_idle_peers_are_closed)
{
    static const char *const env[] = {"TESHIM_ENGINE_SERVE_STALL_TIMEOUT_MS=300",
                                      "TESHIM_ENGINE_SERVE_IDLE_TIMEOUT_MS=300", NULL};
    char *tbuf;
    struct teshim_engine *t = target_env(env, 16 << 20, 1, &tbuf);
    uint64_t base = (uint64_t)(uintptr_t)tbuf;

    int idle = raw_connect(teshim_engine_port(t));
    raw_hello(idle);
    double t0 = now_s(); /* its silence starts here, or a little before */
    int stall = raw_connect(teshim_engine_port(t));
    raw_hello(stall);
    /* 64 MiB of answers: more than the sockets hold */
    for (int i = 0; i < 64; i++) {
        struct eng_frame f = raw_read((uint64_t)i, base + (uint64_t)(i % 16) * (1 << 20), 1 << 20);
        raw_send(stall, &f, NULL, 0);
    }
    ck_assert(drained_to_eof(idle, 15));
    ck_assert_msg(now_s() - t0 >= 0.2, "idle closed too early");
    usleep(1000 * 1000); /* the stall is timed from the last progress */
    ck_assert(drained_to_eof(stall, 15));
    close(idle);
    close(stall);
    teshim_engine_destroy(t);
    free(tbuf);
}
END_TEST

/* ---- finding 3: connections that never handshake -------------------------- */

/*
 * A target with 64 file descriptors and 200 connections that never send
 * HELLO: they are closed after engine.handshake_timeout_ms (the oldest
 * first when descriptors run out), and a proper initiator gets through.
 * The old engine kept them for ever and the initiator timed out.
 */
START_TEST(silent_connections_do_not_starve_a_target)
{
    enum { SILENT = 200 };
    static char tbuf[65536], l[65536];
    int go[2], res[2], port;
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(res), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        static const char *const env[] = {"TESHIM_ENGINE_HANDSHAKE_TIMEOUT_MS=500", NULL};
        struct rlimit rl = {64, 64};
        struct teshim_engine *t;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            _exit(10);
        memset(tbuf, 0x42, sizeof(tbuf));
        if (create_env(eng_test_opts(TESHIM_TRANSPORT_TCP, true), env, &t) ||
            teshim_register(t, tbuf, sizeof(tbuf), "cpu", true))
            _exit(11);
        port = teshim_engine_port(t);
        if (write(res[1], &port, sizeof(port)) != sizeof(port))
            _exit(12);
        if (read(go[0], &port, sizeof(port)) < 0)
            _exit(13);
        teshim_engine_destroy(t);
        _exit(0);
    }
    ck_assert_int_eq(read(res[0], &port, sizeof(port)), (ssize_t)sizeof(port));
    int *silent = malloc(SILENT * sizeof(int));
    for (int i = 0; i < SILENT; i++)
        silent[i] = raw_connect(port);

    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.connect_attempts = 20;
    o.connect_timeout_ms = 20000;
    o.request_timeout_ms = 20000;
    struct teshim_engine *ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
    double t0 = now_s();
    teshim_segment_t s = eng_test_open(ini, port);
    struct teshim_request r = {TESHIM_OP_READ, l, s, (uint64_t)(uintptr_t)tbuf, sizeof(l)};
    ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED);
    printf("silent connections: a proper initiator got through in %.1f s\n", now_s() - t0);
    ck_assert_int_eq(l[0], 0x42);
    teshim_engine_destroy(ini);
    for (int i = 0; i < SILENT; i++)
        close(silent[i]);
    free(silent);
    ck_assert_int_eq(write(go[1], &port, sizeof(port)), (ssize_t)sizeof(port));
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* ---- finding 5: authentication -------------------------------------------- */

static char keydir[64];

static void key_write(const char *name, const char *content, mode_t mode, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", keydir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
}

static void keys_setup(void)
{
    snprintf(keydir, sizeof(keydir), "/tmp/teshim-keys-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(keydir));
}

static void keys_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", keydir);
    ck_assert_int_eq(system(cmd), 0);
}

static int create_keyed(enum teshim_transport tr, bool listen, const char *key,
                        struct teshim_engine **e_p)
{
    char var[PATH_MAX + 64];
    const char *env[] = {var, NULL};
    snprintf(var, sizeof(var), "TESHIM_ENGINE_AUTH_KEY_FILE=%s", key ? key : "");
    return create_env(eng_test_opts(tr, listen), key ? env : NULL, e_p);
}

static void hex32(const uint8_t *h, char *out)
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", h[i]);
}

/* SHA-256 (FIPS 180-4 examples) and HMAC-SHA256 (RFC 4231 cases 2 and 6). */
START_TEST(hmac_sha256_known_answers)
{
    static const char m2[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const char d6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    uint8_t h[32], k6[131];
    char x[65];

    eng_sha256("abc", 3, h);
    hex32(h, x);
    ck_assert_str_eq(x, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    eng_sha256(m2, strlen(m2), h);
    hex32(h, x);
    ck_assert_str_eq(x, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const void *p2[2] = {"what do ya want ", "for nothing?"};
    const size_t l2[2] = {16, 12};
    eng_hmac_sha256((const uint8_t *)"Jefe", 4, p2, l2, 2, h);
    hex32(h, x);
    ck_assert_str_eq(x, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(k6, 0xaa, sizeof(k6));
    const void *p6[1] = {d6};
    const size_t l6[1] = {strlen(d6)};
    eng_hmac_sha256(k6, sizeof(k6), p6, l6, 1, h);
    hex32(h, x);
    ck_assert_str_eq(x, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}
END_TEST

/* A key file readable by others, a symlink, a short key: refused, saying why. */
START_TEST(auth_key_file_checked)
{
    char path[PATH_MAX], link[PATH_MAX];
    struct teshim_engine *e = NULL;

    keys_setup();
    struct eng_test_log log = eng_test_log_capture();
    key_write("open", "0123456789abcdef0123456789", 0644, path, sizeof(path));
    int r_open = create_keyed(TESHIM_TRANSPORT_TCP, true, path, &e);
    snprintf(link, sizeof(link), "%s/link", keydir);
    key_write("good", "0123456789abcdef0123456789\n", 0600, path, sizeof(path));
    ck_assert_int_eq(symlink(path, link), 0);
    int r_link = create_keyed(TESHIM_TRANSPORT_TCP, true, link, &e);
    key_write("short", "tooshort\n", 0600, path, sizeof(path));
    int r_short = create_keyed(TESHIM_TRANSPORT_TCP, true, path, &e);
    int chmod_said = eng_test_log_lines(&log, "chmod 600");
    int named = eng_test_log_lines(&log, "engine.auth_key_file");
    eng_test_log_release(&log);
    ck_assert_int_eq(r_open, -EACCES);
    ck_assert_int_eq(r_link, -ELOOP);
    ck_assert_int_eq(r_short, -EINVAL);
    ck_assert_int_eq(chmod_said, 1);
    ck_assert_int_eq(named, 3);
    keys_teardown();
}
END_TEST

/*
 * The same key on both sides: transfers work over tcp and the same-host
 * path. No key, or another key, on the initiator: refused with a clear
 * error on both sides; a target without a key refuses an initiator that
 * asks for authentication, and the initiator refuses to go on without it.
 */
START_TEST(auth_same_key_works_others_refused)
{
    char k1[PATH_MAX], k2[PATH_MAX];
    static char tbuf[65536], l[65536];
    struct teshim_engine *t, *plain, *ini;
    char name[64];
    teshim_segment_t s;

    keys_setup();
    key_write("k1", "first shared secret, 32 bytes!!\n", 0600, k1, sizeof(k1));
    key_write("k2", "other shared secret, 32 bytes!!\n", 0400, k2, sizeof(k2));
    /* a target that lets same-host initiators copy, or asks to copy itself */
    ck_assert_int_eq(create_keyed(TESHIM_TRANSPORT_LOCAL, true, k1, &t), 0);
    memset(tbuf, 0x33, sizeof(tbuf));
    ck_assert_int_eq(teshim_register(t, tbuf, sizeof(tbuf), "cpu", true), 0);
    eng_test_name(name, sizeof(name), teshim_engine_port(t));
    struct teshim_request r = {TESHIM_OP_READ, l, 0, (uint64_t)(uintptr_t)tbuf, sizeof(l)};

    /* auto: engine.local.mode's default, target */
    enum teshim_transport trs[] = {TESHIM_TRANSPORT_TCP, TESHIM_TRANSPORT_LOCAL,
                                   TESHIM_TRANSPORT_AUTO};
    const char *path[] = {"tcp", "local", "local-target"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(create_keyed(trs[i], false, k1, &ini), 0);
        ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
        ck_assert_int_eq(teshim_segment_open(ini, name, &s), 0);
        ck_assert_str_eq(teshim_segment_transport(ini, s), path[i]);
        memset(l, 0, sizeof(l));
        r.segment = s;
        ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED);
        ck_assert_int_eq(l[sizeof(l) - 1], 0x33);
        teshim_engine_destroy(ini);
    }

    struct eng_test_log log = eng_test_log_capture();
    ck_assert_int_eq(create_keyed(TESHIM_TRANSPORT_TCP, false, NULL, &ini), 0);
    int no_key = teshim_segment_open(ini, name, &s);
    teshim_engine_destroy(ini);
    int said_nokey_ini = eng_test_log_lines(&log, "requires authentication");
    int said_nokey_tgt = log_wait(&log, "refused: not authenticated");
    ck_assert_int_eq(create_keyed(TESHIM_TRANSPORT_TCP, false, k2, &ini), 0);
    int other_key = teshim_segment_open(ini, name, &s);
    int said_other_ini = eng_test_log_lines(&log, "authentication failed: the peer's");
    int said_other_tgt = log_wait(&log, "refused our authentication");
    /* keyed initiator, target without a key */
    struct teshim_engine_opts po = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    plain = eng_test_create(&po);
    char pname[64];
    eng_test_name(pname, sizeof(pname), teshim_engine_port(plain));
    int keyless_target = teshim_segment_open(ini, pname, &s);
    int said_keyless_ini = eng_test_log_lines(&log, "has no engine.auth_key_file and refuses");
    int said_keyless_tgt = log_wait(&log, "asks for authentication");
    teshim_engine_destroy(ini);
    teshim_engine_destroy(plain);
    eng_test_log_release(&log);
    ck_assert_int_eq(no_key, -EACCES);
    ck_assert_int_ge(said_nokey_ini, 1);
    ck_assert_int_ge(said_nokey_tgt, 1);
    ck_assert_int_eq(other_key, -EACCES);
    ck_assert_int_ge(said_other_ini, 1);
    ck_assert_int_ge(said_other_tgt, 1);
    ck_assert_int_eq(keyless_target, -ENOKEY);
    ck_assert_int_ge(said_keyless_ini, 1);
    ck_assert_int_ge(said_keyless_tgt, 1);
    teshim_engine_destroy(t);
    keys_teardown();
}
END_TEST

/*
 * Nothing before authentication: a raw peer without the key gets a bare
 * refusal, one asking for authentication gets a nonce and a proof (48
 * bytes, nothing of the target's identity or regions), and a wrong proof
 * gets a refusal and the connection closed.
 */
START_TEST(auth_reveals_nothing_before_the_proof)
{
    char k1[PATH_MAX];
    static char tbuf[4096];
    struct teshim_engine *t;
    struct eng_frame a;
    uint8_t p[ENG_AUTH_BYTES];

    keys_setup();
    key_write("k1", "first shared secret, 32 bytes!!\n", 0600, k1, sizeof(k1));
    ck_assert_int_eq(create_keyed(TESHIM_TRANSPORT_TCP, true, k1, &t), 0);
    ck_assert_int_eq(teshim_register(t, tbuf, sizeof(tbuf), "cpu", true), 0);
    int port = teshim_engine_port(t);

    int fd = raw_connect(port);
    raw_hello_flags(fd, 0, &a);
    ck_assert_int_eq(a.type, ENG_F_AUTH);
    ck_assert_int_eq(a.status, -EACCES);
    ck_assert_uint_eq(a.payload_len, 0);
    ck_assert(drained_to_eof(fd, 5));
    close(fd);

    fd = raw_connect(port);
    raw_hello_flags(fd, ENG_HELLO_AUTH, &a);
    ck_assert_int_eq(a.type, ENG_F_AUTH);
    ck_assert_int_eq(a.status, 0);
    ck_assert_uint_eq(a.payload_len, ENG_AUTH_BYTES);
    ck_assert_int_eq(recv(fd, p, sizeof(p), MSG_WAITALL), (ssize_t)sizeof(p));
    uint64_t addr = (uint64_t)(uintptr_t)tbuf;
    uint32_t pid = (uint32_t)getpid();
    ck_assert_ptr_null(memmem(p, sizeof(p), &addr, sizeof(addr)));
    ck_assert_ptr_null(memmem(p, sizeof(p), &pid, sizeof(pid)));
    struct eng_frame f = {.type = ENG_F_AUTH, .payload_len = ENG_AUTH_BYTES};
    memset(p + ENG_NONCE_BYTES, 0xab, ENG_MAC_BYTES); /* not the proof */
    raw_send(fd, &f, p, sizeof(p));
    ck_assert_int_eq(raw_recv_frame(fd, &a), 0);
    ck_assert_int_eq(a.type, ENG_F_AUTH);
    ck_assert_int_eq(a.status, -EACCES);
    ck_assert(drained_to_eof(fd, 5));
    close(fd);
    teshim_engine_destroy(t);
    keys_teardown();
}
END_TEST

/* ---- finding 6: a peer restarted at the same address ---------------------- */

/*
 * Restarted at the same port with a new registration (at the same
 * address): the old segment's requests fail with -ESTALE and a message
 * naming the segment, on tcp and on the same-host path, never served by
 * the new process (the old engine served them); a reopened segment works.
 */
START_TEST(restarted_peer_fails_stale_until_reopened)
{
    static char tbuf[65536], l[65536];
    enum teshim_transport tr = _i ? TESHIM_TRANSPORT_LOCAL : TESHIM_TRANSPORT_TCP;
    struct tgt t1, t2;
    char name[64];

    target_fork(&t1, tbuf, sizeof(tbuf), true);
    target_fork(&t2, tbuf, sizeof(tbuf), true);
    int port = target_start(&t1, 0);
    struct teshim_engine_opts o = eng_test_opts(tr, false);
    struct teshim_engine *ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, port);
    ck_assert_str_eq(teshim_segment_transport(ini, s), _i ? "local" : "tcp");
    struct teshim_request r = {TESHIM_OP_READ, l, s, (uint64_t)(uintptr_t)tbuf, sizeof(l)};
    ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq((unsigned char)l[0], port & 0xff);

    target_kill(&t1);
    ck_assert_int_eq(target_start(&t2, port), port);
    struct eng_test_log log = eng_test_log_capture();
    struct teshim_task_status st = {0};
    /* the first may still meet the old connection's end */
    for (int i = 0; i < 5; i++) {
        st = eng_test_one(ini, &r);
        ck_assert_int_ne(st.state, TESHIM_TASK_COMPLETED);
        if (st.error == -ESTALE)
            break;
    }
    eng_test_name(name, sizeof(name), port);
    int said = eng_test_log_lines(&log, name);
    int reopen = eng_test_log_lines(&log, "reopen the segment");
    eng_test_log_release(&log);
    ck_assert_int_eq(st.error, -ESTALE);
    ck_assert_int_ge(said, 1);
    ck_assert_int_ge(reopen, 1);

    ck_assert_int_eq(teshim_segment_close(ini, s), 0);
    s = eng_test_open(ini, port);
    r.segment = s;
    memset(l, 0, sizeof(l));
    ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED);
    teshim_engine_destroy(ini);
    target_kill(&t2);
}
END_TEST

/* ---- finding 7: a burst of failing requests ------------------------------ */

/*
 * The peer of a same-host segment dies; 2,000 requests then fail. The old
 * engine logged one error per request; now a cause is logged once per
 * 5 s, and its count comes when the engine is destroyed.
 */
START_TEST(dead_local_peer_logs_a_bounded_number_of_lines)
{
    enum { BURST = 2000, PER = 100 };
    static char tbuf[65536], l[65536];
    struct tgt t1;

    target_fork(&t1, tbuf, sizeof(tbuf), true);
    int port = target_start(&t1, 0);
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_LOCAL, false);
    o.max_inflight = PER;
    teshim_segment_t s;
    struct teshim_engine *ini = ini_open(o, l, sizeof(l), port, "local", &s);
    target_kill(&t1);

    struct eng_test_log log = eng_test_log_capture();
    struct teshim_request *r = calloc(PER, sizeof(*r));
    int failed = 0;
    for (int i = 0; i < PER; i++)
        r[i] = (struct teshim_request){TESHIM_OP_READ, l + i * 64, s,
                                       (uint64_t)(uintptr_t)tbuf + (uint64_t)i * 64, 64};
    for (int k = 0; k < BURST / PER; k++) {
        teshim_batch_t b;
        ck_assert_int_eq(teshim_batch_alloc(ini, PER, &b), 0);
        ck_assert_int_eq(teshim_submit(ini, b, r, PER), 0);
        failed += teshim_batch_wait(ini, b, 20000);
        ck_assert_int_eq(teshim_batch_free(ini, b), 0);
    }
    int lines = eng_test_log_lines(&log, "teshim-engine");
    teshim_engine_destroy(ini);
    int counted = eng_test_log_lines(&log, "(repeated");
    eng_test_log_release(&log);
    printf("dead local peer: %d failed requests, %d log lines\n", failed, lines);
    ck_assert_int_eq(failed, BURST);
    ck_assert_int_le(lines, 10);
    ck_assert_int_ge(counted, 1);
    free(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine_hostile");
    TCase *tc = tcase_create("hostile");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, unread_answers_stay_bounded_and_unregister_returns);
    tcase_add_test(tc, stalled_and_idle_peers_are_closed);
    tcase_add_test(tc, silent_connections_do_not_starve_a_target);
    tcase_add_test(tc, hmac_sha256_known_answers);
    tcase_add_test(tc, auth_key_file_checked);
    tcase_add_test(tc, auth_same_key_works_others_refused);
    tcase_add_test(tc, auth_reveals_nothing_before_the_proof);
    tcase_add_loop_test(tc, restarted_peer_fails_stale_until_reopened, 0, 2);
    tcase_add_test(tc, dead_local_peer_logs_a_bounded_number_of_lines);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
