/* Helpers of the cli suites: run the teshim command and capture its output. */
#ifndef TESHIM_CLI_UTIL_H
#define TESHIM_CLI_UTIL_H

#include <stddef.h>

/* Path of an executable named by an environment variable set by CTest. */
const char *cli_path(const char *env);

/*
 * Run argv with extra "KEY=VALUE" settings (NULL-terminated, may be NULL),
 * stdout and stderr captured together into *out (malloc'd, NUL-terminated;
 * may be NULL). Returns the wait status.
 */
int cli_run(char *const argv[], char *const extra_env[], char **out);

/* A fresh folder under $TMPDIR or /tmp; the path is malloc'd. */
char *cli_tmpdir(void);

/* Remove a folder made by cli_tmpdir and everything in it; frees dir. */
void cli_rmtree(char *dir);

/* Read a whole file; malloc'd and NUL-terminated, NULL if unreadable. */
char *cli_slurp(const char *path);

#endif
