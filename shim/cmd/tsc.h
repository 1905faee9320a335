/* The teshim command: one file per subcommand, dispatched from tsc_main.c. */
#ifndef TESHIM_TSC_H
#define TESHIM_TSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "pol.h"

/* A subcommand: returns the process exit status. argv[0] is its name. */
typedef int (*tsc_cmd_fn)(int argc, char **argv);

int tsc_cmd_run(int argc, char **argv);
int tsc_cmd_config(int argc, char **argv);
int tsc_cmd_doctor(int argc, char **argv);
int tsc_cmd_stats(int argc, char **argv);
int tsc_cmd_ab(int argc, char **argv);
int tsc_cmd_demo(int argc, char **argv);

/* teshim stats --live (tsc_live.c); argv as given to stats. */
int tsc_stats_live(int argc, char **argv);

/* Column heads of the per-hook counters, indexed by enum shim_ctr, and the
 * one-line legend that explains them (tsc_stats.c). */
extern const char *const tsc_ctr_heads[];
/* The report's key of each counter ("skipped_by_policy"). */
extern const char *const tsc_ctr_keys[];
extern const char tsc_ctr_legend[];

/* Remove the live-statistics segments of this user's processes that are
 * gone (or no longer map theirs); returns how many were removed. */
int tsc_live_reap(void);

/* Exit statuses of the command's own failures (run passes the child's on). */
#define TSC_EXIT_USAGE 2
#define TSC_EXIT_NOTFOUND 127

void tsc_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Write text for a roff (man page) body: backslashes, hyphens and a leading
 * '.' or '\'' escaped. */
void tsc_roff(FILE *f, const char *text);

/*
 * The settings options shared by run, config and ab: --profile P,
 * --config F, --set key=value. Returns 1 if argv[*i] was one of them (and
 * advances *i past its value), 0 if not, -1 after reporting a bad one.
 * Accepted settings are exported to this process's environment as the
 * TESHIM_* variables the shim reads.
 */
int tsc_settings_option(int argc, char **argv, int *i);

/* Validate "key=value": the parameter's index, or -1 after reporting the
 * problem (what names the option: "--set", "ab: arm B: set:"). The one
 * check of every KEY=VALUE the command takes. */
int tsc_check_set(const char *kv, const char *what);

/* Validate "key=value" and export it as TESHIM_KEY=value; 0 or -1 (reported). */
int tsc_apply_set(const char *kv);

/* Whether name is a profile shipped with teshim. */
bool tsc_profile_shipped(const char *name);

/* Path of libteshim.so: $TESHIM_LIBRARY, else the install layout relative
 * to this executable (bindir/../lib/<multiarch>/teshim, as configured), else
 * the build tree's ../lib beside it, else the configured install directory.
 * Returns 0 and fills buf, or -1 (reported, naming every place looked at). */
int tsc_library_path(char *buf, size_t len);

/* Prepend libteshim.so to LD_PRELOAD in this process's environment. */
int tsc_preload_env(void);

/* Load the effective policy as the shim would for program, diagnostics to
 * stderr; returns the number of diagnostics. */
unsigned tsc_load_policy(struct pol_config *cfg, const char *program, bool quiet);

/* Whether parameter p was given on this command line (--set, --profile). */
bool tsc_from_cli(int p);

/*
 * Problems of an effective configuration that pol_load accepts but that
 * leave a policy without effect: an unparsable tcp.ports/tcp.peers list,
 * socket options with an empty scope. Each is reported (what names the
 * configuration) with its fix; returns how many.
 */
unsigned tsc_policy_problems(const struct pol_config *cfg, const char *what);

/* Load the policy for program (diagnostics reported unless quiet) and
 * return its diagnostics plus tsc_policy_problems(). */
unsigned tsc_check_policy(const char *program, bool quiet);
/* The same for the environment env ("KEY=VALUE" list) instead of this
 * process's: what a child started with env will load. */
unsigned tsc_check_policy_env(char *const *env, const char *program, bool quiet);

#endif
