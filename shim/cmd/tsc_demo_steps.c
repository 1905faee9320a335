/*
 * teshim demo: the steps, as a table, and their commands, as templates
 * ({self}, {tmp}, {port}... are filled in by demo_expand). Each step says
 * why it skips what it cannot run, and what was injected.
 */
#include "tsc.h"
#include "tsc_demo_int.h"
#include "tsc_json.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* ---- The commands. */

/* Step "rdma": ibv_rc_pingpong on the emulated RoCE device under the
 * rdma-ro-tc profile. The emulation writes its devices' PCIe config space
 * under {tmp}/sysfs (VERBS_EMU_SYSFS) and teshim reads it there
 * (rdma.sysfs_root), so the profile's relaxed_ordering = auto finds the
 * NIC's Device Control bit as on a real host. */
static const char rdma_env[] = "TESHIM_BUILD_DIR={build} VERBS_EMU_SYSFS={tmp}/sysfs";
static const char rdma_cmd[] =
    "{emu} --roce --record {tmp}/verbs-record.jsonl -- {self} run --profile rdma-ro-tc "
    "--set rdma.sysfs_root={tmp}/sysfs --stats-dir {tmp}/rdma-stats -- "
    "ibv_rc_pingpong -g 0 -s 1048576 -n 20 -p {port}";
static const char rdma_client[] = "127.0.0.1";
static const char live_cmd[] = "{self} stats --live --count 1";

/* Step "tcp": iperf3 under the tcp-qos profile, scoped to its port. */
static const char tcp_cmd[] =
    "{self} run --profile tcp-qos --set tcp.ports={port} --stats-dir {tmp}/tcp-stats -- iperf3";
static const char tcp_server[] = "-s -1 -p {port}";
static const char tcp_client[] = "-c 127.0.0.1 -p {port} -t 1";

/* Step "host": the cli tests' host program against a stand-in libibverbs. */
static const char host_cmd[] = "{self} run --set rdma.traffic_class=106 "
                               "--stats-dir {tmp}/host-stats -- {host} --modify-qp 3";

/* Step "ab": a transfer server under the shim in rollout arm A (loaded,
 * applying nothing), and teshim ab of the client side under tcp-qos. */
static const char ab_server_bench[] =
    "{self} run --set rollout.arm=A -- {bench} --mode target --listen 127.0.0.1:{port}";
static const char ab_server_iperf3[] = "{self} run --set rollout.arm=A -- iperf3 -s -p {port}";
static const char ab_cmd[] =
    "{self} ab -n {runs} --warmup 1 --policy-b profile:tcp-qos --policy-b set:tcp.ports={port} "
    "--json {tmp}/ab.json --plot {tmp}/ab.svg";
static const char ab_bench[] =
    "--metric 'throughput ([0-9.]+) GB/s' --metric-name 'throughput (GB/s)' -- "
    "{bench} --mode initiator --segment 127.0.0.1:{port} --operation write "
    "--block-size 1048576 --batch-size 16 --threads 1 --duration 1 --transport tcp";
static const char ab_iperf3[] =
    "--metric '([0-9.]+) Gbits/sec.*receiver' --metric-name 'iperf3 (Gbit/s)' -- "
    "iperf3 -c 127.0.0.1 -p {port} -t 1 -f g";

/* Step "ab-rdma" (on request): perftest's ib_write_bw on the emulated
 * device, arm B under rdma-ro-tc. */
static const char ab_rdma_cmd[] =
    "{self} ab -n {runs} --warmup 1 --metric '^ *65536 +[0-9]+ +[0-9.]+ +([0-9.]+)' "
    "--metric-name 'ib_write_bw (MB/s)' --policy-b profile:rdma-ro-tc "
    "--policy-b set:rdma.sysfs_root={tmp}/sysfs --json {tmp}/ab-rdma.json "
    "--plot {tmp}/ab-rdma.svg -- {emu} --roce -- {self} demo --pair {port} "
    "-- ib_write_bw -p {port} -n 20000 --disable_pcie_relaxed "
    "-- ib_write_bw -p {port} -n 20000 --disable_pcie_relaxed 127.0.0.1";

/* ---- What the steps show. */

/* Expand a command from a template and an optional tail; on a template
 * bug the step fails. */
static bool expand(struct demo *d, const char *head, const char *tail, struct args *a)
{
    return demo_expand(d, head, a) == 0 && (!tail || demo_expand(d, tail, a) == 0);
}

/* Injections per hook, summed over a step's reports. */
struct injected {
    char name[16][64];
    double n[16];
    unsigned k;
    double total;
};

static void count_injected(struct injected *in, const char *hook, double n)
{
    unsigned i = 0;

    in->total += n;
    while (i < in->k && strcmp(in->name[i], hook) != 0)
        i++;
    if (i == in->k && in->k < 16)
        snprintf(in->name[in->k++], sizeof(in->name[0]), "%s", hook);
    if (i < in->k)
        in->n[i] += n;
}

/* `teshim stats` of every report in dir, then the hooks that injected:
 * returns how many injections the reports count in all. */
static double show_reports(struct demo *d, const char *dir)
{
    struct args a = {0};
    struct injected in = {0};
    DIR *dh = opendir(dir);
    struct dirent *e;

    demo_add(&a, d->self);
    demo_add(&a, "stats");
    while (dh && (e = readdir(dh)) && a.n < DEMO_MAX_ARGS - 1) {
        size_t n = strlen(e->d_name);
        char path[8400], err[128];
        if (n <= 5 || strcmp(e->d_name + n - 5, ".json") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        demo_add(&a, path);
        struct tsc_json *j = tsc_json_load(path, err, sizeof(err));
        const struct tsc_json *hooks = j ? tsc_json_get(j, "hooks") : NULL;
        for (const struct tsc_json *h = hooks ? hooks->child : NULL; h; h = h->next)
            if (tsc_json_num(h, "injected", 0) > 0)
                count_injected(&in, h->key, tsc_json_num(h, "injected", 0));
        tsc_json_free(j);
    }
    if (dh)
        closedir(dh);
    if (a.n == 2)
        printf("-> no teshim report was written in %s\n", dir);
    else
        demo_run_shown(a.v, NULL, 20, "teshim stats");
    printf("-> injected:%s", in.k ? "" : " nothing");
    for (unsigned i = 0; i < in.k; i++)
        printf("%s %s %.0f", i ? "," : "", in.name[i], in.n[i]);
    printf("\n");
    demo_args_free(&a);
    return in.total;
}

/* What the emulated libibverbs received: each registration's access flags
 * and each QP transition with an address vector, one line each (at most
 * max). Counts registrations with and without relaxed ordering and QP
 * transitions with a traffic class. */
struct record_counts {
    unsigned mr, mr_ro, qp, qp_tc;
};

static void show_record(const char *path, unsigned max, struct record_counts *c)
{
    FILE *f = fopen(path, "re");
    char line[8192], err[128];
    unsigned shown = 0;

    memset(c, 0, sizeof(*c));
    if (!f) {
        printf("-> no record at %s\n", path);
        return;
    }
    printf("what the emulated libibverbs received (from %s):\n", path);
    while (fgets(line, sizeof(line), f)) {
        struct tsc_json *j = tsc_json_parse(line, err, sizeof(err));
        if (!j)
            continue;
        const char *call = tsc_json_str(j, "call", "");
        if (strcmp(call, "reg_mr") == 0) {
            unsigned access = (unsigned)tsc_json_num(j, "access", 0);
            c->mr++;
            c->mr_ro += (access & (1u << 20)) != 0;
            if (shown++ < max)
                printf("   pid %-7.0f %-18s %9.0f bytes  access 0x%06x%s\n",
                       tsc_json_num(j, "pid", 0), tsc_json_str(j, "entry", call),
                       tsc_json_num(j, "length", 0), access,
                       access & (1u << 20) ? "  <- IBV_ACCESS_RELAXED_ORDERING" : "");
        } else if (strcmp(call, "modify_qp") == 0 && tsc_json_get(j, "ah_attr.is_global")) {
            double tc = tsc_json_num(j, "ah_attr.grh.traffic_class", 0);
            c->qp++;
            c->qp_tc += tc != 0;
            if (shown++ < max)
                printf("   pid %-7.0f ibv_modify_qp      to state %.0f, is_global %.0f, "
                       "traffic_class %.0f, sl %.0f\n",
                       tsc_json_num(j, "pid", 0), tsc_json_num(j, "qp_state", -1),
                       tsc_json_num(j, "ah_attr.is_global", 0), tc,
                       tsc_json_num(j, "ah_attr.sl", 0));
        }
        tsc_json_free(j);
    }
    fclose(f);
}

static void show_live(struct demo *d)
{
    struct args live = {0};

    if (expand(d, live_cmd, NULL, &live))
        d->live_shown = demo_run_shown(live.v, NULL, 10, "teshim stats --live");
    demo_args_free(&live);
}

/* Start a server from s (output to log), wait until it listens on d->port
 * (or writes ready to log); -1 when it did not (said, and stopped). */
static pid_t start_server(struct demo *d, struct args *s, char *const *env, const char *log,
                          const char *ready)
{
    demo_show_cmd(s->v, env);
    pid_t srv = demo_spawn(s->v, env, log);
    if (srv < 0)
        return -1;
    bool up = ready ? demo_wait_log(srv, log, ready, 60) : demo_wait_listen(srv, d->port, 60);
    if (!up) {
        printf("-> the server did not start listening on port %d (see %s)\n", d->port, log);
        demo_stop(srv);
        return -1;
    }
    return srv;
}

/* ---- The steps. */

static enum demo_result step_rdma(struct demo *d)
{
    struct args s = {0}, c = {0}, env = {0};
    char log[4200], stats[4200], rec[4200], sysfs[4200];
    enum demo_result res = DEMO_FAILED;

    if (!d->emu_script[0]) {
        printf("skipped: scripts/emulated-verbs is not in this tree (%s)\n",
               d->src[0] ? d->src : "source tree unknown");
        return DEMO_SKIPPED;
    }
    if (!d->have_pingpong) {
        printf("skipped: ibv_rc_pingpong (Debian package ibverbs-utils) is not installed\n");
        return DEMO_SKIPPED;
    }
    d->rdma_ran = true;
    d->port = demo_free_port();
    snprintf(log, sizeof(log), "%s/rdma-server.log", d->tmp);
    snprintf(stats, sizeof(stats), "%s/rdma-stats", d->tmp);
    snprintf(rec, sizeof(rec), "%s/verbs-record.jsonl", d->tmp);
    snprintf(sysfs, sizeof(sysfs), "%s/sysfs", d->tmp);
    if (!expand(d, rdma_cmd, NULL, &s) || !expand(d, rdma_cmd, rdma_client, &c) ||
        !expand(d, rdma_env, NULL, &env))
        goto out;
    printf("ibv_rc_pingpong (Debian's ibverbs-utils, unmodified) with 1 MiB messages over the\n"
           "emulated RoCE device, under the rdma-ro-tc profile: relaxed ordering on\n"
           "registrations of 64 KiB and more where the NIC's PCIe function allows it (auto),\n"
           "traffic class 106 on QP transitions. The emulation offers its device's PCIe\n"
           "config space in %s (VERBS_EMU_SYSFS), where teshim reads it\n"
           "(rdma.sysfs_root). Server (output in %s):\n",
           sysfs, log);
    pid_t srv = start_server(d, &s, env.v, log, NULL);
    if (srv < 0)
        goto out;
    int ro = pol_pcie_relaxed_ordering(sysfs, "emu0");
    printf("emu0's PCIe Device Control in %s: relaxed ordering %s\n", sysfs,
           ro == 1   ? "enabled"
           : ro == 0 ? "disabled"
                     : "unknown (config not readable)");
    printf("while the server waits for its client, the live view shows it (its 1 MiB\n"
           "registration already carries relaxed ordering):\n");
    show_live(d);
    printf("client:\n");
    bool ok = demo_run_shown(c.v, env.v, 30, "the ibv_rc_pingpong client");
    if (demo_wait_limit(srv, 10) == -1)
        printf("-> the server did not finish and was stopped\n");
    printf("\nteshim's reports of both processes:\n");
    show_reports(d, stats);
    struct record_counts rc;
    show_record(rec, 8, &rc);
    if (rc.mr_ro)
        printf("-> relaxed ordering applied: %u of %u registrations reached the device with "
               "IBV_ACCESS_RELAXED_ORDERING\n",
               rc.mr_ro, rc.mr);
    else
        printf("-> relaxed ordering NOT applied: none of %u registrations carries it\n", rc.mr);
    printf("-> traffic class applied: %u of %u QP transitions with a global address\n", rc.qp_tc,
           rc.qp);
    res = ok && rc.mr_ro && rc.qp_tc ? DEMO_DONE : DEMO_FAILED;
out:
    demo_args_free(&s);
    demo_args_free(&c);
    demo_args_free(&env);
    return res;
}

static enum demo_result step_tcp(struct demo *d)
{
    struct args s = {0}, c = {0};
    char log[4200], stats[4200];
    enum demo_result res = DEMO_FAILED;

    if (!d->have_iperf3) {
        printf("skipped: iperf3 is not installed\n");
        return DEMO_SKIPPED;
    }
    d->port = demo_free_port();
    snprintf(stats, sizeof(stats), "%s/tcp-stats", d->tmp);
    snprintf(log, sizeof(log), "%s/iperf3-server.log", d->tmp);
    if (!expand(d, tcp_cmd, tcp_server, &s) || !expand(d, tcp_cmd, tcp_client, &c))
        goto out;
    printf("iperf3 server (output in %s) and client over loopback, with the tcp-qos profile\n"
           "(DSCP 26, AF31; TCP_NODELAY; keepalive) on the sockets of port %d:\n",
           log, d->port);
    pid_t srv = start_server(d, &s, NULL, log, NULL);
    if (srv < 0)
        goto out;
    bool ok = demo_run_shown(c.v, NULL, 30, "the iperf3 client");
    if (demo_wait_limit(srv, 10) == -1)
        printf("-> the iperf3 server did not finish and was stopped\n");
    printf("\nteshim's reports of both processes:\n");
    double inj = show_reports(d, stats);
    res = ok && inj > 0 ? DEMO_DONE : DEMO_FAILED;
out:
    demo_args_free(&s);
    demo_args_free(&c);
    return res;
}

static enum demo_result step_host(struct demo *d)
{
    struct args a = {0};
    char stats[4200];

    if (!d->cli_host[0]) {
        printf("skipped: the test program tests/cli/cli_host was not built\n");
        return DEMO_SKIPPED;
    }
    snprintf(stats, sizeof(stats), "%s/host-stats", d->tmp);
    if (!expand(d, host_cmd, NULL, &a))
        return DEMO_FAILED;
    printf("tests/cli/cli_host is built against the real verbs.h like an application and\n"
           "linked to a two-symbol stand-in for libibverbs; each of its ibv_modify_qp calls\n"
           "to RTR with a global address gets traffic class 106:\n");
    bool ok = demo_run_shown(a.v, NULL, 20, "cli_host");
    double inj = show_reports(d, stats);
    demo_args_free(&a);
    return ok && inj > 0 ? DEMO_DONE : DEMO_FAILED;
}

/* Run teshim ab from a and say what its exit status means. */
static enum demo_result run_ab(struct args *a, char *const *env, double limit)
{
    demo_show_cmd(a->v, env);
    pid_t p = demo_spawn(a->v, env, NULL);
    if (p <= 0)
        return DEMO_FAILED;
    int st = demo_wait_limit(p, limit);
    if (st == -1) {
        printf("-> teshim ab did not finish in time and was stopped\n");
        return DEMO_FAILED;
    }
    /* 1: a flag or a missing verdict, shown above; not the demo's failure. */
    if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
        printf("-> teshim ab exit status 1: see its flags and verdicts above\n");
    return WIFEXITED(st) && WEXITSTATUS(st) <= 1 ? DEMO_DONE : DEMO_FAILED;
}

static enum demo_result step_ab(struct demo *d)
{
    struct args s = {0}, ab = {0};
    char log[4200];
    bool bench = d->bench[0] != '\0';
    enum demo_result res = DEMO_FAILED;

    if (!bench && !d->have_iperf3) {
        printf("skipped: neither build/bin/teshim-bench nor iperf3 is available\n");
        return DEMO_SKIPPED;
    }
    d->port = demo_free_port();
    snprintf(log, sizeof(log), "%s/ab-server.log", d->tmp);
    if (!expand(d, bench ? ab_server_bench : ab_server_iperf3, NULL, &s) ||
        !expand(d, ab_cmd, bench ? ab_bench : ab_iperf3, &ab))
        goto out;
    printf("a transfer server under teshim (rollout arm A: loaded, applying nothing), output in "
           "%s:\n",
           log);
    /* teshim-bench listens before its buffer is registered: an initiator
     * that comes too early finds no buffer. Its "listening" line comes after
     * the registration. */
    pid_t srv = start_server(d, &s, NULL, log, bench ? "listening port" : NULL);
    if (srv < 0)
        goto out;
    if (!d->live_shown) {
        printf("the live view of every process under teshim:\n");
        show_live(d);
    }
    printf("arm B: the tcp-qos profile on the transfer's connections (DSCP 26), scoped to port\n"
           "%d; arm A: passthrough. DSCP only matters to the queues of a real network, so on\n"
           "loopback expect no difference: the point is the method, and that B's policy\n"
           "applied. %s\n",
           d->port,
           bench ? "The engine bench (teshim-bench) writes 1 MiB blocks over TCP for 1 s per run:"
                 : "teshim-bench is not built here; iperf3 over loopback, 1 s per run:");
    res = run_ab(&ab, NULL, 20.0 + 2.5 * 2 * (d->runs + 1));
    demo_stop(srv);
out:
    demo_args_free(&s);
    demo_args_free(&ab);
    return res;
}

static enum demo_result step_ab_rdma(struct demo *d)
{
    struct args ab = {0}, env = {0};
    enum demo_result res = DEMO_FAILED;

    if (!d->emu_script[0] || !d->have_perftest) {
        printf("skipped: needs the emulated libibverbs and perftest's ib_write_bw\n");
        return DEMO_SKIPPED;
    }
    d->port = demo_free_port();
    if (expand(d, ab_rdma_cmd, NULL, &ab) && expand(d, rdma_env, NULL, &env)) {
        printf("perftest's ib_write_bw (unmodified), server and client on the emulated RoCE\n"
               "device, 20000 RDMA writes of 64 KiB per run; arm B under rdma-ro-tc\n"
               "(--disable_pcie_relaxed: the flag is teshim's, not perftest's). The emulation\n"
               "moves bytes with memory copies, so expect no difference: the point is the\n"
               "method, and that B's policy applied.\n");
        res = run_ab(&ab, env.v, 20.0 + 6.0 * 2 * (d->runs + 1));
    }
    demo_args_free(&ab);
    demo_args_free(&env);
    return res;
}

const struct demo_step demo_steps[] = {
    {.name = "rdma",
     .title = "an unmodified RDMA program on the emulated RDMA device (RoCE) under rdma-ro-tc",
     .run = step_rdma},
    {.name = "tcp",
     .title = "an unmodified TCP program (iperf3) under the socket policies",
     .run = step_tcp},
    {.name = "host",
     .title = "a small program calling ibv_modify_qp (no RDMA device, no emulation)",
     .run = step_host,
     .fallback = true},
    {.name = "ab",
     .title = "live statistics and an A/B experiment of a TCP transfer: teshim ab",
     .run = step_ab},
    {.name = "ab-rdma",
     .title = "A/B experiment of an RDMA transfer on the emulated device: teshim ab",
     .run = step_ab_rdma,
     .on_request = true},
};
const size_t demo_nsteps = sizeof(demo_steps) / sizeof(demo_steps[0]);
