/*
 * teshim demo's private header: its state and the functions its files
 * share: tsc_demo.c (the command: finding the build, the source and the
 * tools, running the table of steps), tsc_demo_proc.c (commands from
 * templates, children under time limits, ports and logs waited for),
 * tsc_demo_steps.c (the steps as a table, their commands as templates).
 * Processes are started through the command's toolkit (tsc_proc.h).
 */
#ifndef TESHIM_TSC_DEMO_INT_H
#define TESHIM_TSC_DEMO_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define DEMO_MAX_ARGS 64

struct demo {
    char self[4096];  /* this executable */
    char build[4096]; /* the build folder: bin/ and lib/ */
    char src[8192];   /* the source tree, "" if unknown */
    char tmp[4096];   /* results of this demo, kept */
    unsigned runs;
    char emu_script[4200]; /* scripts/emulated-verbs, "" if absent */
    char bench[4200];      /* build/bin/teshim-bench, "" if absent */
    char cli_host[4200];   /* the cli tests' host program, "" if absent */
    bool have_iperf3, have_pingpong, have_perftest;
    bool live_shown; /* the live view was shown already */
    bool rdma_ran;   /* the emulated RDMA step ran (the small host is not needed) */
    int port;        /* {port} of the step running now */
    unsigned step;
};

enum demo_result { DEMO_DONE, DEMO_SKIPPED, DEMO_FAILED };

/* One step of the demo: its name (--step NAME), heading and body. */
struct demo_step {
    const char *name;
    const char *title;
    enum demo_result (*run)(struct demo *d);
    bool on_request; /* only with --step NAME */
    bool fallback;   /* left out after the emulated RDMA step ran */
};
extern const struct demo_step demo_steps[];
extern const size_t demo_nsteps;

/* A command expanded from templates; the strings are owned. */
struct args {
    char *v[DEMO_MAX_ARGS + 1];
    int n;
};

/*
 * Append the command of template tmpl to a: elements separated by spaces,
 * an element with spaces in single quotes; {self} {build} {tmp} {emu}
 * {bench} {host} {runs} {port} are replaced by the demo's values. Returns
 * 0, or -1 for an unknown variable, an unterminated quote or too many
 * elements (a bug in a template: reported).
 */
int demo_expand(const struct demo *d, const char *tmpl, struct args *a);
void demo_args_free(struct args *a);
/* Append one literal element. */
void demo_add(struct args *a, const char *s);

void demo_heading(struct demo *d, const char *title);
void demo_show_cmd(char *const argv[], char *const env[]);
void demo_catch_signals(void);
/* Start argv (env "K=V" added), output appended to log or inherited; in a
 * process group of its own unless under --pair. -1 on failure (reported). */
pid_t demo_spawn(char *const argv[], char *const env[], const char *log);
/* The wait status, or -1 when pid ran past timeout and was killed. */
int demo_wait_limit(pid_t pid, double timeout);
void demo_stop(pid_t pid);
bool demo_run_shown(char *const argv[], char *const env[], double timeout, const char *what);
bool demo_wait_listen(pid_t server, int port, double timeout);
bool demo_wait_log(pid_t server, const char *path, const char *text, double timeout);
int demo_free_port(void);
int demo_pair(int argc, char **argv);

/* Children get process groups of their own, except under --pair
 * (tsc_demo_proc.c). */
extern bool demo_own_groups;

#endif
