/*
 * A host program for the cli tests, built like an unmodified application
 * against the real verbs.h. Options, applied in this order:
 *   --record FILE       append "$TESHIM_AB_ARM $TESHIM_AB_RUN" to FILE
 *   --fork              do the rest in a child too (both processes report)
 *   --modify-qp N       N ibv_modify_qp calls to RTR with a global address
 *   --metric A,B        print "throughput X GB/s", X = A in arm A and B in
 *                       arm B, plus 0.001 * run number
 *   --skip-metric ARM:N print no metric line in that run
 *   --ready-fd FD       write one byte to FD, then wait for EOF on stdin
 *   --exit ARM:N:CODE   exit with CODE in that run
 */
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v ? v : dflt;
}

static int this_run(const char *spec)
{
    char want[64];

    snprintf(want, sizeof(want), "%s:%s", env_or("TESHIM_AB_ARM", "?"),
             env_or("TESHIM_AB_RUN", "?"));
    return strncmp(spec, want, strlen(want)) == 0 &&
           (spec[strlen(want)] == '\0' || spec[strlen(want)] == ':');
}

static void modify_qps(int n)
{
    struct ibv_device dev;
    struct ibv_context ctx;
    struct ibv_qp qp;

    memset(&dev, 0, sizeof(dev));
    memset(&ctx, 0, sizeof(ctx));
    memset(&qp, 0, sizeof(qp));
    strcpy(dev.name, "cli_dev0");
    ctx.device = &dev;
    qp.context = &ctx;
    for (int i = 0; i < n; i++) {
        struct ibv_qp_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.qp_state = IBV_QPS_RTR;
        attr.ah_attr.is_global = 1;
        attr.ah_attr.grh.traffic_class = 0;
        if (ibv_modify_qp(&qp, &attr, IBV_QP_STATE | IBV_QP_AV) != 0)
            exit(3);
    }
}

int main(int argc, char **argv)
{
    pid_t child = -1;
    int code = 0;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(o, "--fork") == 0) {
            fflush(NULL);
            child = fork();
            continue;
        }
        i++;
        if (strcmp(o, "--record") == 0) {
            FILE *f = fopen(v, "a");
            if (!f)
                return 4;
            fprintf(f, "%s %s\n", env_or("TESHIM_AB_ARM", "?"), env_or("TESHIM_AB_RUN", "?"));
            fclose(f);
        } else if (strcmp(o, "--modify-qp") == 0) {
            modify_qps(atoi(v));
        } else if (strcmp(o, "--metric") == 0) {
            double a = atof(v), b = atof(strchr(v, ',') ? strchr(v, ',') + 1 : v);
            double x = strcmp(env_or("TESHIM_AB_ARM", "A"), "B") == 0 ? b : a;
            if (child != 0)
                printf("throughput %.3f GB/s\n", x + 0.001 * atoi(env_or("TESHIM_AB_RUN", "0")));
        } else if (strcmp(o, "--skip-metric") == 0) {
            if (this_run(v))
                break;
        } else if (strcmp(o, "--ready-fd") == 0) {
            char c = 'r', buf[16];
            if (write(atoi(v), &c, 1) != 1)
                return 5;
            while (read(0, buf, sizeof(buf)) > 0)
                ;
        } else if (strcmp(o, "--exit") == 0) {
            if (this_run(v))
                code = atoi(strrchr(v, ':') + 1);
        } else {
            fprintf(stderr, "cli_host: unknown option %s\n", o);
            return 2;
        }
    }
    fflush(NULL);
    if (child > 0)
        waitpid(child, NULL, 0);
    return code;
}
