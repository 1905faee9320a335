/* The clock, the logger and the backoff of the engine's base layer. */
#include "eng_base.h"
#include "pol_tcp.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void repeats_flush(const struct eng_logger *lg);

uint64_t eng_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void eng_logger_open(struct eng_logger *lg, int level, const char *path)
{
    struct stat st;

    lg->level = level > ENG_LOG_DEBUG ? ENG_LOG_DEBUG : level;
    lg->fd = -1;
    if (!path || !*path)
        return;
    /* as the shim's log.file: never through a symlink, never a FIFO or a
     * device (non-blocking open, then the type check), created 0600 */
    lg->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (lg->fd < 0) {
        eng_log(NULL, ENG_LOG_WARN, "log.file %s: %m; logging to stderr", path);
        return;
    }
    if (fstat(lg->fd, &st) || !S_ISREG(st.st_mode)) {
        eng_log(NULL, ENG_LOG_WARN, "log.file %s: not a regular file; logging to stderr", path);
        close(lg->fd);
        lg->fd = -1;
    }
}

void eng_logger_close(struct eng_logger *lg)
{
    repeats_flush(lg);
    if (lg->fd >= 0)
        close(lg->fd);
    lg->fd = -1;
}

/*
 * Repeated errors and warnings: one line per cause and LOG_REPEAT_NS. The
 * cause is the logger, the call's format and its message with the numbers
 * left out (a peer's port, an address, a count), so a burst of failing
 * requests is one line, and the next line of that cause, or the logger's
 * close, says how many were left out.
 */
#define LOG_REPEAT_NS (5 * 1000000000ull)
#define LOG_REPEAT_SLOTS 64
#define LOG_LINE 512

static struct log_repeat {
    const struct eng_logger *lg;
    uint64_t key, t0, count;
    char line[LOG_LINE]; /* the last line written, for the count at close */
    int len;
} repeats[LOG_REPEAT_SLOTS];
static pthread_mutex_t repeats_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t cause_key(const struct eng_logger *lg, const char *fmt, const char *msg)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)(uintptr_t)lg;

    h = (h ^ (uint64_t)(uintptr_t)fmt) * 0x100000001b3ull;
    for (const char *p = msg; *p; p++) {
        if (p[0] == '0' && p[1] == 'x') {
            for (p += 2; isxdigit((unsigned char)*p); p++)
                ;
            if (!*p)
                break;
        }
        if (!isdigit((unsigned char)*p))
            h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    }
    return h;
}

static void log_write(const struct eng_logger *lg, const char *buf, int n)
{
    if (write(lg && lg->fd >= 0 ? lg->fd : 2, buf, (size_t)n) < 0)
        n = 0;
}

/* "(repeated N times in the last S s)" after the line in buf[0, n) of at
 * most LOG_LINE - 2 characters; the new length. */
static int add_count(char *buf, int n, uint64_t count, uint64_t ns)
{
    int m = snprintf(buf + n, (size_t)(LOG_LINE - 1 - n),
                     " (repeated %llu times in the last %llu s)", (unsigned long long)count,
                     (unsigned long long)((ns + 999999999ull) / 1000000000ull));
    return m > 0 && n + m < LOG_LINE - 1 ? n + m : n;
}

/* Whether the line in buf (message from offset off) is written; it may get
 * the count of its cause's lines left out. */
static bool repeat_admit(const struct eng_logger *lg, const char *fmt, char *buf, int *n, int off)
{
    uint64_t now = eng_now_ns(), key;
    struct log_repeat *r = NULL, *oldest = &repeats[0];
    bool admit = true;

    buf[*n] = '\0';
    key = cause_key(lg, fmt, buf + off);
    pthread_mutex_lock(&repeats_lock);
    for (int i = 0; i < LOG_REPEAT_SLOTS && !r; i++) {
        if (repeats[i].key == key && repeats[i].lg == lg)
            r = &repeats[i];
        else if (repeats[i].t0 < oldest->t0)
            oldest = &repeats[i];
    }
    if (r && now - r->t0 < LOG_REPEAT_NS) {
        r->count++;
        admit = false;
    } else {
        if (r && r->count)
            *n = add_count(buf, *n, r->count, now - r->t0);
        if (!r) {
            r = oldest; /* a cause quiet the longest makes room */
            r->lg = lg;
            r->key = key;
        }
        r->t0 = now;
        r->count = 0;
        r->len = *n < LOG_LINE - 2 ? *n : LOG_LINE - 2;
        memcpy(r->line, buf, (size_t)r->len);
    }
    pthread_mutex_unlock(&repeats_lock);
    return admit;
}

/* The counts of lg's causes not reported yet, then lg is forgotten. */
static void repeats_flush(const struct eng_logger *lg)
{
    uint64_t now = eng_now_ns();

    pthread_mutex_lock(&repeats_lock);
    for (int i = 0; i < LOG_REPEAT_SLOTS; i++) {
        struct log_repeat *r = &repeats[i];
        if (r->lg != lg || !r->key)
            continue;
        if (r->count) {
            int n = add_count(r->line, r->len, r->count, now - r->t0);
            r->line[n++] = '\n';
            log_write(lg, r->line, n);
        }
        memset(r, 0, sizeof(*r));
    }
    pthread_mutex_unlock(&repeats_lock);
}

void eng_log(const struct eng_logger *lg, int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char buf[LOG_LINE];
    int saved = errno;
    int n, off;
    va_list ap;

    if (lg && level > lg->level)
        goto out;
    n = off = snprintf(buf, sizeof(buf), "teshim-engine[%d] %s: ", (int)getpid(), names[level]);
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    if (level <= ENG_LOG_WARN && !repeat_admit(lg, fmt, buf, &n, off))
        goto out;
    buf[n++] = '\n';
    log_write(lg, buf, n);
out:
    errno = saved;
}

int eng_backoff_ms(int base_ms, int max_ms, int attempt)
{
    /* a cheap spread, different per attempt: peers restarting together
     * do not retry together */
    uint64_t r = (eng_now_ns() >> 10) ^ ((uint64_t)attempt * 0x9e3779b97f4a7c15ull);
    r ^= r >> 17;
    int64_t d = pol_tcp_backoff_delay_ms(base_ms, attempt - 1, attempt, 0, max_ms, (uint32_t)r);
    return d < 0 ? max_ms : (int)d;
}
