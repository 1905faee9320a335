/* Decisions for the CUDA hooks, on plain structs. */
#include "pol_cuda.h"

static bool is_host(enum pol_cuda_mem m)
{
    return m == POL_CUDA_MEM_PAGEABLE || m == POL_CUDA_MEM_PINNED || m == POL_CUDA_MEM_MANAGED;
}

static enum pol_cuda_dir direction(const struct pol_cuda_copy *c)
{
    if (c->src == POL_CUDA_MEM_DEVICE && is_host(c->dst))
        return POL_CUDA_D2H;
    if (is_host(c->src) && c->dst == POL_CUDA_MEM_DEVICE)
        return POL_CUDA_H2D;
    return POL_CUDA_OTHER;
}

unsigned pol_cuda_buffers(const struct pol_config *cfg)
{
    int64_t chunk = pol_int(cfg, POL_CUDA_BOUNCE_CHUNK_BYTES);
    int64_t max = pol_int(cfg, POL_CUDA_PINNED_MAX_BYTES);
    int64_t n = pol_int(cfg, POL_CUDA_BOUNCE_BUFFERS);

    /* A pool larger than the whole budget could never be made: a budget
     * set for fewer buffers keeps working with fewer, down to two. */
    while (n > 2 && chunk * n > max)
        n--;
    return (unsigned)n;
}

size_t pol_cuda_pool_bytes(const struct pol_config *cfg)
{
    return (size_t)pol_int(cfg, POL_CUDA_BOUNCE_CHUNK_BYTES) * pol_cuda_buffers(cfg);
}

enum pol_verdict pol_cuda_copy_quick(const struct pol_config *cfg, size_t bytes)
{
    if (pol_gate_verdict(cfg) == POL_SKIP_POLICY ||
        (!pol_int(cfg, POL_CUDA_BOUNCE) && !pol_int(cfg, POL_CUDA_REGISTER_CACHE)))
        return POL_SKIP_POLICY;
    if ((int64_t)bytes < pol_int(cfg, POL_CUDA_BOUNCE_MIN_BYTES))
        return POL_NOT_APPLICABLE;
    return POL_INJECT;
}

enum pol_verdict pol_cuda_copy(const struct pol_config *cfg, const struct pol_cuda_copy *c,
                               struct pol_cuda_copy_dec *dec)
{
    enum pol_verdict gate = pol_gate_verdict(cfg);
    bool bounce = pol_int(cfg, POL_CUDA_BOUNCE) != 0;
    bool reg = pol_int(cfg, POL_CUDA_REGISTER_CACHE) != 0;
    enum pol_cuda_mem host;

    dec->dir = direction(c);
    dec->bounce = false;
    dec->register_ = false;
    dec->chunk = (size_t)pol_int(cfg, POL_CUDA_BOUNCE_CHUNK_BYTES);
    dec->buffers = pol_cuda_buffers(cfg);
    dec->threads = (unsigned)pol_int(cfg, POL_CUDA_COPY_THREADS);

    if (gate == POL_SKIP_POLICY || (!bounce && !reg))
        return POL_SKIP_POLICY;
    if (dec->dir == POL_CUDA_OTHER)
        return POL_NOT_APPLICABLE;
    /* A kind that contradicts the pointers is the real call's error to report. */
    if (c->kind != CUABI_MEMCPY_DEFAULT &&
        c->kind != (dec->dir == POL_CUDA_H2D ? CUABI_MEMCPY_H2D : CUABI_MEMCPY_D2H))
        return POL_NOT_APPLICABLE;
    host = dec->dir == POL_CUDA_H2D ? c->src : c->dst;
    /* Pinned and managed memory gain nothing from a bounce. */
    if (host != POL_CUDA_MEM_PAGEABLE)
        return POL_NOT_APPLICABLE;
    /* A capture records the call into a graph: it must see the call itself. */
    if (c->capturing)
        return POL_NOT_APPLICABLE;
    /* Our own calls could not leave the application's pending error as it was. */
    if (c->error_pending)
        return POL_NOT_APPLICABLE;
    if ((int64_t)c->bytes < pol_int(cfg, POL_CUDA_BOUNCE_MIN_BYTES))
        return POL_NOT_APPLICABLE;
    dec->bounce = bounce;
    dec->register_ = reg && (int64_t)c->bytes >= pol_int(cfg, POL_CUDA_REGISTER_MIN_BYTES);
    if (!dec->bounce && !dec->register_)
        return POL_NOT_APPLICABLE;
    return gate;
}
