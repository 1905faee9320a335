/*
 * The exec family. A successful exec replaces the image without running
 * its destructors, so the report the image would write at exit is written
 * here, before the real call (the new image, under teshim again, reports
 * its own counters under the same pid). The call itself is never changed,
 * but for one variable of teshim's own in the new image's environment:
 * TESHIM_WARNED, the configuration problems already reported in this
 * process tree (shim_core.c), so the new image does not repeat them. The
 * forms that pass on environ (execv, execvp, execl, execlp) then reach
 * execve or execvpe with the environment given, which is what glibc's
 * own implementations of them do.
 *
 * An image that counted nothing but its exec (the usual child between fork
 * and exec) writes no report: it would only repeat the pid the new image
 * reports under. A vfork child shares its parent's memory and counters: it
 * reports nothing and counts nothing (shim_stats_report checks the pid).
 *
 * execl, execlp and execle are variadic: their arguments are gathered into
 * an array and passed to the real execv, execvp and execve, which is what
 * glibc's own implementations do.
 */
#include "shim.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_exec.def"
#undef HOOK

static const bool exec_hook[SHIM_HK_COUNT] = {
#define HOOK(lib, tag, ver, def, ret, name, params, args, ...) [SHIM_HK_##name##_##tag] = true,
#include "shim_hooks_exec.def"
#undef HOOK
};

static bool counted_besides_exec(void)
{
    for (int h = 0; h < SHIM_HK_COUNT; h++) {
        if (exec_hook[h])
            continue;
        for (int c = 0; c < SHIM_C_COUNT; c++)
            if (atomic_load_explicit(&shim_stats->hooks[h].c[c], memory_order_relaxed))
                return true;
    }
    return false;
}

/* Count the call and write the report; true if counted. */
static bool before_exec(enum shim_hook_id id)
{
    int saved = errno;

    /* Counters that are not this process's (a vfork child, or teshim not
     * initialised yet: the boot area has no pid): nothing of ours to write. */
    if (shim_stats->pid != (int32_t)getpid())
        return false;
    if (!shim_enter_internal())
        return false;
    /* Counted as it will most likely end (the call is not changed), so
     * that the report written now includes it; exec_failed recounts. */
    shim_count_call(id);
    shim_count_result(id, SHIM_C_NOT_APPLICABLE, 0, 0);
    if (counted_besides_exec())
        shim_stats_report(shim_cfg());
    shim_leave();
    errno = saved;
    return true;
}

/*
 * The environment for the new image: envp with TESHIM_WARNED set to this
 * process's list, or NULL to pass envp as it is (nothing reported, or envp
 * already says the same, or no memory: the child then repeats a warning).
 * Freed by the caller when the exec fails.
 */
static char **warned_env(char *const *envp)
{
    const char *mark = shim_warned_mark();
    size_t n = 0, k = 0;
    char **e;

    if (!mark)
        return NULL;
    for (; envp && envp[n]; n++)
        if (strcmp(envp[n], mark) == 0)
            return NULL;
    e = malloc((n + 2) * sizeof(*e));
    if (!e)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], "TESHIM_WARNED=", 14) != 0)
            e[k++] = envp[i];
    e[k++] = (char *)mark;
    e[k] = NULL;
    return e;
}

static void free_keep_errno(char **e)
{
    int saved = errno;

    free(e);
    errno = saved;
}

/* The exec returned: it failed, and counts by the error rule. */
static int exec_failed(enum shim_hook_id id, bool counted, int rc)
{
    int saved = errno;

    if (counted)
        shim_count_redo(id, SHIM_C_NOT_APPLICABLE, rc, saved);
    errno = saved;
    return rc;
}

/* execv(path, argv), with TESHIM_WARNED passed on through execve when it
 * must be. */
static int execv_env(shim_fn_execv_libc real, const char *path, char *const argv[])
{
    shim_fn_execve_libc ve = SHIM_REAL(execve, libc);
    char **e = ve ? warned_env(environ) : NULL;

    if (!e)
        return real(path, argv);
    int rc = ve(path, argv, e);
    free_keep_errno(e);
    return rc;
}

/* execvp(file, argv) the same way, through execvpe. */
static int execvp_env(shim_fn_execvp_libc real, const char *file, char *const argv[])
{
    shim_fn_execvpe_libc vpe = SHIM_REAL(execvpe, libc);
    char **e = vpe ? warned_env(environ) : NULL;

    if (!e)
        return real(file, argv);
    int rc = vpe(file, argv, e);
    free_keep_errno(e);
    return rc;
}

int shim_hook_execve_libc(const char *path, char *const argv[], char *const envp[])
{
    shim_fn_execve_libc real = SHIM_REAL(execve, libc);

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    bool counted = before_exec(SHIM_HK_execve_libc);
    char **e = warned_env(envp);
    int rc = real(path, argv, e ? e : envp);
    free_keep_errno(e);
    return exec_failed(SHIM_HK_execve_libc, counted, rc);
}

int shim_hook_execv_libc(const char *path, char *const argv[])
{
    shim_fn_execv_libc real = SHIM_REAL(execv, libc);

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    bool counted = before_exec(SHIM_HK_execv_libc);
    return exec_failed(SHIM_HK_execv_libc, counted, execv_env(real, path, argv));
}

int shim_hook_execvp_libc(const char *file, char *const argv[])
{
    shim_fn_execvp_libc real = SHIM_REAL(execvp, libc);

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    bool counted = before_exec(SHIM_HK_execvp_libc);
    return exec_failed(SHIM_HK_execvp_libc, counted, execvp_env(real, file, argv));
}

int shim_hook_execvpe_libc(const char *file, char *const argv[], char *const envp[])
{
    shim_fn_execvpe_libc real = SHIM_REAL(execvpe, libc);

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    bool counted = before_exec(SHIM_HK_execvpe_libc);
    char **e = warned_env(envp);
    int rc = real(file, argv, e ? e : envp);
    free_keep_errno(e);
    return exec_failed(SHIM_HK_execvpe_libc, counted, rc);
}

int shim_hook_fexecve_libc(int fd, char *const argv[], char *const envp[])
{
    shim_fn_fexecve_libc real = SHIM_REAL(fexecve, libc);

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    bool counted = before_exec(SHIM_HK_fexecve_libc);
    char **e = warned_env(envp);
    int rc = real(fd, argv, e ? e : envp);
    free_keep_errno(e);
    return exec_failed(SHIM_HK_fexecve_libc, counted, rc);
}

/*
 * The variadic forms, counted and gathered exactly as glibc does: arg is
 * argv[0] and the list runs to the first NULL after it (execle's
 * environment follows that NULL). argc is the count including argv[0].
 */
static size_t count_args(va_list ap)
{
    size_t argc = 1;

    while (va_arg(ap, const char *))
        argc++;
    return argc;
}

static void gather_args(char **argv, size_t argc, const char *arg, va_list ap)
{
    argv[0] = (char *)arg;
    for (size_t i = 1; i <= argc; i++)
        argv[i] = va_arg(ap, char *); /* argv[argc] is the terminating NULL */
}

/* Declare char *argv[] on the hook's stack from its variadic list after
 * arg, one pass to count and one to gather; ap is left started after the
 * terminating NULL (execle reads its environment there), the caller ends it. */
#define SHIM_EXEC_ARGV(argv, arg, ap)                                                              \
    va_start(ap, arg);                                                                             \
    size_t argv##_n = count_args(ap);                                                              \
    va_end(ap);                                                                                    \
    char *argv[argv##_n + 1];                                                                      \
    va_start(ap, arg);                                                                             \
    gather_args(argv, argv##_n, arg, ap)

int shim_hook_execl_libc(const char *path, const char *arg, ...)
{
    shim_fn_execv_libc real = SHIM_REAL(execv, libc);
    va_list ap;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    SHIM_EXEC_ARGV(argv, arg, ap);
    va_end(ap);
    bool counted = before_exec(SHIM_HK_execl_libc);
    return exec_failed(SHIM_HK_execl_libc, counted, execv_env(real, path, argv));
}

int shim_hook_execlp_libc(const char *file, const char *arg, ...)
{
    shim_fn_execvp_libc real = SHIM_REAL(execvp, libc);
    va_list ap;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    SHIM_EXEC_ARGV(argv, arg, ap);
    va_end(ap);
    bool counted = before_exec(SHIM_HK_execlp_libc);
    return exec_failed(SHIM_HK_execlp_libc, counted, execvp_env(real, file, argv));
}

int shim_hook_execle_libc(const char *path, const char *arg, ...)
{
    shim_fn_execve_libc real = SHIM_REAL(execve, libc);
    va_list ap;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    SHIM_EXEC_ARGV(argv, arg, ap);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    bool counted = before_exec(SHIM_HK_execle_libc);
    char **e = warned_env(envp);
    int rc = real(path, argv, e ? e : envp);
    free_keep_errno(e);
    return exec_failed(SHIM_HK_execle_libc, counted, rc);
}

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_exec.def"
#undef HOOK
