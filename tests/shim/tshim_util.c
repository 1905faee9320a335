/* Helpers of the shim suites. */
#include "tshim.h"
#include "../report_sum.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tshim_dirs[8][256];
static unsigned tshim_ndirs;

static int tshim_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void tshim_cleanup(void)
{
    for (unsigned i = 0; i < tshim_ndirs; i++)
        nftw(tshim_dirs[i], tshim_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tree_path(const char *var, const char *rel)
{
    static char bufs[16][1024];
    static unsigned next;
    const char *root = getenv(var);
    char *b = bufs[next++ % 16];

    ck_assert_msg(root && *root, "%s is not set (run the suite through ctest)", var);
    snprintf(b, sizeof(bufs[0]), "%s/%s", root, rel);
    return b;
}

const char *tshim_build(const char *rel)
{
    return tree_path("TESHIM_BUILD_DIR", rel);
}

const char *tshim_source(const char *rel)
{
    return tree_path("TESHIM_SOURCE_DIR", rel);
}

const char *tshim_path(struct tshim_run *r, const char *name)
{
    static char bufs[16][600];
    static unsigned next;
    char *b = bufs[next++ % 16];

    snprintf(b, sizeof(bufs[0]), "%s/%s", r->dir, name);
    return b;
}

void tshim_env(struct tshim_run *r, const char *name, const char *value)
{
    size_t n = strlen(name);

    /* A later setting of the same name replaces the earlier one. */
    for (unsigned i = 0; i < r->nenv; i++) {
        if (strncmp(r->env[i], name, n) == 0 && r->env[i][n] == '=') {
            free(r->env[i]);
            ck_assert_int_ge(asprintf(&r->env[i], "%s=%s", name, value), 0);
            return;
        }
    }
    ck_assert_uint_lt(r->nenv, sizeof(r->env) / sizeof(r->env[0]) - 1);
    ck_assert_int_ge(asprintf(&r->env[r->nenv], "%s=%s", name, value), 0);
    r->nenv++;
    r->env[r->nenv] = NULL;
}

void tshim_unenv(struct tshim_run *r, const char *name)
{
    size_t n = strlen(name);

    for (unsigned i = 0; i < r->nenv; i++) {
        if (strncmp(r->env[i], name, n) == 0 && r->env[i][n] == '=') {
            free(r->env[i]);
            r->env[i] = r->env[--r->nenv];
            r->env[r->nenv] = NULL;
            return;
        }
    }
}

void tshim_init(struct tshim_run *r, bool preload)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "/tmp/tshim-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(r->dir));
    if (tshim_ndirs == 0)
        atexit(tshim_cleanup);
    if (tshim_ndirs < 8)
        snprintf(tshim_dirs[tshim_ndirs++], sizeof(tshim_dirs[0]), "%s", r->dir);
    snprintf(r->rec, sizeof(r->rec), "%s/record.jsonl", r->dir);
    snprintf(r->stats, sizeof(r->stats), "%s/stats", r->dir);

    /* Nothing from the machine may leak in: no /etc/teshim.conf, no user
     * file, no kill-switch file of the host. */
    int fd = open(tshim_path(r, "empty.conf"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    close(fd);
    tshim_env(r, "PATH", "/usr/local/bin:/usr/bin:/bin");
    tshim_env(r, "HOME", r->dir);
    tshim_env(r, "LD_LIBRARY_PATH", tshim_build("lib/verbs-emu"));
    tshim_env(r, "VERBS_EMU_RECORD", r->rec);
    tshim_env(r, "TESHIM_CONFIG", tshim_path(r, "empty.conf"));
    tshim_env(r, "TESHIM_KILL_SWITCH_FILE", tshim_path(r, "disable"));
    tshim_env(r, "TESHIM_STATS_DIR", r->stats);
    tshim_env(r, "TESHIM_STATS_LIVE", "off");
    /* The suites count what every process saw, passthrough ones too. */
    tshim_env(r, "TESHIM_STATS_REPORT", "all");
    if (preload)
        tshim_env(r, "LD_PRELOAD", tshim_build("lib/libteshim.so"));
    /* Sanitizer builds: their settings reach the programs too. */
    static const char *const pass[] = {"ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS"};
    for (size_t i = 0; i < sizeof(pass) / sizeof(pass[0]); i++)
        if (getenv(pass[i]))
            tshim_env(r, pass[i], getenv(pass[i]));
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0, len = 0;

    if (f) {
        for (;;) {
            if (len + 4096 + 1 > cap) {
                cap = cap ? cap * 2 : 65536;
                buf = realloc(buf, cap);
                ck_assert_ptr_nonnull(buf);
            }
            size_t n = fread(buf + len, 1, cap - len - 1, f);
            if (n == 0)
                break;
            len += n;
        }
        fclose(f);
    }
    if (!buf)
        buf = malloc(1);
    ck_assert_ptr_nonnull(buf);
    buf[len] = '\0';
    return buf;
}

static void load_record(struct tshim_run *r)
{
    char *text = slurp(r->rec);

    for (unsigned i = 0; i < r->nlines; i++)
        tsc_json_free(r->lines[i]);
    r->nlines = 0;
    for (char *line = text, *next; line && *line; line = next) {
        char err[128];
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (!*line)
            continue;
        ck_assert_uint_lt(r->nlines, TSHIM_MAX_REC);
        struct tsc_json *j = tsc_json_parse(line, err, sizeof(err));
        ck_assert_msg(j != NULL, "record line is not JSON (%s): %s", err, line);
        r->lines[r->nlines++] = j;
    }
    free(text);
}

/* Wait for pid; after timeout_s seconds (0: none) kill it and return -1. */
static int wait_bounded(pid_t pid, unsigned timeout_s)
{
    int st;

    for (unsigned ms = 0;; ms += 10) {
        pid_t w = waitpid(pid, &st, timeout_s ? WNOHANG : 0);
        ck_assert_int_ge(w, 0);
        if (w == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (ms >= timeout_s * 1000u) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(10000);
    }
}

void tshim_exec(struct tshim_run *r, const char *const *argv)
{
    const char *out = tshim_path(r, "stdout"), *err = tshim_path(r, "stderr");
    int in[2] = {-1, -1}, go[2] = {-1, -1};

    if (r->input)
        ck_assert_int_eq(pipe(in), 0);
    if (r->on_fork)
        ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* If the suite dies (a Check timeout), the program goes with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(126);
        if (r->input && (dup2(in[0], 0) < 0 || close(in[1]) != 0))
            _exit(126);
        if (r->on_fork) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) != 1)
                _exit(126);
        }
        if (r->child_setup)
            r->child_setup(r);
        execve(argv[0], (char *const *)argv, r->env);
        _exit(127);
    }
    if (r->on_fork) {
        close(go[0]);
        r->on_fork(r, pid);
        ck_assert_int_eq(write(go[1], "g", 1), 1);
        close(go[1]);
    }
    if (r->input) {
        close(in[0]);
        size_t len = strlen(r->input);
        ck_assert_int_eq(write(in[1], r->input, len), (ssize_t)len);
        close(in[1]);
    }
    r->status = wait_bounded(pid, r->timeout_s);
    free(r->out);
    free(r->err);
    r->out = slurp(out);
    r->err = slurp(err);
    const char *p = strstr(r->out, "pid ");
    r->pid = (p == r->out || (p && p[-1] == '\n')) ? (pid_t)atoi(p + 4) : 0;
    load_record(r);
}

void tshim_host(struct tshim_run *r, ...)
{
    const char *argv[64];
    unsigned n = 0;
    va_list ap;

    argv[n++] = tshim_build("bin/tshim_host");
    va_start(ap, r);
    for (const char *s; (s = va_arg(ap, const char *)) && n < 63;)
        argv[n++] = s;
    va_end(ap);
    argv[n] = NULL;
    tshim_exec(r, argv);
    tshim_ck(r, r->status == 0);
    tshim_ck(r, r->pid > 0);
}

static bool rec_match(const struct tsc_json *j, const char *call, const char *entry)
{
    if (strcmp(tsc_json_str(j, "call", ""), call) != 0)
        return false;
    return !entry || strcmp(tsc_json_str(j, "entry", ""), entry) == 0;
}

const struct tsc_json *tshim_rec(const struct tshim_run *r, const char *call, const char *entry,
                                 unsigned nth)
{
    for (unsigned i = 0; i < r->nlines; i++)
        if (rec_match(r->lines[i], call, entry) && nth-- == 0)
            return r->lines[i];
    return NULL;
}

unsigned tshim_rec_count(const struct tshim_run *r, const char *call, const char *entry)
{
    unsigned n = 0;

    for (unsigned i = 0; i < r->nlines; i++)
        n += rec_match(r->lines[i], call, entry);
    return n;
}

long long tshim_num(const struct tsc_json *j, const char *key)
{
    ck_assert_ptr_nonnull(j);
    const struct tsc_json *m = tsc_json_get(j, key);
    ck_assert_msg(m && m->type == TSC_JSON_NUM, "no number '%s' in the record line", key);
    return (long long)m->num;
}

static bool report_name(const char *name, pid_t pid)
{
    char suffix[32];
    size_t n = strlen(name), s;

    if (strncmp(name, "teshim-", 7) != 0)
        return false;
    if (pid == 0)
        return n > 5 && strcmp(name + n - 5, ".json") == 0;
    snprintf(suffix, sizeof(suffix), "-%d.json", (int)pid);
    s = strlen(suffix);
    return n > s && strcmp(name + n - s, suffix) == 0;
}

unsigned tshim_report_count(const struct tshim_run *r)
{
    DIR *d = opendir(r->stats);
    unsigned n = 0;

    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += report_name(e->d_name, 0);
    closedir(d);
    return n;
}

struct tsc_json *tshim_report(const struct tshim_run *r, pid_t pid)
{
    DIR *d = opendir(r->stats);
    char path[1024] = "", err[256];

    if (pid == 0)
        pid = r->pid;
    tshim_ck(r, d != NULL);
    for (struct dirent *e; (e = readdir(d));)
        if (report_name(e->d_name, pid))
            snprintf(path, sizeof(path), "%s/%s", r->stats, e->d_name);
    closedir(d);
    ck_assert_msg(path[0], "no report of pid %d in %s\n--- stderr ---\n%s", (int)pid, r->stats,
                  r->err);
    ck_assert_msg(report_file_balances(path, err, sizeof(err)) == 0, "%s: %s", path, err);
    struct tsc_json *j = tsc_json_load(path, err, sizeof(err));
    ck_assert_msg(j != NULL, "report %s: %s", path, err);
    ck_assert_int_eq((int)tsc_json_num(j, "pid", -1), (int)pid);
    return j;
}

long long tshim_ctr(const struct tsc_json *report, const char *hook, const char *ctr)
{
    const struct tsc_json *hooks = tsc_json_get(report, "hooks");
    ck_assert_msg(hooks && hooks->type == TSC_JSON_OBJ, "report without \"hooks\"");
    const struct tsc_json *h = tsc_json_get(hooks, hook);
    ck_assert_msg(h != NULL, "report without hook %s", hook);
    const struct tsc_json *c = tsc_json_get(h, ctr);
    ck_assert_msg(c && c->type == TSC_JSON_NUM, "hook %s without counter %s", hook, ctr);
    return (long long)c->num;
}

unsigned tshim_strcount(const char *hay, const char *needle)
{
    unsigned n = 0;

    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

long long tshim_out(const struct tshim_run *r, const char *step, const char *key)
{
    char pat[300];
    size_t sl = strlen(step);

    for (const char *line = r->out; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > sl && strncmp(line, step, sl) == 0 && line[sl] == ' ') {
            snprintf(pat, sizeof(pat), " %s=", key);
            const char *v = strstr(line, pat);
            if (v && v < line + len)
                return strtoll(v + strlen(pat), NULL, 0);
        }
        line = end ? end + 1 : NULL;
    }
    ck_assert_msg(0, "no '%s ... %s=' line in the host's output:\n%s", step, key, r->out);
    return -1;
}
