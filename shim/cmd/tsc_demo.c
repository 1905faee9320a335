/*
 * teshim demo: on this machine, show what teshim intercepts and injects in
 * an unmodified program, what `teshim stats --live` sees, and a short A/B
 * experiment of a real transfer; then say what to run on one's own binary.
 *
 * Every step uses what this build and machine have (the emulated libibverbs,
 * the engine bench, iperf3) and says why it skips what it cannot run. Every
 * child runs in its own process group under a time limit, so a step that
 * hangs is killed and the demo goes on; a step that ran and failed (its
 * policy not applied, its program failing) makes the exit status 1.
 */
#include "tsc.h"
#include "tsc_demo_int.h"
#include "tsc_proc.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const demo_hook_names[] = {
#define HOOK(lib, tag, ver, def, ret, name, params, args, ...) #name,
#include "shim_hooks.def"
#undef HOOK
};
void demo_heading(struct demo *d, const char *title)
{
    printf("\n== %u. %s\n", ++d->step, title);
    fflush(stdout);
}

void demo_show_cmd(char *const argv[], char *const env[])
{
    printf("$");
    for (char *const *e = env; e && *e; e++)
        printf(" %s", *e);
    for (char *const *a = argv; *a; a++)
        printf(strpbrk(*a, " *?()[]|&;'\"") ? " '%s'" : " %s", *a);
    printf("\n");
    fflush(stdout);
}

static bool in_path(const char *prog)
{
    const char *p = getenv("PATH");
    char path[4096];

    while (p && *p) {
        size_t n = strcspn(p, ":");
        snprintf(path, sizeof(path), "%.*s/%s", (int)n, p, prog);
        if (access(path, X_OK) == 0)
            return true;
        p += n + (p[n] == ':');
    }
    return false;
}

/* The source tree of this build, from its CMakeCache.txt. */
static void find_source(struct demo *d)
{
    char path[4200], line[8192];
    const char *env = getenv("TESHIM_SOURCE_DIR");

    d->src[0] = '\0';
    if (env && *env) {
        snprintf(d->src, sizeof(d->src), "%s", env);
        return;
    }
    snprintf(path, sizeof(path), "%s/CMakeCache.txt", d->build);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        const char *key = "CMAKE_HOME_DIRECTORY:INTERNAL=";
        if (strncmp(line, key, strlen(key)) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(d->src, sizeof(d->src), "%s", line + strlen(key));
        }
    }
    fclose(f);
}

static int find_paths(struct demo *d)
{
    ssize_t n = readlink("/proc/self/exe", d->self, sizeof(d->self) - 1);
    char tmp[4096];

    if (n < 0) {
        tsc_err("demo: cannot find my own executable: %s", strerror(errno));
        return -1;
    }
    d->self[n] = '\0';
    snprintf(tmp, sizeof(tmp), "%s", d->self);
    snprintf(d->build, sizeof(d->build), "%s", dirname(dirname(tmp)));
    find_source(d);
    if (d->src[0]) {
        snprintf(d->emu_script, sizeof(d->emu_script), "%s/scripts/emulated-verbs", d->src);
        if (access(d->emu_script, X_OK) != 0)
            d->emu_script[0] = '\0';
    }
    snprintf(d->bench, sizeof(d->bench), "%s/bin/teshim-bench", d->build);
    if (access(d->bench, X_OK) != 0)
        d->bench[0] = '\0';
    snprintf(d->cli_host, sizeof(d->cli_host), "%s/tests/cli/cli_host", d->build);
    if (access(d->cli_host, X_OK) != 0)
        d->cli_host[0] = '\0';
    d->have_iperf3 = in_path("iperf3");
    d->have_pingpong = in_path("ibv_rc_pingpong");
    d->have_perftest = in_path("ib_write_bw");
    return 0;
}

static void next_steps(const struct demo *d)
{
    printf("\n== What to run next, on your own binary\n"
           "  %s doctor /path/to/engine             # will LD_PRELOAD reach it? devices, limits\n"
           "  %s run --profile rdma-ro-tc --stats-dir /tmp/ts -- /path/to/engine ARGS\n"
           "  %s stats /tmp/ts/*.json               # what was intercepted, injected, fell back\n"
           "  %s stats --live                       # every process under teshim, while it runs\n"
           "  %s ab -n 10 --warmup 1 --metric 'YOUR FIGURE ([0-9.]+)' --profile rdma-ro-tc \\\n"
           "      --json ab.json --plot ab.svg -- /path/to/engine ARGS\n"
           "Results of this demo (A/B runs as JSON, the SVG picture, reports, logs): %s\n"
           "Rolling out to a fleet: docs/rollout.md.\n",
           d->self, d->self, d->self, d->self, d->self, d->tmp);
}

static void demo_usage(void)
{
    printf("usage: teshim demo [--runs N] [--step NAME]\n"
           "Shows on this machine what teshim intercepts and injects in unmodified\n"
           "programs (on the emulated RDMA device when this tree has it: relaxed ordering\n"
           "and traffic class under rdma-ro-tc; DSCP under tcp-qos), the live view, and an\n"
           "A/B experiment of a real transfer (N runs per arm, default 5), then what to run\n"
           "on your own binary. Steps that cannot run say why and are skipped. --step NAME\n"
           "runs one step:");
    for (size_t i = 0; i < demo_nsteps; i++)
        printf(" %s%s", demo_steps[i].name, demo_steps[i].on_request ? " (only by name)" : "");
    printf(".\nExit status 0 when every step that ran showed its policy applied; 1 when one\n"
           "failed (named at the end); 2 for usage errors.\n"
           "\n"
           "teshim demo --pair PORT -- SERVER... -- CLIENT... runs a client/server\n"
           "program once: the server, then the client once PORT listens; exit status 0\n"
           "when both succeed. The A/B steps use it as the command of teshim ab.\n");
}

static const struct demo_step *find_step(const char *name)
{
    for (size_t i = 0; i < demo_nsteps; i++)
        if (strcmp(demo_steps[i].name, name) == 0)
            return &demo_steps[i];
    return NULL;
}

int tsc_cmd_demo(int argc, char **argv)
{
    struct demo d = {0};
    const char *tmpdir = getenv("TMPDIR");
    const struct demo_step *only = NULL;
    double t0 = tsc_mono();

    d.runs = 5;
    demo_catch_signals();
    if (argc > 1 && strcmp(argv[1], "--pair") == 0)
        return demo_pair(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            demo_usage();
            return 0;
        }
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            char *end;
            unsigned long n = strtoul(argv[++i], &end, 10);
            if (*end || n < 1 || n > 50) {
                tsc_err("demo: --runs %s: runs per arm in 1..50", argv[i]);
                return TSC_EXIT_USAGE;
            }
            d.runs = (unsigned)n;
            continue;
        }
        if (strcmp(argv[i], "--step") == 0 && i + 1 < argc) {
            only = find_step(argv[++i]);
            if (!only) {
                tsc_err("demo: --step %s: no such step (teshim demo --help lists them)", argv[i]);
                return TSC_EXIT_USAGE;
            }
            continue;
        }
        tsc_err("demo: unknown option '%s'", argv[i]);
        return TSC_EXIT_USAGE;
    }
    if (find_paths(&d) != 0)
        return 1;
    /* Every step runs under libteshim.so: without it none could show anything. */
    char lib[4096];
    if (tsc_library_path(lib, sizeof(lib)) != 0) {
        tsc_err("demo: nothing to demonstrate without libteshim.so");
        return TSC_EXIT_NOTFOUND;
    }
    snprintf(d.tmp, sizeof(d.tmp), "%s/teshim-demo-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(d.tmp)) {
        tsc_err("demo: mkdtemp %s: %s", d.tmp, strerror(errno));
        return 1;
    }
    /* Our children must not inherit settings meant for someone else. */
    unsetenv("TESHIM_STATS_DIR");
    tsc_live_reap();

    printf("teshim %s demo\n  build: %s\n  source: %s\n", TESHIM_VERSION, d.build,
           d.src[0] ? d.src : "(unknown)");
    printf("  libteshim.so hooks %zu calls; emulated libibverbs: %s; engine bench: %s;\n"
           "  iperf3: %s\n",
           sizeof(demo_hook_names) / sizeof(demo_hook_names[0]), d.emu_script[0] ? "yes" : "no",
           d.bench[0] ? "yes" : "no", d.have_iperf3 ? "yes" : "no");

    char failed[256] = "";
    size_t nf = 0;
    for (size_t i = 0; i < demo_nsteps; i++) {
        const struct demo_step *st = &demo_steps[i];
        if (only ? st != only : st->on_request || (st->fallback && d.rdma_ran))
            continue;
        demo_heading(&d, st->title);
        if (st->run(&d) == DEMO_FAILED)
            nf += (size_t)snprintf(failed + nf, nf < sizeof(failed) ? sizeof(failed) - nf : 0,
                                   "%s%s", nf ? ", " : "", st->name);
    }
    if (!only)
        next_steps(&d);
    printf("(demo took %.0f s)\n", tsc_mono() - t0);
    if (nf) {
        tsc_err("demo: step%s failed: %s (see above)", strchr(failed, ',') ? "s" : "", failed);
        return 1;
    }
    return 0;
}
