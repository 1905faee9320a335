/*
 * teshim-bench: engine bandwidth and latency, in the shape of Mooncake's
 * transfer_engine_bench.
 *
 *   teshim-bench --mode target --listen HOST:PORT [--buffer-size N]
 *   teshim-bench --mode initiator --segment HOST:PORT --operation read|write
 *                --block-size N --batch-size N --threads N --duration S
 *                --transport tcp|local|rdma [--json FILE]
 *   teshim-bench --mode memcpy --block-size N --batch-size N --duration S
 *
 * --transport rdma needs libibverbs with a device on both sides (the
 * emulated one of tests/verbs_emu: scripts/emulated-verbs); a segment that
 * falls back to tcp is an error, so a figure is never mislabelled.
 *
 * --location cuda:N puts the target's buffer, or the initiator's, in device
 * memory of CUDA device N (the runtime, libcudart.so.13 or .12, is
 * dlopen'ed: the bench runs without CUDA otherwise).
 *
 * Sizes take K/M/G suffixes (powers of two). The initiator prints the
 * engine's per-request latency (submit to completion, p50/p99), then
 * "batch_round_trip p50 X us p99 Y us" (teshim_submit called to
 * teshim_batch_wait returned, per batch: with --batch-size 1 a request's
 * round trip as the application sees it), and last "throughput X GB/s"
 * with GB = 10^9 bytes.
 */
#include "teshim/engine.h"

#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct args {
    const char *mode, *listen, *segment, *op, *transport, *json, *location;
    int device; /* -1: host memory */
    uint64_t block, batch, buffer, slice;
    int threads, io_threads, conns;
    double duration;
};

struct worker {
    pthread_t th;
    struct args *a;
    struct teshim_engine *eng;
    teshim_segment_t seg;
    uint64_t remote, remote_len;
    int idx;
    uint64_t bytes, requests, failed;
    uint64_t *lat;
    size_t nlat, caplat;
    uint64_t *rtt; /* per batch: teshim_submit called to teshim_batch_wait returned */
    size_t nrtt, caprtt;
    int err;
    bool no_thread; /* pthread_create failed: nothing to join */
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    stop_flag = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Append v to a growing array; false without memory (the sample is lost). */
static bool push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 4096;
        uint64_t *p = realloc(*v, c * sizeof(*p));
        if (!p)
            return false;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return true;
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return -1;
    switch (*end) {
    case 'k':
    case 'K':
        v <<= 10;
        end++;
        break;
    case 'm':
    case 'M':
        v <<= 20;
        end++;
        break;
    case 'g':
    case 'G':
        v <<= 30;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'i' || *end == 'B')
        end += *end == 'i' && end[1] == 'B' ? 2 : 1;
    if (*end)
        return -1;
    *out = v;
    return 0;
}

/*
 * Page-aligned buffer; with hugepages, 2 MiB-aligned and advised for
 * transparent huge pages (fewer pages for the kernel to walk and pin in
 * process_vm_* and fewer TLB misses in copies).
 */
static bool use_hugepages;

static void *bench_alloc(uint64_t len)
{
    size_t align = use_hugepages ? 2u << 20 : 4096;
    void *p = aligned_alloc(align, (len + align - 1) / align * align);
    if (p && use_hugepages)
        madvise(p, (len + align - 1) / align * align, MADV_HUGEPAGE);
    return p;
}

/* The CUDA runtime's few functions the bench needs, found at run time. */
static struct {
    int (*set_device)(int dev);
    int (*malloc)(void **p, size_t n);
    int (*free)(void *p);
    int (*memset)(void *p, int v, size_t n);
    int (*sync)(void);
} cuda;

static int cuda_load(void)
{
    static const char *const libs[] = {"libcudart.so.13", "libcudart.so.12"};
    static const char *const names[] = {"cudaSetDevice", "cudaMalloc", "cudaFree", "cudaMemset",
                                        "cudaDeviceSynchronize"};
    void *fns[5];
    void *h = NULL;

    for (size_t i = 0; i < 2 && !h; i++)
        h = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "teshim-bench: --location cuda:N: no CUDA runtime (%s)\n", dlerror());
        return -1;
    }
    for (size_t i = 0; i < 5; i++) {
        fns[i] = dlsym(h, names[i]);
        if (!fns[i]) {
            fprintf(stderr, "teshim-bench: the CUDA runtime lacks %s\n", names[i]);
            return -1;
        }
    }
    memcpy(&cuda.set_device, &fns[0], sizeof(fns[0]));
    memcpy(&cuda.malloc, &fns[1], sizeof(fns[1]));
    memcpy(&cuda.free, &fns[2], sizeof(fns[2]));
    memcpy(&cuda.memset, &fns[3], sizeof(fns[3]));
    memcpy(&cuda.sync, &fns[4], sizeof(fns[4]));
    return 0;
}

/* len bytes set to v where --location says: host or device memory. */
static void *buf_alloc(const struct args *a, uint64_t len, int v)
{
    void *p = NULL;

    if (a->device < 0) {
        p = bench_alloc(len);
        if (p)
            memset(p, v, len);
        return p;
    }
    if (cuda.set_device(a->device) || cuda.malloc(&p, len))
        return NULL;
    if (cuda.memset(p, v, len) || cuda.sync()) {
        cuda.free(p);
        return NULL;
    }
    return p;
}

static void buf_free(const struct args *a, void *p)
{
    if (a->device < 0)
        free(p);
    else if (p)
        cuda.free(p);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: teshim-bench --mode target --listen HOST:PORT [--buffer-size N]\n"
            "       teshim-bench --mode initiator --segment HOST:PORT --operation read|write\n"
            "                    --block-size N --batch-size N --threads N --duration S\n"
            "                    --transport tcp|local|rdma [--json FILE]\n"
            "       teshim-bench --mode memcpy --block-size N --batch-size N --duration S\n"
            "options: --io-threads N --slice-bytes N --conns-per-peer N (engine overrides)\n"
            "         --buffer-size N (target, default 256M), --hugepages (THP-advised buffers)\n"
            "         --location cpu|cuda:N (target's or initiator's buffer, default cpu)\n");
    exit(2);
}

static int run_target(struct args *a)
{
    struct teshim_engine_opts o = {
        .size = sizeof(o), .listen = a->listen, .io_threads = a->io_threads};
    struct teshim_engine *eng;
    char *buf;
    int ret;

    ret = teshim_engine_create(&o, &eng);
    if (ret) {
        fprintf(stderr, "teshim-bench: engine: %s\n", strerror(-ret));
        return 1;
    }
    buf = buf_alloc(a, a->buffer, 0x11);
    if (!buf) {
        fprintf(stderr, "teshim-bench: no %s memory for %llu bytes\n", a->location,
                (unsigned long long)a->buffer);
        teshim_engine_destroy(eng);
        return 1;
    }
    ret = teshim_register(eng, buf, a->buffer, a->location, true);
    if (ret) {
        fprintf(stderr, "teshim-bench: register: %s\n", strerror(-ret));
        return 1;
    }
    printf("listening port %d buffer %llu location %s\n", teshim_engine_port(eng),
           (unsigned long long)a->buffer, a->location);
    fflush(stdout);
    while (!stop_flag)
        pause();
    teshim_unregister(eng, buf);
    teshim_engine_destroy(eng);
    buf_free(a, buf);
    return 0;
}

static void *initiator_thread(void *arg)
{
    struct worker *w = arg;
    struct args *a = w->a;
    uint64_t span = a->block * a->batch;
    char *buf = buf_alloc(a, span, 0x5a);
    struct teshim_request *reqs = calloc(a->batch, sizeof(*reqs));
    uint64_t base = w->remote + ((uint64_t)w->idx * span) % (w->remote_len - span + 1);
    double end;
    int ret;

    if (!buf || !reqs) {
        w->err = -ENOMEM;
        goto out;
    }
    ret = teshim_register(w->eng, buf, span, a->location, false);
    if (ret) {
        w->err = ret;
        goto out;
    }
    for (uint64_t i = 0; i < a->batch; i++) {
        reqs[i].opcode = !strcmp(a->op, "read") ? TESHIM_OP_READ : TESHIM_OP_WRITE;
        reqs[i].local = buf + i * a->block;
        reqs[i].segment = w->seg;
        reqs[i].remote_offset = base + i * a->block;
        reqs[i].length = a->block;
    }
    end = now_s() + a->duration;
    while (now_s() < end && !stop_flag) {
        teshim_batch_t b;
        ret = teshim_batch_alloc(w->eng, a->batch, &b);
        if (ret) {
            w->err = ret;
            break;
        }
        uint64_t t0 = now_ns();
        ret = teshim_submit(w->eng, b, reqs, a->batch);
        if (ret < 0) {
            w->err = ret;
            teshim_batch_free(w->eng, b);
            break;
        }
        teshim_batch_wait(w->eng, b, -1);
        push_u64(&w->rtt, &w->nrtt, &w->caprtt, now_ns() - t0);
        for (uint64_t i = 0; i < a->batch; i++) {
            struct teshim_task_status st;
            if (teshim_task_status(w->eng, b, i, &st))
                continue;
            w->requests++;
            if (st.state != TESHIM_TASK_COMPLETED) {
                w->failed++;
                continue;
            }
            w->bytes += st.transferred;
            push_u64(&w->lat, &w->nlat, &w->caplat, st.latency_ns);
        }
        teshim_batch_free(w->eng, b);
    }
    teshim_unregister(w->eng, buf);
out:
    free(reqs);
    buf_free(a, buf);
    return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* Append a worker's samples to all (its array freed); sorted later. */
static void merge_samples(uint64_t **all, size_t *n, uint64_t *mine, size_t nmine)
{
    uint64_t *p = realloc(*all, (*n + nmine + 1) * sizeof(*p));
    if (p) {
        *all = p;
        memcpy(p + *n, mine, nmine * sizeof(*p));
        *n += nmine;
    }
    free(mine);
}

/* The p-th percentile (0..99) of n sorted samples, in microseconds. */
static double pct_us(const uint64_t *v, size_t n, unsigned p)
{
    return n ? (double)v[(n * p) / 100] / 1e3 : 0;
}

static int run_initiator(struct args *a)
{
    struct teshim_engine_opts o = {.size = sizeof(o),
                                   .io_threads = a->io_threads,
                                   .slice_bytes = a->slice,
                                   .conns_per_peer = a->conns};
    struct teshim_engine *eng;
    struct teshim_region reg;
    struct worker *w;
    teshim_segment_t seg;
    uint64_t bytes = 0, requests = 0, failed = 0, *lat = NULL, *rtt = NULL;
    bool worker_failed = false;
    size_t nlat = 0, nrtt = 0;
    double t0, el;
    int ret, rc = 1;

    if (!a->segment || !a->op || (strcmp(a->op, "read") && strcmp(a->op, "write")) || !a->block ||
        !a->batch || a->threads < 1 || a->duration <= 0)
        usage();
    if (!strcmp(a->transport, "tcp"))
        o.transport = TESHIM_TRANSPORT_TCP;
    else if (!strcmp(a->transport, "local"))
        o.transport = TESHIM_TRANSPORT_LOCAL;
    else if (!strcmp(a->transport, "rdma"))
        o.transport = TESHIM_TRANSPORT_RDMA;
    else
        usage();
    /* enough in flight for every thread's whole batch */
    o.max_inflight = (int)(a->batch * (uint64_t)a->threads);
    ret = teshim_engine_create(&o, &eng);
    if (ret) {
        fprintf(stderr, "teshim-bench: engine: %s\n", strerror(-ret));
        return 1;
    }
    ret = teshim_segment_open(eng, a->segment, &seg);
    if (ret) {
        fprintf(stderr, "teshim-bench: open %s: %s\n", a->segment, strerror(-ret));
        goto out_engine;
    }
    if (strcmp(teshim_segment_transport(eng, seg), a->transport) && strcmp(a->transport, "local")) {
        fprintf(stderr, "teshim-bench: %s asked for, the segment uses %s\n", a->transport,
                teshim_segment_transport(eng, seg));
        goto out_engine;
    }
    if (teshim_segment_regions(eng, seg, &reg, 1) < 1 || reg.len < a->block * a->batch) {
        fprintf(stderr, "teshim-bench: the target's buffer is smaller than block x batch\n");
        goto out_engine;
    }
    w = calloc((size_t)a->threads, sizeof(*w));
    if (!w)
        goto out_engine;
    t0 = now_s();
    for (int i = 0; i < a->threads; i++) {
        w[i] = (struct worker){
            .a = a, .eng = eng, .seg = seg, .remote = reg.addr, .remote_len = reg.len, .idx = i};
        ret = pthread_create(&w[i].th, NULL, initiator_thread, &w[i]);
        if (ret) {
            w[i].err = -ret;
            w[i].no_thread = true;
        }
    }
    for (int i = 0; i < a->threads; i++)
        if (!w[i].no_thread)
            pthread_join(w[i].th, NULL);
    el = now_s() - t0;
    for (int i = 0; i < a->threads; i++) {
        /* A worker that could not run (no memory, no thread, no batch) makes
         * the whole measurement wrong: the exit status says so. */
        if (w[i].err) {
            fprintf(stderr, "teshim-bench: thread %d: %s\n", i, strerror(-w[i].err));
            worker_failed = true;
        }
        bytes += w[i].bytes;
        requests += w[i].requests;
        failed += w[i].failed;
        merge_samples(&lat, &nlat, w[i].lat, w[i].nlat);
        merge_samples(&rtt, &nrtt, w[i].rtt, w[i].nrtt);
    }
    free(w);
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    qsort(rtt, nrtt, sizeof(*rtt), cmp_u64);
    double p50 = pct_us(lat, nlat, 50), p99 = pct_us(lat, nlat, 99);
    double r50 = pct_us(rtt, nrtt, 50), r99 = pct_us(rtt, nrtt, 99);
    double gbps = (double)bytes / el / 1e9;
    printf("transport %s location %s operation %s block_size %llu batch_size %llu threads %d "
           "duration %.2f s\n",
           teshim_segment_transport(eng, seg), a->location, a->op, (unsigned long long)a->block,
           (unsigned long long)a->batch, a->threads, el);
    printf("requests %llu failed %llu bytes %llu\n", (unsigned long long)requests,
           (unsigned long long)failed, (unsigned long long)bytes);
    printf("latency p50 %.1f us p99 %.1f us\n", p50, p99);
    /* what the application sees: with batch 1, a request's round trip
     * (what sockperf ping-pong --full-rtt measures for a socket) */
    printf("batch_round_trip p50 %.1f us p99 %.1f us\n", r50, r99);
    printf("throughput %.3f GB/s\n", gbps);
    if (a->json) {
        FILE *f = fopen(a->json, "w");
        if (f) {
            fprintf(f,
                    "{\"mode\":\"initiator\",\"transport\":\"%s\",\"location\":\"%s\","
                    "\"operation\":\"%s\","
                    "\"block_size\":%llu,\"batch_size\":%llu,\"threads\":%d,"
                    "\"duration_s\":%.3f,\"requests\":%llu,\"failed\":%llu,\"bytes\":%llu,"
                    "\"latency_p50_us\":%.1f,\"latency_p99_us\":%.1f,"
                    "\"batch_round_trip_p50_us\":%.1f,\"batch_round_trip_p99_us\":%.1f,"
                    "\"throughput_gbps\":%.4f}\n",
                    teshim_segment_transport(eng, seg), a->location, a->op,
                    (unsigned long long)a->block, (unsigned long long)a->batch, a->threads, el,
                    (unsigned long long)requests, (unsigned long long)failed,
                    (unsigned long long)bytes, p50, p99, r50, r99, gbps);
            fclose(f);
        }
    }
    free(lat);
    free(rtt);
    rc = failed || !bytes || worker_failed ? 1 : 0;
out_engine:
    teshim_engine_destroy(eng);
    return rc;
}

/* Single-thread memcpy of block-size chunks in the pattern of a transfer
 * by one initiator thread: batch-size blocks from a local span to the same
 * offsets of a span of the same size, over and over. */
static int run_memcpy(struct args *a)
{
    uint64_t span = a->block * a->batch;
    char *src = bench_alloc(span), *dst = bench_alloc(span);
    uint64_t bytes = 0;
    double t0, end;

    if (!src || !dst) {
        fprintf(stderr, "teshim-bench: no memory for 2 x %llu bytes\n", (unsigned long long)span);
        return 1;
    }
    memset(src, 1, span);
    memset(dst, 2, span);
    t0 = now_s();
    end = t0 + a->duration;
    while (now_s() < end) {
        for (uint64_t i = 0; i < a->batch; i++)
            memcpy(dst + i * a->block, src + i * a->block, a->block);
        /* keep the copies from being optimised away */
        __asm__ volatile("" : : "r"(dst) : "memory");
        bytes += span;
    }
    double el = now_s() - t0;
    printf("memcpy block_size %llu batch_size %llu duration %.2f s\n", (unsigned long long)a->block,
           (unsigned long long)a->batch, el);
    printf("throughput %.3f GB/s\n", (double)bytes / el / 1e9);
    free(src);
    free(dst);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"mode", required_argument, NULL, 'm'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"segment", required_argument, NULL, 's'},
                                         {"operation", required_argument, NULL, 'o'},
                                         {"block-size", required_argument, NULL, 'b'},
                                         {"batch-size", required_argument, NULL, 'B'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"duration", required_argument, NULL, 'd'},
                                         {"transport", required_argument, NULL, 'T'},
                                         {"json", required_argument, NULL, 'j'},
                                         {"buffer-size", required_argument, NULL, 'S'},
                                         {"io-threads", required_argument, NULL, 'i'},
                                         {"slice-bytes", required_argument, NULL, 'x'},
                                         {"conns-per-peer", required_argument, NULL, 'c'},
                                         {"hugepages", no_argument, NULL, 'H'},
                                         {"location", required_argument, NULL, 'L'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct args a = {.op = "write",
                     .transport = "tcp",
                     .location = "cpu",
                     .device = -1,
                     .block = 65536,
                     .batch = 16,
                     .buffer = 256ull << 20,
                     .threads = 1,
                     .duration = 5};
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a.mode = optarg;
            break;
        case 'l':
            a.listen = optarg;
            break;
        case 's':
            a.segment = optarg;
            break;
        case 'o':
            a.op = optarg;
            break;
        case 'b':
            if (parse_size(optarg, &a.block))
                usage();
            break;
        case 'B':
            if (parse_size(optarg, &a.batch))
                usage();
            break;
        case 'S':
            if (parse_size(optarg, &a.buffer))
                usage();
            break;
        case 'x':
            if (parse_size(optarg, &a.slice))
                usage();
            break;
        case 't':
            a.threads = atoi(optarg);
            break;
        case 'i':
            a.io_threads = atoi(optarg);
            break;
        case 'c':
            a.conns = atoi(optarg);
            break;
        case 'd':
            a.duration = atof(optarg);
            break;
        case 'T':
            a.transport = optarg;
            break;
        case 'j':
            a.json = optarg;
            break;
        case 'H':
            use_hugepages = true;
            break;
        case 'L': {
            char *end;
            a.location = optarg;
            if (!strcmp(optarg, "cpu"))
                break;
            if (strncmp(optarg, "cuda:", 5) || optarg[5] < '0' || optarg[5] > '9')
                usage();
            a.device = (int)strtol(optarg + 5, &end, 10);
            if (*end || a.device > 1023)
                usage();
            break;
        }
        default:
            usage();
        }
    }
    if (!a.mode)
        usage();
    if (a.device >= 0 && cuda_load())
        return 1;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(a.mode, "target") && a.listen)
        return run_target(&a);
    if (!strcmp(a.mode, "initiator"))
        return run_initiator(&a);
    if (!strcmp(a.mode, "memcpy") && a.block && a.batch)
        return run_memcpy(&a);
    usage();
    return 2;
}
