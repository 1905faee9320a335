/* Shared helpers of the policy suites: an explicit environment, a diag sink
 * that keeps every line, and files in a per-test temporary directory. */
#ifndef TESHIM_TPOL_H
#define TESHIM_TPOL_H

#include <check.h>
#include <stdbool.h>

#include "pol.h"

#define TPOL_MAX_DIAGS 64

/* Every diagnostic pol_load reported, in order. */
struct tpol_diags {
    unsigned n;
    enum pol_log_level level[TPOL_MAX_DIAGS];
    char msg[TPOL_MAX_DIAGS][600];
};

/* A test's sources: environment strings added with tpol_env(). */
struct tpol {
    char *env[64];
    unsigned nenv;
    struct pol_sources src;
    struct tpol_diags diags;
    char dir[256]; /* temporary directory, created on first use */
    struct pol_config cfg;
};

/* Fresh sources: program "prog", host "host", no file (etc_path and HOME
 * point into an empty temporary directory). */
void tpol_init(struct tpol *t);
/* Add "NAME=VALUE" to the environment. */
void tpol_env(struct tpol *t, const char *name, const char *value);
/* Write text to DIR/name, creating the folders in name; returns the full
 * path, valid until the test ends (at most 32 paths per test). */
const char *tpol_write(struct tpol *t, const char *name, const char *text);
/* Path DIR/name without creating anything (same lifetime). */
const char *tpol_path(struct tpol *t, const char *name);
/* pol_load with these sources; returns its result. */
unsigned tpol_load(struct tpol *t);
/* Number of diagnostics containing every one of the given substrings
 * (NULL-terminated list). */
unsigned tpol_count(const struct tpol *t, ...);
/* Dump the diagnostics (for failure messages). */
const char *tpol_dump(const struct tpol *t);

/* a == b (unsigned), with the diagnostics in the failure message. */
#define tpol_eq(t, a, b)                                                                           \
    ck_assert_msg((unsigned)(a) == (unsigned)(b), "%s is %u, want %u; diagnostics:%s", #a,         \
                  (unsigned)(a), (unsigned)(b), tpol_dump(t))

Suite *tpol_sources_suite(void);
Suite *tpol_values_suite(void);
Suite *tpol_gate_suite(void);
Suite *tpol_rdma_suite(void);
Suite *tpol_sysfs_suite(void);
Suite *tpol_table_suite(void);

#endif
