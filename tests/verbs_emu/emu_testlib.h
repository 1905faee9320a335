/* Helpers shared by the verbs emulation's Check suites: bounded child
 * processes and assertions on the JSON-lines record. */
#ifndef TESHIM_EMU_TESTLIB_H
#define TESHIM_EMU_TESTLIB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Starts argv[0] (searched in PATH) with stdin from /dev/null and stdout and
 * stderr appended to out_path. The child dies with the test process
 * (PR_SET_PDEATHSIG) and leads its own process group. */
pid_t et_spawn(char *const argv[], const char *out_path);

/* Waits up to timeout_s for pid. Returns its exit status, 128+signal when a
 * signal ended it, or -1 after killing its process group on timeout. */
int et_wait(pid_t pid, int timeout_s);

/* Kills the process group of pid and reaps it. */
void et_kill(pid_t pid);

/* Waits until a TCP socket listens on port (from /proc/net/tcp{,6});
 * returns true if it did within timeout_ms. */
bool et_wait_listen(int port, int timeout_ms);

/* A TCP port in [base, base+span) that no socket of any state uses (a
 * port in TIME_WAIT from an earlier run would make some servers fail to
 * bind); 0 if none. The search starts at a pid-dependent offset. */
int et_free_port(int base, int span);

/* Number of lines of the file at path that contain every needle (NULL
 * terminated list). -1 if the file cannot be read. */
int et_count_lines(const char *path, const char *const needles[]);

/* Reads the unsigned number after "key": in line; false if absent. */
bool et_field_u64(const char *line, const char *key, uint64_t *val);

/* Calls fn(line, arg) for each line of path; returns the number of lines. */
int et_each_line(const char *path, void (*fn)(const char *line, void *arg), void *arg);

/* Prints the file to stderr (for failure diagnostics). */
void et_dump(const char *path);

#endif
