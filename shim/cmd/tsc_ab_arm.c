/* teshim ab: the arms, from their specs (a profile, KEY=VALUE, nopreload). */
#include "tsc.h"
#include "tsc_ab_int.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* --policy-a / --policy-b SPEC; 0 or -1 (reported). */
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
    if (strncmp(spec, "profile:", 8) == 0 || tsc_profile_shipped(spec)) {
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
        char what[32];
        snprintf(what, sizeof(what), "ab: arm %c: set", arm->name);
        int p = tsc_check_set(spec + 4, what);
        if (p < 0)
            return -1;
        return arm_add_env(arm, pol_params[p].env, strchr(spec + 4, '=') + 1);
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

/* The policy arm gets, loaded as the shim in the command will load it (this
 * environment, the arm's settings, rollout arm B): its problems reported,
 * their number returned. An unknown profile stops ab here rather than
 * showing as a B that applied nothing after every run. */
unsigned ab_arm_check(const struct ab_opts *o, const struct ab_arm *arm)
{
    size_t n = 0, k = 0;
    char prog[4096];

    if (!arm->preload || arm->passthrough)
        return 0;
    while (environ[n])
        n++;
    char **env = calloc(n + arm->nenv + 2, sizeof(*env));
    if (!env)
        return 1;
    for (size_t i = 0; i < arm->nenv; i++)
        env[k++] = arm->env[i];
    env[k++] = "TESHIM_ROLLOUT_ARM=B";
    /* The arm's settings replace this environment's of the same name. */
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(environ[i], "=");
        bool mine = strncmp(environ[i], "TESHIM_ROLLOUT_ARM=", 19) == 0;
        for (size_t j = 0; j < arm->nenv && !mine; j++)
            mine = strncmp(environ[i], arm->env[j], len + 1) == 0;
        if (!mine)
            env[k++] = environ[i];
    }
    snprintf(prog, sizeof(prog), "%s", o->cmd[0]);
    unsigned problems = tsc_check_policy_env(env, basename(prog), false);
    if (problems)
        tsc_err("ab: arm %c: %u problem%s above in its policy; nothing was run", arm->name,
                problems, problems == 1 ? "" : "s");
    free(env);
    return problems;
}
