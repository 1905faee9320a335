/* teshim ab: one run of the command in one arm, its output and its reports. */
#include "tsc.h"
#include "tsc_ab.h"
#include "tsc_ab_int.h"
#include "tsc_json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void out_line(struct out_state *s)
{
    double v;

    s->line[s->len] = '\0';
    if (s->o->metric_re && tsc_metric_line(&s->o->re, s->line, &v)) {
        s->metric = v;
        s->has_metric = true;
    }
    s->len = 0;
}

static void out_feed(struct out_state *s, const char *buf, size_t n)
{
    if (s->o->verbose)
        fwrite(buf, 1, n, stderr);
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            if (!s->overlong)
                out_line(s);
            s->overlong = false;
            s->len = 0;
            continue;
        }
        if (s->overlong)
            continue;
        if (s->len + 1 >= sizeof(s->line)) {
            out_line(s); /* match what fits, then skip the rest of the line */
            s->overlong = true;
            continue;
        }
        s->line[s->len++] = buf[i];
    }
}

/* Drain what is readable now; returns false at EOF or error. */
static bool out_read(int fd, struct out_state *s)
{
    char buf[16384];

    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r > 0) {
            out_feed(s, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return true;
        return false;
    }
}

/* Sum the reports of a run's folder into r. */
static void collect_reports(const char *dir, struct ab_run *r)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        char path[4500], err[256];
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0 || strncmp(e->d_name, "teshim-", 7))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct tsc_json *j = tsc_json_load(path, err, sizeof(err));
        if (!j) {
            tsc_err("ab: report %s: %s", path, err);
            continue;
        }
        const struct tsc_json *hooks = tsc_json_get(j, "hooks");
        if (hooks && hooks->type == TSC_JSON_OBJ) {
            r->reports++;
            for (const struct tsc_json *h = hooks->child; h; h = h->next) {
                r->calls += tsc_json_num(h, "calls", 0);
                r->injected += tsc_json_num(h, "injected", 0);
                r->observed += tsc_json_num(h, "observed", 0);
                r->fallbacks += tsc_json_num(h, "fallbacks", 0);
            }
            const char *g = tsc_json_str(j, "gate", "?");
            if (!strstr(r->gates, g)) {
                size_t l = strlen(r->gates);
                snprintf(r->gates + l, sizeof(r->gates) - l, "%s%s", l ? "," : "", g);
            }
            if (!r->policy_hash[0])
                snprintf(r->policy_hash, sizeof(r->policy_hash), "%s",
                         tsc_json_str(j, "policy_hash", ""));
        }
        tsc_json_free(j);
    }
    closedir(d);
}

static void child_exec(const struct ab_opts *o, const struct ab_arm *arm, const char *dir,
                       const char *runid, int out_fd, int err_fd)
{
    int devnull = open("/dev/null", O_RDONLY);

    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        close(devnull);
    }
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    close(out_fd);
    if (!arm->preload) {
        if (o->orig_preload)
            setenv("LD_PRELOAD", o->orig_preload, 1);
        else
            unsetenv("LD_PRELOAD");
    }
    setenv("TESHIM_ROLLOUT_ARM", arm->passthrough ? "A" : "B", 1);
    for (size_t i = 0; i < arm->nenv; i++)
        putenv(arm->env[i]);
    setenv("TESHIM_STATS_DIR", dir, 1);
    /* Every process reports: arm A applies nothing, and a B that applied
     * nothing is flagged from its reports. */
    setenv("TESHIM_STATS_REPORT", "all", 1);
    setenv("TESHIM_AB_ARM", arm->name == 'A' ? "A" : "B", 1);
    setenv("TESHIM_AB_RUN", runid, 1);
    execvp(o->cmd[0], o->cmd);
    int e = errno;
    if (write(err_fd, &e, sizeof(e)) < 0)
        e = 0;
    _exit(127);
} /*
   * One run of arm a; 0 with r filled, -ENOENT etc. when the command cannot be
   * executed at all (reported), other -errno on internal failure.
   */
int ab_run_once(struct ab_opts *o, int a, const char *runid, struct ab_run *r)
{
    const struct ab_arm *arm = &o->arm[a];
    char dir[4200];
    int out[2], errp[2], rc = 0;
    struct out_state *st = calloc(1, sizeof(*st));

    if (!st)
        return -ENOMEM;
    st->o = o;
    memset(r, 0, sizeof(*r));
    r->arm = a;
    snprintf(dir, sizeof(dir), "%s/%c-%s", o->root, arm->name, runid);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        tsc_err("ab: %s: %s", dir, strerror(errno));
        goto out_free;
    }
    if (pipe2(out, O_CLOEXEC) != 0) {
        rc = -errno;
        goto out_free;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        rc = -errno;
        goto out_close_out;
    }
    fflush(NULL);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        tsc_err("ab: fork: %s", strerror(errno));
        goto out_close_err;
    }
    if (pid == 0) {
        close(out[0]);
        close(errp[0]);
        child_exec(o, arm, dir, runid, out[1], errp[1]);
    }
    close(out[1]);
    close(errp[1]);
    out[1] = errp[1] = -1;

    /* A pidfd tells when the child exits even if a grandchild keeps the
     * output pipe open; without one, poll with a short timeout. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct rusage ru;
    int status = 0;
    double t1 = 0;
    bool exited = false, pipe_open = true;
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    while (!exited) {
        struct pollfd p[2] = {{out[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
        int np = poll(pipe_open ? p : p + 1, pipe_open ? 2 : 1, pidfd >= 0 ? -1 : 10);
        if (np < 0 && errno != EINTR)
            break;
        if (pipe_open && p[0].revents)
            pipe_open = out_read(out[0], st);
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) {
            t1 = now_s();
            exited = true;
        } else if (w < 0 && errno != EINTR) {
            break;
        }
    }
    if (!exited) {
        wait4(pid, &status, 0, &ru);
        t1 = now_s();
    }
    /* What the command wrote before it exited is in the pipe: read it. */
    if (pipe_open)
        out_read(out[0], st);
    if (st->len && !st->overlong)
        out_line(st);
    if (pidfd >= 0)
        close(pidfd);

    int child_errno = 0;
    if (read(errp[0], &child_errno, sizeof(child_errno)) == (ssize_t)sizeof(child_errno)) {
        tsc_err("ab: cannot run %s: %s", o->cmd[0], strerror(child_errno));
        rc = -child_errno;
        goto out_close_err;
    }
    r->status = status;
    r->v[M_WALL] = t1 - t0;
    r->v[M_CPU] = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    r->v[M_RSS] = (double)ru.ru_maxrss / 1024.0;
    r->has_metric = st->has_metric;
    r->v[M_METRIC] = st->has_metric ? st->metric : NAN;
    collect_reports(dir, r);

out_close_err:
    if (errp[0] >= 0)
        close(errp[0]);
    if (errp[1] >= 0)
        close(errp[1]);
out_close_out:
    if (out[0] >= 0)
        close(out[0]);
    if (out[1] >= 0)
        close(out[1]);
out_free:
    free(st);
    return rc;
}

bool ab_run_ok(const struct ab_run *r)
{
    return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

void ab_describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status 0x%x", status);
}
