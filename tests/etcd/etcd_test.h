/* A real etcd for the etcd suites: started on loopback with free ports
 * and a temporary data directory, killed at the end. */
#ifndef TESHIM_ETCD_TEST_H
#define TESHIM_ETCD_TEST_H

#include "eng_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- a real etcd --------------------------------------------------------- */

struct etcd {
    pid_t pid;
    char dir[64];
    char spec[64]; /* etcd://127.0.0.1:PORT */
};

static inline struct teshim_engine_opts opts(const char *spec, const char *name, bool listen)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, listen);
    o.metadata = spec;
    o.local_name = name;
    o.no_policy = false; /* engine.etcd.ttl_s from the environment */
    return o;
}

static inline void etcd_start(struct etcd *s)
{
    char data[128], log[128], curl[64], purl[64];
    int port = free_port(), peer = free_port();
    double t0 = now_s();

    strcpy(s->dir, "/tmp/teshim-etcd-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(s->dir));
    snprintf(data, sizeof(data), "%s/data", s->dir);
    snprintf(log, sizeof(log), "%s/etcd.log", s->dir);
    snprintf(curl, sizeof(curl), "http://127.0.0.1:%d", port);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", peer);
    snprintf(s->spec, sizeof(s->spec), "etcd://127.0.0.1:%d", port);
    s->pid = fork();
    ck_assert_int_ge(s->pid, 0);
    if (!s->pid) {
        char cluster[96];
        snprintf(cluster, sizeof(cluster), "t=%s", purl);
        /* dies with the test, even one that fails before etcd_stop */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) || !freopen(log, "w", stdout) || dup2(1, 2) < 0)
            _exit(126);
        execlp("etcd", "etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", curl,
               "--advertise-client-urls", curl, "--listen-peer-urls", purl,
               "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster, (char *)NULL);
        _exit(127);
    }
    /* ready when an engine can reach it (its probe waits for a leader) */
    for (;;) {
        struct teshim_engine_opts o = opts(s->spec, "probe", false);
        struct teshim_engine *e;
        struct eng_test_log l = eng_test_log_capture();
        int ret = teshim_engine_create(&o, &e);
        eng_test_log_release(&l);
        if (!ret) {
            teshim_engine_destroy(e);
            return;
        }
        ck_assert_msg(now_s() - t0 < 20, "etcd did not start within 20 s (see %s)", log);
        usleep(100000);
    }
}

static inline void etcd_stop(struct etcd *s)
{
    char cmd[96];

    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* The engine.etcd.ttl_s of the engines made from here on (the policy
 * from the environment only). */
static inline void ttl(const char *s)
{
    setenv("TESHIM_CONFIG", "/dev/null", 1);
    setenv("TESHIM_ENGINE_ETCD_TTL_S", s, 1);
}

/* 77 (CTest's SKIP_RETURN_CODE) with the reason when there is no etcd. */
static inline int etcd_missing(void)
{
    if (!system("command -v etcd >/dev/null 2>&1"))
        return 0;
    printf("SKIP: no etcd binary on PATH (Debian package etcd-server; scripts/deps.sh)\n");
    return 77;
}

/* Run the suite's one case of tests; the exit status. */
static inline int etcd_run(const char *name, void (*add)(TCase *tc))
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 90);
    add(tc);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
