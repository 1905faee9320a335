/*
 * Sources of the effective configuration, later wins: built-in defaults <
 * profile < config file < environment. No stdio: the shim may load the
 * configuration from inside a hook before any constructor ran.
 */
#include "pol.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define POL_FILE_MAX (64 * 1024)

struct loader {
    struct pol_config *cfg;
    const struct pol_sources *src;
    char *const *environ; /* src->environ, or NULL for a secure program */
};

static void diag(struct loader *ld, enum pol_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void diag(struct loader *ld, enum pol_log_level lvl, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    ld->cfg->nwarnings++;
    if (!ld->src->diag)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ld->src->diag(ld->src->diag_arg, lvl, msg);
}

/* Copy s (len bytes) into the arena; NULL when it is full. */
static const char *arena_strndup(struct pol_config *cfg, const char *s, size_t len)
{
    if (cfg->arena_used + len + 1 > sizeof(cfg->arena))
        return NULL;
    char *d = cfg->arena + cfg->arena_used;
    memcpy(d, s, len);
    d[len] = '\0';
    cfg->arena_used += len + 1;
    return d;
}

/* LIST values are stored normalised: items trimmed, joined by ','. */
#define POL_LIST_MAX 1024

static const char *store_text(struct pol_config *cfg, enum pol_type type, const char *text)
{
    char norm[POL_LIST_MAX];
    size_t n = 0;

    if (type != POL_T_LIST)
        return arena_strndup(cfg, text, strlen(text));
    for (const char *p = text; *p;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && isspace((unsigned char)end[-1]))
            end--;
        if (end == start)
            continue;
        size_t len = (size_t)(end - start);
        if (n + len + 2 > sizeof(norm))
            return NULL;
        if (n)
            norm[n++] = ',';
        memcpy(norm + n, start, len);
        n += len;
    }
    return arena_strndup(cfg, norm, n);
}

static void describe_range(enum pol_param p, char *buf, size_t len)
{
    const struct pol_param_info *pi = &pol_params[p];

    switch (pi->type) {
    case POL_T_BOOL:
        snprintf(buf, len, "on|off");
        break;
    case POL_T_INT:
        snprintf(buf, len, "an integer %lld..%lld%s%s", (long long)pi->min, (long long)pi->max,
                 pi->choices[0] ? " or " : "", pi->choices);
        break;
    case POL_T_SIZE:
        snprintf(buf, len, "a byte count %lld..%lld (K, M, G suffixes)", (long long)pi->min,
                 (long long)pi->max);
        break;
    case POL_T_ENUM:
        snprintf(buf, len, "one of %s", pi->choices);
        break;
    default:
        snprintf(buf, len, "text");
        break;
    }
}

/*
 * Set p from text on behalf of origin ("environment", "/etc/teshim.conf:12").
 * A bad value is reported once and the value in force stays.
 */
static void set_value(struct loader *ld, enum pol_param p, const char *text, enum pol_source src,
                      const char *origin)
{
    const struct pol_param_info *pi = &pol_params[p];
    struct pol_value *v = &ld->cfg->v[p];
    int64_t i = 0;
    int rc;

    /* "" for a parameter that may be unset means "unset". */
    if (*text == '\0' && (pi->type == POL_T_INT || pi->type == POL_T_SIZE) && pi->def[0] == '\0') {
        v->set = false;
        v->i = 0;
        v->src = (uint8_t)src;
        return;
    }
    rc = pol_parse_value(p, text, &i);
    if (rc) {
        char range[160], cur[96];
        pol_format_value(ld->cfg, p, cur, sizeof(cur));
        describe_range(p, range, sizeof(range));
        diag(ld, POL_LOG_WARN, "%s: %s = '%s' is %s (accepted: %s); keeping %s%s%s", origin,
             pi->key, text, rc == -ERANGE ? "out of range" : "not valid", range, v->set ? "'" : "",
             v->set ? cur : "it unset", v->set ? "'" : "");
        return;
    }
    if (pi->type == POL_T_STR || pi->type == POL_T_LIST) {
        const char *s = store_text(ld->cfg, pi->type, text);
        if (!s) {
            /* The value itself is too long to quote: its start and its size. */
            size_t room = pi->type == POL_T_LIST ? POL_LIST_MAX - 2
                                                 : sizeof(ld->cfg->arena) - ld->cfg->arena_used - 1;
            char cur[96];
            pol_format_value(ld->cfg, p, cur, sizeof(cur));
            diag(ld, POL_LOG_WARN,
                 "%s: %s = '%.24s...' is too long (%zu bytes; accepted: at most %zu); "
                 "keeping '%s'",
                 origin, pi->key, text, strlen(text), room, cur);
            return;
        }
        v->s = s;
    }
    v->i = i;
    v->set = true;
    v->src = (uint8_t)src;
}

static void set_defaults(struct loader *ld)
{
    for (int p = 0; p < POL_NPARAMS; p++) {
        ld->cfg->v[p].set = false;
        ld->cfg->v[p].s = "";
        if (pol_params[p].def[0] == '\0' && pol_params[p].type != POL_T_STR &&
            pol_params[p].type != POL_T_LIST)
            continue;
        set_value(ld, (enum pol_param)p, pol_params[p].def, POL_SRC_DEFAULT, "built-in default");
    }
}

static const char *env_lookup(char *const *envp, const char *name)
{
    size_t n = strlen(name);

    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

static bool file_exists(const char *path)
{
    struct stat st;

    return path && *path && stat(path, &st) == 0;
}

/*
 * Read a whole small file into buf (NUL-terminated); its length, or -errno
 * (-EINVAL: not a regular file; -EFBIG: too large). Only a regular file is read:
 * a FIFO would block the program's start, /dev/stdin would eat its input.
 * Non-blocking open, so a FIFO is refused instead of waited on; symlinks
 * are followed (a path the user named may well be one).
 */
static ssize_t read_file(const char *path, char *buf, size_t cap)
{
    struct stat st;
    size_t n = 0;
    ssize_t rc;
    int fd;

    /* Checked before opening too: opening some devices has effects. The
     * null device is the usual way to say "no file" (TESHIM_CONFIG=/dev/null)
     * and reads as empty without blocking: taken as an empty file. */
    if (stat(path, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 &&
        minor(st.st_rdev) == 3) {
        buf[0] = '\0';
        return 0;
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return -EINVAL;
    fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out_close;
    }
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out_close;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    rc = n + 1 >= cap ? -EFBIG : (ssize_t)n;
out_close:
    close(fd);
    return rc;
}

/*
 * A NUL byte would end the text where C strings see it and drop the rest
 * of the file without a word: each line holding one is reported, naming the
 * file and line, and ignored.
 */
static void drop_nul_lines(struct loader *ld, const char *path, char *text, size_t len)
{
    unsigned lineno = 1;
    size_t start = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != '\n')
            continue;
        if (memchr(text + start, '\0', i - start)) {
            diag(ld, POL_LOG_WARN, "%s:%u: NUL byte in the line; line ignored", path, lineno);
            memset(text + start, ' ', i - start);
        }
        start = i + 1;
        lineno++;
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Split a trimmed "key = value" line in place, the value without matching
 * quotes around it; false if there is no '='. */
static bool split_kv(char *l, char **key, char **val)
{
    char *eq = strchr(l, '=');

    if (!eq)
        return false;
    *eq = '\0';
    *key = trim(l);
    *val = trim(eq + 1);
    size_t vl = strlen(*val);
    char q = vl >= 2 ? (*val)[0] : '\0';
    if ((q == '"' || q == '\'') && (*val)[vl - 1] == q) {
        (*val)[vl - 1] = '\0';
        (*val)++;
    }
    return true;
}

enum section_kind { SEC_TOP, SEC_PROFILE, SEC_OTHER };

/*
 * Walk "key = value" lines. Lines at top level are applied when want_profile
 * is NULL; lines of [profile want_profile] when it is not. The top-level pass
 * leaves [profile checked_profile] alone: the profile pass already reported
 * its problems. Returns whether the wanted profile section was seen. text is
 * modified in place.
 */
static bool apply_text(struct loader *ld, char *text, const char *name, enum pol_source src,
                       const char *want_profile, const char *checked_profile)
{
    enum section_kind sec = SEC_TOP;
    bool in_wanted = false, in_checked = false, seen = false, report = (want_profile == NULL);
    unsigned lineno = 0;

    /* Split by hand: strtok_r would swallow empty lines and shift the line
     * numbers that diagnostics name. */
    for (char *line = text, *next; line; line = next) {
        char origin[320];
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *l = trim(line);
        if (*l == '\0')
            continue;
        snprintf(origin, sizeof(origin), "%s:%u", name, lineno);
        if (*l == '[') {
            char *close = strchr(l, ']');
            char pname[POL_NAME_MAX];
            if (!close) {
                if (report)
                    diag(ld, POL_LOG_WARN, "%s: section header without ']'", origin);
                sec = SEC_OTHER;
                continue;
            }
            *close = '\0';
            if (sscanf(l + 1, " profile %127s", pname) == 1) {
                sec = SEC_PROFILE;
                in_wanted = want_profile && strcmp(pname, want_profile) == 0;
                in_checked = checked_profile && strcmp(pname, checked_profile) == 0;
                seen |= in_wanted;
            } else {
                if (report)
                    diag(ld, POL_LOG_WARN, "%s: unknown section [%s] (expected [profile NAME])",
                         origin, trim(l + 1));
                sec = SEC_OTHER;
            }
            continue;
        }
        bool apply = want_profile ? (sec == SEC_PROFILE && in_wanted) : (sec == SEC_TOP);
        bool check = want_profile ? apply : (sec == SEC_TOP || (sec == SEC_PROFILE && !in_checked));
        if (!check)
            continue;
        char *key, *val;
        if (!split_kv(l, &key, &val)) {
            diag(ld, POL_LOG_WARN, "%s: expected 'key = value', got '%s'", origin, l);
            continue;
        }
        int p = pol_find_key(key);
        if (p < 0) {
            const char *s = pol_suggest(key, false);
            diag(ld, POL_LOG_WARN, "%s: unknown key '%s'%s%s%s", origin, key,
                 s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
            continue;
        }
        if (p == POL_PROFILE && want_profile) {
            diag(ld, POL_LOG_WARN, "%s: 'profile' inside a profile is ignored", origin);
            continue;
        }
        if (apply)
            set_value(ld, (enum pol_param)p, val, src, origin);
    }
    return seen;
}

static const char *find_config_path(struct loader *ld, char *buf, size_t len)
{
    const struct pol_sources *src = ld->src;
    const char *p;

    if (src->config_path)
        return src->config_path;
    p = env_lookup(ld->environ, "TESHIM_CONFIG");
    if (p && *p)
        return p;
    p = src->etc_path ? src->etc_path : "/etc/teshim.conf";
    if (file_exists(p))
        return p;
    const char *xdg = env_lookup(ld->environ, "XDG_CONFIG_HOME");
    const char *home = env_lookup(ld->environ, "HOME");
    int n;
    if (xdg && *xdg)
        n = snprintf(buf, len, "%s/teshim.conf", xdg);
    else if (home && *home)
        n = snprintf(buf, len, "%s/.config/teshim.conf", home);
    else
        return NULL;
    if (n < 0 || (size_t)n >= len) {
        /* A cut path names another file: refuse it. */
        diag(ld, POL_LOG_WARN, "config file under %s: path longer than %zu bytes; not read",
             xdg && *xdg ? "XDG_CONFIG_HOME" : "HOME", len - 1);
        return NULL;
    }
    return file_exists(buf) ? buf : NULL;
}

static void apply_profile(struct loader *ld, char *file_text, const char *file_name)
{
    const char *name = pol_str(ld->cfg, POL_PROFILE);
    static char copy[POL_FILE_MAX]; /* see pol_load: not reentrant */

    if (!*name)
        return;
    /* A [profile NAME] in the config file wins over a shipped one. */
    if (file_text) {
        snprintf(copy, sizeof(copy), "%s", file_text);
        if (apply_text(ld, copy, file_name, POL_SRC_PROFILE, name, NULL))
            return;
    }
    for (size_t i = 0; i < pol_nprofiles; i++) {
        if (strcmp(pol_profiles[i].name, name) == 0) {
            char origin[POL_NAME_MAX + 16];
            snprintf(copy, sizeof(copy), "%s", pol_profiles[i].text);
            snprintf(origin, sizeof(origin), "profile %s", name);
            apply_text(ld, copy, origin, POL_SRC_PROFILE, NULL, NULL);
            return;
        }
    }
    char known[512] = "";
    size_t n = 0;
    for (size_t i = 0; i < pol_nprofiles && n < sizeof(known); i++)
        n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s", i ? ", " : "",
                              pol_profiles[i].name);
    const char *near = pol_suggest_profile(name);
    diag(ld, POL_LOG_WARN, "profile '%s' not found, using no profile (shipped: %s)%s%s%s", name,
         known, near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
}

static void apply_env(struct loader *ld)
{
    for (char *const *e = ld->environ; e && *e; e++) {
        char name[160];
        const char *eq;

        if (strncmp(*e, "TESHIM_", 7) != 0 || !(eq = strchr(*e, '=')))
            continue;
        snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
        /* TESHIM_CONFIG was consumed when the file was chosen; the variables of
         * teshim's own tools are not parameters (pol_is_tool_env). */
        if (strcmp(name, "TESHIM_CONFIG") == 0 || pol_is_tool_env(name))
            continue;
        int p = pol_find_env(name);
        if (p < 0) {
            const char *s = pol_suggest(name, true);
            diag(ld, POL_LOG_WARN, "environment: unknown variable %s%s%s%s", name,
                 s ? " (did you mean " : "", s ? s : "", s ? "?)" : "");
            continue;
        }
        char origin[200];
        snprintf(origin, sizeof(origin), "environment %s", name);
        set_value(ld, (enum pol_param)p, eq + 1, POL_SRC_ENV, origin);
    }
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t policy_hash(const struct pol_config *cfg)
{
    uint64_t h = 1469598103934665603ULL;

    for (int p = 0; p < POL_NPARAMS; p++) {
        char val[512];
        const char *key = pol_params[p].key;
        /* Where reports go, how loud they are, and where the host keeps its
         * kill-switch file and sysfs are plumbing, not policy: the same
         * policy hashes the same on every host. */
        if (strncmp(key, "log.", 4) == 0 || strncmp(key, "stats.", 6) == 0 || p == POL_PROFILE ||
            p == POL_KILL_SWITCH_FILE || p == POL_RDMA_SYSFS_ROOT ||
            p == POL_ROLLOUT_CHECK_INTERVAL_MS)
            continue;
        pol_format_value(cfg, (enum pol_param)p, val, sizeof(val));
        h = fnv1a(h, key);
        h = fnv1a(h, "=");
        h = fnv1a(h, val);
        h = fnv1a(h, "\n");
    }
    return h;
}

void pol_decide_gate(struct pol_config *cfg, bool kill_file)
{
    int64_t forced = pol_int(cfg, POL_ROLLOUT_ARM);

    cfg->rollout_bucket =
        pol_rollout_bucket(pol_str(cfg, POL_ROLLOUT_SALT), cfg->host, cfg->program);
    if (forced == POL_FORCE_A)
        cfg->arm = POL_ARM_A;
    else if (forced == POL_FORCE_B)
        cfg->arm = POL_ARM_B;
    else
        cfg->arm = cfg->rollout_bucket < (uint32_t)pol_int(cfg, POL_ROLLOUT_PERCENT) * 100
                       ? POL_ARM_B
                       : POL_ARM_A;

    const char *incl = pol_str(cfg, POL_SCOPE_PROGRAMS);
    bool in_scope = (!*incl || pol_list_match(incl, cfg->program)) &&
                    !pol_list_match(pol_str(cfg, POL_SCOPE_EXCLUDE_PROGRAMS), cfg->program);

    if (pol_int(cfg, POL_DISABLE) || kill_file)
        cfg->gate = POL_GATE_KILLED;
    else if (!in_scope)
        cfg->gate = POL_GATE_OUT_OF_SCOPE;
    else if (cfg->arm == POL_ARM_A)
        cfg->gate = POL_GATE_ARM_A;
    else if (pol_int(cfg, POL_MODE) == POL_MODE_OBSERVE)
        cfg->gate = POL_GATE_OBSERVE;
    else
        cfg->gate = POL_GATE_ENFORCE;
}

unsigned pol_load(struct pol_config *cfg, const struct pol_sources *src)
{
    /* Static, not on the stack: a hook may load the configuration on a thread
     * with a small stack. pol_load is therefore not reentrant; callers
     * serialise it (the shim loads once under pthread_once). */
    static char file_text[POL_FILE_MAX];
    static char scratch[POL_FILE_MAX];
    struct pol_sources none = {0};
    struct loader ld;
    static char pathbuf[PATH_MAX];
    const char *path;
    bool have_file = false;

    if (!src)
        src = &none;
    memset(cfg, 0, offsetof(struct pol_config, arena));
    ld.cfg = cfg;
    ld.src = src;
    ld.environ = src->secure ? NULL : src->environ;
    snprintf(cfg->program, sizeof(cfg->program), "%s", src->program ? src->program : "unknown");
    snprintf(cfg->host, sizeof(cfg->host), "%s", src->host ? src->host : "unknown");

    set_defaults(&ld);
    unsigned w_file = cfg->nwarnings;

    /* The file's text is kept: the profile pass reads it before the top level. */
    path = find_config_path(&ld, pathbuf, sizeof(pathbuf));
    if (path) {
        ssize_t rc = read_file(path, file_text, sizeof(file_text));
        if (rc >= 0) {
            have_file = true;
            drop_nul_lines(&ld, path, file_text, (size_t)rc);
            snprintf(cfg->config_path, sizeof(cfg->config_path), "%s", path);
        } else {
            diag(&ld, POL_LOG_WARN, "config file %s: %s; using defaults%s", path,
                 rc == -EFBIG    ? "larger than 64 KiB"
                 : rc == -EINVAL ? "not a regular file"
                                 : strerror((int)-rc),
                 ld.environ ? " and environment" : "");
        }
    }

    /* The profile is named by the environment, else by the file. */
    const char *env_profile = env_lookup(ld.environ, "TESHIM_PROFILE");
    if (env_profile)
        set_value(&ld, POL_PROFILE, env_profile, POL_SRC_ENV, "environment TESHIM_PROFILE");
    else if (have_file) {
        snprintf(scratch, sizeof(scratch), "%s", file_text);
        for (char *save = NULL, *l = strtok_r(scratch, "\n", &save); l;
             l = strtok_r(NULL, "\n", &save)) {
            char *h = strchr(l, '#'), *key, *val;
            if (h)
                *h = '\0';
            char *t = trim(l);
            if (*t == '[')
                break;
            /* Read as the top-level pass will: the whole key, quotes stripped. */
            if (split_kv(t, &key, &val) && strcmp(key, "profile") == 0)
                set_value(&ld, POL_PROFILE, val, POL_SRC_FILE, path);
        }
    }
    unsigned w_profile = cfg->nwarnings;
    apply_profile(&ld, have_file ? file_text : NULL, path);
    /* A profile named by the environment is the environment's problem. */
    if (cfg->v[POL_PROFILE].src == POL_SRC_ENV)
        w_file += cfg->nwarnings - w_profile;
    if (have_file) {
        const char *checked = pol_str(cfg, POL_PROFILE);
        snprintf(scratch, sizeof(scratch), "%s", file_text);
        apply_text(&ld, scratch, path, POL_SRC_FILE, NULL, *checked ? checked : NULL);
    }
    cfg->nfile_warnings = cfg->nwarnings - w_file;
    apply_env(&ld);

    /* Read even for a secure program: they are the host's own settings,
     * which it obeys, and they can only make teshim do less. */
    pol_host_knobs_read(src->environ, cfg->host_knobs);
    pol_decide_gate(cfg, file_exists(pol_str(cfg, POL_KILL_SWITCH_FILE)));
    cfg->hash = policy_hash(cfg);
    return cfg->nwarnings;
}

/* A string value of src as it must read in dst: moved into dst's arena when
 * it lies in src's. */
static const char *rebase(struct pol_config *dst, const struct pol_config *src, const char *s)
{
    if (s >= src->arena && s < src->arena + sizeof(src->arena))
        return dst->arena + (s - src->arena);
    return s;
}

void pol_config_copy(struct pol_config *dst, const struct pol_config *src)
{
    if (dst == src)
        return;
    memcpy(dst, src, sizeof(*dst));
    for (int p = 0; p < POL_NPARAMS; p++)
        if (dst->v[p].s)
            dst->v[p].s = rebase(dst, src, src->v[p].s);
}

bool pol_start_only(enum pol_param p)
{
    const char *key = pol_params[p].key;

    return strncmp(key, "log.", 4) == 0 || strncmp(key, "stats.", 6) == 0 ||
           strncmp(key, "cuda.", 5) == 0 || strncmp(key, "engine.", 7) == 0 ||
           p == POL_RDMA_SYSFS_ROOT;
}

unsigned pol_keep_start_only(struct pol_config *next, const struct pol_config *cur,
                             pol_diag_fn diagfn, void *diag_arg)
{
    unsigned kept = 0;

    for (int p = 0; p < POL_NPARAMS; p++) {
        char was[256], now[256];
        if (!pol_start_only((enum pol_param)p))
            continue;
        pol_format_value(cur, (enum pol_param)p, was, sizeof(was));
        pol_format_value(next, (enum pol_param)p, now, sizeof(now));
        if (strcmp(was, now) == 0 && next->v[p].set == cur->v[p].set)
            continue;
        kept++;
        if (diagfn) {
            char msg[640];
            snprintf(msg, sizeof(msg),
                     "%s changed to '%s' at run time: read at start only, "
                     "keeping '%s' until the next start",
                     pol_params[p].key, now, was);
            diagfn(diag_arg, POL_LOG_WARN, msg);
        }
        const char *s = cur->v[p].s;
        next->v[p] = cur->v[p];
        if (s && s >= cur->arena && s < cur->arena + sizeof(cur->arena)) {
            /* Into next's own arena; when it is full the value keeps pointing
             * into cur's, which the caller keeps alive (the shim never frees
             * a published configuration). */
            const char *d = arena_strndup(next, s, strlen(s));
            next->v[p].s = d ? d : s;
        }
    }
    next->hash = policy_hash(next);
    return kept;
}
