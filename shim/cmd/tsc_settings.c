/* Settings options shared by subcommands, and finding libteshim.so. */
#include "tsc.h"
#include "pol_tcp.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

extern char **environ;

/* Parameters given on this command line (--set, --profile): their source
 * is the command line, though they travel to the shim as TESHIM_*. */
static bool tsc_cli_set[POL_NPARAMS];

bool tsc_from_cli(int p)
{
    return p >= 0 && p < POL_NPARAMS && tsc_cli_set[p];
}

int tsc_check_set(const char *kv, const char *what)
{
    const char *eq = strchr(kv, '=');
    char key[128];
    int p;

    if (!eq || eq == kv) {
        tsc_err("%s %s: expected key=value", what, kv);
        return -1;
    }
    snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
    p = pol_find_key(key);
    if (p < 0) {
        const char *s = pol_suggest(key, false);
        tsc_err("%s: unknown key '%s'%s%s%s", what, key, s ? " (did you mean '" : "", s ? s : "",
                s ? "'?)" : "");
        return -1;
    }
    int rc = pol_parse_value((enum pol_param)p, eq + 1, NULL);
    if (rc) {
        const struct pol_param_info *pi = &pol_params[p];
        if (pi->type == POL_T_ENUM)
            tsc_err("%s %s: '%s' is not one of %s", what, key, eq + 1, pi->choices);
        else if (pi->type == POL_T_BOOL)
            tsc_err("%s %s: '%s' is not on or off", what, key, eq + 1);
        else
            tsc_err("%s %s: '%s' is %s (accepted %lld..%lld%s%s)", what, key, eq + 1,
                    rc == -ERANGE ? "out of range" : "not a number", (long long)pi->min,
                    (long long)pi->max, pi->choices[0] ? " or " : "", pi->choices);
        return -1;
    }
    return p;
}

int tsc_apply_set(const char *kv)
{
    int p = tsc_check_set(kv, "--set");

    if (p < 0)
        return -1;
    if (setenv(pol_params[p].env, strchr(kv, '=') + 1, 1) != 0) {
        tsc_err("setenv %s: %s", pol_params[p].env, strerror(errno));
        return -1;
    }
    tsc_cli_set[p] = true;
    return 0;
}

int tsc_settings_option(int argc, char **argv, int *i)
{
    const char *opt = argv[*i];
    const char *val;

    if (strcmp(opt, "--profile") != 0 && strcmp(opt, "--config") != 0 && strcmp(opt, "--set") != 0)
        return 0;
    if (*i + 1 >= argc) {
        tsc_err("%s needs a value", opt);
        return -1;
    }
    val = argv[++*i];
    if (strcmp(opt, "--set") == 0)
        return tsc_apply_set(val) == 0 ? 1 : -1;
    if (strcmp(opt, "--config") == 0) {
        if (access(val, R_OK) != 0) {
            tsc_err("--config %s: %s", val, strerror(errno));
            return -1;
        }
        setenv("TESHIM_CONFIG", val, 1);
        return 1;
    }
    if (!tsc_profile_shipped(val)) {
        const char *near = pol_suggest_profile(val);
        fprintf(stderr,
                "teshim: note: profile '%s' is not shipped%s%s%s; it must be a [profile %s] "
                "section of the config file\n",
                val, near ? " (nearest: " : "", near ? near : "", near ? ")" : "", val);
    }
    setenv("TESHIM_PROFILE", val, 1);
    tsc_cli_set[POL_PROFILE] = true;
    return 1;
}

/* Where libteshim.so may be: relative to the directory of this executable,
 * the install layout (bindir to libdir/teshim, computed by CMake) and the
 * build tree (bin/ beside lib/); last the configured install directory
 * itself, so a command copied out of its tree still finds an installed
 * library. */
#ifndef TESHIM_PRELOAD_RELDIR
#define TESHIM_PRELOAD_RELDIR "../lib/teshim"
#endif
#ifndef TESHIM_PRELOAD_DIR
#define TESHIM_PRELOAD_DIR "/usr/local/lib/teshim"
#endif

int tsc_library_path(char *buf, size_t len)
{
    const char *env = getenv("TESHIM_LIBRARY");
    char exe[4096], cand[3][4200], tried[sizeof(cand) + 16];
    ssize_t n;

    if (env && *env) {
        char *real = realpath(env, NULL);
        if (!real) {
            tsc_err("TESHIM_LIBRARY=%s: %s", env, strerror(errno));
            return -1;
        }
        snprintf(buf, len, "%s", real);
        free(real);
        return 0;
    }
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0) {
        tsc_err("cannot find my own executable: %s; set TESHIM_LIBRARY", strerror(errno));
        return -1;
    }
    exe[n] = '\0';
    const char *dir = dirname(exe);
    snprintf(cand[0], sizeof(cand[0]), "%s/%s/libteshim.so", dir, TESHIM_PRELOAD_RELDIR);
    snprintf(cand[1], sizeof(cand[1]), "%s/../lib/libteshim.so", dir);
    snprintf(cand[2], sizeof(cand[2]), "%s/libteshim.so", TESHIM_PRELOAD_DIR);
    for (size_t i = 0; i < 3; i++) {
        char *real = realpath(cand[i], NULL);
        bool ok = real && access(real, R_OK) == 0;
        if (ok)
            snprintf(buf, len, "%s", real);
        free(real);
        if (ok)
            return 0;
    }
    snprintf(tried, sizeof(tried), "%s, %s, %s", cand[0], cand[1], cand[2]);
    tsc_err("libteshim.so not found (looked at %s); set TESHIM_LIBRARY=/path/to/libteshim.so",
            tried);
    return -1;
}

int tsc_preload_env(void)
{
    char lib[4096], *val;
    const char *old = getenv("LD_PRELOAD");

    if (tsc_library_path(lib, sizeof(lib)) != 0)
        return -1;
    if (old && strstr(old, lib))
        return 0; /* already there: a nested teshim run */
    if (old && *old) {
        if (asprintf(&val, "%s:%s", lib, old) < 0)
            return -1;
    } else {
        val = strdup(lib);
        if (!val)
            return -1;
    }
    setenv("LD_PRELOAD", val, 1);
    free(val);
    return 0;
}

static void tsc_diag(void *arg, enum pol_log_level level, const char *msg)
{
    (void)level;
    if (!*(bool *)arg)
        fprintf(stderr, "teshim: %s\n", msg);
}

bool tsc_profile_shipped(const char *name)
{
    for (size_t k = 0; k < pol_nprofiles; k++)
        if (pol_profiles[k].name && strcmp(pol_profiles[k].name, name) == 0)
            return true;
    return false;
}

static unsigned load_policy_env(struct pol_config *cfg, char *const *env, const char *program,
                                bool quiet)
{
    struct utsname un;
    struct pol_sources src = {0};

    src.environ = env;
    src.program = program;
    src.host = uname(&un) == 0 ? un.nodename : "unknown";
    src.diag = tsc_diag;
    src.diag_arg = &quiet;
    return pol_load(cfg, &src);
}

unsigned tsc_load_policy(struct pol_config *cfg, const char *program, bool quiet)
{
    return load_policy_env(cfg, environ, program, quiet);
}

unsigned tsc_policy_problems(const struct pol_config *cfg, const char *what)
{
    struct pol_tcp_scope scope;
    char err[256];
    const char *profile = pol_str(cfg, POL_PROFILE);

    if (pol_tcp_scope_parse(pol_str(cfg, POL_TCP_PORTS), pol_str(cfg, POL_TCP_PEERS), &scope, err,
                            sizeof(err)) != 0) {
        tsc_err("%s: %s; no socket would be in scope. Fix the list (tcp.ports = 80, 5000-5999; "
                "tcp.peers = 10.0.0.0/8, ::1)",
                what, err);
        return 1;
    }
    /* The socket policy applies only inside its scope, and the scope is
     * empty by default (tcp-qos leaves it to the deployment). */
    if (pol_tcp_configured(cfg) && pol_tcp_scope_empty(&scope)) {
        tsc_err("%s: socket options are configured%s%s%s but tcp.ports and tcp.peers are "
                "empty, so no connection is in scope and nothing would change. Name the "
                "transfer's ports or peers: --set tcp.ports=5000-5999 or --set "
                "tcp.peers=10.0.0.0/8 (tcp.ports/tcp.peers in the config file)",
                what, *profile ? " (profile " : "", profile, *profile ? ")" : "");
        return 1;
    }
    return 0;
}

unsigned tsc_check_policy_env(char *const *env, const char *program, bool quiet)
{
    struct pol_config cfg;
    unsigned n = load_policy_env(&cfg, env, program, quiet);

    return n + tsc_policy_problems(&cfg, "configuration");
}

unsigned tsc_check_policy(const char *program, bool quiet)
{
    return tsc_check_policy_env(environ, program, quiet);
}
