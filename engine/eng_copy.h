/*
 * Device <-> host staging for registrations of location "cuda:N".
 *
 * The engine never links libcudart: the runtime is dlopen'ed on the first
 * cuda:N registration, and copies run on a non-blocking stream of the
 * engine's own per device, through the pinned pools of eng_cudacopy.c or
 * straight into pinned staging buffers, advanced by a progress thread that
 * polls events.
 */
#ifndef TESHIM_ENG_COPY_H
#define TESHIM_ENG_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Parse a location: "cpu" -> -1, "cuda:N" -> N (0..1023). -EINVAL otherwise.
 */
int eng_location_parse(const char *loc, int *dev);

/*
 * Load the process-wide CUDA runtime (once; the first engine's cuda.* knobs
 * size the pools). 0, or -ENODEV (cause logged) when no CUDA runtime can be
 * dlopen'ed.
 */
struct teshim_engine;
int eng_copy_open(struct teshim_engine *eng);

/*
 * Tasks whose local memory is on a CUDA device (cuda_dev >= 0) are staged
 * through host memory around the transport, by the provider's pinned pools,
 * with every copy advanced by a progress thread that polls events: neither
 * the submitting thread nor an I/O thread waits for a copy.
 *   WRITE: device -> staging, then the transport sends the staging.
 *   READ:  the transport receives into the staging, then staging -> device,
 *          and only then the task completes.
 */
struct eng_task;
/* Start a device task (instead of the transport's start). */
void eng_dev_task_start(struct teshim_engine *eng, struct eng_task *t);
/* The transport finished a device task with err: true if the staging layer
 * finishes it later (READ: the copy to the device), false if the caller
 * finishes it now (the staging was released). */
bool eng_dev_task_transport_done(struct eng_task *t, int err);
/* Wait until no device task of eng is in a staging copy and no copy of
 * eng_dev_copy is unfinished (engine destroy); tasks in a transport are
 * not waited for. */
void eng_dev_quiesce(struct teshim_engine *eng);

/*
 * Staging buffers: at least len bytes of host memory, pinned while the
 * staging share of cuda.pinned_max_bytes allows (the share one pool of the
 * pinned pools leaves), else pageable. Reused through a bounded cache:
 * eng_stage_put keeps or frees. NULL when out of memory.
 */
void *eng_stage_get(uint64_t len);
void eng_stage_put(void *p);
uint64_t eng_stage_cap(const void *p);
bool eng_stage_pinned(const void *p);

/*
 * Copy n bytes between a staging buffer and device memory of CUDA device
 * `device`, asynchronously, on the progress thread: done(arg, err) is called
 * once from that thread when the copy completed (err 0) or failed (-EIO,
 * -ENODEV, -ENOMEM; logged). Returns 0, or -ENOMEM / -EAGAIN without
 * calling done. eng_dev_quiesce(eng) waits for it.
 */
int eng_dev_copy(struct teshim_engine *eng, bool to_device, void *stage, void *dev, uint64_t n,
                 int device, void (*done)(void *arg, int err), void *arg);

#endif
