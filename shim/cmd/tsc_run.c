/* teshim run: exec a command with libteshim.so preloaded. */
#include "tsc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void run_usage(FILE *f)
{
    fprintf(f, "usage: teshim run [--profile P] [--config F] [--set key=value]... "
               "[--stats-dir DIR] -- CMD [ARGS...]\n"
               "Runs CMD with libteshim.so prepended to LD_PRELOAD and the settings passed\n"
               "through TESHIM_* variables; exits with CMD's status.\n");
}

/* setuid/setgid programs run with LD_PRELOAD ignored: say so rather than
 * let the user believe the policy applied. */
static void warn_if_setuid(const char *cmd)
{
    char path[4096];
    struct stat st;

    if (strchr(cmd, '/')) {
        snprintf(path, sizeof(path), "%s", cmd);
    } else {
        const char *p = getenv("PATH");
        path[0] = '\0';
        for (; p && *p;) {
            size_t n = strcspn(p, ":");
            snprintf(path, sizeof(path), "%.*s/%s", (int)n, p, cmd);
            if (access(path, X_OK) == 0)
                break;
            path[0] = '\0';
            p += n + (p[n] == ':');
        }
    }
    if (path[0] && stat(path, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)) && getuid() != 0)
        fprintf(stderr,
                "teshim: warning: %s is set%sid: the dynamic linker ignores LD_PRELOAD for it, "
                "nothing will be applied\n",
                path, (st.st_mode & S_ISUID) ? "u" : "g");
}

int tsc_cmd_run(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            run_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--stats-dir") == 0 && i + 1 < argc) {
            setenv("TESHIM_STATS_DIR", argv[++i], 1);
            continue;
        }
        int r = tsc_settings_option(argc, argv, &i);
        if (r < 0)
            return TSC_EXIT_USAGE;
        if (r == 0) {
            if (argv[i][0] == '-') {
                tsc_err("run: unknown option '%s'", argv[i]);
                run_usage(stderr);
                return TSC_EXIT_USAGE;
            }
            break; /* the command starts here */
        }
    }
    if (i >= argc) {
        tsc_err("run: no command given");
        run_usage(stderr);
        return TSC_EXIT_USAGE;
    }
    /* --set values were checked above; the rest (environment, config file)
     * is reported by the shim inside the command, once. */
    if (tsc_preload_env() != 0)
        return TSC_EXIT_NOTFOUND;
    warn_if_setuid(argv[i]);
    execvp(argv[i], argv + i);
    int err = errno;
    tsc_err("cannot run %s: %s", argv[i], strerror(err));
    return err == ENOENT ? TSC_EXIT_NOTFOUND : 126;
}
