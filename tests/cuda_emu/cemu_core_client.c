/*
 * The emulated runtime's way to the emulated driver, as NVIDIA's runtime
 * (shared or static) reaches libcuda.so.1 (FACTS.md): dlopen it,
 * dlsym(handle, "cuGetProcAddress_v2") once, ask that function for
 * "cuGetProcAddress" (12000) and make every later lookup through the
 * function it returned, by base name, version and flags (flags 0 for the
 * legacy stream, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM for the
 * per-thread flavour). The machinery shared with the driver comes through
 * cuGetExportTable (cemu_core.h); the copy entry points (cemu_drv) are what
 * cudaMemcpy, cudaMemcpyAsync and the cudaMemcpy2D family call, so a teshim that substitutes its
 * own cuGetProcAddress sees them as it would in a real process.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <string.h>

#include "cemu_core.h"

struct cemu_drv_copy cemu_drv;
static const struct cemu_core *core;

typedef CUresult (*gpa_fn)(const char *symbol, void **pfn, int version, cuuint64_t flags,
                           CUdriverProcAddressQueryResult *status);

static gpa_fn gpa;

/* Look name up at version with flags; false if the driver has no such entry. */
static bool get(const char *name, int version, cuuint64_t flags, void *out)
{
    void *fn = NULL;
    CUdriverProcAddressQueryResult st;

    if (gpa(name, &fn, version, flags, &st) != CUDA_SUCCESS || !fn)
        return false;
    memcpy(out, &fn, sizeof(fn));
    return true;
}

#define PTDS CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM

cudaError_t cemu_core_connect(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    void *first;
    CUresult (*init)(unsigned);
    CUresult (*export_table)(const void **, const CUuuid *);
    CUuuid id;
    const void *tab = NULL;
    bool ok = true;

#ifdef CEMU_LIBCUDA_PATH
    /* A sanitizer's dlopen interceptor becomes the caller whose RUNPATH the
     * loader reads: name the test build's driver directly then. */
    if (!h)
        h = dlopen(CEMU_LIBCUDA_PATH, RTLD_NOW | RTLD_LOCAL);
#endif
    if (!h)
        return cudaErrorInsufficientDriver;
    first = dlsym(h, "cuGetProcAddress_v2");
    if (!first)
        return cudaErrorInsufficientDriver;
    memcpy(&gpa, &first, sizeof(gpa));
    /* From here on, only through what the driver says is cuGetProcAddress. */
    if (!get("cuGetProcAddress", 12000, 0, &gpa))
        return cudaErrorInsufficientDriver;
    ok = get("cuInit", 2000, 0, &init) && get("cuGetExportTable", 3000, 0, &export_table);
    for (int f = 0; f < 2 && ok; f++) {
        cuuint64_t fl = f ? PTDS : 0;
        int v = f ? 7000 : 3020;
        ok = get("cuMemcpyHtoD", v, fl, &cemu_drv.htod[f]) &&
             get("cuMemcpyDtoH", v, fl, &cemu_drv.dtoh[f]) &&
             get("cuMemcpy", f ? 7000 : 4000, fl, &cemu_drv.any[f]) &&
             get("cuMemcpyHtoDAsync", v, fl, &cemu_drv.htod_async[f]) &&
             get("cuMemcpyDtoHAsync", v, fl, &cemu_drv.dtoh_async[f]) &&
             get("cuMemcpyAsync", f ? 7000 : 4000, fl, &cemu_drv.any_async[f]) &&
             get("cuMemcpy2DUnaligned", v, fl, &cemu_drv.copy2d[f]) &&
             get("cuMemcpy2DAsync", v, fl, &cemu_drv.copy2d_async[f]);
    }
    if (!ok)
        return cudaErrorInsufficientDriver;
    if (init(0) != CUDA_SUCCESS)
        return cudaErrorInitializationError;
    memcpy(id.bytes, CEMU_CORE_UUID, sizeof(id.bytes));
    if (export_table(&tab, &id) != CUDA_SUCCESS || !tab)
        return cudaErrorInsufficientDriver;
    core = tab;
    if (core->size < sizeof(struct cemu_core))
        return cudaErrorInsufficientDriver;
    return cudaSuccess;
}

/* The machinery, forwarded: the runtime's code calls these names as before. */
/* A test control may come before any CUDA call: connect first. Without a
 * driver the runtime's calls fail before they reach the machinery; a test
 * control then does nothing and reads 0. */
#define FWD(ret, name, params, args)                                                               \
    CEMU_EXPORT ret name params                                                                    \
    {                                                                                              \
        if (!core)                                                                                 \
            cemu_runtime_init();                                                                   \
        return core ? core->name args : (ret)0;                                                    \
    }
#define FWD_VOID(ret, name, params, args)                                                          \
    CEMU_EXPORT ret name params                                                                    \
    {                                                                                              \
        if (!core)                                                                                 \
            cemu_runtime_init();                                                                   \
        if (core)                                                                                  \
            core->name args;                                                                       \
    }
CEMU_CORE_FNS(FWD, FWD_VOID)
