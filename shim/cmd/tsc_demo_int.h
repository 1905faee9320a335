/*
 * teshim demo's private header: its state and the functions its files
 * share: tsc_demo.c (the command: finding the build, the source and the
 * tools, the order of the steps), tsc_demo_proc.c (children under time
 * limits, waiting for ports and logs), tsc_demo_steps.c (the steps).
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
    bool sock_hooks;       /* this libteshim.so hooks connect() */
    bool have_iperf3, have_pingpong, have_perftest;
    bool live_shown; /* the live view was shown already */
    unsigned step;
};

/* argv builder */
struct args {
    char *v[DEMO_MAX_ARGS + 1];
    int n;
};

void demo_heading(struct demo *d, const char *title);
void demo_show_cmd(char *const argv[], char *const env[]);
bool demo_shipped(const char *profile);
double demo_mono(void);
void demo_catch_signals(void);
pid_t demo_spawn(char *const argv[], char *const env[], const char *log);
int demo_wait_limit(pid_t pid, double timeout);
void demo_stop(pid_t pid);
bool demo_run_shown(char *const argv[], char *const env[], double timeout, const char *what);
bool demo_listening(int port);
bool demo_wait_listen(pid_t server, int port, double timeout);
bool demo_wait_log(pid_t server, const char *path, const char *text, double timeout);
int demo_free_port(void);
void demo_add(struct args *a, const char *s);
bool demo_step_emulated_rdma(struct demo *d);
bool demo_step_tcp(struct demo *d);
bool demo_step_small_host(struct demo *d);
int demo_pair(int argc, char **argv);
bool demo_step_ab_rdma(struct demo *d);
void demo_step_ab(struct demo *d);

/* Children get process groups of their own, except under --pair
 * (tsc_demo_proc.c). */
extern bool demo_own_groups;

#endif
