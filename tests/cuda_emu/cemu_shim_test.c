/*
 * The shim's CUDA hooks under LD_PRELOAD, on host programs built with the
 * real CUDA headers and run against the emulated runtime: byte-identical
 * results with and without teshim, the legacy/per-thread ordering rules
 * (and proof that the emulation catches a shim that breaks them), budget
 * exhaustion and allocation failure, fork/exec, the other soname version,
 * observe mode, the kill switch and the opt-in register cache. Counters come
 * from the JSON report the shim writes to TESHIM_STATS_DIR.
 */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../report_sum.h"

#define SIZE "1048576"

struct run {
    int status; /* exit status, or -1 */
    pid_t pid;
    char out[8192];
    char dir[64];
};

/* Report directories made by this test process, removed when it exits. */
static char made[32][64];
static int nmade;

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static void remove_dirs(void)
{
    for (int i = 0; i < nmade; i++)
        nftw(made[i], rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static const char *need(const char *var)
{
    const char *v = getenv(var);

    ck_assert_msg(v != NULL, "%s not set (run through ctest)", var);
    return v;
}

/*
 * Run host MODE SIZE with preload (NULL = none) and extra NAME=VALUE
 * settings; the bounce pool uses 64 KiB chunks so that 1 MiB is 16 chunks.
 */
static void run(struct run *r, const char *host, const char *mode, const char *preload,
                const char *const *extra)
{
    char *env[32];
    char pre[512], stats[96];
    int n = 0, fd[2];
    ssize_t got = 0, k;

    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "/tmp/cemu-shim-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(r->dir));
    if (nmade == 0)
        atexit(remove_dirs);
    if (nmade < 32)
        snprintf(made[nmade++], sizeof(made[0]), "%s", r->dir);
    snprintf(stats, sizeof(stats), "TESHIM_STATS_DIR=%s", r->dir);
    env[n++] = "TESHIM_CONFIG=/dev/null";
    env[n++] = "TESHIM_KILL_SWITCH_FILE=/nonexistent/teshim-disable";
    env[n++] = "TESHIM_STATS_LIVE=off";
    env[n++] = "TESHIM_CUDA_BOUNCE_CHUNK_BYTES=64K";
    /* Copies from one chunk up are routed, pools are two chunks (budgets
     * below are counted in them), and every host copy is shared with copy
     * threads whatever the CPUs here. */
    env[n++] = "TESHIM_CUDA_BOUNCE_MIN_BYTES=64K";
    env[n++] = "TESHIM_CUDA_BOUNCE_BUFFERS=2";
    env[n++] = "TESHIM_CUDA_COPY_THREADS=4";
    env[n++] = stats;
    if (preload) {
        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", preload);
        env[n++] = pre;
    }
    for (; extra && *extra; extra++)
        env[n++] = (char *)*extra;
    env[n] = NULL;

    ck_assert_int_eq(pipe(fd), 0);
    r->pid = fork();
    ck_assert_int_ge(r->pid, 0);
    if (r->pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        execle(host, host, mode, SIZE, (char *)NULL, env);
        _exit(127);
    }
    close(fd[1]);
    while ((k = read(fd[0], r->out + got, sizeof(r->out) - 1 - (size_t)got)) > 0)
        got += k;
    close(fd[0]);
    r->out[got] = '\0';
    int st;
    ck_assert_int_eq(waitpid(r->pid, &st, 0), r->pid);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Field of the JSON object named object in the report of the run's
 * process, whose outcomes must balance. */
static long long report_field(const struct run *r, const char *object, const char *field)
{
    char path[256], key[128], body[65536], why[512];
    const char *p;
    FILE *f;
    size_t len;
    glob_t g;

    /* teshim-PROGRAM-PID.json: one report per process. */
    snprintf(path, sizeof(path), "%s/teshim-*-%d.json", r->dir, (int)r->pid);
    ck_assert_msg(glob(path, 0, NULL, &g) == 0 && g.gl_pathc == 1, "no stats report %s", path);
    snprintf(path, sizeof(path), "%s", g.gl_pathv[0]);
    globfree(&g);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no stats report %s", path);
    len = fread(body, 1, sizeof(body) - 1, f);
    fclose(f);
    body[len] = '\0';
    ck_assert_msg(report_outcomes_balance(body, why, sizeof(why)) == 0, "%s: %s", path, why);
    snprintf(key, sizeof(key), "\"%s\": {", object);
    p = strstr(body, key);
    ck_assert_msg(p != NULL, "%s not in report", object);
    snprintf(key, sizeof(key), "\"%s\": ", field);
    p = strstr(p, key);
    ck_assert_msg(p != NULL, "no %s in %s", field, object);
    return atoll(p + strlen(key));
}

/* Counter ctr of hook (NAME@VERSION). */
static long long counter(const struct run *r, const char *hook, const char *ctr)
{
    return report_field(r, hook, ctr);
}

/* A figure of the report's "cuda_register_cache" object. */
static long long rc_figure(const struct run *r, const char *name)
{
    return report_field(r, "cuda_register_cache", name);
}

#if defined(__x86_64__)
#define GLIBC_MEM "GLIBC_2.2.5"
#else
#define GLIBC_MEM "GLIBC_2.17"
#endif

/* Hooks of the main soname version (TESHIM_CUDART_SOVERSION), which the
 * hosts link against; teshim's default version is always .13. */
#define M13 "cudaMemcpy@libcudart.so." CEMU_MAIN_SOVER
#define A13 "cudaMemcpyAsync@libcudart.so." CEMU_MAIN_SOVER
#define M13P "cudaMemcpy_ptds@libcudart.so." CEMU_MAIN_SOVER
#define A13P "cudaMemcpyAsync_ptsz@libcudart.so." CEMU_MAIN_SOVER
#define MDEFAULT "cudaMemcpy@libcudart.so.13"
#define M2D "cudaMemcpy2D@libcudart.so." CEMU_MAIN_SOVER
#define A2D "cudaMemcpy2DAsync@libcudart.so." CEMU_MAIN_SOVER
#define M2DP "cudaMemcpy2D_ptds@libcudart.so." CEMU_MAIN_SOVER
#define A2DP "cudaMemcpy2DAsync_ptsz@libcudart.so." CEMU_MAIN_SOVER
/* cemu_host_copy2d roundtrip: 6 geometries, 4 calls of each kind per
 * geometry, sum of width * height over the geometries. */
#define RT2D_CALLS 24
#define RT2D_BYTES 5802428LL

static const char *const bounce[] = {"TESHIM_CUDA_BOUNCE=on", NULL};

/* Same host, same mode: plain and under the shim give the same output. */
static void same_output_with(const char *host, const char *mode, const char *const *env,
                             struct run *shim)
{
    struct run plain;

    run(&plain, host, mode, NULL, NULL);
    ck_assert_msg(plain.status == 0, "plain %s %s: status %d", host, mode, plain.status);
    run(shim, host, mode, need("TESHIM_LIB"), env);
    ck_assert_msg(shim->status == 0, "shim %s %s: status %d", host, mode, shim->status);
    ck_assert_str_eq(plain.out, shim->out);
}

static void same_output(const char *host, const char *mode, struct run *shim)
{
    same_output_with(host, mode, bounce, shim);
}

static const char *const regcache_on[] = {"TESHIM_CUDA_REGISTER_CACHE=on", NULL};

START_TEST(roundtrip_identical_and_injected)
{
    struct run r;

    same_output(need("CEMU_HOST"), "roundtrip", &r);
    ck_assert_int_ge(counter(&r, M13, "injected"), 6);
    ck_assert_int_ge(counter(&r, A13, "injected"), 4);
    ck_assert_int_eq(counter(&r, M13, "bytes"), 6 * (1 << 20) - 2 * 4097);
    ck_assert_int_eq(counter(&r, M13, "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, M13, "errors"), 0);
}
END_TEST

START_TEST(runtime_sees_pinned_chunks_only)
{
    static const char *const env[] = {"TESHIM_CUDA_BOUNCE=on", "CEMU_HOST_REPORT=1", NULL};
    static const char *const plain_env[] = {"CEMU_HOST_REPORT=1", NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST"), "roundtrip", NULL, plain_env);
    ck_assert_int_eq(plain.status, 0);
    ck_assert_ptr_nonnull(strstr(plain.out, "runtime pageable-copies 10 pinned-copies 0"));
    run(&r, need("CEMU_HOST"), "roundtrip", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    /* 10 copies of 1 MiB (two a little shorter) in 64 KiB chunks. */
    ck_assert_ptr_nonnull(strstr(r.out, "runtime pageable-copies 0 pinned-copies 160"));
    ck_assert_int_eq(strncmp(plain.out, r.out, 26), 0); /* the checksum line */
}
END_TEST

START_TEST(async_copy_on_held_stream_returns)
{
    struct run r;

    same_output(need("CEMU_HOST"), "asynchold", &r);
    ck_assert_int_eq(counter(&r, A13, "injected"), 1);
}
END_TEST

START_TEST(pinned_managed_d2d_captured_pass_through)
{
    struct run r;

    same_output(need("CEMU_HOST"), "passthrough", &r);
    ck_assert_int_eq(counter(&r, M13, "injected"), 0);
    ck_assert_int_eq(counter(&r, A13, "injected"), 0);
    ck_assert_int_ge(counter(&r, M13, "not_applicable"), 3);
    ck_assert_int_ge(counter(&r, A13, "not_applicable"), 1);
}
END_TEST

START_TEST(error_state_and_error_returns_unchanged)
{
    struct run r;

    same_output(need("CEMU_HOST"), "errors", &r);
    ck_assert_ptr_nonnull(strstr(r.out, "wrong-kind cudaErrorInvalidValue"));
    /* Two copies made while an error was pending pass through untouched;
     * the wrong kind and the overrun (our chunks failed, the runtime then
     * made the call itself and failed too) are the host's errors, one
     * outcome each: not also not-applicable or a fallback. */
    ck_assert_int_eq(counter(&r, M13, "calls"), 4);
    ck_assert_int_eq(counter(&r, M13, "not_applicable"), 2);
    ck_assert_int_eq(counter(&r, M13, "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, M13, "errors"), 2);
}
END_TEST

/*
 * The same failing copies with the copy policy off: still two errors, and
 * only the two good copies are skipped. A CUDA copy has no benign codes, so
 * the rule is the one of the other hooks: an error whatever was decided.
 */
START_TEST(error_rule_cuda_policy_off)
{
    struct run r;

    run(&r, need("CEMU_HOST"), "errors", need("TESHIM_LIB"), NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(counter(&r, M13, "calls"), 4);
    ck_assert_int_eq(counter(&r, M13, "errors"), 2);
    ck_assert_int_eq(counter(&r, M13, "skipped_by_policy"), 2);
    ck_assert_int_eq(counter(&r, M13, "would_block"), 0);
}
END_TEST

START_TEST(ordering_legacy_waits_for_held_blocking_stream)
{
    struct run r;

    same_output(need("CEMU_HOST"), "ordering", &r);
    ck_assert_int_ge(counter(&r, M13, "injected"), 1);
}
END_TEST

START_TEST(ordering_broken_shim_is_caught)
{
    struct run r;

    run(&r, need("CEMU_HOST"), "ordering", need("CEMU_BROKEN_SHIM"), NULL);
    ck_assert_int_eq(r.status, 3);
    ck_assert_ptr_nonnull(strstr(r.out, "ORDERING VIOLATED"));
}
END_TEST

START_TEST(per_thread_default_stream_build)
{
    struct run r;

    same_output(need("CEMU_HOST_PTDS"), "roundtrip", &r);
    ck_assert_int_ge(counter(&r, M13P, "injected"), 6);
    ck_assert_int_ge(counter(&r, A13P, "injected"), 4);
    ck_assert_int_eq(counter(&r, M13, "calls"), 0);
    same_output(need("CEMU_HOST_PTDS"), "ordering", &r);
    ck_assert_int_ge(counter(&r, M13P, "injected"), 1);
    run(&r, need("CEMU_HOST_PTDS"), "ordering", need("CEMU_BROKEN_SHIM"), NULL);
    ck_assert_int_eq(r.status, 3);
}
END_TEST

START_TEST(other_soname_version)
{
    struct run r;
    const char *host = need("CEMU_HOST_OTHER");
    const char *ver = strstr(host, "_v12") ? "libcudart.so.12" : "libcudart.so.13";
    char hook[64];

    same_output(host, "roundtrip", &r);
    snprintf(hook, sizeof(hook), "cudaMemcpy@%s", ver);
    ck_assert_int_ge(counter(&r, hook, "injected"), 6);
    ck_assert_int_eq(counter(&r, hook, "fallbacks"), 0);
}
END_TEST

START_TEST(unversioned_lookup_in_either_runtime)
{
    struct run r;

    /* dlsym(RTLD_DEFAULT, "cudaMemcpy") finds teshim's default (.13)
     * version; with the other runtime loaded it still reaches the real one. */
    same_output(need("CEMU_HOST"), "dlsym", &r);
    ck_assert_int_eq(counter(&r, MDEFAULT, "injected"), 2);
    same_output(need("CEMU_HOST_OTHER"), "dlsym", &r);
    ck_assert_int_eq(counter(&r, MDEFAULT, "injected"), 2);
    ck_assert_int_eq(counter(&r, MDEFAULT, "fallbacks"), 0);
}
END_TEST

START_TEST(one_pool_per_device)
{
    /* Events belong to a device: a thread that switches devices needs a
     * pool on each, else its copies would fall back. */
    static const char *const env[] = {"TESHIM_CUDA_BOUNCE=on", "CEMU_DEVICES=2", NULL};
    static const char *const plain_env[] = {"CEMU_DEVICES=2", NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST"), "multidev", NULL, plain_env);
    ck_assert_int_eq(plain.status, 0);
    run(&r, need("CEMU_HOST"), "multidev", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(plain.out, r.out);
    ck_assert_int_eq(counter(&r, M13, "injected"), 4 * 6);
    ck_assert_int_eq(counter(&r, M13, "fallbacks"), 0);
}
END_TEST

START_TEST(budget_exhausted_falls_back)
{
    static const char *const env[] = {"TESHIM_CUDA_BOUNCE=on", "TESHIM_CUDA_PINNED_MAX_BYTES=64K",
                                      NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST"), "roundtrip", NULL, NULL);
    run(&r, need("CEMU_HOST"), "roundtrip", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(plain.out, r.out);
    ck_assert_int_eq(counter(&r, M13, "injected"), 0);
    ck_assert_int_ge(counter(&r, M13, "fallbacks"), 6);
}
END_TEST

START_TEST(allocation_failure_falls_back)
{
    struct run r;

    /* The host makes every cudaMallocHost fail, then checks its data and
     * that no error was left for it to read. */
    run(&r, need("CEMU_HOST"), "allocfail", need("TESHIM_LIB"), bounce);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(counter(&r, M13, "injected"), 0);
    ck_assert_int_ge(counter(&r, M13, "fallbacks"), 6);
    ck_assert_int_ge(counter(&r, A13, "fallbacks"), 4);
}
END_TEST

START_TEST(fork_and_exec_under_the_shim)
{
    struct run r;

    same_output(need("CEMU_HOST"), "fork", &r);
    ck_assert_int_ge(counter(&r, M13, "injected"), 8);
}
END_TEST

START_TEST(threads_have_their_own_pools)
{
    struct run r;

    same_output(need("CEMU_HOST"), "threads", &r);
    ck_assert_int_ge(counter(&r, M13, "injected"), 16 * 6);
}
END_TEST

START_TEST(thread_pools_are_reused_within_the_budget)
{
    /* 8 threads x 2 x 64 KiB fill the budget exactly; the second round of 8
     * new threads only works by reusing the pools of the first. */
    static const char *const env[] = {"TESHIM_CUDA_BOUNCE=on", "TESHIM_CUDA_PINNED_MAX_BYTES=1M",
                                      NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST"), "threads", NULL, NULL);
    run(&r, need("CEMU_HOST"), "threads", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(plain.out, r.out);
    ck_assert_int_eq(counter(&r, M13, "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, M13, "injected"), 16 * 6);
}
END_TEST

START_TEST(copy_from_a_library_constructor)
{
    struct run r;

    same_output(need("CEMU_HOST_CTOR"), "roundtrip", &r);
    ck_assert_ptr_nonnull(strstr(r.out, "constructor copy ok"));
    /* main's 6 plus the constructor's 2. */
    ck_assert_int_eq(counter(&r, M13, "injected"), 8);
}
END_TEST

START_TEST(observe_and_kill_switch_change_nothing)
{
    static const char *const observe[] = {"TESHIM_CUDA_BOUNCE=on", "TESHIM_MODE=observe", NULL};
    static const char *const killed[] = {"TESHIM_CUDA_BOUNCE=on", "TESHIM_DISABLE=1", NULL};
    struct run r;

    run(&r, need("CEMU_HOST"), "roundtrip", need("TESHIM_LIB"), observe);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_ge(counter(&r, M13, "observed"), 6);
    ck_assert_int_eq(counter(&r, M13, "injected"), 0);
    run(&r, need("CEMU_HOST"), "roundtrip", need("TESHIM_LIB"), killed);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_ge(counter(&r, M13, "skipped_by_policy"), 6);
    ck_assert_int_eq(counter(&r, M13, "injected"), 0);
}
END_TEST

START_TEST(register_cache_opt_in)
{
    static const char *const env[] = {"TESHIM_CUDA_REGISTER_CACHE=on",
                                      "TESHIM_CUDA_REGISTER_MIN_BYTES=64K", NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST"), "roundtrip", NULL, NULL);
    run(&r, need("CEMU_HOST"), "roundtrip", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(plain.out, r.out);
    /* Each buffer's first copy makes it hot; the next ones use the registration. */
    ck_assert_int_ge(counter(&r, M13, "injected"), 3);
    ck_assert_int_ge(counter(&r, M13, "not_applicable"), 1);
    ck_assert_int_eq(counter(&r, M13, "fallbacks"), 0);
}
END_TEST

START_TEST(register_cache_evicts_within_the_budget)
{
    /* Two 1 MiB buffers, room for one registration: each new one evicts the
     * least recently used; data stays right, pinned memory within the cap. */
    static const char *const env[] = {"TESHIM_CUDA_REGISTER_CACHE=on",
                                      "TESHIM_CUDA_REGISTER_MIN_BYTES=64K",
                                      "TESHIM_CUDA_REGISTER_MIN_HITS=1",
                                      "TESHIM_CUDA_PINNED_MAX_BYTES=1100K",
                                      "CEMU_HOST_REPORT=1",
                                      NULL};
    struct run plain, r;
    const char *p;

    run(&plain, need("CEMU_HOST"), "roundtrip", NULL, NULL);
    run(&r, need("CEMU_HOST"), "roundtrip", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(strncmp(plain.out, r.out, 26), 0);
    ck_assert_int_ge(counter(&r, M13, "injected"), 6);
    p = strstr(r.out, "runtime pinned-bytes ");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_le(atoll(p + strlen("runtime pinned-bytes ")), 1100 * 1024);
    /* Registered and evicted on the way; at exit the buffers were freed,
     * so nothing stays registered. */
    ck_assert_int_ge(rc_figure(&r, "registered"), 2);
    ck_assert_int_ge(rc_figure(&r, "evicted"), 1);
    ck_assert_int_eq(atoll(p + strlen("runtime pinned-bytes ")), 0);
}
END_TEST

START_TEST(register_cache_leaves_captures_alone)
{
    static const char *const env[] = {"TESHIM_CUDA_REGISTER_CACHE=on",
                                      "TESHIM_CUDA_REGISTER_MIN_BYTES=64K", NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST"), "capturereg", NULL, NULL);
    ck_assert_int_eq(plain.status, 0);
    run(&r, need("CEMU_HOST"), "capturereg", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(plain.out, r.out);
    ck_assert_int_ge(counter(&r, M13, "injected"), 1);
    ck_assert_int_eq(counter(&r, A13, "not_applicable"), 2);
}
END_TEST

/* The application registers a buffer the cache pinned: it succeeds, as
 * without teshim (the cache lets go first). */
START_TEST(register_cache_yields_to_application_register)
{
    static const char *const env[] = {"TESHIM_CUDA_REGISTER_CACHE=on",
                                      "TESHIM_CUDA_REGISTER_MIN_BYTES=64K", NULL};
    struct run r;

    run(&r, need("CEMU_HOST"), "appregister", NULL, NULL);
    ck_assert_ptr_nonnull(strstr(r.out, "cudaHostRegister cudaSuccess"));
    run(&r, need("CEMU_HOST"), "appregister", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "cudaHostRegister cudaSuccess"));
    ck_assert_int_eq(counter(&r, "cudaHostRegister@libcudart.so." CEMU_MAIN_SOVER, "injected"), 1);
    ck_assert_int_eq(rc_figure(&r, "app_register"), 1);
    /* The bounce pool leaves the application's view alone. */
    run(&r, need("CEMU_HOST"), "appregister", need("TESHIM_LIB"), bounce);
    ck_assert_ptr_nonnull(strstr(r.out, "cudaHostRegister cudaSuccess"));
    ck_assert_int_eq(counter(&r, M13, "injected"), 3);
}
END_TEST

/* ---- the register cache against memory reuse (cemu_host_reuse) ------------ */

static const char *const reuse_modes[] = {"mmap", "malloc", "madvise", "mremap",
                                          "brk",  "shm",    "fixed"};
/* The hook that saw each case's release first. */
static const char *const reuse_hooks[] = {"munmap", "free",  "madvise", "mremap",
                                          "sbrk",   "shmdt", "mmap"};

/*
 * The issue's stale-registration cases: a 64 MiB buffer pinned by the
 * cache, its pages released and new memory put at the same address. The
 * emulated runtime keeps a registration's pages as the driver does, so a
 * registration that outlives them shows as stale data both ways.
 */
START_TEST(register_cache_never_serves_released_pages)
{
    struct run r;
    char hook[64];

    same_output_with(need("CEMU_HOST_REUSE"), reuse_modes[_i], regcache_on, &r);
    /* The cache did pin the buffer, and let go before its pages went. */
    ck_assert_int_ge(counter(&r, M13, "injected"), 3);
    ck_assert_int_ge(rc_figure(&r, "released"), 1);
    snprintf(hook, sizeof(hook), "%s@" GLIBC_MEM, reuse_hooks[_i]);
    ck_assert_int_ge(counter(&r, hook, "injected"), 1);
}
END_TEST

/*
 * cudaHostRegister, cudaPointerGetAttributes and cudaHostUnregister of a
 * buffer the cache pinned answer exactly as without teshim: the output
 * prints every answer (attribute type, device, host pointer, errors).
 */
START_TEST(register_cache_invisible_to_the_application)
{
    struct run r;

    same_output_with(need("CEMU_HOST_REUSE"), "appregister", regcache_on, &r);
    ck_assert_ptr_nonnull(strstr(r.out, "cudaHostUnregister again "
                                        "cudaErrorHostMemoryNotRegistered"));
    /* The cache held the buffer when the application asked. */
    ck_assert_int_ge(
        counter(&r, "cudaPointerGetAttributes@libcudart.so." CEMU_MAIN_SOVER, "injected"), 1);
    ck_assert_int_eq(rc_figure(&r, "app_register"), 1);
}
END_TEST

/* Copies of growing prefixes of one buffer: each registration overlaps the
 * last, which the runtime would refuse; the cache registers the union
 * instead, so none is refused (no fallback) and every copy is pinned. */
START_TEST(register_cache_grows_a_registration)
{
    struct run r;

    same_output_with(need("CEMU_HOST_REUSE"), "grow", regcache_on, &r);
    ck_assert_int_eq(counter(&r, M13, "fallbacks"), 0);
    ck_assert_int_ge(rc_figure(&r, "registered"), 7);
    /* From the second copy of each size on (the first makes it hot). */
    ck_assert_int_ge(counter(&r, M13, "injected"), 2 * 7 * 2);
}
END_TEST

/* Static data is not memory teshim sees released: never cached, said so. */
START_TEST(register_cache_leaves_unwatched_memory_alone)
{
    struct run r;

    same_output_with(need("CEMU_HOST_REUSE"), "static", regcache_on, &r);
    ck_assert_int_ge(rc_figure(&r, "unwatched"), 1);
}
END_TEST

/* ---- the cudaMemcpy2D family (cemu_host_copy2d) ---------------------------- */

START_TEST(memcpy2d_identical_and_injected)
{
    struct run r;

    same_output(need("CEMU_HOST_2D"), "roundtrip", &r);
    ck_assert_int_eq(counter(&r, M2D, "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, A2D, "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, M2D, "bytes"), 2 * RT2D_BYTES * 2);
    ck_assert_int_eq(counter(&r, A2D, "bytes"), 2 * RT2D_BYTES * 2);
    ck_assert_int_eq(counter(&r, M2D, "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, A2D, "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, M2D, "errors"), 0);
    /* The 1D hooks saw none of it. */
    ck_assert_int_eq(counter(&r, M13, "calls"), 0);
}
END_TEST

START_TEST(memcpy2d_runtime_sees_pinned_chunks_only)
{
    static const char *const env[] = {"TESHIM_CUDA_BOUNCE=on", "CEMU_HOST_REPORT=1", NULL};
    static const char *const plain_env[] = {"CEMU_HOST_REPORT=1", NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST_2D"), "roundtrip", NULL, plain_env);
    ck_assert_int_eq(plain.status, 0);
    ck_assert_ptr_nonnull(
        strstr(plain.out, "runtime pageable-copies 48 pinned-copies 0 2d-copies 48"));
    run(&r, need("CEMU_HOST_2D"), "roundtrip", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    /*
     * Per call, in 64 KiB chunks: 16 + 11 + 16 + 32 packed-row chunks
     * (cudaMemcpy2DAsync) for the four geometries whose rows fit a chunk,
     * 5 + 18 row pieces (cudaMemcpyAsync) for the two wider ones; 8 calls
     * per geometry.
     */
    ck_assert_ptr_nonnull(
        strstr(r.out, "runtime pageable-copies 0 pinned-copies 784 2d-copies 600"));
    ck_assert_int_eq(strncmp(plain.out, r.out, 26), 0); /* the checksum line */
}
END_TEST

START_TEST(memcpy2d_per_thread_default_stream_build)
{
    struct run r;

    same_output(need("CEMU_HOST_2D_PTDS"), "roundtrip", &r);
    ck_assert_int_eq(counter(&r, M2DP, "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, A2DP, "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, M2D, "calls"), 0);
    ck_assert_int_eq(counter(&r, A2D, "calls"), 0);
    same_output(need("CEMU_HOST_2D_PTDS"), "ordering", &r);
    ck_assert_int_eq(counter(&r, M2DP, "injected"), 1);
}
END_TEST

START_TEST(memcpy2d_other_soname_version)
{
    struct run r;
    const char *host = need("CEMU_HOST_2D_OTHER");
    const char *ver = strstr(host, "_v12") ? "libcudart.so.12" : "libcudart.so.13";
    char hook[64];

    same_output(host, "roundtrip", &r);
    snprintf(hook, sizeof(hook), "cudaMemcpy2D@%s", ver);
    ck_assert_int_eq(counter(&r, hook, "injected"), RT2D_CALLS);
    snprintf(hook, sizeof(hook), "cudaMemcpy2DAsync@%s", ver);
    ck_assert_int_eq(counter(&r, hook, "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, hook, "fallbacks"), 0);
}
END_TEST

START_TEST(memcpy2d_ordering_legacy_waits_for_held_blocking_stream)
{
    struct run r;

    same_output(need("CEMU_HOST_2D"), "ordering", &r);
    ck_assert_int_eq(counter(&r, M2D, "injected"), 1);
}
END_TEST

START_TEST(memcpy2d_async_on_held_stream_returns)
{
    struct run r;

    same_output(need("CEMU_HOST_2D"), "asynchold", &r);
    ck_assert_int_eq(counter(&r, A2D, "injected"), 1);
    ck_assert_int_eq(counter(&r, M2D, "injected"), 1);
}
END_TEST

START_TEST(memcpy2d_pinned_d2d_small_pass_through)
{
    struct run r;

    same_output(need("CEMU_HOST_2D"), "passthrough", &r);
    ck_assert_int_eq(counter(&r, M2D, "injected"), 0);
    ck_assert_int_eq(counter(&r, A2D, "injected"), 0);
    /* Pinned H2D, D2D, and a copy below cuda.bounce_min_bytes. */
    ck_assert_int_eq(counter(&r, M2D, "not_applicable"), 3);
    ck_assert_int_eq(counter(&r, A2D, "not_applicable"), 1);
}
END_TEST

START_TEST(memcpy2d_errors_unchanged)
{
    struct run r;

    same_output(need("CEMU_HOST_2D"), "errors", &r);
    ck_assert_ptr_nonnull(strstr(r.out, "width-above-spitch cudaErrorInvalidPitchValue"));
    ck_assert_ptr_nonnull(strstr(r.out, "width-above-dpitch cudaErrorInvalidPitchValue"));
    ck_assert_ptr_nonnull(strstr(r.out, "wrong-kind cudaErrorInvalidValue"));
    ck_assert_ptr_nonnull(strstr(r.out, "overrun cudaErrorInvalidValue"));
    /* Pending error and the two with nothing to copy: passed through
     * untouched. Invalid geometry and wrong kind (passed through) and the
     * overrun (our chunks failed, the runtime then made the call itself)
     * fail: errors, and nothing else. */
    ck_assert_int_eq(counter(&r, M2D, "calls"), 7);
    ck_assert_int_eq(counter(&r, M2D, "not_applicable"), 3);
    ck_assert_int_eq(counter(&r, A2D, "not_applicable"), 0);
    ck_assert_int_eq(counter(&r, M2D, "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, M2D, "errors"), 3);
    ck_assert_int_eq(counter(&r, A2D, "errors"), 1);
    ck_assert_int_eq(counter(&r, M2D, "injected"), 1);
}
END_TEST

/*
 * The opt-in register cache with 2D copies: a host buffer is registered
 * from one copy's extent and later copied with a longer one (another
 * pitch), starting inside the registered range. The runtime classifies the
 * copy by its start and takes it as pinned; teshim must still keep the
 * pageable return rules (an async H2D returns with its source consumed).
 */
START_TEST(memcpy2d_register_cache_partial_ranges)
{
    static const char *const env[] = {"TESHIM_CUDA_REGISTER_CACHE=on",
                                      "TESHIM_CUDA_REGISTER_MIN_BYTES=64K",
                                      "TESHIM_CUDA_REGISTER_MIN_HITS=1", NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST_2D"), "roundtrip", NULL, NULL);
    run(&r, need("CEMU_HOST_2D"), "roundtrip", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(plain.out, r.out);
    ck_assert_int_ge(counter(&r, M2D, "injected"), 1);
    ck_assert_int_ge(counter(&r, A2D, "injected"), 1);
}
END_TEST

START_TEST(memcpy2d_budget_exhausted_falls_back)
{
    static const char *const env[] = {"TESHIM_CUDA_BOUNCE=on", "TESHIM_CUDA_PINNED_MAX_BYTES=64K",
                                      NULL};
    struct run plain, r;

    run(&plain, need("CEMU_HOST_2D"), "roundtrip", NULL, NULL);
    run(&r, need("CEMU_HOST_2D"), "roundtrip", need("TESHIM_LIB"), env);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(plain.out, r.out);
    ck_assert_int_eq(counter(&r, M2D, "injected"), 0);
    ck_assert_int_eq(counter(&r, M2D, "fallbacks"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, A2D, "fallbacks"), RT2D_CALLS);
}
END_TEST

START_TEST(memcpy2d_allocation_failure_falls_back)
{
    struct run r;

    run(&r, need("CEMU_HOST_2D"), "allocfail", need("TESHIM_LIB"), bounce);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(counter(&r, M2D, "injected"), 0);
    ck_assert_int_eq(counter(&r, M2D, "fallbacks"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, A2D, "fallbacks"), RT2D_CALLS);
}
END_TEST

/* ---- reach (issue 15): static runtime, driver API, routed once ---------- */

#define DRV(name) name "@TESHIM_CUDA_DRIVER"

/* A host with the runtime linked in statically: no runtime hook can see it;
 * its copies arrive at teshim's driver wrappers through the dlsym and
 * cuGetProcAddress it looked the driver up with. */
START_TEST(static_runtime_bounced_at_driver_level)
{
    struct run r;

    same_output(need("CEMU_HOST_STATIC"), "roundtrip", &r);
    /* roundtrip: cudaMemcpy H2D, D2H and Default twice each, the Async
     * pair twice: the same bytes the runtime hooks count for cudaMemcpy. */
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoD_v2"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoH_v2"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoDAsync_v2"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoHAsync_v2"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoD_v2"), "bytes") +
                         counter(&r, DRV("cuMemcpyDtoH_v2"), "bytes") +
                         counter(&r, DRV("cuMemcpy"), "bytes"),
                     6 * (1 << 20) - 2 * 4097);
    ck_assert_int_ge(counter(&r, DRV("cuGetProcAddress_v2"), "injected"), 6);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoD_v2"), "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, M13, "calls"), 0);
    ck_assert_int_eq(counter(&r, "dlsym@GLIBC_2.34", "injected"), 1);
}
END_TEST

START_TEST(static_runtime_ptds_flavour)
{
    struct run r;

    same_output(need("CEMU_HOST_STATIC_PTDS"), "roundtrip", &r);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoD_v2_ptds"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoH_v2_ptds"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoDAsync_v2_ptsz"), "injected"), 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoD_v2"), "calls"), 0);
}
END_TEST

START_TEST(static_runtime_ordering_and_errors)
{
    static const char *const modes[] = {"ordering", "errors", "threads", "passthrough"};

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        struct run r;
        same_output(need("CEMU_HOST_STATIC"), modes[i], &r);
    }
}
END_TEST

/* A copy the runtime hook routed reaches the driver wrappers from inside
 * it: passed through untouched, never bounced twice. */
START_TEST(shared_runtime_routed_once)
{
    struct run r;

    same_output(need("CEMU_HOST"), "roundtrip", &r);
    ck_assert_int_ge(counter(&r, M13, "injected"), 6);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoD_v2"), "calls"), 0);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoH_v2"), "calls"), 0);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyHtoDAsync_v2"), "calls"), 0);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoHAsync_v2"), "calls"), 0);
}
END_TEST

/* Driver-API hosts: linked names and cuGetProcAddress lookups. */
START_TEST(driver_api_host_bounced)
{
    static const char *const hosts[] = {"CEMU_HOST_DRV", "CEMU_HOST_DRV_PTDS"};

    for (int h = 0; h < 2; h++)
        for (int lookup = 0; lookup < 2; lookup++) {
            struct run r;
            const char *sfx = h ? "_ptds" : "";
            const char *asfx = h ? "_ptsz" : "";
            char n1[96], n2[96], n3[96];
            same_output(need(hosts[h]), lookup ? "lookup" : "linked", &r);
            snprintf(n1, sizeof(n1), "cuMemcpyHtoD_v2%s@TESHIM_CUDA_DRIVER", sfx);
            snprintf(n2, sizeof(n2), "cuMemcpyDtoHAsync_v2%s@TESHIM_CUDA_DRIVER", asfx);
            snprintf(n3, sizeof(n3), "cuMemcpy%s@TESHIM_CUDA_DRIVER", sfx);
            ck_assert_int_eq(counter(&r, n1, "injected"), 1);
            ck_assert_int_eq(counter(&r, n2, "injected"), 2);
            ck_assert_int_eq(counter(&r, n3, "injected"), 1);
            ck_assert_int_eq(counter(&r, n1, "errors"), 0);
        }
}
END_TEST

/* Both levels in one process hold pinned memory under one cap: a budget of
 * one pool (two 64 KiB chunks) taken by the runtime hook leaves none for a
 * driver-level pool, whose copy then passes through unchanged. */
START_TEST(one_pinned_budget_for_both_levels)
{
    static const char *const one[] = {"TESHIM_CUDA_BOUNCE=on", "TESHIM_CUDA_PINNED_MAX_BYTES=128K",
                                      NULL};
    static const char *const two[] = {"TESHIM_CUDA_BOUNCE=on", "TESHIM_CUDA_PINNED_MAX_BYTES=256K",
                                      NULL};
    struct run r;

    run(&r, need("CEMU_HOST_MIXED"), "", need("TESHIM_LIB"), one);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "mixed ok\n");
    ck_assert_int_eq(counter(&r, M13, "injected"), 1);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoH_v2"), "fallbacks"), 1);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoH_v2"), "injected"), 0);

    run(&r, need("CEMU_HOST_MIXED"), "", need("TESHIM_LIB"), two);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(counter(&r, M13, "injected"), 1);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpyDtoH_v2"), "injected"), 1);
}
END_TEST

/* The runtime opens the driver from inside teshim's cudaMemcpy hook (the
 * host's first CUDA call is a copy): its lookups are substituted and
 * counted like those of a runtime opened outside any hook. */
START_TEST(lookups_counted_inside_another_hook)
{
    static const char *const on[] = {"TESHIM_CUDA_BOUNCE=on", NULL};
    struct run mixed, plain;
    const char *gpa = DRV("cuGetProcAddress_v2");

    run(&mixed, need("CEMU_HOST_MIXED"), "", need("TESHIM_LIB"), on);
    run(&plain, need("CEMU_HOST"), "roundtrip", need("TESHIM_LIB"), on);
    ck_assert_int_eq(mixed.status, 0);
    ck_assert_int_gt(counter(&plain, gpa, "calls"), 0);
    ck_assert_int_eq(counter(&mixed, gpa, "calls"), counter(&plain, gpa, "calls"));
    ck_assert_int_eq(counter(&mixed, gpa, "injected"), counter(&plain, gpa, "injected"));
    ck_assert_int_eq(counter(&mixed, gpa, "calls"), counter(&mixed, gpa, "injected") +
                                                        counter(&mixed, gpa, "not_applicable") +
                                                        counter(&mixed, gpa, "errors"));
}
END_TEST

/* ---- 2D copies at the driver level ------------------------------------------ */

/* cemu_host_drv2d roundtrip: 5 geometries (w * h bytes), each copied both
 * ways with cuMemcpy2D, cuMemcpy2DUnaligned, and twice with cuMemcpy2DAsync. */
#define DRV2D_GEOMS 5
#define DRV2D_BYTES (4096 * 256 + 1001 * 700 + 997 * 300 + 70000 * 9 + 513 * 2000)

/* A static runtime's cudaMemcpy2D and cudaMemcpy2DAsync arrive at the
 * driver's cuMemcpy2DUnaligned and cuMemcpy2DAsync: bounced there. */
START_TEST(static_runtime_2d_bounced_at_driver_level)
{
    static const char *const modes[] = {"ordering", "errors", "passthrough", "asynchold"};
    struct run r;

    same_output(need("CEMU_HOST_STATIC_2D"), "roundtrip", &r);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DUnaligned_v2"), "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DAsync_v2"), "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DUnaligned_v2"), "bytes"), 2 * RT2D_BYTES * 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DAsync_v2"), "bytes"), 2 * RT2D_BYTES * 2);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DAsync_v2"), "fallbacks"), 0);
    ck_assert_int_eq(counter(&r, M2D, "calls"), 0);

    same_output(need("CEMU_HOST_STATIC_2D_PTDS"), "roundtrip", &r);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DUnaligned_v2_ptds"), "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DAsync_v2_ptsz"), "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DUnaligned_v2"), "calls"), 0);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DAsync_v2"), "calls"), 0);

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        same_output(need("CEMU_HOST_STATIC_2D"), modes[i], &r);
        same_output(need("CEMU_HOST_STATIC_2D_PTDS"), modes[i], &r);
    }
}
END_TEST

/* A shared runtime's 2D copy is bounced by the runtime hook; its chunks
 * reach the driver wrappers from inside it and pass through uncounted. */
START_TEST(shared_runtime_2d_routed_once)
{
    struct run r;

    same_output(need("CEMU_HOST_2D"), "roundtrip", &r);
    ck_assert_int_eq(counter(&r, M2D, "injected"), RT2D_CALLS);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DUnaligned_v2"), "calls"), 0);
    ck_assert_int_eq(counter(&r, DRV("cuMemcpy2DAsync_v2"), "calls"), 0);
}
END_TEST

/* A driver-API host under the cuda-pinned profile, linked names and
 * cuGetProcAddress lookups, legacy and per-thread builds. */
START_TEST(driver_api_2d_bounced)
{
    static const char *const hosts[] = {"CEMU_HOST_DRV_2D", "CEMU_HOST_DRV_2D_PTDS"};
    static const char *const pinned[] = {"TESHIM_PROFILE=cuda-pinned", NULL};

    for (int h = 0; h < 2; h++)
        for (int lookup = 0; lookup < 2; lookup++) {
            struct run r;
            const char *sfx = h ? "_ptds" : "";
            char sync[96], unal[96], async[96];
            same_output_with(need(hosts[h]), lookup ? "roundtrip-lookup" : "roundtrip", pinned, &r);
            snprintf(sync, sizeof(sync), "cuMemcpy2D_v2%s@TESHIM_CUDA_DRIVER", sfx);
            snprintf(unal, sizeof(unal), "cuMemcpy2DUnaligned_v2%s@TESHIM_CUDA_DRIVER", sfx);
            snprintf(async, sizeof(async), "cuMemcpy2DAsync_v2%s@TESHIM_CUDA_DRIVER",
                     h ? "_ptsz" : "");
            ck_assert_int_eq(counter(&r, sync, "injected"), 2 * DRV2D_GEOMS);
            ck_assert_int_eq(counter(&r, unal, "injected"), 2 * DRV2D_GEOMS);
            ck_assert_int_eq(counter(&r, async, "injected"), 4 * DRV2D_GEOMS);
            ck_assert_int_eq(counter(&r, sync, "bytes"), 2 * DRV2D_BYTES);
            ck_assert_int_eq(counter(&r, async, "bytes"), 4 * DRV2D_BYTES);
            ck_assert_int_eq(counter(&r, sync, "errors") + counter(&r, async, "errors") +
                                 counter(&r, sync, "fallbacks") + counter(&r, async, "fallbacks"),
                             0);
            if (h)
                ck_assert_int_eq(counter(&r, DRV("cuMemcpy2D_v2"), "calls") +
                                     counter(&r, DRV("cuMemcpy2DAsync_v2"), "calls"),
                                 0);
        }
}
END_TEST

/* Stream order kept, an async pageable source consumed at return, and the
 * driver's own errors for bad arguments, with and without teshim. */
START_TEST(driver_api_2d_ordering_and_errors)
{
    static const char *const hosts[] = {"CEMU_HOST_DRV_2D", "CEMU_HOST_DRV_2D_PTDS"};
    /* CUDA_ERROR_INVALID_VALUE, or success with nothing to copy. */
    static const char *const codes[] = {"width-above-src-pitch 1\n",
                                        "x-beyond-pitch 1\n",
                                        "pitch-above-max 1\n",
                                        "array 1\n",
                                        "overrun 1\n",
                                        "zero-height 0\n"};

    for (int h = 0; h < 2; h++) {
        struct run r;
        const char *m2d = h ? DRV("cuMemcpy2D_v2_ptds") : DRV("cuMemcpy2D_v2");
        const char *a2d = h ? DRV("cuMemcpy2DAsync_v2_ptsz") : DRV("cuMemcpy2DAsync_v2");

        same_output(need(hosts[h]), "ordering", &r);
        ck_assert_int_eq(counter(&r, m2d, "injected"), 1);
        same_output(need(hosts[h]), "asynchold", &r);
        ck_assert_int_eq(counter(&r, a2d, "injected"), 1);
        ck_assert_int_eq(counter(&r, m2d, "injected"), 1);
        same_output(need(hosts[h]), "errors-lookup", &r);
        same_output(need(hosts[h]), "errors", &r);
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
            ck_assert_msg(strstr(r.out, codes[i]), "no \"%s\" in %s", codes[i], r.out);
        /* Twelve calls, nine of them errors (the overrun's bounce failed
         * and the driver then made the call itself), the last one bounced. */
        ck_assert_int_eq(counter(&r, m2d, "calls"), 12);
        ck_assert_int_eq(counter(&r, m2d, "errors"), 9);
        ck_assert_int_eq(counter(&r, m2d, "injected"), 1);
        ck_assert_int_eq(counter(&r, a2d, "errors"), 2);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_shim");
    TCase *tc = tcase_create("hooks");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, roundtrip_identical_and_injected);
    tcase_add_test(tc, runtime_sees_pinned_chunks_only);
    tcase_add_test(tc, async_copy_on_held_stream_returns);
    tcase_add_test(tc, pinned_managed_d2d_captured_pass_through);
    tcase_add_test(tc, error_state_and_error_returns_unchanged);
    tcase_add_test(tc, error_rule_cuda_policy_off);
    tcase_add_test(tc, ordering_legacy_waits_for_held_blocking_stream);
    tcase_add_test(tc, ordering_broken_shim_is_caught);
    tcase_add_test(tc, per_thread_default_stream_build);
    tcase_add_test(tc, other_soname_version);
    tcase_add_test(tc, unversioned_lookup_in_either_runtime);
    tcase_add_test(tc, one_pool_per_device);
    tcase_add_test(tc, budget_exhausted_falls_back);
    tcase_add_test(tc, allocation_failure_falls_back);
    tcase_add_test(tc, fork_and_exec_under_the_shim);
    tcase_add_test(tc, threads_have_their_own_pools);
    tcase_add_test(tc, thread_pools_are_reused_within_the_budget);
    tcase_add_test(tc, copy_from_a_library_constructor);
    tcase_add_test(tc, observe_and_kill_switch_change_nothing);
    tcase_add_test(tc, register_cache_opt_in);
    tcase_add_test(tc, register_cache_evicts_within_the_budget);
    tcase_add_test(tc, register_cache_yields_to_application_register);
    tcase_add_test(tc, register_cache_invisible_to_the_application);
    tcase_add_test(tc, register_cache_leaves_unwatched_memory_alone);
    tcase_add_test(tc, register_cache_grows_a_registration);
    tcase_add_test(tc, register_cache_leaves_captures_alone);
    tcase_add_loop_test(tc, register_cache_never_serves_released_pages, 0,
                        (int)(sizeof(reuse_modes) / sizeof(reuse_modes[0])));
    tcase_add_test(tc, memcpy2d_identical_and_injected);
    tcase_add_test(tc, memcpy2d_runtime_sees_pinned_chunks_only);
    tcase_add_test(tc, memcpy2d_per_thread_default_stream_build);
    tcase_add_test(tc, memcpy2d_other_soname_version);
    tcase_add_test(tc, memcpy2d_ordering_legacy_waits_for_held_blocking_stream);
    tcase_add_test(tc, memcpy2d_async_on_held_stream_returns);
    tcase_add_test(tc, memcpy2d_pinned_d2d_small_pass_through);
    tcase_add_test(tc, memcpy2d_errors_unchanged);
    tcase_add_test(tc, memcpy2d_register_cache_partial_ranges);
    tcase_add_test(tc, memcpy2d_budget_exhausted_falls_back);
    tcase_add_test(tc, memcpy2d_allocation_failure_falls_back);
    tcase_add_test(tc, static_runtime_bounced_at_driver_level);
    tcase_add_test(tc, static_runtime_ptds_flavour);
    tcase_add_test(tc, static_runtime_ordering_and_errors);
    tcase_add_test(tc, shared_runtime_routed_once);
    tcase_add_test(tc, driver_api_host_bounced);
    tcase_add_test(tc, one_pinned_budget_for_both_levels);
    tcase_add_test(tc, lookups_counted_inside_another_hook);
    tcase_add_test(tc, static_runtime_2d_bounced_at_driver_level);
    tcase_add_test(tc, shared_runtime_2d_routed_once);
    tcase_add_test(tc, driver_api_2d_bounced);
    tcase_add_test(tc, driver_api_2d_ordering_and_errors);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
