/*
 * Helpers shared by the socket suites: run a shell command line with a
 * bounded time, capture its output, read "key value" lines.
 */
#ifndef TESHIM_SOCK_TEST_UTIL_H
#define TESHIM_SOCK_TEST_UTIL_H

#include <check.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "../report_sum.h"

#define SOCK_OUT_MAX (256 * 1024)

static inline const char *sock_build_dir(void)
{
    const char *d = getenv("TESHIM_BUILD_DIR");

    ck_assert_msg(d && *d, "TESHIM_BUILD_DIR is not set");
    return d;
}

/*
 * Run fmt as a bash command line (stderr joined to stdout), output into out;
 * returns the exit status, or -1 if it did not exit normally. Every command
 * line the tests give is wrapped in `timeout`, so nothing waits unbounded.
 */
static inline int sock_run(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline int sock_run(char *out, size_t cap, const char *fmt, ...)
{
    static char cmd[8192], shell[8400];
    va_list ap;
    size_t n = 0;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(shell, sizeof(shell), "bash -c '%s' 2>&1", cmd);
    /* Usable outside test cases too (the skip probes in main). */
    if (strchr(cmd, '\'') != NULL) {
        fprintf(stderr, "sock_run: command lines must not contain single quotes: %s\n", cmd);
        abort();
    }
    FILE *p = popen(shell, "r");
    if (!p) {
        out[0] = '\0';
        return -1;
    }
    while (n + 1 < cap) {
        size_t r = fread(out + n, 1, cap - 1 - n, p);
        if (r == 0)
            break;
        n += r;
    }
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The last 2000 characters of out: Check's messages have a size limit. */
static inline const char *sock_tail(const char *out)
{
    size_t n = strlen(out);

    return n > 2000 ? out + n - 2000 : out;
}

/* The integer after "key " at the start of a line; LONG_MIN when absent. */
static inline long sock_kv(const char *out, const char *key)
{
    size_t kl = strlen(key);

    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, kl) == 0 && l[kl] == ' ')
            return strtol(l + kl + 1, NULL, 10);
    return -2147483647L - 1;
}

/* Number of lines containing needle. */
static inline int sock_count_lines(const char *out, const char *needle)
{
    int n = 0;

    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        const char *hit = strstr(l, needle);
        if (hit && (size_t)(hit - l) + strlen(needle) <= len)
            n++;
    }
    return n;
}

/*
 * Sum of counter ctr of hook (name without version) over the JSON reports
 * in dir whose file names match pattern (teshim-PROGRAM-PID.json).
 */
static inline long sock_stat(const char *dir, const char *program, const char *hook,
                             const char *ctr)
{
    char pat[512], key[128], ck[64];
    glob_t g;
    long sum = 0;

    snprintf(pat, sizeof(pat), "%s/teshim-%s-*.json", dir, program);
    snprintf(key, sizeof(key), "\"%s@", hook);
    snprintf(ck, sizeof(ck), "\"%s\": ", ctr);
    if (glob(pat, 0, NULL, &g) != 0)
        return -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        static char buf[65536];
        FILE *f = fopen(g.gl_pathv[i], "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        char why[512];
        ck_assert_msg(report_outcomes_balance(buf, why, sizeof(why)) == 0, "%s: %s", g.gl_pathv[i],
                      why);
        const char *h = strstr(buf, key);
        const char *end = h ? strchr(h, '}') : NULL;
        const char *c = h ? strstr(h, ck) : NULL;
        if (c && c < end)
            sum += strtol(c + strlen(ck), NULL, 10);
    }
    globfree(&g);
    return sum;
}

#endif
