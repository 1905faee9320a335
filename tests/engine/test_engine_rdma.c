/*
 * The rdma transport against the emulated libibverbs (tests/verbs_emu),
 * run once per personality (IB, RoCE; RDMA_PERS). The suite's environment
 * points LD_LIBRARY_PATH at the emulation and gives it a registry of its
 * own; each case (forked) sets the engine.* / rdma.* parameters it needs
 * in its environment before the engines read the policy.
 */
#include "eng_test.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define REGION (8u << 20)
/* the same in every peer process; application memory for ASan and TSan */
#define PEER_ADDR ((void *)0x7e9000000000ull)

static struct teshim_engine_opts rdma_opts(bool listen)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_RDMA, listen);
    o.no_policy = false; /* the case's TESHIM_* settings apply */
    /* generous on a loaded machine; the peer's death is found sooner
     * (its connection ends) */
    o.request_timeout_ms = 10000;
    return o;
}

static void *region(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    return p;
}

struct pair {
    struct teshim_engine *tgt, *ini;
    char *remote, *local, *back;
    teshim_segment_t seg;
};

static void pair_open(struct pair *p)
{
    struct teshim_engine_opts to = rdma_opts(true), io = rdma_opts(false);

    p->tgt = eng_test_create(&to);
    p->ini = eng_test_create(&io);
    p->remote = region(REGION);
    p->local = region(REGION);
    p->back = region(REGION);
    ck_assert_int_eq(teshim_register(p->tgt, p->remote, REGION, "cpu", true), 0);
    ck_assert_int_eq(teshim_register(p->ini, p->local, REGION, "cpu", false), 0);
    ck_assert_int_eq(teshim_register(p->ini, p->back, REGION, "cpu", false), 0);
    p->seg = eng_test_open(p->ini, teshim_engine_port(p->tgt));
    ck_assert_str_eq(teshim_segment_transport(p->ini, p->seg), "rdma");
}

static void pair_close(struct pair *p)
{
    teshim_engine_destroy(p->ini);
    teshim_engine_destroy(p->tgt);
    munmap(p->remote, REGION);
    munmap(p->local, REGION);
    munmap(p->back, REGION);
}

/* WRITE local[0, len) to remote+off, READ it back into back, compare. */
static void roundtrip(struct pair *p, uint64_t off, size_t len, uint32_t seed)
{
    struct teshim_request w = {TESHIM_OP_WRITE, p->local, p->seg,
                               (uint64_t)(uintptr_t)p->remote + off, len};
    struct teshim_request r = {TESHIM_OP_READ, p->back, p->seg,
                               (uint64_t)(uintptr_t)p->remote + off, len};

    eng_test_fill(p->local, len, seed);
    memset(p->back, 0, len);
    struct teshim_task_status st = eng_test_one(p->ini, &w);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    ck_assert_uint_eq(st.transferred, len);
    ck_assert(eng_test_sum(p->remote + off, len) == eng_test_sum(p->local, len));
    st = eng_test_one(p->ini, &r);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    ck_assert(eng_test_sum(p->back, len) == eng_test_sum(p->local, len));
}

START_TEST(integrity_sizes)
{
    static const size_t sizes[] = {1, 7, 4096, 65535, 65536 + 3, 1u << 20, (3u << 20) + 17};
    struct pair p;

    setenv("TESHIM_ENGINE_RDMA_SLICE_BYTES", "64K", 1);
    pair_open(&p);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        roundtrip(&p, i * 13, sizes[i], (uint32_t)i + 1);
    /* many requests of one batch at once, more slices than a queue pair takes */
    teshim_batch_t b;
    struct teshim_request rq[32];
    eng_test_fill(p.local, REGION, 77);
    for (int i = 0; i < 32; i++)
        rq[i] =
            (struct teshim_request){TESHIM_OP_WRITE, p.local + i * (REGION / 32), p.seg,
                                    (uint64_t)(uintptr_t)p.remote + i * (REGION / 32), REGION / 32};
    ck_assert_int_eq(teshim_batch_alloc(p.ini, 32, &b), 0);
    ck_assert_int_eq(teshim_submit(p.ini, b, rq, 32), 0);
    ck_assert_int_ge(teshim_batch_wait(p.ini, b, 20000), 0);
    for (int i = 0; i < 32; i++) {
        struct teshim_task_status st;
        ck_assert_int_eq(teshim_task_status(p.ini, b, (size_t)i, &st), 0);
        ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    }
    ck_assert_int_eq(teshim_batch_free(p.ini, b), 0);
    ck_assert(eng_test_sum(p.remote, REGION) == eng_test_sum(p.local, REGION));
    pair_close(&p);
}
END_TEST

/* Lines of the emulation's record with every one of the given pieces. */
static int record_lines(const char *path, const char *a, const char *b, const char *c)
{
    char line[4096];
    int n = 0;
    FILE *f = fopen(path, "r");

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f))
        if (strstr(line, a) && (!b || strstr(line, b)) && (!c || strstr(line, c)))
            n++;
    fclose(f);
    return n;
}

static char record_path[64];

static void record_to_file(void)
{
    snprintf(record_path, sizeof(record_path), "/tmp/teshim-rdma-rec-%d", (int)getpid());
    unlink(record_path);
    setenv("VERBS_EMU_RECORD", record_path, 1);
}

/* A pair recorded by the emulation: one round trip of len bytes (and a
 * small registration of the initiator's, when asked), then closed. */
static void recorded_roundtrip(size_t len, bool small_region)
{
    struct pair p;
    char *small = region(4096);

    record_to_file();
    pair_open(&p);
    if (small_region)
        ck_assert_int_eq(teshim_register(p.ini, small, 4096, "cpu", false), 0);
    roundtrip(&p, 100, len, 3);
    pair_close(&p);
    munmap(small, 4096);
}

START_TEST(multi_qp)
{
    setenv("TESHIM_ENGINE_RDMA_QPS_PER_PEER", "4", 1);
    setenv("TESHIM_ENGINE_RDMA_SLICE_BYTES", "64K", 1);
    recorded_roundtrip(4u << 20, false);
    /* 4 queue pairs each side, all taken to RTS */
    ck_assert_int_eq(record_lines(record_path, "\"create_qp", "\"ret\":0", NULL), 8);
    ck_assert_int_eq(record_lines(record_path, "\"modify_qp\"", "\"qp_state\":3", "\"ret\":0"), 8);
    /* RoCE: the RoCE v2 GID of 127.0.0.0/8 (the emulation's index 3); IB:
     * by LID, no GRH */
    const char *pers = getenv("VERBS_EMU_PERSONALITY");
    bool roce = pers && !strcmp(pers, "roce");
    ck_assert_int_eq(record_lines(record_path, "\"qp_state\":2",
                                  roce ? "\"ah_attr.grh.sgid_index\":3" : "\"ah_attr.is_global\":0",
                                  "\"ret\":0"),
                     8);
    unlink(record_path);
}
END_TEST

START_TEST(two_devices)
{
    setenv("VERBS_EMU_DEVICES", "2", 1);
    setenv("TESHIM_ENGINE_RDMA_QPS_PER_PEER", "1", 1);
    setenv("TESHIM_ENGINE_RDMA_SLICE_BYTES", "64K", 1);
    recorded_roundtrip(2u << 20, false);
    /* every region registered on both devices; queue pairs on both */
    ck_assert_int_ge(record_lines(record_path, "\"reg_mr\"", "\"dev\":\"emu0\"", "\"ret\":0"), 4);
    ck_assert_int_ge(record_lines(record_path, "\"reg_mr\"", "\"dev\":\"emu1\"", "\"ret\":0"), 4);
    ck_assert_int_eq(record_lines(record_path, "\"create_qp", "\"dev\":\"emu0\"", "\"ret\":0"), 2);
    ck_assert_int_eq(record_lines(record_path, "\"create_qp", "\"dev\":\"emu1\"", "\"ret\":0"), 2);
    unlink(record_path);
}
END_TEST

START_TEST(out_of_bounds)
{
    struct pair p;

    pair_open(&p);
    uint64_t base = (uint64_t)(uintptr_t)p.remote;
    struct teshim_request bad[] = {
        {TESHIM_OP_WRITE, p.local, p.seg, base + REGION - 100, 4096}, /* straddles the end */
        {TESHIM_OP_READ, p.back, p.seg, base - 4096, 4096},           /* before it */
        {TESHIM_OP_READ, p.back, p.seg, base + REGION + (1u << 20), 8},
    };
    memset(p.remote, 0x5a, REGION);
    for (size_t i = 0; i < 3; i++) {
        struct teshim_task_status st = eng_test_one(p.ini, &bad[i]);
        ck_assert_int_eq(st.state, TESHIM_TASK_FAILED);
        ck_assert_int_eq(st.error, -EFAULT);
    }
    /* nothing written; the segment still works */
    for (size_t i = 0; i < REGION; i += 4096)
        ck_assert_int_eq(p.remote[i], 0x5a);
    roundtrip(&p, 0, 65536, 9);
    pair_close(&p);
}
END_TEST

START_TEST(policy_recorded)
{
    setenv("TESHIM_RDMA_RELAXED_ORDERING", "on", 1);
    setenv("TESHIM_RDMA_TRAFFIC_CLASS", "106", 1);
    setenv("TESHIM_RDMA_SERVICE_LEVEL", "5", 1);
    recorded_roundtrip(65536, true);
    /* data registrations with IBV_ACCESS_RELAXED_ORDERING (1 << 20), the
     * small one without (rdma.relaxed_ordering_min_bytes) */
    char len8m[64], len4k[64];
    snprintf(len8m, sizeof(len8m), "\"length\":%u", REGION);
    snprintf(len4k, sizeof(len4k), "\"length\":4096,");
    int ro = 0;
    char line[4096];
    FILE *f = fopen(record_path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f)) {
        const char *a = strstr(line, "\"access\":");
        if (!strstr(line, "\"reg_mr\"") || !a)
            continue;
        unsigned long acc = strtoul(a + 9, NULL, 10);
        if (strstr(line, len8m))
            ro += (acc & (1ul << 20)) != 0 ? 1 : -100;
        if (strstr(line, len4k))
            ck_assert_uint_eq(acc & (1ul << 20), 0);
    }
    fclose(f);
    ck_assert_int_eq(ro, 3);
    /* RTR of both sides: service level always, traffic class in the GRH (RoCE) */
    ck_assert_int_eq(record_lines(record_path, "\"qp_state\":2", "\"ah_attr.sl\":5", NULL), 4);
    const char *pers = getenv("VERBS_EMU_PERSONALITY");
    ck_assert_int_eq(
        record_lines(record_path, "\"qp_state\":2", "\"ah_attr.grh.traffic_class\":106", NULL),
        pers && !strcmp(pers, "roce") ? 4 : 0);
    unlink(record_path);
}
END_TEST

/*
 * Peers in processes of their own, forked by a spawner that was forked
 * before this process loaded libibverbs: a process forked after that has
 * the library's state without its threads (libibverbs is not fork-safe).
 */
struct spawner {
    int req, ans;
    pid_t pid;
};

/* A target: registers REGION at PEER_ADDR filled from seed, listens on
 * port (0 = any); answers its port and pid on ans, then waits. */
static void peer_main(int port, uint32_t seed, int ans)
{
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    struct teshim_engine_opts o = rdma_opts(true);
    o.listen = listen;
    struct teshim_engine *e = NULL;
    void *mem = mmap(PEER_ADDR, REGION, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    int a[2] = {-1, (int)getpid()};

    if (mem == PEER_ADDR) {
        eng_test_fill(mem, REGION, seed);
        /* the old peer's port may take a moment to be free */
        for (int i = 0; i < 100 && teshim_engine_create(&o, &e); i++)
            usleep(50000);
        if (e && !teshim_register(e, mem, REGION, "cpu", true))
            a[0] = teshim_engine_port(e);
    }
    if (write(ans, a, sizeof(a)) != sizeof(a) || a[0] < 0)
        _exit(2);
    for (;;)
        pause();
}

static struct spawner spawner_start(void)
{
    int rq[2], an[2];
    ck_assert_int_eq(pipe(rq), 0);
    ck_assert_int_eq(pipe(an), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (!pid) {
        int cmd[2];
        signal(SIGCHLD, SIG_IGN); /* peers are reaped at once: gone is gone */
        while (read(rq[0], cmd, sizeof(cmd)) == sizeof(cmd))
            if (!fork())
                peer_main(cmd[0], (uint32_t)cmd[1], an[1]);
        _exit(0);
    }
    close(rq[0]);
    close(an[1]);
    return (struct spawner){rq[1], an[0], pid};
}

static void spawner_stop(struct spawner *sp)
{
    close(sp->req);
    close(sp->ans);
    kill(sp->pid, SIGKILL);
    waitpid(sp->pid, NULL, 0);
}

static int peer_spawn(struct spawner *sp, int port, uint32_t seed, pid_t *pid_p)
{
    int cmd[2] = {port, (int)seed}, a[2];
    struct pollfd pf = {.fd = sp->ans, .events = POLLIN};
    ck_assert_int_eq(write(sp->req, cmd, sizeof(cmd)), (ssize_t)sizeof(cmd));
    ck_assert_int_eq(poll(&pf, 1, 30000), 1); /* a peer that died says nothing */
    ck_assert_int_eq(read(sp->ans, a, sizeof(a)), (ssize_t)sizeof(a));
    ck_assert_int_gt(a[0], 0);
    *pid_p = a[1];
    return a[0];
}

static void peer_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    for (int i = 0; i < 1000 && !kill(pid, 0); i++)
        usleep(1000);
    ck_assert_int_ne(kill(pid, 0), 0);
}

/* READ the peer's first len bytes into buf. */
static struct teshim_task_status peer_read(struct teshim_engine *e, teshim_segment_t s, char *buf,
                                           size_t len)
{
    struct teshim_request r = {TESHIM_OP_READ, buf, s, (uint64_t)(uintptr_t)PEER_ADDR, len};
    return eng_test_one(e, &r);
}

START_TEST(peer_death)
{
    struct spawner sp = spawner_start();
    struct teshim_engine_opts o = rdma_opts(false);
    struct teshim_engine *ini = eng_test_create(&o);
    char *buf = region(REGION), *want = region(REGION);
    pid_t pid;
    int port = peer_spawn(&sp, 0, 11, &pid);

    ck_assert_int_eq(teshim_register(ini, buf, REGION, "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, port);
    ck_assert_str_eq(teshim_segment_transport(ini, s), "rdma");
    struct teshim_task_status st = peer_read(ini, s, buf, REGION);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    eng_test_fill(want, REGION, 11);
    ck_assert(eng_test_sum(buf, REGION) == eng_test_sum(want, REGION));

    /* a batch in flight when the peer dies fails, within the timeout
     * (2 GiB: the peer is killed long before it is through) */
    enum { N = 256 };
    teshim_batch_t b;
    static struct teshim_request rq[N];
    for (int i = 0; i < N; i++)
        rq[i] =
            (struct teshim_request){TESHIM_OP_READ, buf, s, (uint64_t)(uintptr_t)PEER_ADDR, REGION};
    ck_assert_int_eq(teshim_batch_alloc(ini, N, &b), 0);
    ck_assert_int_eq(teshim_submit(ini, b, rq, N), 0);
    uint64_t t0 = (uint64_t)time(NULL);
    peer_kill(pid);
    int failed = teshim_batch_wait(ini, b, 60000);
    ck_assert_int_gt(failed, 0);
    ck_assert_uint_le((uint64_t)time(NULL) - t0, (uint64_t)o.request_timeout_ms / 1000);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(teshim_task_status(ini, b, (size_t)i, &st), 0);
        ck_assert(st.state == TESHIM_TASK_COMPLETED || st.error < 0);
    }
    /* after the death, no request completes (the ones before may) */
    st = peer_read(ini, s, buf, 4096);
    ck_assert_int_ne(st.state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(teshim_batch_free(ini, b), 0);
    teshim_engine_destroy(ini);
    spawner_stop(&sp);
}
END_TEST

START_TEST(peer_restart)
{
    setenv("TESHIM_LOG_LEVEL", "info", 1);
    struct spawner sp = spawner_start();
    struct teshim_engine_opts o = rdma_opts(false);
    struct teshim_engine *ini = eng_test_create(&o);
    char *buf = region(REGION), *want = region(REGION);
    pid_t pid;
    int port = peer_spawn(&sp, 0, 21, &pid);

    ck_assert_int_eq(teshim_register(ini, buf, REGION, "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, port);
    ck_assert_int_eq(peer_read(ini, s, buf, REGION).state, TESHIM_TASK_COMPLETED);
    peer_kill(pid);
    /* a new process on the same address: another instance, other keys */
    ck_assert_int_eq(peer_spawn(&sp, port, 22, &pid), port);
    struct eng_test_log log = eng_test_log_capture();
    struct teshim_task_status st = peer_read(ini, s, buf, REGION);
    for (int i = 0; i < 50 && st.error != -ESTALE; i++) {
        usleep(100000); /* the old connection's end may still be in flight */
        st = peer_read(ini, s, buf, REGION);
    }
    int restarted = eng_test_log_lines(&log, "another engine instance answers");
    eng_test_log_release(&log);
    /* the old segment is never served by the new instance ... */
    ck_assert_int_eq(st.state, TESHIM_TASK_FAILED);
    ck_assert_int_eq(st.error, -ESTALE);
    ck_assert_int_eq(restarted, 1);
    ck_assert_int_eq(peer_read(ini, s, buf, REGION).error, -ESTALE);
    /* ... a reopened one is: new queue pairs, new keys, its data */
    ck_assert_int_eq(teshim_segment_close(ini, s), 0);
    s = eng_test_open(ini, port);
    ck_assert_int_eq(peer_read(ini, s, buf, REGION).state, TESHIM_TASK_COMPLETED);
    eng_test_fill(want, REGION, 22);
    ck_assert(eng_test_sum(buf, REGION) == eng_test_sum(want, REGION));
    peer_kill(pid);
    teshim_engine_destroy(ini);
    spawner_stop(&sp);
}
END_TEST

/* With engine.auth_key_file the rdma transport's own handshake (its HELLO
 * trailer is answered only after the proof is checked) still connects, and
 * an engine without the key is refused before anything is set up. */
START_TEST(authenticated)
{
    char key[] = "/tmp/teshim-rdma-key-XXXXXX";
    int fd = mkstemp(key);
    struct pair p;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "0123456789abcdef0123456789abcdef", 32), 32);
    close(fd);
    setenv("TESHIM_ENGINE_AUTH_KEY_FILE", key, 1);
    pair_open(&p);
    roundtrip(&p, 0, 4096, 3);
    roundtrip(&p, 4096, (1u << 20) + 5, 4);
    unsetenv("TESHIM_ENGINE_AUTH_KEY_FILE");
    struct teshim_engine_opts o = rdma_opts(false);
    struct teshim_engine *nokey = eng_test_create(&o);
    char name[32];
    teshim_segment_t s;
    snprintf(name, sizeof(name), "127.0.0.1:%d", teshim_engine_port(p.tgt));
    ck_assert_int_eq(teshim_segment_open(nokey, name, &s), -EACCES);
    teshim_engine_destroy(nokey);
    pair_close(&p);
    unlink(key);
}
END_TEST

Suite *rdma_suite(void);

/* One case per test, so CK_RUN_CASE=name runs one. */
static void add(Suite *s, const char *name, const TTest *t)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, t);
    suite_add_tcase(s, tc);
}

Suite *rdma_suite(void)
{
    Suite *s = suite_create("engine_rdma");
    add(s, "integrity_sizes", integrity_sizes);
    add(s, "multi_qp", multi_qp);
    add(s, "two_devices", two_devices);
    add(s, "out_of_bounds", out_of_bounds);
    add(s, "policy_recorded", policy_recorded);
    add(s, "peer_death", peer_death);
    add(s, "peer_restart", peer_restart);
    add(s, "authenticated", authenticated);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(rdma_suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
