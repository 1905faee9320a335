/*
 * libibverbs hooks: relaxed ordering on registrations, traffic class and
 * service level on QP transitions.
 *
 * verbs.h turns ibv_reg_mr into an inline that calls ibv_reg_mr@IBVERBS_1.1
 * for constant flags and ibv_reg_mr_iova2@IBVERBS_1.8 otherwise, so both are
 * hooked; the real 1.1 calls iova2 through the PLT and that nested call passes
 * through on the re-entry guard, uncounted.
 */
#include "shim.h"

#include <dlfcn.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

/* This file defines the rows of shim_hooks_ibv.def. */
#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_ibv.def"
#undef HOOK

/*
 * libibverbs calls ibv_reg_mr_iova2 and ibv_modify_qp through its own PLT
 * (the 1.0 compat entry points convert their old structs and call the
 * current ones), and with teshim preloaded those calls land here. They are
 * the library's own business: a caller of ibv_reg_mr@IBVERBS_1.0 must get
 * exactly what the real library gives it. A hook whose caller lies in the
 * same object as the real function passes through.
 */
static _Atomic(void *) ibv_real_base[SHIM_HK_COUNT];

static bool called_by_host_library(enum shim_hook_id id, const void *caller, const void *real)
{
    /* The real function is resolved once and for good (shim_resolve), so
     * the object it lives in is looked up once per hook. */
    void *base = atomic_load_explicit(&ibv_real_base[id], memory_order_relaxed);
    Dl_info ci, ri;

    if (!base) {
        if (!dladdr(real, &ri))
            return false;
        base = ri.dli_fbase;
        atomic_store_explicit(&ibv_real_base[id], base, memory_order_relaxed);
    }
    return dladdr(caller, &ci) && ci.dli_fbase == base;
}

/*
 * The real function of a verbs hook. A libibverbs dlopen'ed RTLD_LOCAL (NCCL)
 * is invisible to RTLD_NEXT, yet its own calls through its PLT (the 1.1 and
 * 1.7 registrations call ibv_reg_mr_iova2, the 1.0 compat entry points the
 * current ones) bind to teshim's exports: the real function is then the one
 * in the caller's object. Without it the call could only fail.
 */
static void *ibv_real(enum shim_hook_id id, const void *caller)
{
    void *fn = shim_resolve(id);

    if (!fn && shim_in_library(caller, "libibverbs.so"))
        fn = shim_resolve_in(id, caller);
    return fn;
}

#define SHIM_IBV_REAL(name, tag)                                                                   \
    ((shim_fn_##name##_##tag)ibv_real(SHIM_HK_##name##_##tag, __builtin_return_address(0)))

#define SHIM_IBV_INTERNAL(id, real)                                                                \
    called_by_host_library(id, __builtin_return_address(0), (const void *)(real))

/* The host's libibverbs lacks the entry point the application bound to: the
 * call fails as ENOSYS (said once; the hook names say which). */
static void ibv_missing(const char *hook)
{
    shim_log_once(POL_LOG_WARN,
                  "%s: the real function is not in the host's libibverbs; failing "
                  "with ENOSYS",
                  hook);
}

/* Per-device state: PCIe RO capability (read once) and RO failures. */
#define SHIM_IBV_MAX_DEVS 64

struct shim_ibv_dev {
    char name[IBV_SYSFS_NAME_MAX];
    int pcie_ro;    /* 1, 0, or -errno when unknown */
    bool ro_failed; /* a registration with RO was refused: stop adding it */
};

static struct shim_ibv_dev shim_ibv_devs[SHIM_IBV_MAX_DEVS];
static int shim_ibv_ndevs;
static pthread_mutex_t shim_ibv_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *dev_name(struct ibv_context *ctx)
{
    return ctx && ctx->device ? ctx->device->name : NULL;
}

/* Snapshot of what policy needs to know about a device. */
static void dev_state(const char *name, bool want_pcie, int *pcie_ro, bool *ro_failed)
{
    struct shim_ibv_dev *d = NULL;

    *pcie_ro = -ENODEV;
    *ro_failed = false;
    if (!name)
        return;
    pthread_mutex_lock(&shim_ibv_lock);
    for (int i = 0; i < shim_ibv_ndevs; i++)
        if (strcmp(shim_ibv_devs[i].name, name) == 0)
            d = &shim_ibv_devs[i];
    if (!d && shim_ibv_ndevs < SHIM_IBV_MAX_DEVS) {
        d = &shim_ibv_devs[shim_ibv_ndevs++];
        snprintf(d->name, sizeof(d->name), "%s", name);
        d->pcie_ro = 2; /* not read yet */
    }
    if (d) {
        if (want_pcie && d->pcie_ro == 2) {
            d->pcie_ro = pol_pcie_relaxed_ordering(pol_str(shim_cfg(), POL_RDMA_SYSFS_ROOT), name);
            if (d->pcie_ro < 0)
                shim_info("%s: PCIe relaxed-ordering state unknown (%s); auto leaves it off", name,
                          strerror(-d->pcie_ro));
            else
                shim_info("%s: PCIe relaxed ordering %s in Device Control", name,
                          d->pcie_ro ? "enabled" : "disabled");
        }
        *pcie_ro = d->pcie_ro;
        *ro_failed = d->ro_failed;
    }
    pthread_mutex_unlock(&shim_ibv_lock);
}

static void dev_mark_ro_failed(const char *name)
{
    pthread_mutex_lock(&shim_ibv_lock);
    for (int i = 0; i < shim_ibv_ndevs; i++)
        if (name && strcmp(shim_ibv_devs[i].name, name) == 0)
            shim_ibv_devs[i].ro_failed = true;
    pthread_mutex_unlock(&shim_ibv_lock);
}

/* The file name of the object containing caller, when scope.objects needs
 * it (a dladdr per call otherwise saved); NULL when unknown. dladdr names
 * the main program by its argv[0]. */
static const char *caller_object(const struct pol_config *cfg, const void *caller)
{
    Dl_info info;
    const char *slash;

    if (!*pol_str(cfg, POL_SCOPE_OBJECTS) || !dladdr(caller, &info) || !info.dli_fname ||
        !*info.dli_fname)
        return NULL;
    slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
}

/* Which side had the last word where the host set its own knob:
 * [knob][0] the host's, [knob][1] teshim's (rdma.override_host_knobs). */
static _Atomic uint64_t knob_won[POL_NKNOBS][2];

static void knob_count(enum pol_knob k, enum pol_knob_winner w)
{
    const struct pol_host_knob *hk = &shim_cfg()->host_knobs[k];

    if (w == POL_KNOB_UNSET)
        return;
    atomic_fetch_add_explicit(&knob_won[k][w == POL_KNOB_TESHIM_WON], 1, memory_order_relaxed);
    if (w == POL_KNOB_HOST_WON)
        shim_log_once(POL_LOG_INFO,
                      "%s=%s set by the host: its %s kept (rdma.override_host_knobs is off)",
                      hk->env, hk->value, pol_knob_name(k));
    else
        shim_log_once(POL_LOG_INFO,
                      "%s=%s set by the host: %s overridden (rdma.override_host_knobs)", hk->env,
                      hk->value, pol_knob_name(k));
}

void shim_ibv_knob_stats(uint64_t host_won[POL_NKNOBS], uint64_t teshim_won[POL_NKNOBS])
{
    for (int k = 0; k < POL_NKNOBS; k++) {
        host_won[k] = atomic_load_explicit(&knob_won[k][0], memory_order_relaxed);
        teshim_won[k] = atomic_load_explicit(&knob_won[k][1], memory_order_relaxed);
    }
}

void shim_ibv_knob_reset(void)
{
    for (int k = 0; k < POL_NKNOBS; k++) {
        atomic_store(&knob_won[k][0], 0);
        atomic_store(&knob_won[k][1], 0);
    }
}

/* Policy's answer for a registration on ctx of length bytes made by code at
 * caller. */
static enum pol_verdict mr_decide(struct ibv_context *ctx, size_t length, int access,
                                  const void *caller, int *access_out)
{
    const struct pol_config *cfg = shim_cfg();
    struct pol_rdma_mr req = {0};
    bool is_auto = pol_int(cfg, POL_RDMA_RELAXED_ORDERING) == POL_RO_AUTO;
    enum pol_knob_winner knob;
    enum pol_verdict v;
    int pcie;

    req.object = caller_object(cfg, caller);
    req.device = dev_name(ctx);
    req.length = length;
    req.access = access;
    dev_state(req.device, is_auto && cfg->gate <= POL_GATE_OBSERVE, &pcie, &req.dev_ro_failed);
    req.dev_ro_capable = pcie == 1;
    /* The same cached lookup the iova2 hook forwards through. */
    req.iova2_available = is_auto && shim_resolve(SHIM_HK_ibv_reg_mr_iova2_1_8) != NULL;
    v = pol_rdma_mr_decide(cfg, &req, access_out, &knob);
    knob_count(POL_KNOB_RELAXED_ORDERING, knob);
    return v;
}

/*
 * The retry rule shared by every registration entry point: a registration
 * that carried our RO bit and failed with EINVAL/EOPNOTSUPP is made again as
 * the application asked. Only when that succeeds was the flag the cause, and
 * RO stops for that device; a registration that fails either way (bad flags,
 * length 0) is the application's own error and leaves the device alone.
 */
static bool ro_refused(enum pol_verdict v, int err)
{
    return v == POL_INJECT && (err == EINVAL || err == EOPNOTSUPP);
}

static void ro_fallback(enum shim_hook_id id, struct ibv_context *ctx, int err)
{
    const char *name = dev_name(ctx);

    dev_mark_ro_failed(name);
    shim_log_once(POL_LOG_WARN,
                  "%s: registration with IBV_ACCESS_RELAXED_ORDERING refused (%s); "
                  "registering without it and no longer adding it on this device",
                  name ? name : "?", strerror(err));
}

/* One outcome per registration: a fallback when it was made again without
 * our flag (ro_fallback), else the verdict; an error when it failed. rv is
 * the registration's return value, err its errno. */
static void mr_account(enum shim_hook_id id, enum pol_verdict v, bool fell_back, intptr_t rv,
                       int err, bool ok, size_t length)
{
    shim_count_result(id, fell_back ? SHIM_C_FALLBACKS : shim_verdict_ctr(v), rv, err);
    if (!fell_back && v == POL_INJECT && ok)
        shim_count_bytes(id, length);
}

/*
 * One body for the four registration entry points: REGISTER(access) makes the
 * real call with the access flags given.
 */
#define SHIM_REG_MR(id, ctx, length, access, REGISTER)                                             \
    do {                                                                                           \
        int acc_;                                                                                  \
        enum pol_verdict v_ =                                                                      \
            mr_decide(ctx, length, (int)(access), __builtin_return_address(0), &acc_);             \
        bool fb_ = false;                                                                          \
        mr = REGISTER(acc_);                                                                       \
        if (!mr && ro_refused(v_, errno)) {                                                        \
            int refused_ = errno;                                                                  \
            mr = REGISTER((int)(access));                                                          \
            if (mr) {                                                                              \
                ro_fallback(id, ctx, refused_);                                                    \
                fb_ = true;                                                                        \
            }                                                                                      \
        }                                                                                          \
        int err_ = errno;                                                                          \
        mr_account(id, v_, fb_, (intptr_t)mr, err_, mr != NULL, length);                           \
        errno = err_;                                                                              \
    } while (0)

struct ibv_mr *shim_hook_ibv_reg_mr_1_1(struct ibv_pd *pd, void *addr, size_t length, int access)
{
    shim_fn_ibv_reg_mr_1_1 real = SHIM_IBV_REAL(ibv_reg_mr, 1_1);
    struct ibv_mr *mr;

    if (!real) {
        ibv_missing(__func__);
        errno = ENOSYS;
        return NULL;
    }
    if (!pd || SHIM_IBV_INTERNAL(SHIM_HK_ibv_reg_mr_1_1, real) ||
        !shim_enter(SHIM_HK_ibv_reg_mr_1_1))
        return real(pd, addr, length, access);
#define REG(a) real(pd, addr, length, a)
    SHIM_REG_MR(SHIM_HK_ibv_reg_mr_1_1, pd->context, length, access, REG);
#undef REG
    shim_leave();
    return mr;
}

struct ibv_mr *shim_hook_ibv_reg_mr_iova_1_7(struct ibv_pd *pd, void *addr, size_t length,
                                             uint64_t iova, int access)
{
    shim_fn_ibv_reg_mr_iova_1_7 real = SHIM_IBV_REAL(ibv_reg_mr_iova, 1_7);
    struct ibv_mr *mr;

    if (!real) {
        ibv_missing(__func__);
        errno = ENOSYS;
        return NULL;
    }
    if (!pd || SHIM_IBV_INTERNAL(SHIM_HK_ibv_reg_mr_iova_1_7, real) ||
        !shim_enter(SHIM_HK_ibv_reg_mr_iova_1_7))
        return real(pd, addr, length, iova, access);
#define REG(a) real(pd, addr, length, iova, a)
    SHIM_REG_MR(SHIM_HK_ibv_reg_mr_iova_1_7, pd->context, length, access, REG);
#undef REG
    shim_leave();
    return mr;
}

struct ibv_mr *shim_hook_ibv_reg_mr_iova2_1_8(struct ibv_pd *pd, void *addr, size_t length,
                                              uint64_t iova, unsigned int access)
{
    shim_fn_ibv_reg_mr_iova2_1_8 real = SHIM_IBV_REAL(ibv_reg_mr_iova2, 1_8);
    struct ibv_mr *mr;

    if (!real) {
        ibv_missing(__func__);
        errno = ENOSYS;
        return NULL;
    }
    if (!pd || SHIM_IBV_INTERNAL(SHIM_HK_ibv_reg_mr_iova2_1_8, real) ||
        !shim_enter(SHIM_HK_ibv_reg_mr_iova2_1_8))
        return real(pd, addr, length, iova, access);
#define REG(a) real(pd, addr, length, iova, (unsigned int)(a))
    SHIM_REG_MR(SHIM_HK_ibv_reg_mr_iova2_1_8, pd->context, length, access, REG);
#undef REG
    shim_leave();
    return mr;
}

struct ibv_mr *shim_hook_ibv_reg_dmabuf_mr_1_12(struct ibv_pd *pd, uint64_t offset, size_t length,
                                                uint64_t iova, int fd, int access)
{
    shim_fn_ibv_reg_dmabuf_mr_1_12 real = SHIM_IBV_REAL(ibv_reg_dmabuf_mr, 1_12);
    struct ibv_mr *mr;

    if (!real) {
        ibv_missing(__func__);
        errno = ENOSYS;
        return NULL;
    }
    if (!pd || SHIM_IBV_INTERNAL(SHIM_HK_ibv_reg_dmabuf_mr_1_12, real) ||
        !shim_enter(SHIM_HK_ibv_reg_dmabuf_mr_1_12))
        return real(pd, offset, length, iova, fd, access);
#define REG(a) real(pd, offset, length, iova, fd, a)
    SHIM_REG_MR(SHIM_HK_ibv_reg_dmabuf_mr_1_12, pd->context, length, access, REG);
#undef REG
    shim_leave();
    return mr;
}

int shim_hook_ibv_rereg_mr_1_1(struct ibv_mr *mr, int flags, struct ibv_pd *pd, void *addr,
                               size_t length, int access)
{
    shim_fn_ibv_rereg_mr_1_1 real = SHIM_IBV_REAL(ibv_rereg_mr, 1_1);
    enum shim_hook_id id = SHIM_HK_ibv_rereg_mr_1_1;

    if (!real) {
        ibv_missing(__func__);
        return ENOSYS;
    } /* ibv_rereg_mr returns an IBV_REREG_MR_ERR_* or errno value */
    if (!mr || SHIM_IBV_INTERNAL(id, real) || !shim_enter(id))
        return real(mr, flags, pd, addr, length, access);

    /* Only a change of access flags is ours to touch. */
    if (!(flags & IBV_REREG_MR_CHANGE_ACCESS)) {
        int rc = real(mr, flags, pd, addr, length, access);
        int err = errno;
        shim_count_result(id, SHIM_C_NOT_APPLICABLE, rc, err);
        shim_leave();
        errno = err;
        return rc;
    }
    struct ibv_context *ctx = (flags & IBV_REREG_MR_CHANGE_PD) && pd ? pd->context : mr->context;
    size_t len = (flags & IBV_REREG_MR_CHANGE_TRANSLATION) ? length : mr->length;
    int acc;
    enum pol_verdict v = mr_decide(ctx, len, access, __builtin_return_address(0), &acc);
    bool fb = false;
    int rc = real(mr, flags, pd, addr, length, acc);
    /* rereg reports failure as a non-zero return, the cause in errno. */
    if (rc && ro_refused(v, errno)) {
        int refused = errno;
        rc = real(mr, flags, pd, addr, length, access);
        if (rc == 0) {
            ro_fallback(id, ctx, refused);
            fb = true;
        }
    }
    int err = errno;
    mr_account(id, v, fb, rc, err, rc == 0, len);
    shim_leave();
    errno = err;
    return rc;
}

/* One verdict per call: injected beats observed beats not-applicable beats
 * skipped, so a traffic class on a non-global address is still reported as
 * not applicable when no service level is configured. */
static enum pol_verdict qp_verdict(enum pol_verdict a, enum pol_verdict b)
{
    static const int rank[] = {
        [POL_INJECT] = 3, [POL_OBSERVED] = 2, [POL_NOT_APPLICABLE] = 1, [POL_SKIP_POLICY] = 0};
    return rank[a] >= rank[b] ? a : b;
}

int shim_hook_ibv_modify_qp_1_1(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask)
{
    shim_fn_ibv_modify_qp_1_1 real = SHIM_IBV_REAL(ibv_modify_qp, 1_1);
    enum shim_hook_id id = SHIM_HK_ibv_modify_qp_1_1;

    if (!real) {
        ibv_missing(__func__);
        return ENOSYS;
    }
    if (!qp || !attr || SHIM_IBV_INTERNAL(id, real) || !shim_enter(id))
        return real(qp, attr, attr_mask);

    struct pol_rdma_qp req = {
        .device = dev_name(qp->context),
        .attr_mask = attr_mask,
        .is_global = attr->ah_attr.is_global != 0,
        .traffic_class = attr->ah_attr.grh.traffic_class,
        .sl = attr->ah_attr.sl,
        .object = caller_object(shim_cfg(), __builtin_return_address(0)),
    };
    struct pol_rdma_qp_dec dec;
    pol_rdma_qp_attrs(shim_cfg(), &req, &dec);
    knob_count(POL_KNOB_TRAFFIC_CLASS, dec.tc_knob);
    knob_count(POL_KNOB_SERVICE_LEVEL, dec.sl_knob);

    int rc;
    if (dec.tc == POL_INJECT || dec.sl == POL_INJECT) {
        /* The caller's attr is never written: modify a copy. */
        struct ibv_qp_attr copy = *attr;
        copy.ah_attr.grh.traffic_class = dec.traffic_class;
        copy.ah_attr.sl = dec.service_level;
        rc = real(qp, &copy, attr_mask);
    } else {
        rc = real(qp, attr, attr_mask);
    }
    int err = errno;

    shim_count_result(id, shim_verdict_ctr(qp_verdict(dec.tc, dec.sl)), rc, err);
    shim_leave();
    errno = err;
    return rc;
}

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_ibv.def"
#undef HOOK
