/*
 * The check every suite applies to the teshim reports it reads: each call a
 * hook counts lands in exactly one outcome, so for every hook of a report
 * injected + observed + skipped_by_policy + not_applicable + fallbacks +
 * would_block + errors == calls (bytes is a measure, not an outcome).
 *
 * Header-only and libc-only so that suites with their own report readers
 * (a JSON parser, string scans) share it. It reads the report as the shim
 * writes it: "hooks": {"NAME@VERSION": {"counter": number, ...}, ...}.
 */
#ifndef TESHIM_TESTS_REPORT_SUM_H
#define TESHIM_TESTS_REPORT_SUM_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const report_outcome_keys[] = {
    "injected",    "observed", "skipped_by_policy", "not_applicable", "fallbacks",
    "would_block", "errors",
};
#define REPORT_NOUTCOMES (sizeof(report_outcome_keys) / sizeof(report_outcome_keys[0]))

static inline const char *report_skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

/*
 * 0 when every hook of the report text json balances; -1 with the first
 * hook that does not (or what could not be read) described in why.
 */
static inline int report_outcomes_balance(const char *json, char *why, size_t len)
{
    const char *p = strstr(json, "\"hooks\": {");
    unsigned hooks = 0;

    if (!p) {
        snprintf(why, len, "no \"hooks\" object");
        return -1;
    }
    p = report_skip_ws(p + strlen("\"hooks\": {"));
    while (*p == '"') {
        char hook[160];
        const char *e = strchr(p + 1, '"');
        unsigned long long calls = 0, outcomes = 0, seen = 0;
        bool have_calls = false;

        if (!e || (size_t)(e - p - 1) >= sizeof(hook))
            break;
        memcpy(hook, p + 1, (size_t)(e - p - 1));
        hook[e - p - 1] = '\0';
        p = report_skip_ws(e + 1);
        if (*p != ':')
            break;
        p = report_skip_ws(p + 1);
        if (*p != '{')
            break;
        p = report_skip_ws(p + 1);
        while (*p == '"') {
            char key[64];
            e = strchr(p + 1, '"');
            if (!e || (size_t)(e - p - 1) >= sizeof(key))
                break;
            memcpy(key, p + 1, (size_t)(e - p - 1));
            key[e - p - 1] = '\0';
            p = report_skip_ws(e + 1);
            if (*p != ':')
                break;
            char *end;
            unsigned long long v = strtoull(p + 1, &end, 10);
            p = report_skip_ws(end);
            if (strcmp(key, "calls") == 0) {
                calls = v;
                have_calls = true;
            }
            for (size_t k = 0; k < REPORT_NOUTCOMES; k++)
                if (strcmp(key, report_outcome_keys[k]) == 0) {
                    outcomes += v;
                    seen |= 1ull << k;
                }
            if (*p == ',')
                p = report_skip_ws(p + 1);
        }
        if (*p != '}') {
            snprintf(why, len, "hook %s: unreadable counters", hook);
            return -1;
        }
        if (!have_calls || seen != (1ull << REPORT_NOUTCOMES) - 1) {
            snprintf(why, len, "hook %s: calls or an outcome counter missing", hook);
            return -1;
        }
        if (outcomes != calls) {
            snprintf(why, len, "hook %s: %llu calls but %llu outcomes", hook, calls, outcomes);
            return -1;
        }
        hooks++;
        p = report_skip_ws(p + 1);
        if (*p == ',')
            p = report_skip_ws(p + 1);
    }
    if (*p != '}' || !hooks) {
        snprintf(why, len, "unreadable \"hooks\" object after %u hooks", hooks);
        return -1;
    }
    return 0;
}

/* The same for the report file at path; -1 with why when it cannot be read.
 * why does not name the file: the caller does. */
static inline int report_file_balances(const char *path, char *why, size_t len)
{
    static char body[256 * 1024];
    FILE *f = fopen(path, "r");

    if (!f) {
        snprintf(why, len, "cannot open");
        return -1;
    }
    size_t n = fread(body, 1, sizeof(body) - 1, f);
    fclose(f);
    body[n] = '\0';
    return report_outcomes_balance(body, why, len);
}

#endif
