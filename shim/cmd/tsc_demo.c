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

#define DEMO_MAX_ARGS 64

struct demo {
    char self[4096];  /* this executable */
    char build[4096]; /* the build folder: bin/ and lib/ */
    char src[8192];   /* the source tree, "" if unknown */
    char tmp[4096];   /* results of this demo, kept */
    unsigned runs;
    char emu_script[4200]; /* scripts/emulated-verbs, "" if absent */
    char bench[4200];      /* build/bin/teshim-bench, "" if absent */
    char cli_host[4200];   /* the cli tests' host program, "" if absent */
    bool sock_hooks;       /* this libteshim.so hooks connect() */
    bool have_iperf3, have_pingpong, have_perftest;
    bool live_shown; /* the live view was shown already */
    unsigned step;
};

static const char *const demo_hook_names[] = {
#define HOOK(lib, tag, ver, def, ret, name, params, args, ...) #name,
#include "shim_hooks.def"
#undef HOOK
};

static double mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void heading(struct demo *d, const char *title)
{
    printf("\n== %u. %s\n", ++d->step, title);
    fflush(stdout);
}

static void show_cmd(char *const argv[], char *const env[])
{
    printf("$");
    for (char *const *e = env; e && *e; e++)
        printf(" %s", *e);
    for (char *const *a = argv; *a; a++)
        printf(strpbrk(*a, " *?()[]|&;'\"") ? " '%s'" : " %s", *a);
    printf("\n");
    fflush(stdout);
}

/* Process groups started by the demo: killed if the demo is interrupted, so
 * no server outlives it (they are not in the terminal's foreground group). */
#define DEMO_MAX_CHILDREN 64
static volatile sig_atomic_t demo_nchildren;
/* Children get process groups of their own, except under --pair: there they
 * stay in the group of the ab run, so stopping the run stops them too. */
static bool demo_own_groups = true;
static pid_t demo_children[DEMO_MAX_CHILDREN];

static void demo_on_signal(int sig)
{
    for (sig_atomic_t i = 0; i < demo_nchildren; i++)
        kill(demo_own_groups ? -demo_children[i] : demo_children[i], SIGKILL);
    _exit(128 + sig);
}

static void demo_catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = demo_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* Start argv in its own process group, env entries "K=V" added, output to
 * log (appended) or inherited when log is NULL. -1 on failure (reported). */
static pid_t spawn(char *const argv[], char *const env[], const char *log)
{
    fflush(NULL);
    pid_t pid = fork();

    if (pid < 0) {
        tsc_err("demo: fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (demo_own_groups)
            setpgid(0, 0);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        if (log) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
            }
        }
        for (char *const *e = env; e && *e; e++)
            putenv(*e);
        execvp(argv[0], argv);
        fprintf(stderr, "teshim demo: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (demo_own_groups)
        setpgid(pid, pid);
    if (demo_nchildren < DEMO_MAX_CHILDREN) {
        demo_children[demo_nchildren] = pid;
        demo_nchildren = demo_nchildren + 1;
    }
    return pid;
}

/* Wait for pid up to timeout seconds; past it, kill its process group.
 * Returns the wait status, or -1 when it had to be killed. */
static int wait_limit(pid_t pid, double timeout)
{
    double end = mono() + timeout;
    int status;

    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return status;
        if (w < 0 && errno != EINTR)
            return -1;
        if (mono() > end)
            break;
        struct timespec t = {0, 20 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    kill(demo_own_groups ? -pid : pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* End a background server: SIGTERM to its group, SIGKILL after 3 s. */
static void stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(demo_own_groups ? -pid : pid, SIGTERM);
    if (wait_limit(pid, 3) == -1)
        printf("   (the server did not stop on SIGTERM and was killed)\n");
}

/* Run in the foreground with output shown; true when it exited 0. */
static bool run_shown(char *const argv[], char *const env[], double timeout, const char *what)
{
    show_cmd(argv, env);
    pid_t pid = spawn(argv, env, NULL);
    if (pid < 0)
        return false;
    int st = wait_limit(pid, timeout);
    if (st == -1) {
        printf("-> %s did not finish within %.0f s and was stopped\n", what, timeout);
        return false;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("-> %s ended with %s %d\n", what, WIFEXITED(st) ? "exit status" : "signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return false;
    }
    return true;
}

/* Is something listening on TCP port (IPv4 or IPv6) on this host? */
static bool listening(int port)
{
    const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    char line[512], want[16];

    snprintf(want, sizeof(want), ":%04X ", port);
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "re");
        if (!f)
            continue;
        while (fgets(line, sizeof(line), f)) {
            /* sl local_address rem_address st: LISTEN is 0A */
            char local[128], remote[128], st[8];
            if (sscanf(line, "%*s %127s %127s %7s", local, remote, st) == 3 &&
                strcmp(st, "0A") == 0 && strstr(strcat(local, " "), want)) {
                fclose(f);
                return true;
            }
        }
        fclose(f);
    }
    return false;
}

/* Wait until port listens, or the server exits, or timeout. */
static bool wait_listen(pid_t server, int port, double timeout)
{
    double end = mono() + timeout;
    int status;

    while (mono() < end) {
        if (listening(port))
            return true;
        if (waitpid(server, &status, WNOHANG) == server)
            return false;
        struct timespec t = {0, 20 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return false;
}

/* Wait until the file at path contains text (a server's "ready" line). */
static bool wait_log(pid_t server, const char *path, const char *text, double timeout)
{
    double end = mono() + timeout;
    char buf[4096];
    int status;

    while (mono() < end) {
        FILE *f = fopen(path, "re");
        if (f) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
            buf[n] = '\0';
            if (strstr(buf, text))
                return true;
        }
        if (waitpid(server, &status, WNOHANG) == server)
            return false;
        struct timespec t = {0, 20 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return false;
}

/* A port nobody uses right now (the kernel's choice for port 0). */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = 0, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool shipped(const char *profile)
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

/* argv builder */
struct args {
    char *v[DEMO_MAX_ARGS + 1];
    int n;
};

static void add(struct args *a, const char *s)
{
    if (a->n < DEMO_MAX_ARGS)
        a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}

/* `teshim stats` of every report in dir. */
static void show_reports(struct demo *d, const char *dir)
{
    struct args a = {0};
    char *paths[DEMO_MAX_ARGS];
    int np = 0;
    DIR *dh = opendir(dir);
    struct dirent *e;

    add(&a, d->self);
    add(&a, "stats");
    while (dh && (e = readdir(dh)) && np < DEMO_MAX_ARGS - 4) {
        size_t n = strlen(e->d_name);
        if (n > 5 && strcmp(e->d_name + n - 5, ".json") == 0 &&
            asprintf(&paths[np], "%s/%s", dir, e->d_name) >= 0)
            add(&a, paths[np++]);
    }
    if (dh)
        closedir(dh);
    if (!np) {
        printf("-> no teshim report was written in %s\n", dir);
        return;
    }
    run_shown(a.v, NULL, 20, "teshim stats");
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

    add(&live, d->self);
    add(&live, "stats");
    add(&live, "--live");
    add(&live, "--count");
    add(&live, "1");
    d->live_shown = run_shown(live.v, NULL, 10, "teshim stats --live");
}

/* Step 1 with the emulated libibverbs: ibv_rc_pingpong, server and client,
 * under `teshim run` with relaxed ordering and traffic class on. */
static bool step_emulated_rdma(struct demo *d)
{
    char port[16], rec[4200], stats[4200], log[4200], benv[4300];
    struct args s = {0}, c = {0};

    heading(d, "an unmodified RDMA program on the emulated RDMA device (RoCE)");
    if (!d->emu_script[0]) {
        printf("skipped: scripts/emulated-verbs is not in this tree (%s)\n",
               d->src[0] ? d->src : "source tree unknown");
        return false;
    }
    if (!d->have_pingpong) {
        printf("skipped: ibv_rc_pingpong (Debian package ibverbs-utils) is not installed\n");
        return false;
    }
    snprintf(port, sizeof(port), "%d", free_port());
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
        add(&s, pre[i]);
        add(&c, pre[i]);
    }
    add(&c, "127.0.0.1");
    printf("ibv_rc_pingpong (Debian's ibverbs-utils, unmodified) with 1 MiB messages over the\n"
           "emulated RoCE device; teshim adds relaxed ordering to its registrations and\n"
           "traffic class 106 to its QP transitions. Server (output in %s):\n",
           log);
    show_cmd(s.v, env);
    pid_t srv = spawn(s.v, env, log);
    if (srv < 0)
        return false;
    if (!wait_listen(srv, atoi(port), 60)) {
        printf("-> the server did not start listening on port %s (see %s)\n", port, log);
        stop(srv);
        return false;
    }
    printf("while the server waits for its client, the live view shows it (its 1 MiB\n"
           "registration already carries relaxed ordering):\n");
    show_live(d);
    printf("client:\n");
    bool ok = run_shown(c.v, env, 30, "the ibv_rc_pingpong client");
    int st = wait_limit(srv, 10);
    if (st == -1)
        printf("-> the server did not finish and was stopped\n");
    printf("\nteshim's reports of both processes:\n");
    show_reports(d, stats);
    show_record(rec, 8);
    return ok;
}

/* Step 1 with the socket hooks: iperf3 under the TCP policy. */
static bool step_tcp(struct demo *d)
{
    char port[16], stats[4200], log[4200], ports_set[64];
    struct args s = {0}, c = {0};

    heading(d, "an unmodified TCP program (iperf3) under the socket policies");
    if (!d->sock_hooks) {
        printf("skipped: this build of libteshim.so has no socket hooks (connect, accept...)\n");
        return false;
    }
    if (!d->have_iperf3) {
        printf("skipped: iperf3 is not installed\n");
        return false;
    }
    snprintf(port, sizeof(port), "%d", free_port());
    snprintf(stats, sizeof(stats), "%s/tcp-stats", d->tmp);
    snprintf(log, sizeof(log), "%s/iperf3-server.log", d->tmp);
    snprintf(ports_set, sizeof(ports_set), "tcp.ports=%s", port);
    struct args *both[] = {&s, &c};
    for (int i = 0; i < 2; i++) {
        struct args *a = both[i];
        add(a, d->self);
        add(a, "run");
        if (shipped("tcp-qos")) {
            add(a, "--profile");
            add(a, "tcp-qos");
        } else if (pol_find_key("tcp.dscp") >= 0) {
            add(a, "--set");
            add(a, "tcp.dscp=26");
        }
        if (pol_find_key("tcp.ports") >= 0) {
            add(a, "--set");
            add(a, ports_set);
        }
        add(a, "--stats-dir");
        add(a, stats);
        add(a, "--");
        add(a, "iperf3");
    }
    add(&s, "-s");
    add(&s, "-1");
    add(&s, "-p");
    add(&s, port);
    add(&c, "-c");
    add(&c, "127.0.0.1");
    add(&c, "-p");
    add(&c, port);
    add(&c, "-t");
    add(&c, "1");
    printf("iperf3 server (output in %s) and client over loopback, with %s (DSCP 26,\n"
           "AF31) on the sockets of port %s:\n",
           log, shipped("tcp-qos") ? "the tcp-qos profile" : "tcp.dscp=26", port);
    show_cmd(s.v, NULL);
    pid_t srv = spawn(s.v, NULL, log);
    if (srv < 0)
        return false;
    if (!wait_listen(srv, atoi(port), 20)) {
        printf("-> the iperf3 server did not start listening (see %s)\n", log);
        stop(srv);
        return false;
    }
    bool ok = run_shown(c.v, NULL, 30, "the iperf3 client");
    if (wait_limit(srv, 10) == -1)
        printf("-> the iperf3 server did not finish and was stopped\n");
    printf("\nteshim's reports of both processes:\n");
    show_reports(d, stats);
    return ok;
}

/* Step 1 fallback: the cli tests' host program against a stand-in libibverbs. */
static bool step_small_host(struct demo *d)
{
    char stats[4200];
    struct args a = {0};

    heading(d, "a small program calling ibv_modify_qp (no RDMA device, no emulation)");
    if (!d->cli_host[0]) {
        printf("skipped: the test program tests/cli/cli_host was not built\n");
        return false;
    }
    snprintf(stats, sizeof(stats), "%s/host-stats", d->tmp);
    const char *v[] = {d->self,       "run", "--set", "rdma.traffic_class=106",
                       "--stats-dir", stats, "--",    d->cli_host,
                       "--modify-qp", "3"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        add(&a, v[i]);
    printf("tests/cli/cli_host is built against the real verbs.h like an application and\n"
           "linked to a two-symbol stand-in for libibverbs; each of its ibv_modify_qp calls\n"
           "to RTR with a global address gets traffic class 106:\n");
    bool ok = run_shown(a.v, NULL, 20, "cli_host");
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
static int demo_pair(int argc, char **argv)
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
    pid_t srv = spawn(argv + 4, NULL, NULL);
    if (srv < 0)
        return 1;
    if (!wait_listen(srv, port, 30)) {
        tsc_err("demo --pair: the server did not listen on port %d", port);
        stop(srv);
        return 1;
    }
    pid_t cli = spawn(argv + second + 1, NULL, NULL);
    int cst = cli > 0 ? wait_limit(cli, 60) : -1;
    /* A server whose client failed may wait for it forever. */
    if (cst == -1 || !WIFEXITED(cst) || WEXITSTATUS(cst) != 0) {
        stop(srv);
        return 1;
    }
    int sst = wait_limit(srv, 10);
    return sst != -1 && WIFEXITED(sst) && WEXITSTATUS(sst) == 0 ? 0 : 1;
}

/* The A/B step on the emulated RDMA device: perftest's ib_write_bw. */
static bool step_ab_rdma(struct demo *d)
{
    char port[16], json[4200], svg[4200], runs[16], benv[4300];
    struct args ab = {0};

    heading(d, "A/B experiment of an RDMA transfer: teshim ab");
    if (!d->emu_script[0] || !d->have_perftest) {
        printf("skipped: needs the emulated libibverbs and perftest's ib_write_bw\n");
        return false;
    }
    snprintf(port, sizeof(port), "%d", free_port());
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
        add(&ab, v[i]);
    printf("perftest's ib_write_bw (unmodified), server and client on the emulated RoCE device,\n"
           "20000 RDMA writes of 64 KiB per run; arm B adds relaxed ordering to its\n"
           "registrations and traffic class 106 to its QPs (--disable_pcie_relaxed: the flag\n"
           "is teshim's, not perftest's). The emulation moves bytes with memory copies, so\n"
           "expect no difference: the point is the method, and that B's policy applied.\n");
    show_cmd(ab.v, env);
    pid_t p = spawn(ab.v, env, NULL);
    if (p <= 0)
        return false;
    int st = wait_limit(p, 20.0 + 6.0 * 2 * (d->runs + 1));
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
static void step_ab(struct demo *d)
{
    char port[16], slog[4200], json[4200], svg[4200], seg[64], runs[16], listen_at[64],
        policy_dscp[64], policy_ports[64];
    struct args s = {0}, ab = {0};
    const char *metric, *metric_name;

    snprintf(port, sizeof(port), "%d", free_port());
    snprintf(slog, sizeof(slog), "%s/ab-server.log", d->tmp);
    snprintf(json, sizeof(json), "%s/ab.json", d->tmp);
    snprintf(svg, sizeof(svg), "%s/ab.svg", d->tmp);
    snprintf(runs, sizeof(runs), "%u", d->runs);
    snprintf(seg, sizeof(seg), "127.0.0.1:%s", port);
    snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%s", port);

    bool bench = d->bench[0] != '\0';
    if (!bench && !d->have_iperf3) {
        heading(d, "A/B experiment of a TCP transfer");
        printf("skipped: neither build/bin/teshim-bench nor iperf3 is available\n");
        return;
    }
    if (!d->live_shown)
        heading(d, "live statistics of a running process: teshim stats --live");
    else
        heading(d, "A/B experiment of a TCP transfer: teshim ab");
    /* The server runs the same in both arms: under the shim in rollout arm A,
     * so it shows in the live view but applies nothing. */
    add(&s, d->self);
    add(&s, "run");
    add(&s, "--set");
    add(&s, "rollout.arm=A");
    add(&s, "--");
    if (bench) {
        add(&s, d->bench);
        add(&s, "--mode");
        add(&s, "target");
        add(&s, "--listen");
        add(&s, listen_at);
    } else {
        add(&s, "iperf3");
        add(&s, "-s");
        add(&s, "-p");
        add(&s, port);
    }
    printf("a transfer server under teshim (rollout arm A: loaded, applying nothing), output in "
           "%s:\n",
           slog);
    show_cmd(s.v, NULL);
    pid_t srv = spawn(s.v, NULL, slog);
    /* teshim-bench listens before its buffer is registered: an initiator
     * that comes too early finds no buffer. Its "listening" line comes after
     * the registration. */
    bool up = srv > 0 && (bench ? wait_log(srv, slog, "listening port", 20)
                                : wait_listen(srv, atoi(port), 20));
    if (!up) {
        printf("-> the server did not start listening on port %s (see %s); no A/B step\n", port,
               slog);
        stop(srv);
        return;
    }
    if (!d->live_shown) {
        show_live(d);
        heading(d, "A/B experiment of a TCP transfer: teshim ab");
    }
    add(&ab, d->self);
    add(&ab, "ab");
    add(&ab, "-n");
    add(&ab, runs);
    add(&ab, "--warmup");
    add(&ab, "1");
    if (bench) {
        metric = "throughput ([0-9.]+) GB/s";
        metric_name = "throughput (GB/s)";
    } else {
        metric = "([0-9.]+) Gbits/sec.*receiver";
        metric_name = "iperf3 (Gbit/s)";
    }
    add(&ab, "--metric");
    add(&ab, metric);
    add(&ab, "--metric-name");
    add(&ab, metric_name);
    /* The policy under test: the socket policies when this build has them;
     * otherwise the RDMA profile, which a TCP transfer never reaches, and
     * ab flags arm B for injecting nothing. */
    if (d->sock_hooks && pol_find_key("tcp.dscp") >= 0) {
        snprintf(policy_dscp, sizeof(policy_dscp), "%s",
                 shipped("tcp-qos") ? "profile:tcp-qos" : "set:tcp.dscp=26");
        add(&ab, "--policy-b");
        add(&ab, policy_dscp);
        if (pol_find_key("tcp.ports") >= 0) {
            snprintf(policy_ports, sizeof(policy_ports), "set:tcp.ports=%s", port);
            add(&ab, "--policy-b");
            add(&ab, policy_ports);
        }
        printf("arm B: %s on the transfer's connections (DSCP 26), scoped to port %s; arm A:\n"
               "passthrough. DSCP only matters to the queues of a real network, so on loopback\n"
               "expect no difference: the point is the method, and that B's policy applied.\n",
               policy_dscp, port);
    } else {
        add(&ab, "--policy-b");
        add(&ab, "profile:rdma-ro-tc");
        printf("this build has no socket hooks, so a TCP transfer offers no call for a policy to\n"
               "change: arm B runs the RDMA profile rdma-ro-tc, and teshim ab must FLAG it as\n"
               "having injected nothing instead of reporting \"no effect\".\n");
    }
    add(&ab, "--json");
    add(&ab, json);
    add(&ab, "--plot");
    add(&ab, svg);
    add(&ab, "--");
    if (bench) {
        const char *v[] = {
            d->bench, "--mode",       "initiator", "--segment",    seg,  "--operation",
            "write",  "--block-size", "1048576",   "--batch-size", "16", "--threads",
            "1",      "--duration",   "1",         "--transport",  "tcp"};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
            add(&ab, v[i]);
        printf("the engine bench (teshim-bench) writes 1 MiB blocks over TCP for 1 s per run:\n");
    } else {
        const char *v[] = {"iperf3", "-c", "127.0.0.1", "-p", port, "-t", "1", "-f", "g"};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
            add(&ab, v[i]);
        printf("teshim-bench is not built here; iperf3 over loopback, 1 s per run:\n");
    }
    /* ab's exit status says whether it flagged something: shown, not fatal. */
    show_cmd(ab.v, NULL);
    pid_t p = spawn(ab.v, NULL, NULL);
    if (p > 0) {
        int st = wait_limit(p, 20.0 + 2.5 * 2 * (d->runs + 1));
        if (st == -1)
            printf("-> teshim ab did not finish in time and was stopped\n");
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
            printf("-> teshim ab exit status 1: it flagged the experiment (see above)\n");
    }
    stop(srv);
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
    double t0 = mono();

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

    bool rdma = step_emulated_rdma(&d);
    step_tcp(&d);
    if (!rdma)
        step_small_host(&d);
    /* The A/B step uses a transfer the policy can act on: TCP when the socket
     * hooks exist, else RDMA on the emulated device, else TCP anyway (arm B
     * is then flagged for injecting nothing, which is the right answer). */
    if (d.sock_hooks || !rdma || !step_ab_rdma(&d))
        step_ab(&d);
    next_steps(&d);
    printf("(demo took %.0f s)\n", mono() - t0);
    return 0;
}
