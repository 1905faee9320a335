/*
 * The teshim command: run (on a host program and on Debian's unmodified
 * ibv_rc_pingpong), config (sources, --all, bad --set, --markdown against
 * docs/config.md), stats and doctor.
 */
#include "pol.h"
#include "tshim.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QPS_RTR 2 /* IBV_QPS_RTR */

/* Run build/bin/teshim with the given arguments (NULL-terminated). */
static void teshim(struct tshim_run *r, ...)
{
    const char *argv[64];
    unsigned n = 0;
    va_list ap;

    argv[n++] = tshim_build("bin/teshim");
    va_start(ap, r);
    for (const char *s; (s = va_arg(ap, const char *)) && n < 63;)
        argv[n++] = s;
    va_end(ap);
    argv[n] = NULL;
    tshim_exec(r, argv);
}

/* The row of `teshim config` for key: its value and source columns. */
static bool config_row(const struct tshim_run *r, const char *key, char *value, char *source)
{
    size_t kl = strlen(key);

    for (const char *line = r->out; line && *line;) {
        const char *end = strchr(line, '\n');
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            /* one line only: the header's "profile  NAME" has two words */
            char k[128], one[1024];
            snprintf(one, sizeof(one), "%.*s", (int)(end ? (size_t)(end - line) : strlen(line)),
                     line);
            if (sscanf(one, "%127s %127s %127s", k, value, source) == 3)
                return true;
        }
        line = end ? end + 1 : NULL;
    }
    return false;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* ---- teshim run ------------------------------------------------------- */

START_TEST(run_rewrites_unmodified_host)
{
    struct tshim_run r;
    const char *host = tshim_build("bin/tshim_host");

    /* No LD_PRELOAD in the environment: teshim run adds it. */
    tshim_init(&r, false);
    tshim_unenv(&r, "TESHIM_STATS_DIR");
    teshim(&r, "run", "--set", "rdma.relaxed_ordering=on", "--set", "rdma.traffic_class=106",
           "--stats-dir", r.stats, "--", host, "reg_rt:1M:7", "reg_const:1M", "qp:grh", NULL);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr_iova2", 0), "access") ==
                     (7u | TSHIM_RO));
    tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr", 0), "access") == (7u | TSHIM_RO));
    const struct tsc_json *rtr = NULL;
    for (unsigned i = 0; i < tshim_rec_count(&r, "modify_qp", NULL); i++) {
        const struct tsc_json *j = tshim_rec(&r, "modify_qp", NULL, i);
        if (tshim_num(j, "qp_state") == QPS_RTR)
            rtr = j;
    }
    tshim_ck(&r, rtr != NULL);
    tshim_ck(&r, tshim_num(rtr, "ah_attr.grh.traffic_class") == 106);
    tshim_ck(&r, tshim_out(&r, "qp:grh", "attr_unchanged") == 1);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, "ibv_reg_mr_iova2@IBVERBS_1.8", "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rep, "ibv_reg_mr@IBVERBS_1.1", "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rep, "ibv_modify_qp@IBVERBS_1.1", "injected"), 1);
    tsc_json_free(rep);
}
END_TEST

START_TEST(run_keeps_other_preloads_and_status)
{
    struct tshim_run r;

    /* An existing LD_PRELOAD stays, after libteshim.so. */
    tshim_init(&r, false);
    tshim_env(&r, "LD_PRELOAD", "libm.so.6");
    teshim(&r, "run", "--", "/bin/sh", "-c", "echo \"preload=$LD_PRELOAD\"; exit 7", NULL);
    tshim_ck(&r, r.status == 7);
    char want[1200];
    snprintf(want, sizeof(want), "preload=%s:libm.so.6\n", tshim_build("lib/libteshim.so"));
    tshim_ck(&r, strstr(r.out, want) != NULL);

    /* teshim run inside teshim run: the library is preloaded once. */
    tshim_init(&r, false);
    teshim(&r, "run", "--", tshim_build("bin/teshim"), "run", "--", "/bin/sh", "-c",
           "echo \"preload=$LD_PRELOAD\"", NULL);
    tshim_ck(&r, r.status == 0);
    snprintf(want, sizeof(want), "preload=%s\n", tshim_build("lib/libteshim.so"));
    tshim_ck(&r, strstr(r.out, want) != NULL);

    /* A command that does not exist. */
    tshim_init(&r, false);
    teshim(&r, "run", "--", "/nonexistent/teshim-test-cmd", NULL);
    tshim_ck(&r, r.status == 127);
}
END_TEST

START_TEST(run_rejects_bad_set)
{
    struct tshim_run r;
    const char *marker;

    tshim_init(&r, false);
    marker = tshim_path(&r, "ran");
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "touch %s", marker);
    teshim(&r, "run", "--set", "rdma.traffic_class=256", "--", "/bin/sh", "-c", cmd, NULL);
    tshim_ck(&r, r.status == 2);
    tshim_ck(&r, strstr(r.err, "rdma.traffic_class") && strstr(r.err, "256") &&
                     strstr(r.err, "0..255"));
    tshim_ck(&r, access(marker, F_OK) != 0);
}
END_TEST

/* A free TCP port on the loopback (bound and released). */
static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);

    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* Whether something listens on TCP port (any address), from /proc/net. */
static bool listening(int port)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    char line[512], want[16];

    snprintf(want, sizeof(want), ":%04X", port);
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f)
            continue;
        while (fgets(line, sizeof(line), f)) {
            char local[128], remote[128], st[8];
            const char *colon;
            if (sscanf(line, "%*s %127s %127s %7s", local, remote, st) == 3 &&
                (colon = strrchr(local, ':')) && strcmp(colon, want) == 0 &&
                strcmp(st, "0A") == 0) {
                fclose(f);
                return true;
            }
        }
        fclose(f);
    }
    return false;
}

/*
 * Debian's unmodified ibv_rc_pingpong, server and client on the loopback,
 * both under `teshim run`: the 1 MiB registration carries RO and the RTR
 * transition the traffic class, in each process, and the exchange works.
 */
START_TEST(run_rewrites_ibv_rc_pingpong)
{
    struct tshim_run r;
    char port[16];

    if (access("/usr/bin/ibv_rc_pingpong", X_OK) != 0) {
        fprintf(stderr, "ibv_rc_pingpong not installed (ibverbs-utils): skipped\n");
        return;
    }
    if (strcmp(TSHIM_SANITIZE, "thread") == 0) {
        fprintf(stderr, "ibv_rc_pingpong cannot load a ThreadSanitizer build: skipped\n");
        return;
    }
    tshim_init(&r, false);
    snprintf(port, sizeof(port), "%d", free_port());
    const char *teshim_bin = tshim_build("bin/teshim");
    const char *server[] = {teshim_bin, "run",
                            "--set",    "rdma.relaxed_ordering=on",
                            "--set",    "rdma.traffic_class=106",
                            "--",       "/usr/bin/ibv_rc_pingpong",
                            "-g",       "0",
                            "-s",       "1048576",
                            "-n",       "5",
                            "-p",       port,
                            NULL};
    const char *client[] = {teshim_bin,  "run",
                            "--set",     "rdma.relaxed_ordering=on",
                            "--set",     "rdma.traffic_class=106",
                            "--",        "/usr/bin/ibv_rc_pingpong",
                            "-g",        "0",
                            "-s",        "1048576",
                            "-n",        "5",
                            "-p",        port,
                            "127.0.0.1", NULL};
    pid_t spid = fork();
    ck_assert_int_ge(spid, 0);
    if (spid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int o = open(tshim_path(&r, "server.out"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || dup2(o, 1) < 0 || dup2(o, 2) < 0)
            _exit(126);
        execve(server[0], (char *const *)server, r.env);
        _exit(127);
    }
    struct timespec pause = {0, 20 * 1000 * 1000};
    for (int i = 0; i < 500 && !listening(atoi(port)); i++)
        nanosleep(&pause, NULL);
    tshim_exec(&r, client);
    /* The server ends once the exchange is over; a hung one is killed. */
    int st = 0;
    pid_t done = 0;
    for (int i = 0; i < 1000 && r.status == 0 && (done = waitpid(spid, &st, WNOHANG)) == 0; i++)
        nanosleep(&pause, NULL);
    if (done != spid) {
        kill(spid, SIGKILL);
        ck_assert_int_eq(waitpid(spid, &st, 0), spid);
        st = -1;
    }
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    tshim_ck(&r, strstr(r.out, "iters in") != NULL);

    unsigned nreg = tshim_rec_count(&r, "reg_mr", NULL), nrtr = 0;
    tshim_ck(&r, nreg == 2);
    for (unsigned i = 0; i < nreg; i++) {
        const struct tsc_json *j = tshim_rec(&r, "reg_mr", NULL, i);
        tshim_ck(&r, tshim_num(j, "length") == 1048576);
        tshim_ck(&r, (tshim_num(j, "access") & TSHIM_RO) != 0);
    }
    for (unsigned i = 0; i < tshim_rec_count(&r, "modify_qp", NULL); i++) {
        const struct tsc_json *j = tshim_rec(&r, "modify_qp", NULL, i);
        if (tshim_num(j, "qp_state") != QPS_RTR)
            continue;
        nrtr++;
        tshim_ck(&r, tshim_num(j, "ah_attr.is_global") == 1);
        tshim_ck(&r, tshim_num(j, "ah_attr.grh.traffic_class") == 106);
    }
    tshim_ck(&r, nrtr == 2);
    /* One report per process, each showing its injections. */
    tshim_ck(&r, tshim_report_count(&r) == 2);
    for (unsigned i = 0; i < nreg; i++) {
        const struct tsc_json *j = tshim_rec(&r, "reg_mr", NULL, i);
        struct tsc_json *rep = tshim_report(&r, (pid_t)tshim_num(j, "pid"));
        ck_assert_str_eq(tsc_json_str(rep, "program", ""), "ibv_rc_pingpong");
        const char *entry = tsc_json_str(j, "entry", "");
        const char *hook = strcmp(entry, "ibv_reg_mr") == 0 ? "ibv_reg_mr@IBVERBS_1.1"
                                                            : "ibv_reg_mr_iova2@IBVERBS_1.8";
        ck_assert_int_eq(tshim_ctr(rep, hook, "injected"), 1);
        ck_assert_int_eq(tshim_ctr(rep, "ibv_modify_qp@IBVERBS_1.1", "injected"), 1);
        tsc_json_free(rep);
    }
    /* And teshim stats shows both processes in arm B. */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "%s stats %s/*.json", teshim_bin, r.stats);
    const char *sh[] = {"/bin/sh", "-c", cmd, NULL};
    tshim_exec(&r, sh);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, tshim_strcount(r.out, "ibv_rc_pingpong pid ") == 2);
    tshim_ck(&r, strstr(r.out, "arm B (2 processes)") != NULL);
}
END_TEST

/* ---- teshim config ---------------------------------------------------- */

START_TEST(config_sources)
{
    struct tshim_run r;
    char value[128], source[128];

    tshim_init(&r, false);
    write_file(tshim_path(&r, "c.conf"), "rdma.relaxed_ordering = auto\nrollout.salt = canary\n");
    tshim_env(&r, "TESHIM_CONFIG", tshim_path(&r, "c.conf"));
    tshim_env(&r, "TESHIM_RDMA_SERVICE_LEVEL", "3");
    teshim(&r, "config", "--profile", "observe", "--set", "rdma.traffic_class=7", NULL);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, config_row(&r, "mode", value, source));
    tshim_ck(&r, strcmp(value, "observe") == 0 && strcmp(source, "profile") == 0);
    tshim_ck(&r, config_row(&r, "rdma.relaxed_ordering", value, source));
    tshim_ck(&r, strcmp(value, "auto") == 0 && strcmp(source, "file") == 0);
    tshim_ck(&r, config_row(&r, "rollout.salt", value, source));
    tshim_ck(&r, strcmp(value, "canary") == 0 && strcmp(source, "file") == 0);
    tshim_ck(&r, config_row(&r, "rdma.service_level", value, source));
    tshim_ck(&r, strcmp(value, "3") == 0 && strcmp(source, "env") == 0);
    /* --set and --profile travel as TESHIM_* but are named as given. */
    tshim_ck(&r, config_row(&r, "rdma.traffic_class", value, source));
    tshim_ck(&r, strcmp(value, "7") == 0 && strcmp(source, "--set") == 0);
    tshim_ck(&r, config_row(&r, "profile", value, source));
    tshim_ck(&r, strcmp(value, "observe") == 0 && strcmp(source, "--profile") == 0);
    tshim_ck(&r, strstr(r.out, "gate         observe") != NULL);
    /* Defaults are listed only with --all. */
    tshim_ck(&r, !config_row(&r, "log.level", value, source));

    /* --program: the gate the shim would take for that program. */
    tshim_env(&r, "TESHIM_SCOPE_PROGRAMS", "vllm*");
    teshim(&r, "config", "--program", "vllm-worker", NULL);
    tshim_ck(&r, strstr(r.out, "program      vllm-worker") != NULL);
    tshim_ck(&r, strstr(r.out, "gate         enforce") != NULL);
    teshim(&r, "config", "--program", "python3", NULL);
    tshim_ck(&r, strstr(r.out, "gate         out-of-scope") != NULL);
    tshim_unenv(&r, "TESHIM_SCOPE_PROGRAMS");

    teshim(&r, "config", "--all", NULL);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, config_row(&r, "log.level", value, source));
    tshim_ck(&r, strcmp(value, "warn") == 0 && strcmp(source, "default") == 0);
    tshim_ck(&r, config_row(&r, "rdma.traffic_class", value, source));
    tshim_ck(&r, strcmp(value, "(unset)") == 0 && strcmp(source, "default") == 0);
    tshim_ck(&r, config_row(&r, "rdma.relaxed_ordering", value, source));
    tshim_ck(&r, strcmp(source, "file") == 0);
    /* Every parameter has a row. */
    unsigned rows = 0;
    for (int p = 0; p < POL_NPARAMS; p++)
        rows += config_row(&r, pol_params[p].key, value, source);
    tshim_ck(&r, rows == POL_NPARAMS);
}
END_TEST

START_TEST(config_rejects_bad_set)
{
    static const struct {
        const char *set, *msg1, *msg2;
    } cases[] = {
        {"rdma.traffic_class=300", "out of range", "0..255"},
        {"rdma.traffic_class=abc", "not a number", "0..255"},
        {"rdma.relaxed_ordering=sometimes", "sometimes", "off|on|auto"},
        {"disable=maybe", "maybe", "on or off"},
        {"rdma.trafic_class=1", "unknown key", "did you mean 'rdma.traffic_class'"},
        {"rdma.traffic_class", "expected key=value", "rdma.traffic_class"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tshim_run r;
        tshim_init(&r, false);
        teshim(&r, "config", "--set", cases[i].set, NULL);
        tshim_ck(&r, r.status == 2);
        tshim_ck(&r, strstr(r.err, cases[i].msg1) != NULL);
        tshim_ck(&r, strstr(r.err, cases[i].msg2) != NULL);
        tshim_ck(&r, strstr(r.out, "KEY") == NULL);
    }
}
END_TEST

/* docs/config.md is generated; CI fails here when it is stale. */
START_TEST(config_markdown_matches_docs)
{
    struct tshim_run r;
    FILE *f = fopen(tshim_source("docs/config.md"), "r");
    static char doc[1 << 18];
    size_t n;

    ck_assert_msg(f != NULL, "docs/config.md is missing");
    n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    tshim_init(&r, false);
    teshim(&r, "config", "--markdown", NULL);
    tshim_ck(&r, r.status == 0);
    ck_assert_msg(strcmp(r.out, doc) == 0, "docs/config.md is stale: regenerate it with "
                                           "`build/bin/teshim config --markdown > docs/config.md`");
    for (int p = 0; p < POL_NPARAMS; p++)
        ck_assert_msg(strstr(doc, pol_params[p].env) != NULL, "%s missing", pol_params[p].env);
}
END_TEST

/* ---- teshim stats and doctor ------------------------------------------ */

START_TEST(stats_summarises_reports)
{
    struct tshim_run r;
    char pidtext[64];

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_RDMA_RELAXED_ORDERING", "on");
    tshim_host(&r, "reg_rt:1M:7", "reg_rt:1M:7", "reg_rt:4K:7", "fork", NULL);
    pid_t child = (pid_t)tshim_out(&r, "fork", "child");
    char parent_path[600], child_path[600];
    snprintf(parent_path, sizeof(parent_path), "%s/teshim-tshim_host-%d.json", r.stats, (int)r.pid);
    snprintf(child_path, sizeof(child_path), "%s/teshim-tshim_host-%d.json", r.stats, (int)child);

    struct tshim_run s;
    tshim_init(&s, false);
    teshim(&s, "stats", parent_path, NULL);
    tshim_ck(&s, s.status == 0);
    snprintf(pidtext, sizeof(pidtext), "tshim_host pid %d", (int)r.pid);
    tshim_ck(&s, strstr(s.out, pidtext) != NULL);
    tshim_ck(&s, strstr(s.out, "arm B, gate enforce") != NULL);
    tshim_ck(&s, strstr(s.out, "teshim " TESHIM_VERSION) != NULL);
    /* The columns are explained, and the outcomes add up to CALLS. */
    tshim_ck(&s, strstr(s.out, "legend: CALLS = INJECTED") != NULL);
    tshim_ck(&s, strstr(s.out, "WOULDBLK") != NULL);
    tshim_ck(&s, strstr(s.out, "do not add up") == NULL);
    /* The hook's row: calls 3, injected 2, observed 0, skipped 0, n/a 1,
     * fallback 0, would-block 0, errors 0, bytes 2 MiB. */
    const char *row = strstr(s.out, "ibv_reg_mr_iova2@IBVERBS_1.8");
    tshim_ck(&s, row != NULL);
    long long c[9] = {0};
    tshim_ck(&s, sscanf(row, "%*s %lld %lld %lld %lld %lld %lld %lld %lld %lld", &c[0], &c[1],
                        &c[2], &c[3], &c[4], &c[5], &c[6], &c[7], &c[8]) == 9);
    tshim_ck(&s, c[0] == 3 && c[1] == 2 && c[2] == 0 && c[3] == 0 && c[4] == 1 && c[5] == 0 &&
                     c[6] == 0 && c[7] == 0 && c[8] == 2 << 20);
    /* Hooks that were never called are left out. */
    tshim_ck(&s, strstr(s.out, "ibv_modify_qp@IBVERBS_1.1") == NULL);

    /* Two reports: totals per arm. */
    teshim(&s, "stats", parent_path, child_path, NULL);
    tshim_ck(&s, s.status == 0);
    tshim_ck(&s, strstr(s.out, "totals") != NULL);
    tshim_ck(&s, strstr(s.out, "arm B (2 processes)") != NULL);

    /* No report given: a usage error. */
    teshim(&s, "stats", NULL);
    tshim_ck(&s, s.status == 2);
    tshim_ck(&s, strstr(s.err, "no report given") != NULL);

    /* Not a report. */
    write_file(tshim_path(&s, "x.json"), "{\"a\": 1}\n");
    teshim(&s, "stats", tshim_path(&s, "x.json"), NULL);
    tshim_ck(&s, s.status != 0);
    tshim_ck(&s, strstr(s.err, "not a teshim report") != NULL);

    /* A report whose errors overlap a verdict (teshim before would_block):
     * the reader is told the columns do not add up. */
    write_file(tshim_path(&s, "old.json"),
               "{\"arm\": \"B\", \"hooks\": {\"accept@GLIBC_2.2.5\": {\"calls\": 2, "
               "\"skipped_by_policy\": 2, \"errors\": 2}}}\n");
    teshim(&s, "stats", tshim_path(&s, "old.json"), NULL);
    tshim_ck(&s, s.status == 0);
    tshim_ck(&s, strstr(s.out, "1 hook whose outcomes do not add up to CALLS") != NULL);
}
END_TEST

/* doctor's exit status follows its warnings (the memlock limit of the
 * machine decides); the content is what is checked. */
START_TEST(doctor_reports)
{
    struct tshim_run r;
    unsigned char cfg[256] = {0};

    tshim_init(&r, false);
    /* A fake sysfs: emu0's PCIe function with RlxdOrd set, and a driver
     * traffic-class override on port 1. */
    char dir[700];
    snprintf(dir, sizeof(dir),
             "mkdir -p %s/sys/class/infiniband/emu0/device "
             "%s/sys/class/infiniband/emu0/tc/1",
             r.dir, r.dir);
    ck_assert_int_eq(system(dir), 0);
    cfg[0x06] = 0x10;
    cfg[0x34] = 0x40;
    cfg[0x40] = 0x10; /* PCI Express capability */
    cfg[0x48] = 0x10; /* Device Control: RlxdOrd */
    FILE *f = fopen(tshim_path(&r, "sys/class/infiniband/emu0/device/config"), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(cfg, 1, sizeof(cfg), f), sizeof(cfg));
    fclose(f);
    write_file(tshim_path(&r, "sys/class/infiniband/emu0/tc/1/traffic_class"), "106\n");
    tshim_env(&r, "TESHIM_RDMA_SYSFS_ROOT", tshim_path(&r, "sys"));
    tshim_env(&r, "TESHIM_DISABLE", "1");
    teshim(&r, "doctor", tshim_build("bin/tshim_host"), NULL);
    tshim_ck(&r, r.status == 0 || r.status == 1);
    tshim_ck(&r, strstr(r.out, "teshim " TESHIM_VERSION) != NULL);
    tshim_ck(&r, strstr(r.out, tshim_build("lib/libteshim.so")) != NULL);
    tshim_ck(&r, strstr(r.out, "ibv_reg_mr_iova2@IBVERBS_1.8: present") != NULL);
    tshim_ck(&r, strstr(r.out, "device emu0") != NULL);
    tshim_ck(&r, strstr(r.out, "PCIe relaxed ordering: enabled") != NULL);
    tshim_ck(&r, strstr(r.out, "sysfs traffic_class override '106'") != NULL);
    tshim_ck(&r, strstr(r.out, "kill switch is on") != NULL);
    tshim_ck(&r, strstr(r.out, "memlock: ") != NULL);
    tshim_ck(&r, strstr(r.out, "libibverbs.so.1") != NULL);
    /* At least the override and the kill switch: the status says so. */
    tshim_ck(&r, r.status == 1);
    tshim_ck(&r, strstr(r.out, "warnings\n") != NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("teshim_cmd");
    TCase *run = tcase_create("run"), *config = tcase_create("config"),
          *other = tcase_create("stats_doctor");
    SRunner *sr;
    int failed;

    tcase_set_timeout(run, 60);
    tcase_add_test(run, run_rewrites_unmodified_host);
    tcase_add_test(run, run_keeps_other_preloads_and_status);
    tcase_add_test(run, run_rejects_bad_set);
    tcase_add_test(run, run_rewrites_ibv_rc_pingpong);
    suite_add_tcase(s, run);
    tcase_add_test(config, config_sources);
    tcase_add_test(config, config_rejects_bad_set);
    tcase_add_test(config, config_markdown_matches_docs);
    suite_add_tcase(s, config);
    tcase_add_test(other, stats_summarises_reports);
    tcase_add_test(other, doctor_reports);
    suite_add_tcase(s, other);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
