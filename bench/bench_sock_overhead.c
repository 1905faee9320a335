/*
 * Cost of the socket hooks: the same loop of socket/connect/accept/close on
 * loopback, run side by side without libteshim.so, under it with no TCP
 * policy, and under it with a policy in scope (DSCP, NODELAY, keepalive,
 * user timeout, connection cap). The binary re-executes itself once per
 * configuration so each runs in a fresh process with its own environment.
 *
 *   bench_sock_overhead [--lib PATH] [--iterations N] [--rounds R] [--port P]
 *
 * Prints ns per call of connect, accept and close, and of close on a
 * descriptor teshim does not track, with the ratio to the run without the
 * shim. Rounds alternate the configurations; the median round is reported.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { M_CONNECT, M_ACCEPT, M_CLOSE, M_CLOSE_OTHER, M_COUNT };
static const char *const m_names[M_COUNT] = {"connect", "accept", "close_socket", "close_other"};

struct config {
    const char *name;
    int preload;
    const char *env[12];
};

static const struct config configs[] = {
    {"no-shim", 0, {NULL}},
    {"shim-policy-off", 1, {NULL}},
    {"shim-policy-on",
     1,
     {"TESHIM_TCP_DSCP=26", "TESHIM_TCP_NODELAY=on", "TESHIM_TCP_KEEPALIVE_IDLE_S=30",
      "TESHIM_TCP_USER_TIMEOUT_MS=30000", "TESHIM_TCP_MAX_CONNECTIONS=1000", NULL}},
};
#define NCONFIGS (sizeof(configs) / sizeof(configs[0]))

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The measured loop; prints one line of ns per call. */
static int child(int port, int iters)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    double t[M_COUNT] = {0};
    int one = 1;

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 64) != 0) {
        fprintf(stderr, "bench: listener on port %d: %s\n", port, strerror(errno));
        return 1;
    }
    int other = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < iters; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        double t0 = now_ns();
        if (connect(c, (struct sockaddr *)&a, sizeof(a)) != 0) {
            fprintf(stderr, "bench: connect: %s\n", strerror(errno));
            return 1;
        }
        double t1 = now_ns();
        int s = accept(lfd, NULL, NULL);
        double t2 = now_ns();
        if (s < 0) {
            fprintf(stderr, "bench: accept: %s\n", strerror(errno));
            return 1;
        }
        /* The server closes first: TIME_WAIT stays on its side and the
         * client's ephemeral ports are not used up. */
        close(s);
        double t3 = now_ns();
        close(c);
        double t4 = now_ns();
        int d = dup(other);
        double t5 = now_ns();
        close(d);
        double t6 = now_ns();
        t[M_CONNECT] += t1 - t0;
        t[M_ACCEPT] += t2 - t1;
        t[M_CLOSE] += t4 - t3;
        t[M_CLOSE_OTHER] += t6 - t5;
    }
    close(lfd);
    for (int m = 0; m < M_COUNT; m++)
        printf("%s%.1f", m ? " " : "", t[m] / iters);
    printf("\n");
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Run one configuration as a child; fills ns[M_COUNT]. */
static int run_config(const char *self, const char *lib, const struct config *c, int port,
                      int iters, double *ns)
{
    int p[2];
    char ports[16], its[16], preload[4096];

    if (pipe(p) != 0)
        return -1;
    snprintf(ports, sizeof(ports), "%d", port);
    snprintf(its, sizeof(its), "%d", iters);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        unsetenv("LD_PRELOAD");
        for (char **e = environ; *e;) {
            /* Only this configuration's settings. */
            if (strncmp(*e, "TESHIM_", 7) == 0) {
                char name[256];
                snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
                unsetenv(name);
                continue;
            }
            e++;
        }
        if (c->preload) {
            snprintf(preload, sizeof(preload), "%s", lib);
            setenv("LD_PRELOAD", preload, 1);
            char scope[32];
            snprintf(scope, sizeof(scope), "%d", port);
            setenv("TESHIM_TCP_PORTS", scope, 1);
            setenv("TESHIM_STATS_LIVE", "off", 1);
        }
        for (int i = 0; c->env[i]; i++)
            putenv((char *)c->env[i]);
        execl(self, self, "--child", ports, its, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[512] = "";
    ssize_t n = read(p[0], buf, sizeof(buf) - 1);
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    if (n <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    buf[n] = '\0';
    if (sscanf(buf, "%lf %lf %lf %lf", &ns[0], &ns[1], &ns[2], &ns[3]) != M_COUNT)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    char self[4096], lib[4096];
    int iters = 3000, rounds = 5, port = 28999;

    if (argc == 4 && strcmp(argv[1], "--child") == 0)
        return child(atoi(argv[2]), atoi(argv[3]));

    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    /* Default: build/lib/libteshim.so beside build/bin. */
    snprintf(lib, sizeof(lib), "%.*s/../lib/libteshim.so", (int)(strrchr(self, '/') - self), self);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--lib") == 0 && i + 1 < argc)
            snprintf(lib, sizeof(lib), "%s", argv[++i]);
        else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--lib PATH] [--iterations N] [--rounds R] [--port P]\n",
                    argv[0]);
            return 2;
        }
    }
    if (access(lib, R_OK) != 0) {
        fprintf(stderr, "bench: %s: %s\n", lib, strerror(errno));
        return 1;
    }
    if (rounds < 1 || rounds > 99 || iters < 1)
        return 2;

    static double all[NCONFIGS][M_COUNT][100];
    for (int r = 0; r < rounds; r++)
        for (size_t c = 0; c < NCONFIGS; c++) {
            double ns[M_COUNT];
            if (run_config(self, lib, &configs[c], port, iters, ns) != 0) {
                fprintf(stderr, "bench: configuration %s failed\n", configs[c].name);
                return 1;
            }
            for (int m = 0; m < M_COUNT; m++)
                all[c][m][r] = ns[m];
        }

    double med[NCONFIGS][M_COUNT];
    for (size_t c = 0; c < NCONFIGS; c++)
        for (int m = 0; m < M_COUNT; m++) {
            qsort(all[c][m], (size_t)rounds, sizeof(double), cmp_double);
            med[c][m] = all[c][m][rounds / 2];
        }
    printf("socket hook overhead: %d iterations x %d rounds (median), loopback IPv4\n", iters,
           rounds);
    printf("%-18s", "configuration");
    for (int m = 0; m < M_COUNT; m++)
        printf(" %14s %6s", m_names[m], "ratio");
    printf("\n");
    for (size_t c = 0; c < NCONFIGS; c++) {
        printf("%-18s", configs[c].name);
        for (int m = 0; m < M_COUNT; m++)
            printf(" %11.0f ns %6.2f", med[c][m], med[c][m] / med[0][m]);
        printf("\n");
    }
    for (size_t c = 1; c < NCONFIGS; c++)
        for (int m = 0; m < M_COUNT; m++)
            printf("overhead_ns %s %s %.0f\n", configs[c].name, m_names[m], med[c][m] - med[0][m]);
    return 0;
}
