/* API validation: every argument checked, every error a negative errno. */
#include "eng_test.h"

#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

START_TEST(create_rejects_bad_options)
{
    struct teshim_engine *e = NULL;
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);

    ck_assert_int_eq(teshim_engine_create(NULL, &e), -EINVAL);
    ck_assert_int_eq(teshim_engine_create(&o, NULL), -EINVAL);
    o.size = 8;
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.metadata = "etcd";
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.io_threads = 65;
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.slice_bytes = 100;
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.transport = (enum teshim_transport)9;
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.same_host_send = (enum teshim_same_host_send)9;
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o.same_host_send = (enum teshim_same_host_send)(TESHIM_SAME_HOST_IO + 1); /* one past */
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o.same_host_send = TESHIM_SAME_HOST_IO; /* the last one is taken */
    ck_assert_int_eq(teshim_engine_create(&o, &e), 0);
    teshim_engine_destroy(e);
    e = NULL; /* the failures below must leave it so */
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.size = TESHIM_ENGINE_OPTS_SIZE_V1 - 1;
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.local_name = "";
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.listen = "no-port-here";
    ck_assert_int_eq(teshim_engine_create(&o, &e), -EINVAL);
    ck_assert_ptr_null(e);
}
END_TEST

/* A caller built before same_host_send passes the older, smaller size: its
 * options are taken, and the field it does not have is not read. */
START_TEST(create_takes_older_opts)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    char *old = malloc(TESHIM_ENGINE_OPTS_SIZE_V1); /* ASan: a read past it is reported */
    struct teshim_engine *e = NULL;

    ck_assert_ptr_nonnull(old);
    o.size = TESHIM_ENGINE_OPTS_SIZE_V1;
    memcpy(old, &o, TESHIM_ENGINE_OPTS_SIZE_V1);
    ck_assert_int_eq(teshim_engine_create((struct teshim_engine_opts *)old, &e), 0);
    ck_assert_ptr_nonnull(e);
    teshim_engine_destroy(e);
    int bad = 65; /* still checked */
    memcpy(old + offsetof(struct teshim_engine_opts, io_threads), &bad, sizeof(bad));
    ck_assert_int_eq(teshim_engine_create((struct teshim_engine_opts *)old, &e), -EINVAL);
    free(old);
}
END_TEST

START_TEST(listen_port_reported_and_exclusive)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    struct teshim_engine *t = eng_test_create(&o), *ini, *t2 = NULL;
    char addr[64];
    int port = teshim_engine_port(t);

    ck_assert_int_gt(port, 0);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_engine_port(ini), -ENOTCONN);
    /* a second engine may not share the port through SO_REUSEPORT */
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    eng_test_name(addr, sizeof(addr), port);
    o.listen = addr;
    ck_assert_int_eq(teshim_engine_create(&o, &t2), -EADDRINUSE);
    teshim_engine_destroy(ini);
    teshim_engine_destroy(t);
}
END_TEST

START_TEST(register_validates)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *e = eng_test_create(&o);
    static char buf[8192];

    ck_assert_int_eq(teshim_register(NULL, buf, 10, "cpu", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, NULL, 10, "cpu", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 0, "cpu", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, (void *)~(uintptr_t)15, 64, "cpu", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 10, NULL, true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 10, "gpu", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 10, "cuda:", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 10, "cuda:x", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 10, "cuda:1x", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 10, "cuda:-1", true), -EINVAL);
    ck_assert_int_eq(teshim_register(e, buf, 4096, "cpu", true), 0);
    ck_assert_int_eq(teshim_register(e, buf + 100, 10, "cpu", false), -EEXIST);
    ck_assert_int_eq(teshim_register(e, buf + 4095, 10, "cpu", false), -EEXIST);
    ck_assert_int_eq(teshim_register(e, buf + 4096, 4096, "cpu", false), 0);
    ck_assert_int_eq(teshim_unregister(e, buf + 1), -ENOENT);
    ck_assert_int_eq(teshim_unregister(e, NULL), -EINVAL);
    ck_assert_int_eq(teshim_unregister(e, buf), 0);
    ck_assert_int_eq(teshim_unregister(e, buf), -ENOENT);
    ck_assert_int_eq(teshim_unregister(e, buf + 4096), 0);
    teshim_engine_destroy(e);
}
END_TEST

START_TEST(cuda_location_needs_a_runtime)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *e = eng_test_create(&o);
    static char buf[4096];
    void *h = dlopen("libcudart.so.13", RTLD_NOW);
    if (!h)
        h = dlopen("libcudart.so.12", RTLD_NOW);
    if (!h)
        h = dlopen("libcudart.so", RTLD_NOW);

    if (h) {
        ck_assert_int_eq(teshim_register(e, buf, sizeof(buf), "cuda:0", true), 0);
    } else {
        ck_assert_int_eq(teshim_register(e, buf, sizeof(buf), "cuda:0", true), -ENODEV);
        ck_assert_int_eq(teshim_register(e, buf, sizeof(buf), "cpu", true), 0);
    }
    teshim_engine_destroy(e);
}
END_TEST

START_TEST(segment_names_validated)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *e;
    teshim_segment_t s;
    static const char *const bad[] = {
        "",        "host",  "host:",       "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:12a",
        "[::1]12", "a:b:c", "127.0.0.1:-5"};

    o.connect_attempts = 2;
    o.connect_timeout_ms = 500;
    e = eng_test_create(&o);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(teshim_segment_open(e, bad[i], &s) == -EINVAL, "%s accepted", bad[i]);
    ck_assert_int_eq(teshim_segment_open(e, NULL, &s), -EINVAL);
    ck_assert_int_eq(teshim_segment_open(e, "127.0.0.1:1", NULL), -EINVAL);
    ck_assert_int_eq(teshim_segment_open(e, "127.0.0.1:1", &s), -ECONNREFUSED);
    ck_assert_int_eq(teshim_segment_close(e, 12345), -EINVAL);
    ck_assert_ptr_null(teshim_segment_transport(e, 7));
    ck_assert_int_eq(teshim_segment_regions(e, 7, NULL, 0), -EINVAL);
    teshim_engine_destroy(e);
}
END_TEST

START_TEST(batches_validated)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *e = eng_test_create(&o);
    struct teshim_task_status st;
    teshim_batch_t b;

    ck_assert_int_eq(teshim_batch_alloc(e, 0, &b), -EINVAL);
    ck_assert_int_eq(teshim_batch_alloc(e, (1u << 20) + 1, &b), -EINVAL);
    ck_assert_int_eq(teshim_batch_alloc(e, 4, NULL), -EINVAL);
    ck_assert_int_eq(teshim_batch_alloc(e, 4, &b), 0);
    ck_assert_int_eq(teshim_task_status(e, b, 0, &st), -ENOENT);
    ck_assert_int_eq(teshim_task_status(e, b, 0, NULL), -EINVAL);
    ck_assert_int_eq(teshim_batch_wait(e, b, 0), 0);
    ck_assert_int_eq(teshim_batch_free(e, b + 1), -EINVAL);
    ck_assert_int_eq(teshim_batch_free(e, b), 0);
    ck_assert_int_eq(teshim_batch_free(e, b), -EINVAL);
    ck_assert_int_eq(teshim_task_status(e, b, 0, &st), -EINVAL);
    teshim_engine_destroy(e);
}
END_TEST

START_TEST(submit_validates_every_request_first)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    struct teshim_engine *t = eng_test_create(&o), *ini;
    static char tbuf[65536], lbuf[65536], unreg[64];
    struct teshim_task_status st;
    struct teshim_region reg;
    teshim_batch_t b;

    ck_assert_int_eq(teshim_register(t, tbuf, sizeof(tbuf), "cpu", true), 0);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, lbuf, sizeof(lbuf), "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, teshim_engine_port(t));
    ck_assert_int_eq(teshim_segment_regions(ini, s, &reg, 1), 1);
    ck_assert_uint_eq(reg.addr, (uintptr_t)tbuf);
    ck_assert_uint_eq(reg.len, sizeof(tbuf));
    ck_assert_int_eq(teshim_batch_alloc(ini, 2, &b), 0);

    struct teshim_request good = {TESHIM_OP_WRITE, lbuf, s, reg.addr, 100};
    struct teshim_request r[2] = {good, good};
    ck_assert_int_eq(teshim_submit(ini, b, NULL, 1), -EINVAL);
    ck_assert_int_eq(teshim_submit(ini, b, r, 0), -EINVAL);
    r[1].opcode = (enum teshim_opcode)7;
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), -EINVAL);
    r[1] = good;
    r[1].length = 0;
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), -EINVAL);
    r[1] = good;
    r[1].local = unreg;
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), -EFAULT);
    r[1] = good;
    r[1].local = lbuf + sizeof(lbuf) - 10; /* runs past the registration */
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), -EFAULT);
    r[1] = good;
    r[1].segment = 99;
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), -EINVAL);
    r[1] = good;
    r[1].remote_offset = UINT64_MAX - 10;
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), -EINVAL);
    ck_assert_int_eq(teshim_submit(ini, 12345, &good, 1), -EINVAL);
    /* nothing of the refused sets was submitted */
    ck_assert_int_eq(teshim_task_status(ini, b, 0, &st), -ENOENT);
    r[1] = good;
    r[1].remote_offset += 4096; /* two writes in flight never overlap */
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), 0);
    ck_assert_int_eq(teshim_submit(ini, b, &good, 1), -ENOSPC);
    ck_assert_int_eq(teshim_batch_wait(ini, b, 10000), 0);
    ck_assert_int_eq(teshim_task_status(ini, b, 1, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    ck_assert_uint_eq(st.transferred, 100);
    ck_assert_int_eq(teshim_batch_free(ini, b), 0);
    ck_assert_int_eq(teshim_segment_close(ini, s), 0);
    ck_assert_int_eq(teshim_segment_close(ini, s), -EINVAL);
    teshim_engine_destroy(ini);
    teshim_engine_destroy(t);
}
END_TEST

START_TEST(policy_table_read_and_overridden)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    struct teshim_engine *t = eng_test_create(&o), *ini;
    struct teshim_engine_stats st;
    static char tbuf[4096];

    ck_assert_int_eq(teshim_register(t, tbuf, sizeof(tbuf), "cpu", true), 0);
    setenv("TESHIM_ENGINE_TCP_CONNS_PER_PEER", "3", 1);
    for (int round = 0; round < 2; round++) {
        o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
        o.no_policy = false;
        o.conns_per_peer = round ? 1 : 0; /* 0 = take the table's (environment) value */
        ini = eng_test_create(&o);
        eng_test_open(ini, teshim_engine_port(t));
        for (int i = 0; i < 500; i++) {
            teshim_engine_stats(ini, &st);
            if (st.connections == (round ? 1u : 3u))
                break;
            usleep(10000);
        }
        ck_assert_uint_eq(st.connections, round ? 1 : 3);
        teshim_engine_destroy(ini);
    }
    unsetenv("TESHIM_ENGINE_TCP_CONNS_PER_PEER");
    ck_assert_int_eq(teshim_engine_stats_size(t, NULL, sizeof(struct teshim_engine_stats)),
                     -EINVAL);
    /* a program built against the first release's struct: nothing written past it */
    {
        struct {
            struct teshim_engine_stats st;
            unsigned char guard[16];
        } old;
        memset(&old, 0xa5, sizeof(old));
        /* the exported function, not the macro: what an old binary calls */
        ck_assert_int_eq((teshim_engine_stats)(t, &old.st), 0);
        for (size_t i = TESHIM_ENGINE_STATS_SIZE_V1; i < sizeof(old); i++)
            ck_assert_uint_eq(((unsigned char *)&old)[i], 0xa5);
        ck_assert_int_eq(teshim_engine_stats_size(t, &old.st, TESHIM_ENGINE_STATS_SIZE_V1 - 8),
                         -EINVAL);
    }
    teshim_engine_destroy(t);
}
END_TEST

/* log.file: the engine's messages go there, not to stderr. */
START_TEST(log_file_receives_the_engine_log)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *e;
    char path[] = "/tmp/teshim-engine-log-XXXXXX", buf[4096];
    int fd = mkstemp(path);
    ssize_t n;

    ck_assert_int_ge(fd, 0);
    setenv("TESHIM_CONFIG", "/dev/null", 1);
    setenv("TESHIM_LOG_FILE", path, 1);
    o.no_policy = false;
    e = eng_test_create(&o);
    unsetenv("TESHIM_LOG_FILE");
    ck_assert_int_eq(teshim_register(e, buf, sizeof(buf), "tpu:0", false), -EINVAL);
    teshim_engine_destroy(e);
    n = read(fd, buf, sizeof(buf) - 1);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_ptr_nonnull(strstr(buf, "location 'tpu:0' is neither cpu nor cuda:N"));
    close(fd);
    unlink(path);
}
END_TEST

/* IPv6: "[addr]:port" names, when the host has an IPv6 loopback. */
START_TEST(ipv6_names_work)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        if (fd >= 0)
            close(fd);
        return; /* no IPv6 loopback here: nothing to test */
    }
    close(fd);
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    o.listen = "[::1]:0";
    struct teshim_engine *t = eng_test_create(&o), *ini;
    static char tb[4096], lb[4096];
    char name[64];
    teshim_segment_t s;

    ck_assert_int_eq(teshim_register(t, tb, sizeof(tb), "cpu", true), 0);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, lb, sizeof(lb), "cpu", false), 0);
    snprintf(name, sizeof(name), "[::1]:%d", teshim_engine_port(t));
    ck_assert_int_eq(teshim_segment_open(ini, name, &s), 0);
    memset(lb, 0x42, sizeof(lb));
    struct teshim_request r = {TESHIM_OP_WRITE, lb, s, (uint64_t)(uintptr_t)tb, sizeof(lb)};
    ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(tb[4095], 0x42);
    teshim_engine_destroy(ini);
    teshim_engine_destroy(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine_api");
    TCase *tc = tcase_create("api");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, create_rejects_bad_options);
    tcase_add_test(tc, create_takes_older_opts);
    tcase_add_test(tc, listen_port_reported_and_exclusive);
    tcase_add_test(tc, register_validates);
    tcase_add_test(tc, cuda_location_needs_a_runtime);
    tcase_add_test(tc, segment_names_validated);
    tcase_add_test(tc, batches_validated);
    tcase_add_test(tc, submit_validates_every_request_first);
    tcase_add_test(tc, policy_table_read_and_overridden);
    tcase_add_test(tc, log_file_receives_the_engine_log);
    tcase_add_test(tc, ipv6_names_work);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
