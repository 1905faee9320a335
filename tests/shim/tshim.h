/*
 * Helpers of the shim suites: run a host program in a clean environment
 * (optionally under LD_PRELOAD=libteshim.so) against the emulated
 * libibverbs, then read what reached the library (the emulation's JSON-lines
 * record) and what teshim reported (its JSON report per process).
 */
#ifndef TESHIM_TSHIM_H
#define TESHIM_TSHIM_H

#include <check.h>
#include <stdbool.h>
#include <sys/types.h>

#include "tsc_json.h"

#define TSHIM_RO (1u << 20) /* IBV_ACCESS_RELAXED_ORDERING */
#define TSHIM_MAX_REC 4096

struct tshim_run {
    char dir[256];   /* per-run temporary directory */
    char rec[300];   /* record file of the emulation */
    char stats[300]; /* TESHIM_STATS_DIR */
    char *env[64];
    unsigned nenv;
    int status; /* exit status, or 128 + signal */
    char *out;  /* the command's stdout and stderr, NUL-terminated */
    char *err;
    pid_t pid; /* from the host's "pid N" line; 0 if none */
    /* Optional, set after tshim_init: */
    const char *input;  /* the program's stdin (through a pipe); NULL: the suite's */
    unsigned timeout_s; /* kill the program after this long: status -1 ("hung") */
    /* Called in the suite with the program's pid before it execs (it waits),
     * and in the child just before execve (root: namespaces, uid changes;
     * _exit on failure). */
    void (*on_fork)(struct tshim_run *r, pid_t pid);
    void (*child_setup)(struct tshim_run *r);
    void *arg;
    /* the record, one parsed object per line */
    struct tsc_json *lines[TSHIM_MAX_REC];
    unsigned nlines;
};

/* Path under the build tree (TESHIM_BUILD_DIR) or the source tree. */
const char *tshim_build(const char *rel);
const char *tshim_source(const char *rel);

/* A fresh run: PATH, LD_LIBRARY_PATH to the emulation, its record file, the
 * stats directory, live statistics off; LD_PRELOAD=libteshim.so if preload. */
void tshim_init(struct tshim_run *r, bool preload);
void tshim_env(struct tshim_run *r, const char *name, const char *value);
void tshim_unenv(struct tshim_run *r, const char *name);
/* Path DIR/name. */
const char *tshim_path(struct tshim_run *r, const char *name);
/* Run argv (argv[0] a path) to completion; then load the record. */
void tshim_exec(struct tshim_run *r, const char *const *argv);
/* Run bin/tshim_host with the given steps (NULL-terminated). */
void tshim_host(struct tshim_run *r, ...);

/* The nth (0-based) record line with "call" == call and, if entry is not
 * NULL, "entry" == entry; NULL if there is none. */
const struct tsc_json *tshim_rec(const struct tshim_run *r, const char *call, const char *entry,
                                 unsigned nth);
unsigned tshim_rec_count(const struct tshim_run *r, const char *call, const char *entry);
/* Integer member of a record line (asserts it exists). */
long long tshim_num(const struct tsc_json *j, const char *key);

/* The report written by process pid (0: the host's own pid); asserts that
 * it exists. Free with tsc_json_free. */
struct tsc_json *tshim_report(const struct tshim_run *r, pid_t pid);
unsigned tshim_report_count(const struct tshim_run *r);
/* A counter of a hook ("ibv_reg_mr@IBVERBS_1.1", "injected"). */
long long tshim_ctr(const struct tsc_json *report, const char *hook, const char *ctr);

/* Substring count in a string. */
unsigned tshim_strcount(const char *hay, const char *needle);

/* A value of a "KEY=VALUE" token on the host's output line starting with
 * step ("qp:grh rc=0 attr_unchanged=1"); asserts the line exists. */
long long tshim_out(const struct tshim_run *r, const char *step, const char *key);

#define tshim_ck(r, expr)                                                                          \
    ck_assert_msg((expr), "%s\n--- stdout ---\n%s--- stderr ---\n%s", #expr, (r)->out, (r)->err)

Suite *tshim_inject_suite(void);
Suite *tshim_gate_suite(void);
Suite *tshim_process_suite(void);
Suite *tshim_elf_suite(void);
Suite *tshim_security_suite(void);
Suite *tshim_dlopen_suite(void);
Suite *tshim_scope_suite(void);

#endif
