/*
 * Cost of the allocator and mapping hooks that let the CUDA register cache
 * see memory leave (shim/shim_mem.c): the same loops run side by side
 * without libteshim.so, under it with the cache off (the default: every
 * process under teshim pays this) and with the cache on (allocations of
 * cuda.register_min_bytes and more are tracked). The binary re-executes
 * itself once per configuration, so each runs in a fresh process.
 *
 *   bench_mem_overhead [--lib PATH] [--iterations N] [--rounds R]
 *
 * Prints ns per operation with the ratio to the run without the shim.
 * Rounds alternate the configurations; the median round is reported.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { M_SMALL, M_SMALL_2T, M_LARGE, M_MAP, M_COUNT };
static const char *const m_names[M_COUNT] = {"malloc+free 64 B", "malloc+free 64 B, 2 threads",
                                             "malloc+free 2 MiB", "mmap+munmap 4 MiB"};

struct config {
    const char *name;
    int preload;
    const char *env;
};

static const struct config configs[] = {
    {"no-shim", 0, NULL},
    {"cache-off", 1, "TESHIM_CUDA_REGISTER_CACHE=off"},
    {"cache-on", 1, "TESHIM_CUDA_REGISTER_CACHE=on"},
};
#define NCONF (int)(sizeof(configs) / sizeof(configs[0]))

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int iters = 200000;

/* Keep the compiler from removing the pairs. */
static void *volatile sink;

static void *small_loop(void *arg)
{
    (void)arg;
    for (int i = 0; i < iters; i++) {
        void *p = malloc(64);
        sink = p;
        free(p);
    }
    return NULL;
}

static double measure(int m)
{
    double t0 = now();
    int n = iters;

    switch (m) {
    case M_SMALL:
        small_loop(NULL);
        break;
    case M_SMALL_2T: {
        pthread_t t;
        pthread_create(&t, NULL, small_loop, NULL);
        small_loop(NULL);
        pthread_join(t, NULL);
        n = 2 * iters; /* operations done, by two threads at once */
        break;
    }
    case M_LARGE:
        n = iters / 20;
        for (int i = 0; i < n; i++) {
            void *p = malloc(2 << 20);
            sink = p;
            free(p);
        }
        break;
    case M_MAP:
        n = iters / 20;
        for (int i = 0; i < n; i++) {
            void *p =
                mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            sink = p;
            munmap(p, 4 << 20);
        }
        break;
    }
    return (now() - t0) / n;
}

/* Child: run every loop once, print "m ns" lines. */
static int child(void)
{
    for (int m = 0; m < M_COUNT; m++)
        printf("%d %.3f\n", m, measure(m));
    return 0;
}

static int run_config(const char *self, const char *lib, const struct config *c, double *out)
{
    int fd[2];
    pid_t pid;
    char buf[512], pre[600], it[32];
    ssize_t n, got = 0;
    int st;

    if (pipe(fd) != 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        char *env[4];
        int k = 0;
        dup2(fd[1], 1);
        close(fd[0]);
        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", lib);
        if (c->preload)
            env[k++] = pre;
        if (c->env)
            env[k++] = (char *)c->env;
        env[k++] = "TESHIM_STATS_LIVE=off";
        env[k] = NULL;
        snprintf(it, sizeof(it), "%d", iters);
        execle(self, self, "--child", it, (char *)NULL, env);
        _exit(127);
    }
    close(fd[1]);
    while ((n = read(fd[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
        got += n;
    close(fd[0]);
    buf[got] = '\0';
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        int m;
        double v;
        if (sscanf(line, "%d %lf", &m, &v) == 2 && m >= 0 && m < M_COUNT)
            out[m] = v;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *lib = "build/lib/libteshim.so";
    char self[4096];
    int rounds = 5;
    static double all[NCONF][M_COUNT][99];
    double med[NCONF][M_COUNT];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n <= 0)
        return 2;
    self[n] = '\0';
    if (argc == 3 && strcmp(argv[1], "--child") == 0) {
        iters = atoi(argv[2]);
        return child();
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--lib") == 0 && i + 1 < argc)
            lib = argv[++i];
        else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--lib PATH] [--iterations N] [--rounds R]\n", argv[0]);
            return 2;
        }
    }
    if (rounds < 1 || rounds > 99 || iters < 20) {
        fprintf(stderr, "bench_mem_overhead: rounds 1..99, iterations >= 20\n");
        return 2;
    }
    if (access(lib, R_OK) != 0) {
        fprintf(stderr, "bench_mem_overhead: %s: not readable (build first, or --lib)\n", lib);
        return 2;
    }
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < NCONF; c++) {
            double out[M_COUNT] = {0};
            if (run_config(self, lib, &configs[c], out) != 0) {
                fprintf(stderr, "bench_mem_overhead: %s run failed\n", configs[c].name);
                return 1;
            }
            for (int m = 0; m < M_COUNT; m++)
                all[c][m][r] = out[m];
        }
    for (int c = 0; c < NCONF; c++)
        for (int m = 0; m < M_COUNT; m++) {
            qsort(all[c][m], (size_t)rounds, sizeof(double), cmp_double);
            med[c][m] = all[c][m][rounds / 2];
        }
    printf("memory hook overhead: %d iterations x %d rounds (median), ns per operation\n", iters,
           rounds);
    printf("%-30s %10s %10s %10s %8s %8s\n", "operation", configs[0].name, configs[1].name,
           configs[2].name, "off/none", "on/none");
    for (int m = 0; m < M_COUNT; m++)
        printf("%-30s %10.1f %10.1f %10.1f %8.2f %8.2f\n", m_names[m], med[0][m], med[1][m],
               med[2][m], med[1][m] / med[0][m], med[2][m] / med[0][m]);
    return 0;
}
