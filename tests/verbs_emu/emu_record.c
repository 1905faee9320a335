/* The control-path record: one JSON object per line, appended to the file
 * named by VERBS_EMU_RECORD with O_APPEND and a single write(2) per line,
 * so lines of concurrent processes never interleave. Field names are
 * documented in docs/testing.md. */
#include "emu.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int emu_rec_fd = -2;
static pthread_mutex_t emu_rec_lock = PTHREAD_MUTEX_INITIALIZER;

static int emu_rec_open(void)
{
    const char *path;

    pthread_mutex_lock(&emu_rec_lock);
    if (emu_rec_fd == -2) {
        path = getenv("VERBS_EMU_RECORD");
        emu_rec_fd = -1;
        if (path != NULL && path[0] != '\0') {
            emu_rec_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
            if (emu_rec_fd < 0)
                emu_log("cannot open record file %s: %s", path, strerror(errno));
        }
    }
    pthread_mutex_unlock(&emu_rec_lock);
    return emu_rec_fd;
}

static void emu_rec_add(struct emu_rec *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void emu_rec_add(struct emu_rec *r, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (r->len >= sizeof(r->buf))
        return;
    va_start(ap, fmt);
    n = vsnprintf(r->buf + r->len, sizeof(r->buf) - r->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->len += (size_t)n;
}

void emu_rec_begin(struct emu_rec *r, const char *call)
{
    r->len = 0;
    emu_rec_add(r, "{\"call\":\"%s\",\"pid\":%d", call, (int)getpid());
}

void emu_rec_str(struct emu_rec *r, const char *key, const char *val)
{
    emu_rec_add(r, ",\"%s\":\"", key);
    for (const char *p = val; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            emu_rec_add(r, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            emu_rec_add(r, "\\u%04x", (unsigned char)*p);
        else
            emu_rec_add(r, "%c", *p);
    }
    emu_rec_add(r, "\"");
}

void emu_rec_u64(struct emu_rec *r, const char *key, uint64_t val)
{
    emu_rec_add(r, ",\"%s\":%" PRIu64, key, val);
}

void emu_rec_i64(struct emu_rec *r, const char *key, int64_t val)
{
    emu_rec_add(r, ",\"%s\":%" PRId64, key, val);
}

void emu_rec_hex(struct emu_rec *r, const char *key, const uint8_t *bytes, size_t n)
{
    emu_rec_add(r, ",\"%s\":\"", key);
    for (size_t i = 0; i < n; i++)
        emu_rec_add(r, "%s%02x", (i > 0 && i % 2 == 0) ? ":" : "", bytes[i]);
    emu_rec_add(r, "\"");
}

void emu_rec_end(struct emu_rec *r)
{
    int fd = emu_rec_open();
    int saved = errno;

    if (fd < 0)
        return;
    if (r->len > sizeof(r->buf) - 3)
        r->len = sizeof(r->buf) - 3;
    r->buf[r->len++] = '}';
    r->buf[r->len++] = '\n';
    if (write(fd, r->buf, r->len) < 0)
        emu_log("record write failed: %s", strerror(errno));
    errno = saved;
}

void emu_log(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int saved = errno;
    int n = snprintf(buf, sizeof(buf), "verbs-emu[%d]: ", (int)getpid());

    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, (size_t)n) < 0)
        n = 0;
    errno = saved;
}

void emu_stub_called(const char *symbol)
{
    struct emu_rec r;
    int saved = errno;

    emu_rec_begin(&r, "unsupported");
    emu_rec_str(&r, "symbol", symbol);
    emu_rec_end(&r);
    if (getenv("VERBS_EMU_DEBUG") != NULL)
        emu_log("%s is not emulated: failing with EOPNOTSUPP", symbol);
    errno = saved;
}
