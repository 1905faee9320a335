/* Helpers of the policy suites. */
#include "tpol.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tpol_paths[32][512];
static unsigned tpol_npaths;

static void tpol_sink(void *arg, enum pol_log_level level, const char *msg)
{
    struct tpol_diags *d = arg;

    ck_assert_msg(d->n < TPOL_MAX_DIAGS, "too many diagnostics");
    d->level[d->n] = level;
    snprintf(d->msg[d->n], sizeof(d->msg[0]), "%s", msg);
    d->n++;
}

static char tpol_dirs[4][256];
static unsigned tpol_ndirs;

static int tpol_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Environment strings live until the test's process exits. */
static char **tpol_strings;
static size_t tpol_nstrings;

static void tpol_keep(char *s)
{
    char **n = realloc(tpol_strings, (tpol_nstrings + 1) * sizeof(*n));

    ck_assert_ptr_nonnull(n);
    tpol_strings = n;
    tpol_strings[tpol_nstrings++] = s;
}

/* Each test runs in a forked child that exits normally: remove its files
 * and free what it kept (leak checkers look after atexit handlers). */
static void tpol_cleanup(void)
{
    for (size_t i = 0; i < tpol_nstrings; i++)
        free(tpol_strings[i]);
    free(tpol_strings);
    tpol_strings = NULL;
    tpol_nstrings = 0;
    for (unsigned i = 0; i < tpol_ndirs; i++)
        nftw(tpol_dirs[i], tpol_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void tpol_mkdir(struct tpol *t)
{
    if (t->dir[0])
        return;
    snprintf(t->dir, sizeof(t->dir), "/tmp/tpol-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    if (tpol_ndirs == 0)
        atexit(tpol_cleanup);
    if (tpol_ndirs < 4)
        snprintf(tpol_dirs[tpol_ndirs++], sizeof(tpol_dirs[0]), "%s", t->dir);
}

void tpol_init(struct tpol *t)
{
    memset(t, 0, sizeof(*t));
    tpol_mkdir(t);
    t->src.program = "prog";
    t->src.host = "host";
    t->src.etc_path = tpol_path(t, "etc-teshim.conf");
    t->src.diag = tpol_sink;
    t->src.diag_arg = &t->diags;
    /* HOME without .config/teshim.conf: no user file either. */
    tpol_env(t, "HOME", t->dir);
}

void tpol_env(struct tpol *t, const char *name, const char *value)
{
    char *s;

    ck_assert_uint_lt(t->nenv, sizeof(t->env) / sizeof(t->env[0]) - 1);
    ck_assert_int_ge(asprintf(&s, "%s=%s", name, value), 0);
    tpol_keep(s);
    t->env[t->nenv++] = s;
    t->env[t->nenv] = NULL;
    t->src.environ = t->env;
}

const char *tpol_path(struct tpol *t, const char *name)
{
    tpol_mkdir(t);
    ck_assert_uint_lt(tpol_npaths, 32);
    char *p = tpol_paths[tpol_npaths++];
    snprintf(p, sizeof(tpol_paths[0]), "%s/%s", t->dir, name);
    return p;
}

const char *tpol_write(struct tpol *t, const char *name, const char *text)
{
    const char *path = tpol_path(t, name);
    char dir[512];

    /* Create intermediate directories of name. */
    snprintf(dir, sizeof(dir), "%s", path);
    for (char *s = dir + strlen(t->dir) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        mkdir(dir, 0755);
        *s = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

unsigned tpol_load(struct tpol *t)
{
    t->diags.n = 0;
    return pol_load(&t->cfg, &t->src);
}

unsigned tpol_count(const struct tpol *t, ...)
{
    unsigned n = 0;

    for (unsigned i = 0; i < t->diags.n; i++) {
        va_list ap;
        bool all = true;
        va_start(ap, t);
        for (const char *s; (s = va_arg(ap, const char *));)
            all &= strstr(t->diags.msg[i], s) != NULL;
        va_end(ap);
        n += all;
    }
    return n;
}

const char *tpol_dump(const struct tpol *t)
{
    static char buf[8192];
    size_t n = 0;

    buf[0] = '\0';
    for (unsigned i = 0; i < t->diags.n && n < sizeof(buf); i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\n  [%u] %s", i, t->diags.msg[i]);
    return buf;
}
