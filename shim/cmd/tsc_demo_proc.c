/*
 * teshim demo: commands from templates, children under time limits (through
 * the command's process toolkit), ports and logs waited for, and --pair.
 */
#include "tsc.h"
#include "tsc_demo_int.h"
#include "tsc_proc.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Children get process groups of their own, except under --pair: there they
 * stay in the group of the ab run, so stopping the run stops them too. */
bool demo_own_groups = true;

void demo_add(struct args *a, const char *s)
{
    if (a->n < DEMO_MAX_ARGS) {
        a->v[a->n] = strdup(s);
        if (a->v[a->n])
            a->n++;
    }
    a->v[a->n] = NULL;
}

void demo_args_free(struct args *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    a->n = 0;
    a->v[0] = NULL;
}

/* The value of template variable name (without braces), NULL if unknown. */
static const char *var(const struct demo *d, const char *name, size_t len, char *num, size_t nlen)
{
    static const char *const names[] = {"self",  "build", "tmp",  "emu",
                                        "bench", "host",  "runs", "port"};
    const char *vals[] = {d->self, d->build, d->tmp, d->emu_script, d->bench, d->cli_host};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) != len || strncmp(names[i], name, len) != 0)
            continue;
        if (i < sizeof(vals) / sizeof(vals[0]))
            return vals[i];
        snprintf(num, nlen, "%u", i == 6 ? d->runs : (unsigned)d->port);
        return num;
    }
    return NULL;
}

/* Append one element of a template, its variables replaced. */
static int expand_one(const struct demo *d, const char *t, size_t len, struct args *a)
{
    char out[8192], num[32];
    size_t n = 0;
    const char *end = t + len;

    while (t < end && n + 1 < sizeof(out)) {
        const char *close = *t == '{' ? memchr(t, '}', (size_t)(end - t)) : NULL;
        if (!close) {
            out[n++] = *t++;
            continue;
        }
        const char *v = var(d, t + 1, (size_t)(close - t - 1), num, sizeof(num));
        if (!v) {
            tsc_err("demo: template variable '%.*s' is unknown", (int)(close - t + 1), t);
            return -1;
        }
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s", v);
        if (n >= sizeof(out))
            n = sizeof(out) - 1;
        t = close + 1;
    }
    out[n] = '\0';
    if (a->n >= DEMO_MAX_ARGS) {
        tsc_err("demo: a command of more than %d elements", DEMO_MAX_ARGS);
        return -1;
    }
    demo_add(a, out);
    return 0;
}

int demo_expand(const struct demo *d, const char *tmpl, struct args *a)
{
    const char *t = tmpl;

    while (*t) {
        t += strspn(t, " ");
        if (!*t)
            break;
        size_t len;
        int rc;
        if (*t == '\'') {
            const char *q = strchr(t + 1, '\'');
            if (!q) {
                tsc_err("demo: unterminated quote in the template '%s'", tmpl);
                return -1;
            }
            rc = expand_one(d, t + 1, (size_t)(q - t - 1), a);
            len = (size_t)(q - t + 1);
        } else {
            len = strcspn(t, " ");
            rc = expand_one(d, t, len, a);
        }
        if (rc != 0)
            return -1;
        t += len;
    }
    return 0;
}

static void demo_on_signal(int sig)
{
    tsc_proc_kill_tracked();
    _exit(128 + sig);
}

void demo_catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = demo_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

pid_t demo_spawn(char *const argv[], char *const env[], const char *log)
{
    struct tsc_spawn s = {
        .argv = argv, .env = env, .log = log, .own_group = demo_own_groups, .track = true};
    pid_t pid = tsc_proc_spawn(&s);

    if (pid < 0) {
        tsc_err("demo: cannot run %s: %s", argv[0], strerror((int)-pid));
        return -1;
    }
    return pid;
}

int demo_wait_limit(pid_t pid, double timeout)
{
    int status;

    return tsc_proc_wait(pid, timeout, demo_own_groups, &status, NULL) == 0 ? status : -1;
}

/* End a background server: SIGTERM to its group, SIGKILL after 3 s. */
void demo_stop(pid_t pid)
{
    if (!tsc_proc_stop(pid, demo_own_groups, 3))
        printf("   (the server did not stop on SIGTERM and was killed)\n");
}

/* Run in the foreground with output shown; true when it exited 0. */
bool demo_run_shown(char *const argv[], char *const env[], double timeout, const char *what)
{
    char how[64];

    demo_show_cmd(argv, env);
    pid_t pid = demo_spawn(argv, env, NULL);
    if (pid < 0)
        return false;
    int st = demo_wait_limit(pid, timeout);
    if (st == -1) {
        printf("-> %s did not finish within %.0f s and was stopped\n", what, timeout);
        return false;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        tsc_proc_describe(st, how, sizeof(how));
        printf("-> %s ended with %s\n", what, how);
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

/* Poll until ready() or the server exits or timeout. */
static bool wait_until(pid_t server, double timeout, bool (*ready)(const void *), const void *arg)
{
    double end = tsc_mono() + timeout;
    int status;

    while (tsc_mono() < end) {
        if (ready(arg))
            return true;
        if (waitpid(server, &status, WNOHANG) == server)
            return false;
        struct timespec t = {0, 20 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return false;
}

static bool port_ready(const void *arg)
{
    return listening(*(const int *)arg);
}

bool demo_wait_listen(pid_t server, int port, double timeout)
{
    return wait_until(server, timeout, port_ready, &port);
}

struct log_wait {
    const char *path, *text;
};

static bool log_ready(const void *arg)
{
    const struct log_wait *w = arg;
    char buf[4096];
    FILE *f = fopen(w->path, "re");

    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, w->text) != NULL;
}

/* Wait until the file at path contains text (a server's "ready" line). */
bool demo_wait_log(pid_t server, const char *path, const char *text, double timeout)
{
    struct log_wait w = {path, text};

    return wait_until(server, timeout, log_ready, &w);
}

/* A port nobody uses right now (the kernel's choice for port 0). */
int demo_free_port(void)
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
