/* Logging from inside hooks: stack buffer, one write(2), errno kept. */
#include "shim.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int shim_log_fd = 2;
static enum pol_log_level shim_log_level = POL_LOG_WARN;
static char shim_log_prog[POL_NAME_MAX] = "?";

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void shim_log_init(const struct pol_config *cfg)
{
    const char *file = pol_str(cfg, POL_LOG_FILE);

    shim_log_level = (enum pol_log_level)pol_int(cfg, POL_LOG_LEVEL);
    snprintf(shim_log_prog, sizeof(shim_log_prog), "%s", cfg->program);
    if (*file) {
        int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            shim_log_fd = fd;
        else
            shim_log_write(POL_LOG_WARN, "log.file %s: %m; logging to standard error", file);
    }
}

void shim_log_reinit_after_fork(void)
{
    /* The descriptor is shared with the parent; O_APPEND keeps lines whole. */
}

bool shim_log_enabled(enum pol_log_level level)
{
    return level <= shim_log_level;
}

void shim_log_write(enum pol_log_level level, const char *fmt, ...)
{
    int saved = errno;
    char buf[1024];
    va_list ap;
    int n;

    n = snprintf(buf, sizeof(buf), "teshim[%d] %s: %s: ", (int)getpid(), shim_log_prog,
                 level_names[level]);
    va_start(ap, fmt);
    errno = saved; /* %m names the caller's errno */
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(shim_log_fd, buf + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += w;
    }
    errno = saved;
}
