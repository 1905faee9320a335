/* The parameter table and the per-value parsing and formatting it drives. */
#include "pol.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const struct pol_param_info pol_params[POL_NPARAMS] = {
#define POL_PARAM(id, key, type, def, min, max, choices, doc)                                      \
    [POL_##id] = {key, "TESHIM_" #id, POL_T_##type, def, min, max, choices, doc},
#include "pol_params.def"
#undef POL_PARAM
};

int pol_find_key(const char *key)
{
    for (int i = 0; i < POL_NPARAMS; i++)
        if (strcmp(pol_params[i].key, key) == 0)
            return i;
    return -1;
}

int pol_find_env(const char *env_name)
{
    for (int i = 0; i < POL_NPARAMS; i++)
        if (strcmp(pol_params[i].env, env_name) == 0)
            return i;
    return -1;
}

/* Edit distance, case-insensitive, on short names only. */
static unsigned edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned row[128];

    if (la >= 127 || lb >= 127)
        return 1000;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned diag = row[0];
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned up = row[j];
            unsigned cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            unsigned best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Variables of teshim that are not parameters: the config file's name, and
 * the library `teshim run` preloads. */
static const char *const pol_meta_env[] = {"TESHIM_CONFIG", "TESHIM_LIBRARY", NULL};

bool pol_is_tool_env(const char *name)
{
    /* TESHIM_LIBRARY: which libteshim.so the command preloads; TESHIM_AB_*:
     * set by teshim ab for the program; TESHIM_BUILD_DIR/_SOURCE_DIR: scripts
     * and tests; TESHIM_SKIP_SANITIZERS: scripts/test.sh; TESHIM_RUN_PID: the
     * process teshim run started (it reports whatever stats.report says);
     * TESHIM_WARNED: the configuration warnings a parent process wrote. */
    return strcmp(name, "TESHIM_LIBRARY") == 0 || strncmp(name, "TESHIM_AB_", 10) == 0 ||
           strcmp(name, "TESHIM_BUILD_DIR") == 0 || strcmp(name, "TESHIM_SOURCE_DIR") == 0 ||
           strcmp(name, "TESHIM_SKIP_SANITIZERS") == 0 || strcmp(name, "TESHIM_RUN_PID") == 0 ||
           strcmp(name, "TESHIM_WARNED") == 0;
}

const char *pol_suggest(const char *name, bool env_form)
{
    const char *best = NULL;
    unsigned best_d = (unsigned)-1;

    for (int i = 0; i < POL_NPARAMS; i++) {
        const char *cand = env_form ? pol_params[i].env : pol_params[i].key;
        unsigned d = edit_distance(name, cand);
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    if (env_form) {
        for (int i = 0; pol_meta_env[i]; i++) {
            unsigned d = edit_distance(name, pol_meta_env[i]);
            if (d < best_d) {
                best_d = d;
                best = pol_meta_env[i];
            }
        }
    }
    /* Further than a third of the name away is a different word, not a typo. */
    if (best && best_d > 2 + strlen(name) / 3)
        return NULL;
    return best;
}

const char *pol_suggest_profile(const char *name)
{
    const char *best = NULL;
    unsigned best_d = (unsigned)-1;

    for (size_t i = 0; i < pol_nprofiles; i++) {
        const char *cand = pol_profiles[i].name;
        size_t lc = strlen(cand), ln = strlen(name);
        unsigned d = edit_distance(name, cand);
        /* "rdma-ro" for "rdma-ro-tc": a cut-short name is the likeliest typo. */
        if ((ln && lc > ln && strncasecmp(cand, name, ln) == 0) ||
            (lc && ln > lc && strncasecmp(name, cand, lc) == 0))
            d = d > 1 ? 1 : d;
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    return best;
}

static int parse_bool(const char *t, int64_t *out)
{
    static const char *const yes[] = {"1", "on", "true", "yes", "enable", "enabled", NULL};
    static const char *const no[] = {"0", "off", "false", "no", "disable", "disabled", NULL};

    for (int i = 0; yes[i]; i++)
        if (strcasecmp(t, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
    for (int i = 0; no[i]; i++)
        if (strcasecmp(t, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    return -EINVAL;
}

static int parse_enum(const char *choices, const char *t, int64_t *out)
{
    size_t tl = strlen(t);
    int64_t idx = 0;

    for (const char *c = choices; *c; idx++) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == tl && strncasecmp(c, t, len) == 0) {
            *out = idx;
            return 0;
        }
        if (!bar)
            break;
        c = bar + 1;
    }
    return -EINVAL;
}

static int parse_int(const char *t, int64_t min, int64_t max, bool size, int64_t *out)
{
    char *end;
    long long v;
    int64_t mult = 1;

    errno = 0;
    v = strtoll(t, &end, 0);
    if (end == t || errno == ERANGE)
        return end == t ? -EINVAL : -ERANGE;
    if (size && *end) {
        switch (toupper((unsigned char)*end)) {
        case 'K':
            mult = 1LL << 10;
            break;
        case 'M':
            mult = 1LL << 20;
            break;
        case 'G':
            mult = 1LL << 30;
            break;
        case 'T':
            mult = 1LL << 40;
            break;
        default:
            return -EINVAL;
        }
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
        if (toupper((unsigned char)*end) == 'B')
            end++;
    }
    if (*end)
        return -EINVAL;
    if (mult > 1 && (v > INT64_MAX / mult || v < INT64_MIN / mult))
        return -ERANGE;
    v *= mult;
    if (v < min || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

int pol_parse_value(enum pol_param p, const char *text, int64_t *out)
{
    const struct pol_param_info *pi = &pol_params[p];
    int64_t dummy;

    if (!out)
        out = &dummy;
    switch (pi->type) {
    case POL_T_BOOL:
        return parse_bool(text, out);
    case POL_T_INT:
        if (pi->choices[0] && strcasecmp(text, pi->choices) == 0) {
            *out = 0;
            return 0;
        }
        return parse_int(text, pi->min, pi->max, false, out);
    case POL_T_SIZE:
        return parse_int(text, pi->min, pi->max, true, out);
    case POL_T_ENUM:
        return parse_enum(pi->choices, text, out);
    case POL_T_STR:
    case POL_T_LIST:
        *out = 0;
        return 0;
    }
    return -EINVAL;
}

static void format_size(int64_t v, char *buf, size_t len)
{
    static const char sfx[] = "KMGT";
    int i = -1;

    while (v != 0 && i < 3 && v % 1024 == 0) {
        v /= 1024;
        i++;
    }
    if (i < 0)
        snprintf(buf, len, "%" PRId64, v);
    else
        snprintf(buf, len, "%" PRId64 "%c", v, sfx[i]);
}

static void enum_name(const char *choices, int64_t idx, char *buf, size_t len)
{
    const char *c = choices;

    for (int64_t i = 0; i < idx && c; i++) {
        c = strchr(c, '|');
        if (c)
            c++;
    }
    if (!c) {
        snprintf(buf, len, "%" PRId64, idx);
        return;
    }
    size_t n = strcspn(c, "|");
    snprintf(buf, len, "%.*s", (int)n, c);
}

void pol_format_value(const struct pol_config *cfg, enum pol_param p, char *buf, size_t len)
{
    const struct pol_param_info *pi = &pol_params[p];
    const struct pol_value *v = &cfg->v[p];

    if (!v->set) {
        snprintf(buf, len, "%s", "");
        return;
    }
    switch (pi->type) {
    case POL_T_BOOL:
        snprintf(buf, len, "%s", v->i ? "on" : "off");
        break;
    case POL_T_INT:
        if (v->i == 0 && pi->choices[0])
            snprintf(buf, len, "%s", pi->choices);
        else
            snprintf(buf, len, "%" PRId64, v->i);
        break;
    case POL_T_SIZE:
        format_size(v->i, buf, len);
        break;
    case POL_T_ENUM:
        enum_name(pi->choices, v->i, buf, len);
        break;
    case POL_T_STR:
    case POL_T_LIST:
        snprintf(buf, len, "%s", v->s ? v->s : "");
        break;
    }
}

const char *pol_source_name(enum pol_source s)
{
    switch (s) {
    case POL_SRC_DEFAULT:
        return "default";
    case POL_SRC_PROFILE:
        return "profile";
    case POL_SRC_FILE:
        return "file";
    case POL_SRC_ENV:
        return "env";
    }
    return "?";
}

const char *pol_gate_name(enum pol_gate g)
{
    switch (g) {
    case POL_GATE_ENFORCE:
        return "enforce";
    case POL_GATE_OBSERVE:
        return "observe";
    case POL_GATE_ARM_A:
        return "arm-a";
    case POL_GATE_KILLED:
        return "killed";
    case POL_GATE_OUT_OF_SCOPE:
        return "out-of-scope";
    }
    return "?";
}

const char *pol_arm_name(enum pol_arm a)
{
    return a == POL_ARM_B ? "B" : "A";
}
