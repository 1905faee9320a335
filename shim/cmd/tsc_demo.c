/*
 * teshim demo: on this machine, show what teshim intercepts and injects in
 * an unmodified program, what `teshim stats --live` sees, and a short A/B
 * experiment of a real transfer; then say what to run on one's own binary.
 *
 * Every step uses what this build and machine have (the emulated libibverbs,
 * the socket hooks, the engine bench, iperf3) and says why it skips what it
 * cannot run. Every child runs in its own process group under a time limit,
 * so a step that hangs is killed and the demo goes on.
 */
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

bool demo_shipped(const char *profile)
{
    for (size_t k = 0; k < pol_nprofiles; k++)
        if (pol_profiles[k].name && strcmp(pol_profiles[k].name, profile) == 0)
            return true;
    return false;
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
    for (size_t i = 0; i < sizeof(demo_hook_names) / sizeof(demo_hook_names[0]); i++)
        d->sock_hooks |= strcmp(demo_hook_names[i], "connect") == 0;
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

int tsc_cmd_demo(int argc, char **argv)
{
    struct demo d = {0};
    const char *tmpdir = getenv("TMPDIR");
    double t0 = demo_mono();

    d.runs = 5;
    demo_catch_signals();
    if (argc > 1 && strcmp(argv[1], "--pair") == 0)
        return demo_pair(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: teshim demo [--runs N]\n"
                   "Shows on this machine what teshim intercepts and injects in unmodified\n"
                   "programs (on the emulated RDMA device when this tree has it), the live\n"
                   "view, and an A/B experiment of a real transfer (N runs per arm, default 5),\n"
                   "then what to run on your own binary. Steps that cannot run say why.\n"
                   "\n"
                   "teshim demo --pair PORT -- SERVER... -- CLIENT... runs a client/server\n"
                   "program once: the server, then the client once PORT listens; exit status 0\n"
                   "when both succeed. The A/B step uses it as the command of teshim ab.\n");
            return 0;
        }
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            d.runs = (unsigned)atoi(argv[++i]);
            if (d.runs < 1 || d.runs > 50) {
                tsc_err("demo: --runs in 1..50");
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
    printf("  libteshim.so hooks %zu calls; socket hooks: %s; emulated libibverbs: %s;\n"
           "  engine bench: %s; iperf3: %s\n",
           sizeof(demo_hook_names) / sizeof(demo_hook_names[0]), d.sock_hooks ? "yes" : "no",
           d.emu_script[0] ? "yes" : "no", d.bench[0] ? "yes" : "no", d.have_iperf3 ? "yes" : "no");

    bool rdma = demo_step_emulated_rdma(&d);
    demo_step_tcp(&d);
    if (!rdma)
        demo_step_small_host(&d);
    /* The A/B step uses a transfer the policy can act on: TCP when the socket
     * hooks exist, else RDMA on the emulated device, else TCP anyway (arm B
     * is then flagged for injecting nothing, which is the right answer). */
    if (d.sock_hooks || !rdma || !demo_step_ab_rdma(&d))
        demo_step_ab(&d);
    next_steps(&d);
    printf("(demo took %.0f s)\n", demo_mono() - t0);
    return 0;
}
