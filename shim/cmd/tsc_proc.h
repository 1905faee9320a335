/*
 * The command's process toolkit, shared by teshim ab and teshim demo: start
 * a program (environment changes, output to a file or a pipe, its own
 * process group), wait for it under a time limit, capture its output until
 * it exits, stop it.
 */
#ifndef TESHIM_TSC_PROC_H
#define TESHIM_TSC_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

/* How to start a program. Zero-initialised fields mean "as this process". */
struct tsc_spawn {
    char *const *argv; /* argv[0] is looked up in PATH */
    char *const *env;  /* "KEY=VALUE" set in the child, "KEY" alone unset; NULL: none */
    const char *log;   /* stdout and stderr appended to this file */
    int out_fd;        /* > 0: stdout and stderr to this descriptor (a pipe) */
    bool own_group;    /* the child leads a process group of its own */
    bool track;        /* killed by tsc_proc_kill_tracked (an interrupted demo) */
};

/* Monotonic seconds. */
double tsc_mono(void);

/*
 * Start s->argv with stdin from /dev/null. Returns the pid, or -errno when
 * it could not be started: fork failed, or the exec failed in the child
 * (ENOENT, EACCES: the error travels back through a close-on-exec pipe, and
 * the child exits 127). Nothing is reported: the caller names the program.
 */
pid_t tsc_proc_spawn(const struct tsc_spawn *s);

/*
 * Wait for pid up to timeout seconds (< 0: forever); past it, SIGKILL it
 * (its process group when group) and reap it. Returns 0 with *status (and
 * *ru when not NULL), or -ETIMEDOUT when it had to be killed.
 */
int tsc_proc_wait(pid_t pid, double timeout, bool group, int *status, struct rusage *ru);

/* SIGTERM to pid (its group when group), SIGKILL after grace seconds;
 * returns false when it had to be killed. */
bool tsc_proc_stop(pid_t pid, bool group, double grace);

/*
 * Until pid exits, read what arrives on fd (non-blocking: set here) and
 * pass it to feed; then read what is still in the pipe without waiting for
 * its end, since a grandchild may hold it open. Returns 0 with *status and
 * *ru, or -errno when waiting failed.
 */
int tsc_proc_capture(pid_t pid, int fd, void (*feed)(void *arg, const char *buf, size_t n),
                     void *arg, int *status, struct rusage *ru);

/* SIGKILL every tracked child still running (its group when it leads one);
 * async-signal-safe, for a SIGINT handler. */
void tsc_proc_kill_tracked(void);

/* "exit 3", "signal 9 (Killed)". */
void tsc_proc_describe(int status, char *buf, size_t len);

#endif
