/*
 * xcore-probe: how far apart two CPUs are, measured as the round trip of
 * one cache line bounced between a thread pinned on each.
 *
 *   xcore-probe [--cpus A,B] [--iterations N]
 *   xcore-probe --matrix [--iterations N]
 *
 * Prints "xcore_round_trip_ns A B NS" per pair: the mean time for the line
 * to go A -> B -> A. --matrix measures the first CPU of this process's set
 * against every other CPU in it (a topology map: CPUs sharing a last-level
 * cache answer in tens of ns, those across caches or sockets in hundreds).
 *
 * Why it is in bench/: on a VM the hypervisor may move the vCPUs between
 * cores that share a cache and cores that do not, for minutes at a time.
 * A same-host TCP transfer whose sender and receiver run on different
 * CPUs moves every byte from one CPU's cache to the other's, so its
 * throughput follows that placement (docs/perf.md, "The slow runs"); the
 * benchmark scripts take this probe around their runs to say which
 * placement a figure was measured in.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bounce {
    _Alignas(64) _Atomic unsigned long line;
    unsigned long iterations;
};

static void one_cpu(int cpu, cpu_set_t *set)
{
    CPU_ZERO(set);
    CPU_SET(cpu, set);
}

/* The far side: answers each odd value with the next even one. */
static void *far_side(void *arg)
{
    struct bounce *b = arg;

    for (unsigned long i = 0; i < b->iterations; i++) {
        unsigned long want = 2 * i + 1;

        while (atomic_load_explicit(&b->line, memory_order_acquire) != want)
            ;
        atomic_store_explicit(&b->line, want + 1, memory_order_release);
    }
    return NULL;
}

static double now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Mean round trip A -> B -> A in ns, or a negative errno. */
static double round_trip(int a, int b, unsigned long iterations)
{
    struct bounce bn = {.iterations = iterations};
    pthread_attr_t attr;
    cpu_set_t set;
    pthread_t t;
    double t0, t1;
    int err;

    atomic_init(&bn.line, 0);
    one_cpu(a, &set);
    if (sched_setaffinity(0, sizeof(set), &set))
        return -errno;
    /* the far side starts on its CPU, so no bounce is timed elsewhere */
    one_cpu(b, &set);
    err = pthread_attr_init(&attr);
    if (!err)
        err = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
    if (!err)
        err = pthread_create(&t, &attr, far_side, &bn);
    pthread_attr_destroy(&attr);
    if (err)
        return -err;
    t0 = now_ns();
    for (unsigned long i = 0; i < iterations; i++) {
        atomic_store_explicit(&bn.line, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&bn.line, memory_order_acquire) != 2 * i + 2)
            ;
    }
    t1 = now_ns();
    pthread_join(t, NULL);
    return (t1 - t0) / (double)iterations;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: xcore-probe [--cpus A,B] [--iterations N]\n"
               "       xcore-probe --matrix [--iterations N]\n");
}

static int parse_cpu(const char *s, const char **end, int *cpu)
{
    char *e;
    long v;

    errno = 0;
    v = strtol(s, &e, 10);
    if (e == s || errno || v < 0 || v >= CPU_SETSIZE)
        return -1;
    *cpu = (int)v;
    *end = e;
    return 0;
}

static void describe_set(const cpu_set_t *set, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE && used + 12 < len; c++)
        if (CPU_ISSET(c, set))
            used += (size_t)snprintf(buf + used, len - used, "%s%d", used ? "," : "", c);
}

static int probe(int a, int b, unsigned long iterations)
{
    double ns = round_trip(a, b, iterations);

    if (ns < 0) {
        fprintf(stderr, "xcore-probe: CPUs %d,%d: %s\n", a, b, strerror((int)-ns));
        return 1;
    }
    printf("xcore_round_trip_ns %d %d %.0f\n", a, b, ns);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"cpus", required_argument, NULL, 'c'},
                                         {"iterations", required_argument, NULL, 'i'},
                                         {"matrix", no_argument, NULL, 'm'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    unsigned long iterations = 100000;
    int a = -1, b = -1, matrix = 0, opt, first = -1, ncpu;
    cpu_set_t allowed;
    char setbuf[256];
    const char *end;
    char *e;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            if (parse_cpu(optarg, &end, &a) || *end != ',' || parse_cpu(end + 1, &end, &b) ||
                *end) {
                fprintf(stderr, "xcore-probe: --cpus wants two CPU numbers, A,B: '%s'\n", optarg);
                return 2;
            }
            break;
        case 'i':
            errno = 0;
            iterations = strtoul(optarg, &e, 10);
            if (e == optarg || *e || errno || iterations < 1 || iterations > 100000000UL ||
                optarg[0] == '-') {
                fprintf(stderr, "xcore-probe: --iterations wants 1..100000000: '%s'\n", optarg);
                return 2;
            }
            break;
        case 'm':
            matrix = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || (matrix && a >= 0)) {
        usage(stderr);
        return 2;
    }
    if (sched_getaffinity(0, sizeof(allowed), &allowed)) {
        fprintf(stderr, "xcore-probe: sched_getaffinity: %s\n", strerror(errno));
        return 1;
    }
    describe_set(&allowed, setbuf, sizeof(setbuf));
    ncpu = CPU_COUNT(&allowed);
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
        if (CPU_ISSET(c, &allowed))
            first = c;
    if (ncpu < 2) {
        fprintf(stderr, "xcore-probe: this process may run on one CPU only (%s)\n", setbuf);
        return 2;
    }
    if (a < 0) {
        a = first;
        for (b = a + 1; !CPU_ISSET(b, &allowed); b++)
            ;
    }
    if (a == b) {
        fprintf(stderr, "xcore-probe: --cpus names CPU %d twice\n", a);
        return 2;
    }
    for (int i = 0; i < 2; i++) {
        int c = i ? b : a;

        if (!CPU_ISSET(c, &allowed)) {
            fprintf(stderr, "xcore-probe: CPU %d is not in this process's CPU set (%s)\n", c,
                    setbuf);
            return 2;
        }
    }
    if (!matrix)
        return probe(a, b, iterations);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (c != first && CPU_ISSET(c, &allowed) && probe(first, c, iterations))
            return 1;
    return 0;
}
