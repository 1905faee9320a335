/* teshim demo: the steps, each saying why it skips what it cannot run. */
#include "tsc.h"
#include "tsc_demo_int.h"
#include "tsc_json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* `teshim stats` of every report in dir. */
static void show_reports(struct demo *d, const char *dir)
{
    struct args a = {0};
    char *paths[DEMO_MAX_ARGS];
    int np = 0;
    DIR *dh = opendir(dir);
    struct dirent *e;

    demo_add(&a, d->self);
    demo_add(&a, "stats");
    while (dh && (e = readdir(dh)) && np < DEMO_MAX_ARGS - 4) {
        size_t n = strlen(e->d_name);
        if (n > 5 && strcmp(e->d_name + n - 5, ".json") == 0 &&
            asprintf(&paths[np], "%s/%s", dir, e->d_name) >= 0)
            demo_add(&a, paths[np++]);
    }
    if (dh)
        closedir(dh);
    if (!np) {
        printf("-> no teshim report was written in %s\n", dir);
        return;
    }
    demo_run_shown(a.v, NULL, 20, "teshim stats");
    for (int i = 0; i < np; i++)
        free(paths[i]);
}

/* What the emulated libibverbs recorded: each registration's access flags
 * and each QP transition with an address vector, one line each. */
static void show_record(const char *path, unsigned max)
{
    FILE *f = fopen(path, "re");
    char line[8192], err[128];
    unsigned shown = 0;

    if (!f) {
        printf("-> no record at %s\n", path);
        return;
    }
    printf("what the emulated libibverbs received (from %s):\n", path);
    while (fgets(line, sizeof(line), f) && shown < max) {
        struct tsc_json *j = tsc_json_parse(line, err, sizeof(err));
        if (!j)
            continue;
        const char *call = tsc_json_str(j, "call", "");
        if (strcmp(call, "reg_mr") == 0) {
            unsigned access = (unsigned)tsc_json_num(j, "access", 0);
            printf("   pid %-7.0f %-18s %9.0f bytes  access 0x%06x%s\n", tsc_json_num(j, "pid", 0),
                   tsc_json_str(j, "entry", call), tsc_json_num(j, "length", 0), access,
                   access & (1u << 20) ? "  <- IBV_ACCESS_RELAXED_ORDERING" : "");
            shown++;
        } else if (strcmp(call, "modify_qp") == 0 && tsc_json_get(j, "ah_attr.is_global")) {
            printf("   pid %-7.0f ibv_modify_qp      to state %.0f, is_global %.0f, traffic_class "
                   "%.0f, sl %.0f\n",
                   tsc_json_num(j, "pid", 0), tsc_json_num(j, "qp_state", -1),
                   tsc_json_num(j, "ah_attr.is_global", 0),
                   tsc_json_num(j, "ah_attr.grh.traffic_class", 0),
                   tsc_json_num(j, "ah_attr.sl", 0));
            shown++;
        }
        tsc_json_free(j);
    }
    fclose(f);
}

static void show_live(struct demo *d)
{
    struct args live = {0};

    demo_add(&live, d->self);
    demo_add(&live, "stats");
    demo_add(&live, "--live");
    demo_add(&live, "--count");
    demo_add(&live, "1");
    d->live_shown = demo_run_shown(live.v, NULL, 10, "teshim stats --live");
} /* Step 1 with the emulated libibverbs: ibv_rc_pingpong, server and client,
   * under `teshim run` with relaxed ordering and traffic class on. */
bool demo_step_emulated_rdma(struct demo *d)
{
    char port[16], rec[4200], stats[4200], log[4200], benv[4300];
    struct args s = {0}, c = {0};

    demo_heading(d, "an unmodified RDMA program on the emulated RDMA device (RoCE)");
    if (!d->emu_script[0]) {
        printf("skipped: scripts/emulated-verbs is not in this tree (%s)\n",
               d->src[0] ? d->src : "source tree unknown");
        return false;
    }
    if (!d->have_pingpong) {
        printf("skipped: ibv_rc_pingpong (Debian package ibverbs-utils) is not installed\n");
        return false;
    }
    snprintf(port, sizeof(port), "%d", demo_free_port());
    snprintf(rec, sizeof(rec), "%s/verbs-record.jsonl", d->tmp);
    snprintf(stats, sizeof(stats), "%s/rdma-stats", d->tmp);
    snprintf(log, sizeof(log), "%s/rdma-server.log", d->tmp);
    snprintf(benv, sizeof(benv), "TESHIM_BUILD_DIR=%s", d->build);
    char *env[] = {benv, NULL};
    const char *pre[] = {d->emu_script,
                         "--roce",
                         "--record",
                         rec,
                         "--",
                         d->self,
                         "run",
                         "--set",
                         "rdma.relaxed_ordering=on",
                         "--set",
                         "rdma.traffic_class=106",
                         "--stats-dir",
                         stats,
                         "--",
                         "ibv_rc_pingpong",
                         "-g",
                         "0",
                         "-s",
                         "1048576",
                         "-n",
                         "20",
                         "-p",
                         port};
    for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++) {
        demo_add(&s, pre[i]);
        demo_add(&c, pre[i]);
    }
    demo_add(&c, "127.0.0.1");
    printf("ibv_rc_pingpong (Debian's ibverbs-utils, unmodified) with 1 MiB messages over the\n"
           "emulated RoCE device; teshim adds relaxed ordering to its registrations and\n"
           "traffic class 106 to its QP transitions. Server (output in %s):\n",
           log);
    demo_show_cmd(s.v, env);
    pid_t srv = demo_spawn(s.v, env, log);
    if (srv < 0)
        return false;
    if (!demo_wait_listen(srv, atoi(port), 60)) {
        printf("-> the server did not start listening on port %s (see %s)\n", port, log);
        demo_stop(srv);
        return false;
    }
    printf("while the server waits for its client, the live view shows it (its 1 MiB\n"
           "registration already carries relaxed ordering):\n");
    show_live(d);
    printf("client:\n");
    bool ok = demo_run_shown(c.v, env, 30, "the ibv_rc_pingpong client");
    int st = demo_wait_limit(srv, 10);
    if (st == -1)
        printf("-> the server did not finish and was stopped\n");
    printf("\nteshim's reports of both processes:\n");
    show_reports(d, stats);
    show_record(rec, 8);
    return ok;
}

/* Step 1 with the socket hooks: iperf3 under the TCP policy. */
bool demo_step_tcp(struct demo *d)
{
    char port[16], stats[4200], log[4200], ports_set[64];
    struct args s = {0}, c = {0};

    demo_heading(d, "an unmodified TCP program (iperf3) under the socket policies");
    if (!d->sock_hooks) {
        printf("skipped: this build of libteshim.so has no socket hooks (connect, accept...)\n");
        return false;
    }
    if (!d->have_iperf3) {
        printf("skipped: iperf3 is not installed\n");
        return false;
    }
    snprintf(port, sizeof(port), "%d", demo_free_port());
    snprintf(stats, sizeof(stats), "%s/tcp-stats", d->tmp);
    snprintf(log, sizeof(log), "%s/iperf3-server.log", d->tmp);
    snprintf(ports_set, sizeof(ports_set), "tcp.ports=%s", port);
    struct args *both[] = {&s, &c};
    for (int i = 0; i < 2; i++) {
        struct args *a = both[i];
        demo_add(a, d->self);
        demo_add(a, "run");
        if (demo_shipped("tcp-qos")) {
            demo_add(a, "--profile");
            demo_add(a, "tcp-qos");
        } else if (pol_find_key("tcp.dscp") >= 0) {
            demo_add(a, "--set");
            demo_add(a, "tcp.dscp=26");
        }
        if (pol_find_key("tcp.ports") >= 0) {
            demo_add(a, "--set");
            demo_add(a, ports_set);
        }
        demo_add(a, "--stats-dir");
        demo_add(a, stats);
        demo_add(a, "--");
        demo_add(a, "iperf3");
    }
    demo_add(&s, "-s");
    demo_add(&s, "-1");
    demo_add(&s, "-p");
    demo_add(&s, port);
    demo_add(&c, "-c");
    demo_add(&c, "127.0.0.1");
    demo_add(&c, "-p");
    demo_add(&c, port);
    demo_add(&c, "-t");
    demo_add(&c, "1");
    printf("iperf3 server (output in %s) and client over loopback, with %s (DSCP 26,\n"
           "AF31) on the sockets of port %s:\n",
           log, demo_shipped("tcp-qos") ? "the tcp-qos profile" : "tcp.dscp=26", port);
    demo_show_cmd(s.v, NULL);
    pid_t srv = demo_spawn(s.v, NULL, log);
    if (srv < 0)
        return false;
    if (!demo_wait_listen(srv, atoi(port), 20)) {
        printf("-> the iperf3 server did not start listening (see %s)\n", log);
        demo_stop(srv);
        return false;
    }
    bool ok = demo_run_shown(c.v, NULL, 30, "the iperf3 client");
    if (demo_wait_limit(srv, 10) == -1)
        printf("-> the iperf3 server did not finish and was stopped\n");
    printf("\nteshim's reports of both processes:\n");
    show_reports(d, stats);
    return ok;
}

/* Step 1 fallback: the cli tests' host program against a stand-in libibverbs. */
bool demo_step_small_host(struct demo *d)
{
    char stats[4200];
    struct args a = {0};

    demo_heading(d, "a small program calling ibv_modify_qp (no RDMA device, no emulation)");
    if (!d->cli_host[0]) {
        printf("skipped: the test program tests/cli/cli_host was not built\n");
        return false;
    }
    snprintf(stats, sizeof(stats), "%s/host-stats", d->tmp);
    const char *v[] = {d->self,       "run", "--set", "rdma.traffic_class=106",
                       "--stats-dir", stats, "--",    d->cli_host,
                       "--modify-qp", "3"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        demo_add(&a, v[i]);
    printf("tests/cli/cli_host is built against the real verbs.h like an application and\n"
           "linked to a two-symbol stand-in for libibverbs; each of its ibv_modify_qp calls\n"
           "to RTR with a global address gets traffic class 106:\n");
    bool ok = demo_run_shown(a.v, NULL, 20, "cli_host");
    show_reports(d, stats);
    return ok;
}

/*
 * teshim demo --pair PORT -- SERVER... -- CLIENT...: one run of a
 * client/server program for teshim ab. The server starts, the client runs
 * once the port listens, then the server is waited for; both inherit the
 * run's environment, so both are under the arm's policy and both report.
 * Exit status 0 only when both succeeded.
 */
int demo_pair(int argc, char **argv)
{
    int port = argc > 2 ? atoi(argv[2]) : 0, second = 0;

    /* argv: demo --pair PORT -- SERVER... -- CLIENT... */
    for (int i = 5; i < argc && !second; i++)
        if (strcmp(argv[i], "--") == 0)
            second = i;
    if (port <= 0 || argc < 4 || strcmp(argv[3], "--") != 0 || !second || second + 1 >= argc) {
        tsc_err("usage: teshim demo --pair PORT -- SERVER... -- CLIENT...");
        return TSC_EXIT_USAGE;
    }
    argv[second] = NULL; /* ends the server's argv */
    demo_own_groups = false;
    pid_t srv = demo_spawn(argv + 4, NULL, NULL);
    if (srv < 0)
        return 1;
    if (!demo_wait_listen(srv, port, 30)) {
        tsc_err("demo --pair: the server did not listen on port %d", port);
        demo_stop(srv);
        return 1;
    }
    pid_t cli = demo_spawn(argv + second + 1, NULL, NULL);
    int cst = cli > 0 ? demo_wait_limit(cli, 60) : -1;
    /* A server whose client failed may wait for it forever. */
    if (cst == -1 || !WIFEXITED(cst) || WEXITSTATUS(cst) != 0) {
        demo_stop(srv);
        return 1;
    }
    int sst = demo_wait_limit(srv, 10);
    return sst != -1 && WIFEXITED(sst) && WEXITSTATUS(sst) == 0 ? 0 : 1;
}

/* The A/B step on the emulated RDMA device: perftest's ib_write_bw. */
bool demo_step_ab_rdma(struct demo *d)
{
    char port[16], json[4200], svg[4200], runs[16], benv[4300];
    struct args ab = {0};

    demo_heading(d, "A/B experiment of an RDMA transfer: teshim ab");
    if (!d->emu_script[0] || !d->have_perftest) {
        printf("skipped: needs the emulated libibverbs and perftest's ib_write_bw\n");
        return false;
    }
    snprintf(port, sizeof(port), "%d", demo_free_port());
    snprintf(json, sizeof(json), "%s/ab.json", d->tmp);
    snprintf(svg, sizeof(svg), "%s/ab.svg", d->tmp);
    snprintf(runs, sizeof(runs), "%u", d->runs);
    snprintf(benv, sizeof(benv), "TESHIM_BUILD_DIR=%s", d->build);
    char *env[] = {benv, NULL};
    const char *v[] = {d->self,
                       "ab",
                       "-n",
                       runs,
                       "--warmup",
                       "1",
                       "--metric",
                       "^ *65536 +[0-9]+ +[0-9.]+ +([0-9.]+)",
                       "--metric-name",
                       "ib_write_bw (MB/s)",
                       "--policy-b",
                       "set:rdma.relaxed_ordering=on",
                       "--policy-b",
                       "set:rdma.traffic_class=106",
                       "--json",
                       json,
                       "--plot",
                       svg,
                       "--",
                       d->emu_script,
                       "--roce",
                       "--",
                       d->self,
                       "demo",
                       "--pair",
                       port,
                       "--",
                       "ib_write_bw",
                       "-p",
                       port,
                       "-n",
                       "20000",
                       "--disable_pcie_relaxed",
                       "--",
                       "ib_write_bw",
                       "-p",
                       port,
                       "-n",
                       "20000",
                       "--disable_pcie_relaxed",
                       "127.0.0.1"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        demo_add(&ab, v[i]);
    printf("perftest's ib_write_bw (unmodified), server and client on the emulated RoCE device,\n"
           "20000 RDMA writes of 64 KiB per run; arm B adds relaxed ordering to its\n"
           "registrations and traffic class 106 to its QPs (--disable_pcie_relaxed: the flag\n"
           "is teshim's, not perftest's). The emulation moves bytes with memory copies, so\n"
           "expect no difference: the point is the method, and that B's policy applied.\n");
    demo_show_cmd(ab.v, env);
    pid_t p = demo_spawn(ab.v, env, NULL);
    if (p <= 0)
        return false;
    int st = demo_wait_limit(p, 20.0 + 6.0 * 2 * (d->runs + 1));
    if (st == -1) {
        printf("-> teshim ab did not finish in time and was stopped\n");
        return false;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
        printf("-> teshim ab exit status 1: it flagged the experiment (see above)\n");
    return WIFEXITED(st) && WEXITSTATUS(st) <= 1;
}

/* Steps 2 and 3: a transfer server under the shim (passthrough), the live
 * view of it, and `teshim ab` of the client side. */
void demo_step_ab(struct demo *d)
{
    char port[16], slog[4200], json[4200], svg[4200], seg[64], runs[16], listen_at[64],
        policy_dscp[64], policy_ports[64];
    struct args s = {0}, ab = {0};
    const char *metric, *metric_name;

    snprintf(port, sizeof(port), "%d", demo_free_port());
    snprintf(slog, sizeof(slog), "%s/ab-server.log", d->tmp);
    snprintf(json, sizeof(json), "%s/ab.json", d->tmp);
    snprintf(svg, sizeof(svg), "%s/ab.svg", d->tmp);
    snprintf(runs, sizeof(runs), "%u", d->runs);
    snprintf(seg, sizeof(seg), "127.0.0.1:%s", port);
    snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%s", port);

    bool bench = d->bench[0] != '\0';
    if (!bench && !d->have_iperf3) {
        demo_heading(d, "A/B experiment of a TCP transfer");
        printf("skipped: neither build/bin/teshim-bench nor iperf3 is available\n");
        return;
    }
    if (!d->live_shown)
        demo_heading(d, "live statistics of a running process: teshim stats --live");
    else
        demo_heading(d, "A/B experiment of a TCP transfer: teshim ab");
    /* The server runs the same in both arms: under the shim in rollout arm A,
     * so it shows in the live view but applies nothing. */
    demo_add(&s, d->self);
    demo_add(&s, "run");
    demo_add(&s, "--set");
    demo_add(&s, "rollout.arm=A");
    demo_add(&s, "--");
    if (bench) {
        demo_add(&s, d->bench);
        demo_add(&s, "--mode");
        demo_add(&s, "target");
        demo_add(&s, "--listen");
        demo_add(&s, listen_at);
    } else {
        demo_add(&s, "iperf3");
        demo_add(&s, "-s");
        demo_add(&s, "-p");
        demo_add(&s, port);
    }
    printf("a transfer server under teshim (rollout arm A: loaded, applying nothing), output in "
           "%s:\n",
           slog);
    demo_show_cmd(s.v, NULL);
    pid_t srv = demo_spawn(s.v, NULL, slog);
    /* teshim-bench listens before its buffer is registered: an initiator
     * that comes too early finds no buffer. Its "listening" line comes after
     * the registration. */
    bool up = srv > 0 && (bench ? demo_wait_log(srv, slog, "listening port", 20)
                                : demo_wait_listen(srv, atoi(port), 20));
    if (!up) {
        printf("-> the server did not start listening on port %s (see %s); no A/B step\n", port,
               slog);
        demo_stop(srv);
        return;
    }
    if (!d->live_shown) {
        show_live(d);
        demo_heading(d, "A/B experiment of a TCP transfer: teshim ab");
    }
    demo_add(&ab, d->self);
    demo_add(&ab, "ab");
    demo_add(&ab, "-n");
    demo_add(&ab, runs);
    demo_add(&ab, "--warmup");
    demo_add(&ab, "1");
    if (bench) {
        metric = "throughput ([0-9.]+) GB/s";
        metric_name = "throughput (GB/s)";
    } else {
        metric = "([0-9.]+) Gbits/sec.*receiver";
        metric_name = "iperf3 (Gbit/s)";
    }
    demo_add(&ab, "--metric");
    demo_add(&ab, metric);
    demo_add(&ab, "--metric-name");
    demo_add(&ab, metric_name);
    /* The policy under test: the socket policies when this build has them;
     * otherwise the RDMA profile, which a TCP transfer never reaches, and
     * ab flags arm B for injecting nothing. */
    if (d->sock_hooks && pol_find_key("tcp.dscp") >= 0) {
        snprintf(policy_dscp, sizeof(policy_dscp), "%s",
                 demo_shipped("tcp-qos") ? "profile:tcp-qos" : "set:tcp.dscp=26");
        demo_add(&ab, "--policy-b");
        demo_add(&ab, policy_dscp);
        if (pol_find_key("tcp.ports") >= 0) {
            snprintf(policy_ports, sizeof(policy_ports), "set:tcp.ports=%s", port);
            demo_add(&ab, "--policy-b");
            demo_add(&ab, policy_ports);
        }
        printf("arm B: %s on the transfer's connections (DSCP 26), scoped to port %s; arm A:\n"
               "passthrough. DSCP only matters to the queues of a real network, so on loopback\n"
               "expect no difference: the point is the method, and that B's policy applied.\n",
               policy_dscp, port);
    } else {
        demo_add(&ab, "--policy-b");
        demo_add(&ab, "profile:rdma-ro-tc");
        printf("this build has no socket hooks, so a TCP transfer offers no call for a policy to\n"
               "change: arm B runs the RDMA profile rdma-ro-tc, and teshim ab must FLAG it as\n"
               "having injected nothing instead of reporting \"no effect\".\n");
    }
    demo_add(&ab, "--json");
    demo_add(&ab, json);
    demo_add(&ab, "--plot");
    demo_add(&ab, svg);
    demo_add(&ab, "--");
    if (bench) {
        const char *v[] = {
            d->bench, "--mode",       "initiator", "--segment",    seg,  "--operation",
            "write",  "--block-size", "1048576",   "--batch-size", "16", "--threads",
            "1",      "--duration",   "1",         "--transport",  "tcp"};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
            demo_add(&ab, v[i]);
        printf("the engine bench (teshim-bench) writes 1 MiB blocks over TCP for 1 s per run:\n");
    } else {
        const char *v[] = {"iperf3", "-c", "127.0.0.1", "-p", port, "-t", "1", "-f", "g"};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
            demo_add(&ab, v[i]);
        printf("teshim-bench is not built here; iperf3 over loopback, 1 s per run:\n");
    }
    /* ab's exit status says whether it flagged something: shown, not fatal. */
    demo_show_cmd(ab.v, NULL);
    pid_t p = demo_spawn(ab.v, NULL, NULL);
    if (p > 0) {
        int st = demo_wait_limit(p, 20.0 + 2.5 * 2 * (d->runs + 1));
        if (st == -1)
            printf("-> teshim ab did not finish in time and was stopped\n");
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
            printf("-> teshim ab exit status 1: it flagged the experiment (see above)\n");
    }
    demo_stop(srv);
}
