/* Helpers of the cli suites. */
#include "cli_util.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *cli_path(const char *env)
{
    const char *p = getenv(env);

    ck_assert_msg(p && *p, "%s is not set (run the suite through ctest)", env);
    return p;
}

int cli_run(char *const argv[], char *const extra_env[], char **out)
{
    int fds[2], status = -1;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);

    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        for (char *const *e = extra_env; e && *e; e++)
            putenv(*e);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    for (;;) {
        if (cap - len < 2048) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        ssize_t r = read(fds[0], buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    close(fds[0]);
    waitpid(pid, &status, 0);
    if (out)
        *out = buf;
    else
        free(buf);
    return status;
}

char *cli_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *p;

    ck_assert_int_ge(asprintf(&p, "%s/teshim-cli-XXXXXX", t && *t ? t : "/tmp"), 0);
    ck_assert_ptr_nonnull(mkdtemp(p));
    return p;
}

char *cli_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void cli_rmtree(char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}
