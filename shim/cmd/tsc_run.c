/* teshim run: exec a command with libteshim.so preloaded. */
#include "tsc.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void run_usage(FILE *f)
{
    fprintf(f, "usage: teshim run [--profile P] [--config F] [--set key=value]... "
               "[--stats-dir DIR] [--force] -- CMD [ARGS...]\n"
               "Runs CMD with libteshim.so prepended to LD_PRELOAD and the settings passed\n"
               "through TESHIM_* variables; exits with CMD's status.\n"
               "Before CMD starts, the effective configuration (defaults, profile, config\n"
               "file, environment, --set) is checked as the shim would read it: a bad value,\n"
               "an unknown key or profile, a bad tcp.ports/tcp.peers list, socket options\n"
               "without a scope, or a CMD no hook can reach (a static executable) stop it\n"
               "with exit status 2 and the fix. --force runs CMD anyway.\n");
}

/* The path execvp would run for cmd, or "" when none is found. */
static void which(const char *cmd, char *path, size_t len)
{
    const char *p = getenv("PATH");

    path[0] = '\0';
    if (strchr(cmd, '/')) {
        snprintf(path, len, "%s", cmd);
        return;
    }
    /* execvp's default search path when PATH is unset. */
    for (p = p ? p : "/bin:/usr/bin"; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(path, len, "%.*s%s%s", (int)n, p, n ? "/" : "", cmd);
        if (access(path, X_OK) == 0)
            return;
        path[0] = '\0';
        p += n + (p[n] == ':');
    }
}

/* setuid/setgid programs run with LD_PRELOAD ignored: say so rather than
 * let the user believe the policy applied. */
static void warn_if_setuid(const char *path)
{
    struct stat st;

    if (path[0] && stat(path, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)) && getuid() != 0)
        fprintf(stderr,
                "teshim: warning: %s is set%sid: the dynamic linker ignores LD_PRELOAD for it, "
                "nothing will be applied\n",
                path, (st.st_mode & S_ISUID) ? "u" : "g");
}

#if defined(__x86_64__)
#define TSC_EM EM_X86_64
#elif defined(__aarch64__)
#define TSC_EM EM_AARCH64
#elif defined(__powerpc64__)
#define TSC_EM EM_PPC64
#endif
#define TSC_ELFCLASS (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32)

/* 1 when the ELF file on fd has a PT_INTERP program header, 0 when not,
 * -1 when its headers cannot be read. */
static int elf_has_interp(int fd, const unsigned char *ident)
{
    if (ident[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr eh;
        if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
            eh.e_phentsize != sizeof(Elf64_Phdr))
            return -1;
        for (unsigned i = 0; i < eh.e_phnum; i++) {
            Elf64_Phdr ph;
            if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) !=
                (ssize_t)sizeof(ph))
                return -1;
            if (ph.p_type == PT_INTERP)
                return 1;
        }
        return 0;
    }
    Elf32_Ehdr eh;
    if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
        eh.e_phentsize != sizeof(Elf32_Phdr))
        return -1;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf32_Phdr ph;
        if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) != (ssize_t)sizeof(ph))
            return -1;
        if (ph.p_type == PT_INTERP)
            return 1;
    }
    return 0;
}

/*
 * Whether a hook can reach the program at path: 0, or 1 after reporting why
 * not (a static executable, another ELF class or machine). A #! script is
 * followed to its interpreter; what cannot be read is left to execvp.
 */
static unsigned target_problems(const char *path, unsigned depth)
{
    unsigned char head[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    unsigned problems = 0;

    if (fd < 0)
        return 0; /* execvp says why */
    n = pread(fd, head, sizeof(head) - 1, 0);
    if (n >= 2 && head[0] == '#' && head[1] == '!' && depth < 4) {
        /* A script: what runs is its interpreter. */
        char interp[256];
        head[n] = '\0';
        if (sscanf((char *)head + 2, " %255[^ \t\n]", interp) == 1)
            problems = target_problems(interp, depth + 1);
    } else if (n >= (ssize_t)sizeof(Elf32_Ehdr) && memcmp(head, ELFMAG, SELFMAG) == 0) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        uint16_t machine;
        memcpy(&machine, head + offsetof(Elf64_Ehdr, e_machine), sizeof(machine));
        if (head[EI_CLASS] != TSC_ELFCLASS) {
            tsc_err("run: %s is a %d-bit program and libteshim.so is %d-bit: the dynamic "
                    "linker will not load it there and no hook would run. Run it with a "
                    "libteshim.so built for it (TESHIM_LIBRARY), or --force to run it anyway",
                    path, head[EI_CLASS] == ELFCLASS64 ? 64 : 32, (int)sizeof(void *) * 8);
            problems = 1;
#ifdef TSC_EM
        } else if (machine != TSC_EM) {
            tsc_err("run: %s is built for another machine (ELF e_machine %u): libteshim.so "
                    "cannot be loaded into it. --force runs it anyway",
                    path, machine);
            problems = 1;
#endif
        } else if (elf_has_interp(fd, head) == 0 && strncmp(base, "ld-", 3) != 0 &&
                   strncmp(base, "ld.so", 5) != 0 && strncmp(base, "ld64.so", 7) != 0) {
            /* No PT_INTERP: no dynamic linker runs, so nothing reads
             * LD_PRELOAD. (The dynamic linker itself, run as a program,
             * is the exception: it preloads for the program it loads.) */
            tsc_err("run: %s is statically linked (no PT_INTERP): LD_PRELOAD cannot reach it "
                    "and no hook would run. Use a dynamically linked build of it, or --force "
                    "to run it anyway",
                    path);
            problems = 1;
        }
    }
    close(fd);
    return problems;
}

int tsc_cmd_run(int argc, char **argv)
{
    bool force = false;
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            run_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--stats-dir") == 0 && i + 1 < argc) {
            setenv("TESHIM_STATS_DIR", argv[++i], 1);
            continue;
        }
        if (strcmp(argv[i], "--force") == 0) {
            force = true;
            continue;
        }
        int r = tsc_settings_option(argc, argv, &i);
        if (r < 0)
            return TSC_EXIT_USAGE;
        if (r == 0) {
            if (argv[i][0] == '-') {
                tsc_err("run: unknown option '%s'", argv[i]);
                run_usage(stderr);
                return TSC_EXIT_USAGE;
            }
            break; /* the command starts here */
        }
    }
    if (i >= argc) {
        tsc_err("run: no command given");
        run_usage(stderr);
        return TSC_EXIT_USAGE;
    }
    if (tsc_preload_env() != 0)
        return TSC_EXIT_NOTFOUND;

    /* The configuration as the shim inside CMD will read it (--set values
     * were checked above): a problem stops here, before anything runs,
     * rather than as a warning inside CMD that a policy silently skipped. */
    char path[4096], prog[4096];
    which(argv[i], path, sizeof(path));
    snprintf(prog, sizeof(prog), "%s", argv[i]);
    unsigned problems = tsc_check_policy(basename(prog), false);
    problems += path[0] ? target_problems(path, 0) : 0;
    if (problems) {
        if (!force) {
            tsc_err("run: %u problem%s above: %s not started (--force starts it anyway)", problems,
                    problems == 1 ? "" : "s", argv[i]);
            return TSC_EXIT_USAGE;
        }
        tsc_err("run: %u problem%s above; --force: starting %s anyway", problems,
                problems == 1 ? "" : "s", argv[i]);
    }
    warn_if_setuid(path);
    /* The program started here reports with stats.report = applied too:
     * execvp keeps this pid. */
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("TESHIM_RUN_PID", pid, 1);
    execvp(argv[i], argv + i);
    int err = errno;
    tsc_err("cannot run %s: %s", argv[i], strerror(err));
    return err == ENOENT ? TSC_EXIT_NOTFOUND : 126;
}
