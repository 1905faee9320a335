/*
 * The copy service: device <-> host copies for registrations of location
 * "cuda:N", and the host staging buffers they go through.
 *
 * The engine never links libcudart: the runtime is dlopen'ed on the first
 * cuda:N registration, and copies run on a non-blocking stream of the
 * engine's own per device, through the pinned pools of eng_cudacopy.c or
 * straight into pinned staging buffers, advanced by a progress thread that
 * polls events: neither a submitting thread nor an I/O thread waits for a
 * copy. Used by the staging wrapper (eng_tp_stage.c) and by transports
 * that serve device memory. Not installed.
 */
#ifndef TESHIM_ENG_COPY_H
#define TESHIM_ENG_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct eng_ctx;

/*
 * Parse a location: "cpu" -> -1, "cuda:N" -> N (0..1023). -EINVAL otherwise.
 */
int eng_location_parse(const char *loc, int *dev);

/*
 * Load the process-wide CUDA runtime (once) and make eng's pools and
 * staging cache, sized by eng's own cuda.* settings (once per engine).
 * 0, or -ENODEV (cause logged) when no CUDA runtime can be dlopen'ed, or
 * -ENOMEM.
 */
int eng_copy_open(struct eng_ctx *eng);
/* Free eng's pools and staging cache: engine destroy, once no copy runs
 * and every staging buffer came back. */
void eng_copy_close(struct eng_ctx *eng);

/*
 * Staging buffers: at least len bytes of host memory, pinned while the
 * staging share of eng's cuda.pinned_max_bytes allows (the share one pool
 * of the pinned pools leaves), else pageable. Reused through eng's bounded
 * cache: eng_stage_put keeps or frees. NULL when out of memory.
 */
void *eng_stage_get(struct eng_ctx *eng, uint64_t len);
void eng_stage_put(void *p);
uint64_t eng_stage_cap(const void *p);
bool eng_stage_pinned(const void *p);

/*
 * Copy n bytes between a staging buffer and device memory of CUDA device
 * `device`, asynchronously, on the progress thread: done(arg, err) is called
 * once from that thread when the copy completed (err 0) or failed (-EIO,
 * -ENODEV, -ENOMEM; logged). Returns 0, or -ENOMEM / -EAGAIN
 * without calling done. eng_dev_quiesce(eng) waits for it.
 */
int eng_dev_copy(struct eng_ctx *eng, bool to_device, void *stage, void *dev, uint64_t n,
                 int device, void (*done)(void *arg, int err), void *arg);

/* Wait until no copy of eng_dev_copy for eng is queued, running, or in its
 * done callback (engine and transport destroy). */
void eng_dev_quiesce(struct eng_ctx *eng);

#endif
