/* The clock, the logger and the backoff of the engine's base layer. */
#include "eng_base.h"
#include "pol_tcp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    if (lg->fd >= 0)
        close(lg->fd);
    lg->fd = -1;
}

void eng_log(const struct eng_logger *lg, int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char buf[512];
    int saved = errno;
    int n;
    va_list ap;

    if (lg && level > lg->level)
        goto out;
    n = snprintf(buf, sizeof(buf), "teshim-engine[%d] %s: ", (int)getpid(), names[level]);
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    if (write(lg && lg->fd >= 0 ? lg->fd : 2, buf, (size_t)n) < 0)
        n = 0;
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
