/* teshim ab: one run of the command in one arm, its output and its reports. */
#include "tsc.h"
#include "tsc_proc.h"
#include "tsc_ab_int.h"
#include "tsc_json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

static void out_feed_cb(void *arg, const char *buf, size_t n)
{
    out_feed(arg, buf, n);
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

/*
 * One run of arm a; 0 with r filled, -ENOENT etc. when the command cannot be
 * executed at all (reported), other -errno on internal failure.
 */
int ab_run_once(struct ab_opts *o, int a, const char *runid, struct ab_run *r)
{
    const struct ab_arm *arm = &o->arm[a];
    char dir[4200], stats_dir[4300], arm_var[32], run_var[64], preload[4200];
    int out[2], rc = 0;
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
    /* The run's environment: the arm's settings, a fresh report folder,
     * every process reporting (arm A applies nothing, and a B that applied
     * nothing is flagged from its reports), and the run's identity. */
    char *env[AB_MAX_ENV + 8];
    size_t ne = 0;
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", o->orig_preload ? o->orig_preload : "");
    if (!arm->preload)
        env[ne++] = o->orig_preload ? preload : "LD_PRELOAD";
    env[ne++] = arm->passthrough ? "TESHIM_ROLLOUT_ARM=A" : "TESHIM_ROLLOUT_ARM=B";
    for (size_t i = 0; i < arm->nenv; i++)
        env[ne++] = arm->env[i];
    snprintf(stats_dir, sizeof(stats_dir), "TESHIM_STATS_DIR=%s", dir);
    snprintf(arm_var, sizeof(arm_var), "TESHIM_AB_ARM=%c", arm->name);
    snprintf(run_var, sizeof(run_var), "TESHIM_AB_RUN=%s", runid);
    env[ne++] = stats_dir;
    env[ne++] = "TESHIM_STATS_REPORT=all";
    env[ne++] = arm_var;
    env[ne++] = run_var;
    env[ne] = NULL;

    struct tsc_spawn sp = {.argv = o->cmd, .env = env, .out_fd = out[1]};
    struct rusage ru;
    int status = 0;
    double t0 = tsc_mono();
    pid_t pid = tsc_proc_spawn(&sp);
    close(out[1]);
    if (pid < 0) {
        rc = (int)pid;
        tsc_err("ab: cannot run %s: %s", o->cmd[0], strerror(-rc));
        goto out_close;
    }
    rc = tsc_proc_capture(pid, out[0], out_feed_cb, st, &status, &ru);
    double t1 = tsc_mono();
    if (rc != 0) {
        tsc_err("ab: waiting for %s: %s", o->cmd[0], strerror(-rc));
        goto out_close;
    }
    if (st->len && !st->overlong)
        out_line(st);
    r->status = status;
    r->v[M_WALL] = t1 - t0;
    r->v[M_CPU] = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    r->v[M_RSS] = (double)ru.ru_maxrss / 1024.0;
    r->has_metric = st->has_metric;
    r->v[M_METRIC] = st->has_metric ? st->metric : NAN;
    collect_reports(dir, r);

out_close:
    close(out[0]);
out_free:
    free(st);
    return rc;
}

bool ab_run_ok(const struct ab_run *r)
{
    return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}
