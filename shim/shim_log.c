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
        int fd = shim_log_file_open(file);
        if (fd >= 0)
            shim_log_fd = fd;
        else
            shim_warn("log.file not used; logging to standard error");
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

/*
 * Names and values from the environment and config files are echoed in
 * messages: a control character (a newline above all) would let them forge
 * lines of their own in a log another program parses. Escaped as \n, \r,
 * \t or \xNN; the line is cut at a whole escape when the buffer is full.
 */
static size_t escape_line(char *out, size_t cap, const char *in, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        char esc[4];
        size_t n = 0;
        if (c >= 0x20 && c != 0x7f) {
            esc[n++] = (char)c;
        } else {
            esc[n++] = '\\';
            if (c == '\n' || c == '\r' || c == '\t') {
                esc[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            } else {
                esc[n++] = 'x';
                esc[n++] = hex[c >> 4];
                esc[n++] = hex[c & 15];
            }
        }
        if (o + n > cap)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    return o;
}

void shim_log_write(enum pol_log_level level, const char *fmt, ...)
{
    int saved = errno;
    char buf[1024], line[1536];
    va_list ap;
    int n;

    n = snprintf(buf, sizeof(buf), "teshim[%d] %s: %s: ", (int)getpid(), shim_log_prog,
                 level_names[level]);
    va_start(ap, fmt);
    errno = saved; /* %m names the caller's errno */
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 1)
        n = (int)sizeof(buf) - 1;
    size_t len = escape_line(line, sizeof(line) - 1, buf, (size_t)n);
    line[len++] = '\n';
    for (size_t off = 0; off < len;) {
        ssize_t w = write(shim_log_fd, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    errno = saved;
}
