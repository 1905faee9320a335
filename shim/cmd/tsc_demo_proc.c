/* teshim demo: children in process groups under time limits, ports and logs waited for. */
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

double demo_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Process groups started by the demo: killed if the demo is interrupted, so
 * no server outlives it (they are not in the terminal's foreground group). */
#define DEMO_MAX_CHILDREN 64
static volatile sig_atomic_t demo_nchildren;
/* Children get process groups of their own, except under --pair: there they
 * stay in the group of the ab run, so stopping the run stops them too. */
bool demo_own_groups = true;
static pid_t demo_children[DEMO_MAX_CHILDREN];

static void demo_on_signal(int sig)
{
    for (sig_atomic_t i = 0; i < demo_nchildren; i++)
        kill(demo_own_groups ? -demo_children[i] : demo_children[i], SIGKILL);
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

/* Start argv in its own process group, env entries "K=V" added, output to
 * log (appended) or inherited when log is NULL. -1 on failure (reported). */
pid_t demo_spawn(char *const argv[], char *const env[], const char *log)
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
int demo_wait_limit(pid_t pid, double timeout)
{
    double end = demo_mono() + timeout;
    int status;

    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return status;
        if (w < 0 && errno != EINTR)
            return -1;
        if (demo_mono() > end)
            break;
        struct timespec t = {0, 20 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    kill(demo_own_groups ? -pid : pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* End a background server: SIGTERM to its group, SIGKILL after 3 s. */
void demo_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(demo_own_groups ? -pid : pid, SIGTERM);
    if (demo_wait_limit(pid, 3) == -1)
        printf("   (the server did not stop on SIGTERM and was killed)\n");
}

/* Run in the foreground with output shown; true when it exited 0. */
bool demo_run_shown(char *const argv[], char *const env[], double timeout, const char *what)
{
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
        printf("-> %s ended with %s %d\n", what, WIFEXITED(st) ? "exit status" : "signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return false;
    }
    return true;
}

/* Is something listening on TCP port (IPv4 or IPv6) on this host? */
bool demo_listening(int port)
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
bool demo_wait_listen(pid_t server, int port, double timeout)
{
    double end = demo_mono() + timeout;
    int status;

    while (demo_mono() < end) {
        if (demo_listening(port))
            return true;
        if (waitpid(server, &status, WNOHANG) == server)
            return false;
        struct timespec t = {0, 20 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return false;
}

/* Wait until the file at path contains text (a server's "ready" line). */
bool demo_wait_log(pid_t server, const char *path, const char *text, double timeout)
{
    double end = demo_mono() + timeout;
    char buf[4096];
    int status;

    while (demo_mono() < end) {
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

void demo_add(struct args *a, const char *s)
{
    if (a->n < DEMO_MAX_ARGS)
        a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}
