/*
 * netns_host: one "host" of the namespace harness (tests/netns/netns-harness).
 * A small program on the public engine API only (teshim/engine.h), run once
 * per network namespace.
 *
 *   netns_host --id I --dir DIR [--listen IP:PORT --slots N] [--senders I,J,..]
 *              [--targets J=IP:PORT,..] --slot BYTES --block BYTES
 *              (--rounds N | --duration S) [--max-inflight N] [--io-threads N]
 *              [--conns N]   (connections per peer; 0 = the engine's default)
 *
 * A host with --listen registers N slots of --slot bytes, remote-accessible,
 * zeroed; sender I owns slot I. A host with --targets waits for DIR/go, then
 * writes its slot on every target round after round, each round a fresh
 * pattern of (sender, target, round) in --block requests, all targets' batches
 * in flight together; with --duration it goes on until that many seconds
 * passed, finishing the round. It then reads every slot back over the wire,
 * compares, and writes DIR/done.I ("rounds R bytes B seconds T"). A host with
 * --senders waits for each sender's done file and checks that sender's slot
 * holds the pattern of its last round. A monitor thread samples the engine's
 * counters every 5 ms: the most requests in flight and queued by the limiter.
 *
 * Results go to DIR/result.I as "key value" lines; the exit status is 0 when
 * every transfer completed and every byte compared equal, 1 otherwise, 2 for
 * bad arguments.
 */
#include "teshim/engine.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_HOSTS 64

struct target {
    int id;
    char name[64];
    teshim_segment_t seg;
    uint64_t remote; /* our slot in the target's region */
    unsigned char *buf, *check;
    teshim_batch_t batch;
};

static struct {
    int id, nslots, rounds, max_inflight, io_threads, conns;
    const char *dir, *listen;
    uint64_t slot, block;
    double duration;
    int senders[MAX_HOSTS], nsenders;
    struct target targets[MAX_HOSTS];
    int ntargets;
} cfg = {.id = -1, .max_inflight = 8};

static struct teshim_engine *eng;
static atomic_int monitor_stop;
static uint64_t peak_active, peak_waiting;
static uint64_t registered; /* bytes of every buffer this host allocated for transfers */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The bytes sender src writes to dst in a round: a xorshift stream seeded by all three. */
static void fill_pattern(unsigned char *p, uint64_t len, int src, int dst, int round)
{
    uint64_t x = 0x9e3779b97f4a7c15ull ^ ((uint64_t)src << 40) ^ ((uint64_t)dst << 20) ^
                 (uint64_t)(round + 1);

    for (uint64_t i = 0; i < len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, len - i < 8 ? len - i : 8);
    }
}

/* Byte offset of the first difference, or -1. */
static int64_t first_diff(const unsigned char *a, const unsigned char *b, uint64_t len)
{
    if (!memcmp(a, b, len))
        return -1;
    for (uint64_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return (int64_t)i;
    return -1;
}

static void *monitor(void *arg)
{
    (void)arg;
    while (!atomic_load(&monitor_stop)) {
        struct teshim_engine_stats st;
        if (!teshim_engine_stats(eng, &st)) {
            if (st.active > peak_active)
                peak_active = st.active;
            if (st.waiting > peak_waiting)
                peak_waiting = st.waiting;
        }
        sleep_ms(5);
    }
    return NULL;
}

/* Renames PATH.tmp to PATH. */
static int publish(const char *tmp)
{
    char final[512];
    size_t n = strlen(tmp) - 4;

    snprintf(final, sizeof(final), "%.*s", (int)n, tmp);
    return rename(tmp, final);
}

/* Waits up to 120 s for DIR/name; 0 when it appeared. */
static int wait_file(const char *name, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", cfg.dir, name);
    for (int i = 0; i < 12000; i++) {
        if (!access(path, F_OK))
            return 0;
        sleep_ms(10);
    }
    fprintf(stderr, "netns_host %d: %s did not appear within 120 s\n", cfg.id, path);
    return -1;
}

static int submit_all(enum teshim_opcode op, int round)
{
    uint64_t n = cfg.slot / cfg.block;
    struct teshim_request *reqs = calloc(n, sizeof(*reqs));
    int bad = 0;

    if (!reqs)
        return -ENOMEM;
    for (int t = 0; t < cfg.ntargets && !bad; t++) {
        struct target *tg = &cfg.targets[t];
        unsigned char *local = op == TESHIM_OP_WRITE ? tg->buf : tg->check;
        int ret;

        if (op == TESHIM_OP_WRITE)
            fill_pattern(tg->buf, cfg.slot, cfg.id, tg->id, round);
        for (uint64_t i = 0; i < n; i++)
            reqs[i] = (struct teshim_request){.opcode = op,
                                              .local = local + i * cfg.block,
                                              .segment = tg->seg,
                                              .remote_offset = tg->remote + i * cfg.block,
                                              .length = cfg.block};
        ret = teshim_batch_alloc(eng, n, &tg->batch);
        if (!ret) {
            ret = teshim_submit(eng, tg->batch, reqs, n);
            if (ret < 0)
                teshim_batch_free(eng, tg->batch);
        }
        if (ret < 0) {
            fprintf(stderr, "netns_host %d: submit to %s: %s\n", cfg.id, tg->name, strerror(-ret));
            tg->batch = 0;
            bad = 1;
        }
    }
    for (int t = 0; t < cfg.ntargets; t++) {
        struct target *tg = &cfg.targets[t];
        int ret;

        if (!tg->batch)
            continue;
        ret = teshim_batch_wait(eng, tg->batch, 120000);
        if (ret) {
            fprintf(stderr, "netns_host %d: round %d to %s: %s\n", cfg.id, round, tg->name,
                    ret < 0 ? strerror(-ret) : "requests failed");
            bad = 1;
            if (ret < 0)
                continue; /* still running: the batch cannot be freed */
        }
        teshim_batch_free(eng, tg->batch);
        tg->batch = 0;
    }
    free(reqs);
    return bad ? -EIO : 0;
}

/* Opens every target (once it registered its slots) and registers our buffers. */
static int open_targets(void)
{
    for (int t = 0; t < cfg.ntargets; t++) {
        struct target *tg = &cfg.targets[t];
        struct teshim_region reg;
        char name[32], path[512];
        const char *tp;
        int ret;

        snprintf(name, sizeof(name), "ready.%d", tg->id);
        if (wait_file(name, path, sizeof(path)))
            return -1;
        ret = teshim_segment_open(eng, tg->name, &tg->seg);
        if (ret) {
            fprintf(stderr, "netns_host %d: open %s: %s\n", cfg.id, tg->name, strerror(-ret));
            return -1;
        }
        tp = teshim_segment_transport(eng, tg->seg);
        if (!tp || strcmp(tp, "tcp")) {
            fprintf(stderr, "netns_host %d: %s uses %s, not tcp\n", cfg.id, tg->name,
                    tp ? tp : "?");
            return -1;
        }
        if (teshim_segment_regions(eng, tg->seg, &reg, 1) < 1 ||
            reg.len < (uint64_t)(cfg.id + 1) * cfg.slot) {
            fprintf(stderr, "netns_host %d: %s has no slot %d\n", cfg.id, tg->name, cfg.id);
            return -1;
        }
        tg->remote = reg.addr + (uint64_t)cfg.id * cfg.slot;
        tg->buf = aligned_alloc(4096, cfg.slot);
        tg->check = aligned_alloc(4096, cfg.slot);
        if (!tg->buf || !tg->check || teshim_register(eng, tg->buf, cfg.slot, "cpu", false) ||
            teshim_register(eng, tg->check, cfg.slot, "cpu", false)) {
            fprintf(stderr, "netns_host %d: no local buffers for %s\n", cfg.id, tg->name);
            return -1;
        }
        registered += 2 * cfg.slot;
    }
    return 0;
}

/* Runs the rounds, reads back; writes DIR/done.ID, rounds -1 when anything failed. */
static int run_sender(FILE *res)
{
    char path[512];
    uint64_t bytes = 0;
    int rounds = 0, bad = 0;
    double t0 = now_s(), el = 0;

    if (open_targets() || wait_file("go", path, sizeof(path))) {
        bad = 1;
        goto out;
    }
    t0 = now_s();
    do {
        if (submit_all(TESHIM_OP_WRITE, rounds)) {
            bad = 1;
            break;
        }
        rounds++;
        bytes += cfg.slot * (uint64_t)cfg.ntargets;
    } while (cfg.duration > 0 ? now_s() - t0 < cfg.duration : rounds < cfg.rounds);
    el = now_s() - t0;
    fprintf(res, "send_rounds %d\nsend_bytes %llu\nsend_seconds %.4f\nsend_Bps %.0f\n", rounds,
            (unsigned long long)bytes, el, (double)bytes / el);
    if (!bad && submit_all(TESHIM_OP_READ, rounds) == 0) {
        for (int t = 0; t < cfg.ntargets; t++) {
            struct target *tg = &cfg.targets[t];
            int64_t d;

            fill_pattern(tg->buf, cfg.slot, cfg.id, tg->id, rounds - 1);
            d = first_diff(tg->buf, tg->check, cfg.slot);
            if (d >= 0) {
                fprintf(stderr, "netns_host %d: read back from %s differs at byte %lld\n", cfg.id,
                        tg->name, (long long)d);
                bad = 1;
            }
        }
        fprintf(res, "readback %s\n", bad ? "bad" : "ok");
    } else {
        bad = 1;
    }
out:
    /* Written aside and renamed: a target polling for the name must never
     * read a file still being written (it would see no completed round). */
    snprintf(path, sizeof(path), "%s/done.%d.tmp", cfg.dir, cfg.id);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return -1;
    }
    fprintf(f, "rounds %d bytes %llu seconds %.4f\n", bad ? -1 : rounds, (unsigned long long)bytes,
            el);
    if (fclose(f) || publish(path)) {
        perror(path);
        return -1;
    }
    return bad ? -1 : 0;
}

/* Checks each sender's slot against the pattern of its last round. */
static int check_senders(unsigned char *region, FILE *res)
{
    unsigned char *want = aligned_alloc(4096, cfg.slot);
    int rounds[MAX_HOSTS], bad = 0, ret;

    if (!want)
        return -1;
    for (int s = 0; s < cfg.nsenders; s++) {
        char name[32], path[512];
        int src = cfg.senders[s];
        FILE *f;

        rounds[s] = -1;
        snprintf(name, sizeof(name), "done.%d", src);
        if (wait_file(name, path, sizeof(path))) {
            bad = 1;
            continue;
        }
        f = fopen(path, "r");
        if (!f || fscanf(f, "rounds %d", &rounds[s]) != 1 || rounds[s] < 1) {
            fprintf(stderr, "netns_host %d: sender %d reports no completed round\n", cfg.id, src);
            rounds[s] = -1;
            bad = 1;
        }
        if (f)
            fclose(f);
    }
    /* Every sender is done with the region. Unregistering waits until no
     * peer request uses it: what the I/O threads wrote is ours to read. */
    ret = teshim_unregister(eng, region);
    if (ret) {
        fprintf(stderr, "netns_host %d: unregister: %s\n", cfg.id, strerror(-ret));
        bad = 1;
    }
    for (int s = 0; s < cfg.nsenders && !ret; s++) {
        int src = cfg.senders[s];
        int64_t d;

        if (rounds[s] < 1)
            continue;
        fill_pattern(want, cfg.slot, src, cfg.id, rounds[s] - 1);
        d = first_diff(want, region + (uint64_t)src * cfg.slot, cfg.slot);
        fprintf(res, "slot_from_%d %s\n", src, d < 0 ? "ok" : "bad");
        if (d >= 0) {
            fprintf(stderr, "netns_host %d: slot of sender %d differs at byte %lld\n", cfg.id, src,
                    (long long)d);
            bad = 1;
        }
    }
    free(want);
    return bad ? -1 : 0;
}

/* Peak resident set (VmHWM) in KiB, 0 when unknown. */
static long vm_hwm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static int parse_ids(char *s, int *ids, int *n)
{
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (*n == MAX_HOSTS || end == tok || v < 0 || v >= MAX_HOSTS || (*end && *end != '='))
            return -1;
        ids[(*n)++] = (int)v;
        if (*end == '=') {
            struct target *tg = &cfg.targets[*n - 1];
            tg->id = (int)v;
            if (snprintf(tg->name, sizeof(tg->name), "%s", end + 1) >= (int)sizeof(tg->name))
                return -1;
        }
    }
    return 0;
}

static void usage(const char *why)
{
    fprintf(stderr,
            "netns_host: %s\nusage: netns_host --id I --dir DIR [--listen IP:PORT --slots N] "
            "[--senders I,..] [--targets J=IP:PORT,..] --slot BYTES --block BYTES "
            "(--rounds N | --duration S) [--max-inflight N] [--io-threads N] [--conns N]\n",
            why);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"id", 1, NULL, 'i'},           {"dir", 1, NULL, 'd'},
        {"listen", 1, NULL, 'l'},       {"slots", 1, NULL, 'n'},
        {"senders", 1, NULL, 's'},      {"targets", 1, NULL, 't'},
        {"slot", 1, NULL, 'S'},         {"block", 1, NULL, 'b'},
        {"rounds", 1, NULL, 'r'},       {"duration", 1, NULL, 'D'},
        {"max-inflight", 1, NULL, 'm'}, {"io-threads", 1, NULL, 'T'},
        {"conns", 1, NULL, 'c'},        {NULL, 0, NULL, 0}};
    int c, ids[MAX_HOSTS];

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            cfg.id = atoi(optarg);
            break;
        case 'd':
            cfg.dir = optarg;
            break;
        case 'l':
            cfg.listen = optarg;
            break;
        case 'n':
            cfg.nslots = atoi(optarg);
            break;
        case 's':
            if (parse_ids(optarg, cfg.senders, &cfg.nsenders))
                usage("--senders: a comma list of ids 0..63");
            break;
        case 't':
            if (parse_ids(optarg, ids, &cfg.ntargets))
                usage("--targets: a comma list of ID=IP:PORT");
            break;
        case 'S':
            cfg.slot = strtoull(optarg, NULL, 10);
            break;
        case 'b':
            cfg.block = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            cfg.rounds = atoi(optarg);
            break;
        case 'D':
            cfg.duration = atof(optarg);
            break;
        case 'm':
            cfg.max_inflight = atoi(optarg);
            break;
        case 'T':
            cfg.io_threads = atoi(optarg);
            break;
        case 'c':
            cfg.conns = atoi(optarg);
            break;
        default:
            usage("unknown option");
        }
    }
    if (cfg.id < 0 || cfg.id >= MAX_HOSTS || !cfg.dir)
        usage("--id 0..63 and --dir are required");
    if (!cfg.block || !cfg.slot || cfg.slot % cfg.block || cfg.slot % 8)
        usage("--slot must be a multiple of --block (and of 8), both > 0");
    if (cfg.listen && cfg.nslots < 1)
        usage("--listen needs --slots >= 1");
    for (int s = 0; s < cfg.nsenders; s++)
        if (!cfg.listen || cfg.senders[s] >= cfg.nslots)
            usage("--senders needs --listen and every sender id below --slots");
    if (cfg.ntargets && (cfg.rounds < 1) == (cfg.duration <= 0))
        usage("--targets needs one of --rounds N (>= 1) or --duration S (> 0)");
    if (cfg.max_inflight < 1)
        usage("--max-inflight must be >= 1");
}

int main(int argc, char **argv)
{
    struct teshim_engine_opts o = {.size = sizeof(o), .no_policy = true};
    unsigned char *region = NULL;
    pthread_t mon;
    char path[512];
    FILE *res;
    int ret, bad = 0;

    parse_args(argc, argv);
    o.listen = cfg.listen;
    o.transport = TESHIM_TRANSPORT_TCP;
    o.max_inflight = cfg.max_inflight;
    o.io_threads = cfg.io_threads;
    o.conns_per_peer = cfg.conns;
    ret = teshim_engine_create(&o, &eng);
    if (ret) {
        fprintf(stderr, "netns_host %d: engine: %s\n", cfg.id, strerror(-ret));
        return 1;
    }
    if (cfg.listen) {
        uint64_t len = (uint64_t)cfg.nslots * cfg.slot;
        region = aligned_alloc(4096, len);
        if (!region)
            return 1;
        memset(region, 0, len);
        registered += len;
        ret = teshim_register(eng, region, len, "cpu", true);
        if (ret) {
            fprintf(stderr, "netns_host %d: register: %s\n", cfg.id, strerror(-ret));
            return 1;
        }
        snprintf(path, sizeof(path), "%s/ready.%d", cfg.dir, cfg.id);
        res = fopen(path, "w");
        if (!res)
            return 1;
        fclose(res);
    }
    snprintf(path, sizeof(path), "%s/result.%d.tmp", cfg.dir, cfg.id);
    res = fopen(path, "w");
    if (!res)
        return 1;
    if (pthread_create(&mon, NULL, monitor, NULL)) {
        fprintf(stderr, "netns_host %d: no monitor thread\n", cfg.id);
        return 1;
    }
    if (cfg.ntargets && run_sender(res))
        bad = 1;
    if (cfg.nsenders && check_senders(region, res))
        bad = 1;
    atomic_store(&monitor_stop, 1);
    pthread_join(mon, NULL);
    fprintf(res,
            "peak_active %llu\npeak_waiting %llu\nmax_inflight %d\nvm_hwm_kib %ld\n"
            "registered_kib %llu\nok %d\n",
            (unsigned long long)peak_active, (unsigned long long)peak_waiting, cfg.max_inflight,
            vm_hwm_kib(), (unsigned long long)(registered >> 10), !bad);
    if (fclose(res) || publish(path))
        bad = 1;
    /* The engine first: its registrations name these buffers. */
    teshim_engine_destroy(eng);
    free(region);
    for (int t = 0; t < cfg.ntargets; t++) {
        free(cfg.targets[t].buf);
        free(cfg.targets[t].check);
    }
    return bad;
}
