/* teshim: run programs under libteshim.so and inspect what it does. */
#include "tsc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tsc_cmd {
    const char *name;
    tsc_cmd_fn fn;
    const char *summary;
};

static const struct tsc_cmd tsc_cmds[] = {
    {"run", tsc_cmd_run, "run a command with libteshim.so preloaded"},
    {"config", tsc_cmd_config, "show the effective configuration and where each value came from"},
    {"doctor", tsc_cmd_doctor, "check libibverbs, devices, limits and target programs"},
    {"stats", tsc_cmd_stats, "summarise JSON reports written at exit, or --live counters"},
    {"ab", tsc_cmd_ab, "A/B experiment: a command alternately without and with a policy"},
    {"demo", tsc_cmd_demo, "show on this machine what teshim intercepts, injects and measures"},
};

void tsc_err(const char *fmt, ...)
{
    va_list ap;

    fputs("teshim: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: teshim COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(tsc_cmds) / sizeof(tsc_cmds[0]); i++)
        fprintf(f, "  %-8s %s\n", tsc_cmds[i].name, tsc_cmds[i].summary);
    fprintf(f, "\n'teshim COMMAND --help' describes a command. teshim %s\n", TESHIM_VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return TSC_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("teshim %s\n", TESHIM_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(tsc_cmds) / sizeof(tsc_cmds[0]); i++)
        if (strcmp(argv[1], tsc_cmds[i].name) == 0)
            return tsc_cmds[i].fn(argc - 1, argv + 1);
    tsc_err("unknown command '%s'", argv[1]);
    usage(stderr);
    return TSC_EXIT_USAGE;
}
