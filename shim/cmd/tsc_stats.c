/* teshim stats: readable summaries of the JSON reports written at exit. */
#include "tsc.h"
#include "tsc_json.h"
#include "shim_stats.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The report's keys and the columns, in the order of the shim's counters. */
const char *const tsc_ctr_keys[SHIM_C_COUNT] = {
#define CTR_KEY(id, key, head, doc) [SHIM_C_##id] = key,
    SHIM_COUNTERS(CTR_KEY)
#undef CTR_KEY
};
const char *const tsc_ctr_heads[SHIM_C_COUNT] = {
#define CTR_HEAD(id, key, head, doc) [SHIM_C_##id] = head,
    SHIM_COUNTERS(CTR_HEAD)
#undef CTR_HEAD
};
#define NCTR SHIM_C_COUNT

const char tsc_ctr_legend[] =
    "CALLS = INJECTED changed + OBSERVED would change (observe mode) + SKIPPED policy off, "
    "arm A, kill switch or out of scope + N/A policy on, call not eligible + FALLBACK ran "
    "unchanged, policy could not apply + WOULDBLK EAGAIN/EINTR-like retry, nothing done + "
    "ERRORS failures the host sees; BYTES: bytes of injected calls";

struct arm_total {
    unsigned processes;
    double c[NCTR];
};

static void print_head(void)
{
    printf("  %-36s", "HOOK");
    for (size_t c = 0; c < NCTR; c++)
        printf(" %9s", tsc_ctr_heads[c]);
    printf("\n");
}

static int summarise(const char *path, struct arm_total totals[2])
{
    char err[256];
    struct tsc_json *j = tsc_json_load(path, err, sizeof(err));

    if (!j) {
        tsc_err("stats: %s: %s", path, err);
        return -1;
    }
    const struct tsc_json *hooks = tsc_json_get(j, "hooks");
    if (!hooks || hooks->type != TSC_JSON_OBJ || !tsc_json_get(j, "arm")) {
        tsc_err("stats: %s: not a teshim report (no \"hooks\" or \"arm\")", path);
        tsc_json_free(j);
        return -1;
    }
    const char *arm = tsc_json_str(j, "arm", "?");
    double dur = (tsc_json_num(j, "end_ns", 0) - tsc_json_num(j, "start_ns", 0)) / 1e9;
    printf("%s\n  %s pid %.0f on %s: arm %s, gate %s, policy %s, profile %s, %.2f s, teshim %s\n",
           path, tsc_json_str(j, "program", "?"), tsc_json_num(j, "pid", 0),
           tsc_json_str(j, "host", "?"), arm, tsc_json_str(j, "gate", "?"),
           tsc_json_str(j, "policy_hash", "?"),
           tsc_json_str(j, "profile", "")[0] ? tsc_json_str(j, "profile", "") : "(none)", dur,
           tsc_json_str(j, "teshim_version", "?"));
    struct arm_total *t = &totals[strcmp(arm, "B") == 0];
    t->processes++;
    bool any = false;
    unsigned unbalanced = 0;
    for (const struct tsc_json *h = hooks->child; h; h = h->next) {
        if (tsc_json_num(h, "calls", 0) == 0)
            continue;
        if (!any)
            print_head();
        any = true;
        printf("  %-36s", h->key);
        double outcomes = 0;
        for (size_t c = 0; c < NCTR; c++) {
            double v = tsc_json_num(h, tsc_ctr_keys[c], 0);
            t->c[c] += v;
            if (c != SHIM_C_CALLS && c != SHIM_C_BYTES)
                outcomes += v;
            printf(" %9.0f", v);
        }
        printf("\n");
        unbalanced += outcomes != tsc_json_num(h, "calls", 0);
    }
    if (!any)
        printf("  (no hooked call was made)\n");
    /* Reports of teshim before would_block counted errors and fallbacks on
     * top of a verdict: say so rather than let the columns mislead. */
    if (unbalanced)
        printf("  %u hook%s whose outcomes do not add up to CALLS (a report of an older "
               "teshim?)\n",
               unbalanced, unbalanced == 1 ? "" : "s");
    double warn = tsc_json_num(j, "config_warnings", 0);
    if (warn > 0)
        printf("  %.0f configuration warning%s were reported by the process\n", warn,
               warn == 1 ? "" : "s");
    tsc_json_free(j);
    return 0;
}

static int is_report_name(const struct dirent *e)
{
    size_t n = strlen(e->d_name);

    return strncmp(e->d_name, "teshim-", 7) == 0 && n > 12 &&
           strcmp(e->d_name + n - 5, ".json") == 0;
}

/* A stats.dir: every teshim-*.json in it, in name order. Returns the number
 * of reports that could not be read (-1 when dir has none). */
static int summarise_dir(const char *dir, struct arm_total totals[2], int *files)
{
    struct dirent **names;
    int n = scandir(dir, &names, is_report_name, alphasort), bad = 0;

    if (n < 0) {
        tsc_err("stats: %s: %m", dir);
        return 1;
    }
    if (n == 0)
        tsc_err("stats: %s: no teshim-*.json report in it", dir);
    for (int k = 0; k < n; k++) {
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, names[k]->d_name);
        if ((*files)++ == 0)
            printf("legend: %s\n", tsc_ctr_legend);
        bad += summarise(path, totals) != 0;
        free(names[k]);
    }
    free(names);
    return n == 0 ? 1 : bad;
}

int tsc_cmd_stats(int argc, char **argv)
{
    struct arm_total totals[2] = {0};
    int files = 0, bad = 0;

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--live") == 0)
            return tsc_stats_live(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: teshim stats REPORT.json|DIR...\n"
                   "       teshim stats --live [--pid PID] [--interval S] [--count N] "
                   "[--prometheus [FILE]]\n"
                   "Summarises the reports libteshim.so writes at exit to stats.dir; a DIR\n"
                   "stands for every teshim-*.json in it. --live reads the counters of running\n"
                   "processes (teshim stats --live --help); --prometheus writes them in the\n"
                   "Prometheus text format (node_exporter's textfile collector).\n");
            return 0;
        }
        if (argv[i][0] == '-') {
            tsc_err("stats: unknown option '%s'", argv[i]);
            return TSC_EXIT_USAGE;
        }
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            int before = files;
            bad += summarise_dir(argv[i], totals, &files);
            /* An empty folder counts once, as a report that failed. */
            files += files == before;
            continue;
        }
        if (files++ == 0)
            printf("legend: %s\n", tsc_ctr_legend);
        bad += summarise(argv[i], totals) != 0;
    }
    if (!files) {
        tsc_err("stats: no report given (they are written to stats.dir, TESHIM_STATS_DIR)");
        return TSC_EXIT_USAGE;
    }
    if (files - bad > 1) {
        printf("totals\n");
        print_head();
        for (int a = 0; a < 2; a++) {
            if (!totals[a].processes)
                continue;
            char label[64];
            snprintf(label, sizeof(label), "arm %s (%u process%s)", a ? "B" : "A",
                     totals[a].processes, totals[a].processes == 1 ? "" : "es");
            printf("  %-36s", label);
            for (size_t c = 0; c < NCTR; c++)
                printf(" %9.0f", totals[a].c[c]);
            printf("\n");
        }
    }
    return bad ? 1 : 0;
}
