/*
 * engine.metadata = etcd://...: every test starts a real etcd (Debian's
 * etcd-server) on loopback with free ports and a temporary data directory,
 * and kills it at the end. Two engines in two processes find each other by
 * name, move data with a checksum, and the initiator notices the target's
 * exit: at once on a clean exit (the lease is revoked), after the lease's
 * TTL on kill -9, and a restart (another instance id under the name). etcd
 * down at start is a clear error naming the endpoint; etcd lost later
 * leaves open segments working. Without an etcd binary the suite exits 77
 * (skipped) saying so.
 */
#include "etcd_test.h"

#define BUF (1 << 20)
#define HALF (BUF / 2)

/* ---- the target: another process serving 1 MiB under a name -------------- */

struct target {
    pid_t pid;
    int cmd, ans; /* our ends of its pipes */
    uint64_t sum; /* of its first half */
};

struct answer {
    int ok;
    uint64_t sum;
};

static _Noreturn void target_main(const char *spec, const char *name, uint32_t seed, int cmd,
                                  int ans)
{
    struct teshim_engine_opts o = opts(spec, name, true);
    struct teshim_engine *e;
    char *buf = malloc(BUF), c;
    struct answer a = {0};

    eng_test_fill(buf, BUF, seed);
    a.ok = !teshim_engine_create(&o, &e) && !teshim_register(e, buf, BUF, "cpu", true);
    a.sum = eng_test_sum(buf, HALF);
    if (write(ans, &a, sizeof(a)) != sizeof(a) || !a.ok)
        _exit(1);
    while (read(cmd, &c, 1) == 1) {
        if (c == 'q') { /* clean exit: the engine withdraws its name */
            teshim_engine_destroy(e);
            _exit(0);
        }
        /* 'v': the second half, unregistered meanwhile: unregister waits
         * for the peer requests using it (their writes come before the
         * sum), register orders the sum before the next ones */
        if (teshim_unregister(e, buf))
            _exit(1);
        a.sum = eng_test_sum(buf + HALF, HALF);
        if (teshim_register(e, buf, BUF, "cpu", true))
            _exit(1);
        if (write(ans, &a, sizeof(a)) != sizeof(a))
            _exit(1);
    }
    _exit(0);
}

static void target_start(struct target *t, const char *spec, const char *name, uint32_t seed)
{
    int c[2], a[2];
    struct answer ans;

    ck_assert_int_eq(pipe(c), 0);
    ck_assert_int_eq(pipe(a), 0);
    t->pid = fork();
    ck_assert_int_ge(t->pid, 0);
    if (!t->pid) { /* a fresh process (no engine threads of ours in it) */
        char sd[16], cf[16], af[16];
        close(c[1]);
        close(a[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(sd, sizeof(sd), "%u", seed);
        snprintf(cf, sizeof(cf), "%d", c[0]);
        snprintf(af, sizeof(af), "%d", a[1]);
        execl("/proc/self/exe", "check_engine_etcd", "--target", spec, name, sd, cf, af,
              (char *)NULL);
        _exit(127);
    }
    close(c[0]);
    close(a[1]);
    t->cmd = c[1];
    t->ans = a[0];
    ck_assert_int_eq(read(t->ans, &ans, sizeof(ans)), sizeof(ans));
    ck_assert_msg(ans.ok, "the target engine did not start");
    t->sum = ans.sum;
}

static uint64_t target_second_half(struct target *t)
{
    struct answer a;
    ck_assert_int_eq(write(t->cmd, "v", 1), 1);
    ck_assert_int_eq(read(t->ans, &a, sizeof(a)), sizeof(a));
    return a.sum;
}

static void target_kill(struct target *t)
{
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    close(t->cmd);
    close(t->ans);
}

static void target_quit(struct target *t)
{
    int st;
    ck_assert_int_eq(write(t->cmd, "q", 1), 1);
    ck_assert_int_eq(waitpid(t->pid, &st, 0), t->pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(t->cmd);
    close(t->ans);
}

/* ---- the initiator -------------------------------------------------------- */

struct ini {
    struct teshim_engine *e;
    teshim_segment_t seg;
    uint64_t raddr;
    char *buf;
};

static void ini_open(struct ini *in, const char *spec, const char *name)
{
    struct teshim_engine_opts o = opts(spec, "ini", false);
    struct teshim_region r;

    in->e = eng_test_create(&o);
    in->buf = malloc(BUF);
    ck_assert_int_eq(teshim_register(in->e, in->buf, BUF, "cpu", false), 0);
    ck_assert_int_eq(teshim_segment_open(in->e, name, &in->seg), 0);
    ck_assert_int_eq(teshim_segment_regions(in->e, in->seg, &r, 1), 1);
    ck_assert_uint_eq(r.len, BUF);
    in->raddr = r.addr;
}

/* Read the target's first half, write our pattern over its second half;
 * both checked by checksum. */
static void ini_roundtrip(struct ini *in, struct target *t, uint32_t seed)
{
    struct teshim_request rd = {TESHIM_OP_READ, in->buf, in->seg, in->raddr, HALF};
    struct teshim_request wr = {TESHIM_OP_WRITE, in->buf + HALF, in->seg, in->raddr + HALF, HALF};

    memset(in->buf, 0, HALF);
    ck_assert_int_eq(eng_test_one(in->e, &rd).state, TESHIM_TASK_COMPLETED);
    ck_assert_uint_eq(eng_test_sum(in->buf, HALF), t->sum);
    eng_test_fill(in->buf + HALF, HALF, seed);
    ck_assert_int_eq(eng_test_one(in->e, &wr).state, TESHIM_TASK_COMPLETED);
    ck_assert_uint_eq(target_second_half(t), eng_test_sum(in->buf + HALF, HALF));
}

/* Submit reads until submission itself fails (the watch marked the
 * segment); that error, and the seconds it took, in *secs. */
static int ini_until_refused(struct ini *in, double limit, double *secs)
{
    struct teshim_request rd = {TESHIM_OP_READ, in->buf, in->seg, in->raddr, 4096};
    double t0 = now_s();
    teshim_batch_t b;
    int ret = 0;

    while (!ret && now_s() - t0 < limit) {
        ck_assert_int_eq(teshim_batch_alloc(in->e, 1, &b), 0);
        ret = teshim_submit(in->e, b, &rd, 1);
        if (!ret)
            teshim_batch_wait(in->e, b, 2000);
        ck_assert_int_eq(teshim_batch_free(in->e, b), 0);
        if (!ret)
            usleep(50000);
    }
    *secs = now_s() - t0;
    return ret;
}

static void ini_close(struct ini *in)
{
    teshim_engine_destroy(in->e);
    free(in->buf);
}

/* etcd, a target serving under "tgt" and an initiator that opened it by
 * name and made one round trip, with engine.etcd.ttl_s = ttl_s. */
static void start_all(struct etcd *s, struct target *t, struct ini *in, const char *ttl_s,
                      uint32_t seed)
{
    ttl(ttl_s);
    etcd_start(s);
    target_start(t, s->spec, "tgt", seed);
    ini_open(in, s->spec, "tgt");
    ini_roundtrip(in, t, seed + 1);
}

/* ---- the tests ------------------------------------------------------------ */

START_TEST(by_name_checksum_then_kill9_lease_expiry)
{
    struct etcd s;
    struct target t;
    struct ini in;
    struct eng_test_log l;
    teshim_segment_t again;
    double secs;

    start_all(&s, &t, &in, "2", 11);
    ck_assert_str_eq(teshim_segment_transport(in.e, in.seg), "tcp");
    /* alive past two TTLs: the lease is kept, the name still resolves */
    for (double t0 = now_s(); now_s() - t0 < 4.5;)
        ini_roundtrip(&in, &t, 13);
    ck_assert_int_eq(teshim_segment_open(in.e, "tgt", &again), 0);
    ck_assert_int_eq(teshim_segment_close(in.e, again), 0);
    target_kill(&t);
    l = eng_test_log_capture();
    int ret = ini_until_refused(&in, 15, &secs);
    /* the key goes when the lease (2 s) expires, not before */
    ck_assert_int_eq(ret, -EHOSTDOWN);
    ck_assert_msg(secs >= 1.0 && secs < 12, "noticed after %.2f s (TTL 2 s)", secs);
    ck_assert_int_ge(eng_test_log_lines(&l, "segment tgt: its peer left"), 1);
    ck_assert_int_ge(eng_test_log_lines(&l, "reopen the segment"), 1);
    ck_assert_int_eq(teshim_segment_open(in.e, "tgt", &again), -ENOENT);
    ck_assert_int_ge(eng_test_log_lines(&l, "neither a name published in etcd"), 1);
    eng_test_log_release(&l);
    printf("kill -9 noticed after %.2f s (TTL 2 s)\n", secs);
    ck_assert_int_eq(teshim_segment_close(in.e, in.seg), 0);
    ini_close(&in);
    etcd_stop(&s);
}
END_TEST

START_TEST(clean_exit_is_noticed_at_once)
{
    struct etcd s;
    struct target t;
    struct ini in;
    struct eng_test_log l;
    teshim_segment_t again;
    double secs;

    ttl("30"); /* far longer than the bound below: only the revoke can do it */
    etcd_start(&s);
    target_start(&t, s.spec, "tgt", 21);
    ini_open(&in, s.spec, "tgt");
    ini_roundtrip(&in, &t, 22);
    target_quit(&t);
    l = eng_test_log_capture();
    ck_assert_int_eq(ini_until_refused(&in, 15, &secs), -EHOSTDOWN);
    ck_assert_msg(secs < 5, "a clean exit noticed after %.2f s", secs);
    ck_assert_int_eq(teshim_segment_open(in.e, "tgt", &again), -ENOENT);
    eng_test_log_release(&l);
    printf("clean exit noticed after %.2f s (TTL 30 s)\n", secs);
    ini_close(&in);
    etcd_stop(&s);
}
END_TEST

START_TEST(restart_is_noticed_and_reopen_works)
{
    struct etcd s;
    struct target t, t2;
    struct ini in;
    struct eng_test_log l;
    double secs;

    start_all(&s, &t, &in, "30", 31);
    target_kill(&t);                      /* its key stays (TTL 30 s) ... */
    target_start(&t2, s.spec, "tgt", 33); /* ... until another instance overwrites it */
    l = eng_test_log_capture();
    ck_assert_int_eq(ini_until_refused(&in, 15, &secs), -ESTALE);
    ck_assert_int_ge(eng_test_log_lines(&l, "its peer restarted"), 1);
    eng_test_log_release(&l);
    ck_assert_msg(secs < 5, "a restart noticed after %.2f s", secs);
    ck_assert_int_eq(teshim_segment_close(in.e, in.seg), 0);
    /* reopened: the new instance, its data */
    struct teshim_region r;
    ck_assert_int_eq(teshim_segment_open(in.e, "tgt", &in.seg), 0);
    ck_assert_int_eq(teshim_segment_regions(in.e, in.seg, &r, 1), 1);
    in.raddr = r.addr;
    ini_roundtrip(&in, &t2, 34);
    target_quit(&t2);
    ini_close(&in);
    etcd_stop(&s);
}
END_TEST

START_TEST(etcd_down_at_start_names_the_endpoint)
{
    char spec[64], want[64];
    struct teshim_engine *e;
    int port = free_port();

    ttl("2");
    snprintf(spec, sizeof(spec), "etcd://127.0.0.1:%d", port);
    snprintf(want, sizeof(want), "etcd at 127.0.0.1:%d", port);
    for (int listen = 0; listen < 2; listen++) {
        struct teshim_engine_opts o = opts(spec, "down", listen);
        struct eng_test_log l = eng_test_log_capture();
        ck_assert_int_eq(teshim_engine_create(&o, &e), -ECONNREFUSED);
        ck_assert_int_eq(eng_test_log_lines(&l, want), 1);
        eng_test_log_release(&l);
    }
    /* malformed metadata strings: -EINVAL, each named */
    const char *bad[] = {"etcd://",         "etcd://host", "etcd://h:0",
                         "etcd://h:1,,h:2", "zk://h:1",    "etcd://h:99999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct teshim_engine_opts o = opts(bad[i], "bad", false);
        struct eng_test_log l = eng_test_log_capture();
        ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
        const char *named = i ? strstr(bad[i], "://") + 3 : "etcd:// names no endpoint";
        ck_assert_msg(eng_test_log_lines(&l, named) >= 1, "no error naming '%s'", named);
        eng_test_log_release(&l);
    }
}
END_TEST

START_TEST(etcd_lost_later_keeps_open_segments)
{
    struct etcd s;
    struct target t;
    struct ini in;
    struct eng_test_log l;
    struct teshim_engine *e2;
    teshim_segment_t other, direct;
    char name[64];
    double t0;
    int rounds = 0;

    start_all(&s, &t, &in, "2", 41);
    struct teshim_engine_opts o = opts(s.spec, "e2", true);
    e2 = eng_test_create(&o);
    kill(s.pid, SIGKILL);
    waitpid(s.pid, NULL, 0);
    s.pid = 0;
    l = eng_test_log_capture();
    /* over two TTLs: the target's lease cannot be refreshed, the watch is
     * cut; the segment stays usable and is not marked */
    for (t0 = now_s(); now_s() - t0 < 5; rounds++) {
        ini_roundtrip(&in, &t, 43 + (uint32_t)rounds);
        usleep(100000);
    }
    ck_assert_int_ge(rounds, 5);
    /* a new name cannot be looked up: the error names the endpoint */
    ck_assert_int_eq(teshim_segment_open(in.e, "other", &other), -ECONNREFUSED);
    ck_assert_int_ge(eng_test_log_lines(&l, s.spec + 7), 1);
    /* an address still opens directly (embedded handshake, unwatched) */
    eng_test_name(name, sizeof(name), teshim_engine_port(e2));
    ck_assert_int_eq(teshim_segment_open(in.e, name, &direct), 0);
    ck_assert_int_ge(eng_test_log_lines(&l, "opened by its address, unwatched"), 1);
    ck_assert_int_eq(teshim_segment_close(in.e, direct), 0);
    /* engines close without etcd, bounded: the revoke fails and says so */
    teshim_engine_destroy(e2);
    ck_assert_int_ge(eng_test_log_lines(&l, "goes when its lease expires"), 1);
    eng_test_log_release(&l);
    printf("%d round trips with etcd down\n", rounds);
    target_quit(&t);
    ini_close(&in);
    etcd_stop(&s);
}
END_TEST

START_TEST(host_port_names_open_directly)
{
    struct etcd s;
    struct ini in;
    struct teshim_engine *e2;
    char name[64];
    teshim_segment_t direct;

    ttl("30");
    etcd_start(&s);
    struct teshim_engine_opts o = opts(s.spec, "e2", true);
    e2 = eng_test_create(&o);
    char *b2 = calloc(1, BUF);
    ck_assert_int_eq(teshim_register(e2, b2, BUF, "cpu", true), 0);
    ini_open(&in, s.spec, "e2");
    /* the same engine by its address: not a published name, so the
     * embedded handshake, unwatched */
    eng_test_name(name, sizeof(name), teshim_engine_port(e2));
    ck_assert_int_eq(teshim_segment_open(in.e, name, &direct), 0);
    ck_assert_int_eq(teshim_segment_close(in.e, direct), 0);
    ck_assert_int_eq(teshim_segment_close(in.e, in.seg), 0);
    teshim_engine_destroy(e2);
    free(b2);
    ini_close(&in);
    etcd_stop(&s);
}
END_TEST

/* A record whose address answers with another instance than the one it
 * names (a stale record, or a name taken over by hand) is refused at open:
 * the handshake's instance id must be the published one. */
START_TEST(record_of_another_instance_is_refused)
{
    struct etcd s;
    struct target t;
    struct ini in;
    struct eng_test_log l;
    teshim_segment_t again;
    char cmd[512];

    start_all(&s, &t, &in, "30", 41);
    /* the same record, but another instance id, put by etcdctl */
    snprintf(cmd, sizeof(cmd),
             "e='ETCDCTL_API=3 etcdctl --endpoints=http://%s'; k=/teshim/segments/tgt; "
             "v=$(eval $e get $k --print-value-only) && "
             "v=$(printf %%s \"$v\" | sed 's/\"instance_id\":\"[0-9a-f]*\"/"
             "\"instance_id\":\"00000000000000000000000000000000\"/') && "
             "eval $e put $k \"'$v'\" >/dev/null",
             s.spec + strlen("etcd://"));
    ck_assert_int_eq(system(cmd), 0);
    l = eng_test_log_capture();
    ck_assert_int_eq(teshim_segment_open(in.e, "tgt", &again), -ESTALE);
    ck_assert_int_eq(eng_test_log_lines(&l, "not the instance published under that name"), 1);
    eng_test_log_release(&l);
    ck_assert_int_eq(teshim_segment_close(in.e, in.seg), 0);
    target_quit(&t);
    ini_close(&in);
    etcd_stop(&s);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, by_name_checksum_then_kill9_lease_expiry);
    tcase_add_test(tc, clean_exit_is_noticed_at_once);
    tcase_add_test(tc, restart_is_noticed_and_reopen_works);
    tcase_add_test(tc, etcd_down_at_start_names_the_endpoint);
    tcase_add_test(tc, etcd_lost_later_keeps_open_segments);
    tcase_add_test(tc, host_port_names_open_directly);
    tcase_add_test(tc, record_of_another_instance_is_refused);
}

int main(int argc, char **argv)
{
    if (argc == 7 && !strcmp(argv[1], "--target"))
        target_main(argv[2], argv[3], (uint32_t)atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    if (etcd_missing())
        return 77;
    return etcd_run("etcd", add_tests);
}
