#include "emu_testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

pid_t et_spawn(char *const argv[], const char *out_path)
{
    pid_t pid = fork();

    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);
    {
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (in < 0 || out < 0)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        close(in);
        close(out);
    }
    execvp(argv[0], argv);
    _exit(127);
}

static uint64_t et_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int et_wait(pid_t pid, int timeout_s)
{
    uint64_t end = et_now_ms() + (uint64_t)timeout_s * 1000;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (et_now_ms() >= end) {
            et_kill(pid);
            return -1;
        }
        usleep(10000);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

void et_kill(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static bool et_port_used_in(const char *file, int port, bool listen_only)
{
    char line[512];
    FILE *f = fopen(file, "r");
    bool found = false;

    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char local[128];
        unsigned int st;
        char *colon;

        if (sscanf(line, "%*d: %127s %*s %x", local, &st) != 2)
            continue;
        colon = strrchr(local, ':');
        if (colon != NULL && (!listen_only || st == 0x0a) &&
            (int)strtol(colon + 1, NULL, 16) == port)
            found = true;
    }
    fclose(f);
    return found;
}

int et_free_port(int base, int span)
{
    for (int i = 0; i < span; i++) {
        int port = base + (int)((getpid() + i) % span);

        if (!et_port_used_in("/proc/net/tcp", port, false) &&
            !et_port_used_in("/proc/net/tcp6", port, false))
            return port;
    }
    return 0;
}

static bool et_listening_in(const char *file, int port)
{
    return et_port_used_in(file, port, true);
}

bool et_wait_listen(int port, int timeout_ms)
{
    uint64_t end = et_now_ms() + (uint64_t)timeout_ms;

    while (et_now_ms() < end) {
        if (et_listening_in("/proc/net/tcp", port) || et_listening_in("/proc/net/tcp6", port))
            return true;
        usleep(20000);
    }
    return false;
}

int et_each_line(const char *path, void (*fn)(const char *line, void *arg), void *arg)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    int n = 0;

    if (f == NULL)
        return -1;
    while (getline(&line, &cap, f) > 0) {
        fn(line, arg);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

struct et_count {
    const char *const *needles;
    int n;
};

static void et_count_one(const char *line, void *arg)
{
    struct et_count *c = arg;

    for (const char *const *p = c->needles; *p != NULL; p++)
        if (strstr(line, *p) == NULL)
            return;
    c->n++;
}

int et_count_lines(const char *path, const char *const needles[])
{
    struct et_count c = {.needles = needles, .n = 0};

    if (et_each_line(path, et_count_one, &c) < 0)
        return -1;
    return c.n;
}

bool et_field_u64(const char *line, const char *key, uint64_t *val)
{
    char pat[128];
    const char *p;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(line, pat);
    if (p == NULL)
        return false;
    *val = strtoull(p + strlen(pat), NULL, 10);
    return true;
}

static void et_dump_one(const char *line, void *arg)
{
    fputs(line, stderr);
}

void et_dump(const char *path)
{
    fprintf(stderr, "---- %s\n", path);
    et_each_line(path, et_dump_one, NULL);
}
