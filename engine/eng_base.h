/*
 * The engine's base layer: the clock, the logger and the retry backoff.
 * Everything above may use it; it uses nothing of the engine but the
 * policy table. Not installed.
 */
#ifndef TESHIM_ENG_BASE_H
#define TESHIM_ENG_BASE_H

#include <stdint.h>

/* Monotonic clock in nanoseconds. */
uint64_t eng_now_ns(void);

/* Log levels, the policy table's log.level order (trace folds into debug). */
enum { ENG_LOG_ERROR, ENG_LOG_WARN, ENG_LOG_INFO, ENG_LOG_DEBUG };

/* Where and how much one engine logs: log.level and log.file. */
struct eng_logger {
    int level; /* messages above it are dropped */
    int fd;    /* log.file opened for appending; -1 = stderr */
};

/*
 * Open the logger: level, and path ("" = stderr), appended to, created
 * 0600, never followed through a symlink, refused unless a regular file.
 * A file that cannot be used is reported once on stderr and the logger
 * writes to stderr.
 */
void eng_logger_open(struct eng_logger *lg, int level, const char *path);
/* Write the counts of lg's repeated lines not reported yet, and close the
 * file of eng_logger_open, if any. */
void eng_logger_close(struct eng_logger *lg);

/*
 * One line "teshim-engine[pid] level: message" with one write(2), if level
 * is within lg's (lg NULL: always, to stderr). Keeps errno. Errors and
 * warnings are written once per cause (logger, format, message without its
 * numbers) and 5 s; the next line of that cause, or eng_logger_close,
 * appends "(repeated N times in the last S s)".
 */
void eng_log(const struct eng_logger *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Backoff before connection attempt n (1-based): base_ms doubled per
 * attempt, at most max_ms, jittered over its upper half (the policy
 * table's one backoff, pol_tcp_backoff_delay_ms). */
int eng_backoff_ms(int base_ms, int max_ms, int attempt);

#endif
