/* teshim ab: the arms, from their specs (a profile, KEY=VALUE, nopreload). */
#include "tsc.h"
#include "tsc_ab.h"
#include "tsc_ab_int.h"
#include "tsc_json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int arm_add_env(struct ab_arm *arm, const char *key, const char *val)
{
    if (arm->nenv >= AB_MAX_ENV) {
        tsc_err("ab: too many settings for arm %c", arm->name);
        return -1;
    }
    if (asprintf(&arm->env[arm->nenv], "%s=%s", key, val) < 0)
        return -1;
    arm->nenv++;
    return 0;
}
void ab_arm_clear(struct ab_arm *arm)
{
    for (size_t i = 0; i < arm->nenv; i++)
        free(arm->env[i]);
    arm->nenv = 0;
}

static bool shipped_profile(const char *name)
{
    for (size_t k = 0; k < pol_nprofiles; k++)
        if (pol_profiles[k].name && strcmp(pol_profiles[k].name, name) == 0)
            return true;
    return false;
} /* --policy-a / --policy-b SPEC; 0 or -1 (reported). */
int ab_arm_spec(struct ab_arm *arm, const char *spec)
{
    if (strcmp(spec, "none") == 0 || strcmp(spec, "passthrough") == 0) {
        ab_arm_clear(arm);
        arm->passthrough = true;
        arm->preload = true;
        return 0;
    }
    if (strcmp(spec, "nopreload") == 0) {
        ab_arm_clear(arm);
        arm->passthrough = true;
        arm->preload = false;
        return 0;
    }
    if (!arm->preload) {
        tsc_err("ab: arm %c: '%s' given after nopreload", arm->name, spec);
        return -1;
    }
    arm->passthrough = false;
    if (strncmp(spec, "profile:", 8) == 0 || shipped_profile(spec)) {
        const char *name = strncmp(spec, "profile:", 8) == 0 ? spec + 8 : spec;
        if (!*name) {
            tsc_err("ab: arm %c: profile: needs a name", arm->name);
            return -1;
        }
        return arm_add_env(arm, "TESHIM_PROFILE", name);
    }
    if (strncmp(spec, "config:", 7) == 0) {
        char *real = realpath(spec + 7, NULL);
        if (!real || access(real, R_OK) != 0) {
            tsc_err("ab: arm %c: %s: %s", arm->name, spec + 7, strerror(errno));
            free(real);
            return -1;
        }
        int rc = arm_add_env(arm, "TESHIM_CONFIG", real);
        free(real);
        return rc;
    }
    if (strncmp(spec, "set:", 4) == 0) {
        const char *kv = spec + 4, *eq = strchr(kv, '=');
        char key[128];
        if (!eq || eq == kv) {
            tsc_err("ab: arm %c: %s: expected set:key=value", arm->name, spec);
            return -1;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        int p = pol_find_key(key);
        if (p < 0) {
            const char *s = pol_suggest(key, false);
            tsc_err("ab: arm %c: unknown key '%s'%s%s%s", arm->name, key,
                    s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
            return -1;
        }
        if (pol_parse_value((enum pol_param)p, eq + 1, NULL) != 0) {
            tsc_err("ab: arm %c: %s: '%s' is not a valid value (see teshim config --all)",
                    arm->name, key, eq + 1);
            return -1;
        }
        return arm_add_env(arm, pol_params[p].env, eq + 1);
    }
    tsc_err("ab: arm %c: '%s' is not none, nopreload, profile:NAME, config:FILE or "
            "set:KEY=VALUE",
            arm->name, spec);
    return -1;
}

void ab_arm_describe(struct ab_arm *arm)
{
    size_t len = 0;

    arm->desc[0] = '\0';
    if (!arm->preload) {
        snprintf(arm->desc, sizeof(arm->desc), "no libteshim.so (nopreload)");
        return;
    }
    if (arm->passthrough) {
        snprintf(arm->desc, sizeof(arm->desc),
                 "passthrough: libteshim.so loaded in rollout arm A, nothing applied");
        return;
    }
    len += (size_t)snprintf(arm->desc, sizeof(arm->desc), "rollout arm B");
    for (size_t i = 0; i < arm->nenv && len < sizeof(arm->desc); i++)
        len += (size_t)snprintf(arm->desc + len, sizeof(arm->desc) - len, ", %s", arm->env[i]);
    /* Settings shared by both arms come from this process's environment. */
    for (char **e = environ; *e && len < sizeof(arm->desc); e++)
        if (strncmp(*e, "TESHIM_", 7) == 0 && strchr(*e, '=')) {
            char name[160];
            snprintf(name, sizeof(name), "%.*s", (int)(strchr(*e, '=') - *e), *e);
            if (pol_find_env(name) >= 0)
                len += (size_t)snprintf(arm->desc + len, sizeof(arm->desc) - len, ", %s", *e);
        }
}
