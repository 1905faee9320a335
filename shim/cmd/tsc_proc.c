/* The command's process toolkit: spawn, wait under a limit, capture, stop. */
#include "tsc_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double tsc_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Tracked children, read by a signal handler. */
#define TSC_MAX_TRACKED 64
static pid_t tracked[TSC_MAX_TRACKED];
static bool tracked_group[TSC_MAX_TRACKED];
static volatile sig_atomic_t ntracked;

void tsc_proc_kill_tracked(void)
{
    for (sig_atomic_t i = 0; i < ntracked; i++)
        kill(tracked_group[i] ? -tracked[i] : tracked[i], SIGKILL);
}

static void child(const struct tsc_spawn *s, int err_fd)
{
    int devnull = open("/dev/null", O_RDONLY);

    if (s->own_group)
        setpgid(0, 0);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        close(devnull);
    }
    int out = s->out_fd > 0 ? s->out_fd : -1;
    if (s->log)
        out = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out >= 0) {
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
    }
    for (char *const *e = s->env; e && *e; e++) {
        if (strchr(*e, '='))
            putenv(*e);
        else
            unsetenv(*e);
    }
    execvp(s->argv[0], s->argv);
    int e = errno;
    if (write(err_fd, &e, sizeof(e)) < 0)
        e = 0;
    _exit(127);
}

pid_t tsc_proc_spawn(const struct tsc_spawn *s)
{
    int errp[2], e = 0;

    if (pipe2(errp, O_CLOEXEC) != 0)
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        e = errno;
        close(errp[0]);
        close(errp[1]);
        return -e;
    }
    if (pid == 0) {
        close(errp[0]);
        child(s, errp[1]);
    }
    close(errp[1]);
    if (s->own_group)
        setpgid(pid, pid); /* also here: no race with a kill of the group */
    /* EOF: the exec succeeded (the pipe closed on exec); else its errno. */
    ssize_t r;
    do
        r = read(errp[0], &e, sizeof(e));
    while (r < 0 && errno == EINTR);
    close(errp[0]);
    if (r == (ssize_t)sizeof(e)) {
        waitpid(pid, NULL, 0);
        return -e;
    }
    if (s->track && ntracked < TSC_MAX_TRACKED) {
        tracked[ntracked] = pid;
        tracked_group[ntracked] = s->own_group;
        ntracked = ntracked + 1;
    }
    return pid;
}

int tsc_proc_wait(pid_t pid, double timeout, bool group, int *status, struct rusage *ru)
{
    double end = tsc_mono() + timeout;
    struct rusage scratch;

    for (;;) {
        pid_t w = wait4(pid, status, timeout < 0 ? 0 : WNOHANG, ru ? ru : &scratch);
        if (w == pid)
            return 0;
        if (w < 0 && errno != EINTR)
            return -errno;
        if (timeout >= 0 && tsc_mono() > end)
            break;
        if (w == 0) {
            struct timespec t = {0, 20 * 1000 * 1000};
            nanosleep(&t, NULL);
        }
    }
    kill(group ? -pid : pid, SIGKILL);
    wait4(pid, status, 0, ru ? ru : &scratch);
    return -ETIMEDOUT;
}

bool tsc_proc_stop(pid_t pid, bool group, double grace)
{
    int status;

    if (pid <= 0)
        return true;
    kill(group ? -pid : pid, SIGTERM);
    return tsc_proc_wait(pid, grace, group, &status, NULL) == 0;
}

/* Drain what is readable now; false at EOF or error. */
static bool drain(int fd, void (*feed)(void *, const char *, size_t), void *arg)
{
    char buf[16384];

    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r > 0) {
            feed(arg, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 && errno == EAGAIN;
    }
}

int tsc_proc_capture(pid_t pid, int fd, void (*feed)(void *arg, const char *buf, size_t n),
                     void *arg, int *status, struct rusage *ru)
{
    /* A pidfd tells when the child exits even if a grandchild keeps the
     * pipe open; without one, poll with a short timeout. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0), rc = 0;
    bool open_ = true;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
        int np = poll(open_ ? p : p + 1, open_ ? 2 : 1, pidfd >= 0 ? -1 : 10);
        if (np < 0 && errno != EINTR) {
            rc = tsc_proc_wait(pid, -1, false, status, ru);
            break;
        }
        if (open_ && p[0].revents)
            open_ = drain(fd, feed, arg);
        pid_t w = wait4(pid, status, WNOHANG, ru);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
    }
    /* What the program wrote before it exited is in the pipe. */
    if (open_)
        drain(fd, feed, arg);
    if (pidfd >= 0)
        close(pidfd);
    return rc;
}

void tsc_proc_describe(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status 0x%x", status);
}
