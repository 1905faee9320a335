/*
 * Device <-> host staging for registrations of location "cuda:N".
 *
 * The engine never links libcudart: a copy provider is found at run time.
 * This interface is the seam where the pinned-pool copy engine (issue 5)
 * plugs in: an ops table, asynchronous copies polled by the I/O threads.
 * Until that provider exists, eng_copy_open only checks that a CUDA
 * runtime can be dlopen'ed and transfers of device memory fail with
 * -EOPNOTSUPP.
 */
#ifndef TESHIM_ENG_COPY_H
#define TESHIM_ENG_COPY_H

#include <stdbool.h>
#include <stddef.h>

struct eng_copy;

struct eng_copy_ops {
    size_t size;
    const char *name;
    /* Start copying n bytes device -> host; *token identifies the copy. */
    int (*to_host)(struct eng_copy *c, void *host, const void *dev, size_t n, int device,
                   void **token);
    /* Start copying n bytes host -> device. */
    int (*to_device)(struct eng_copy *c, void *dev, const void *host, size_t n, int device,
                     void **token);
    /* 0 when the copy finished, -EAGAIN while running, else its error. */
    int (*poll)(struct eng_copy *c, void *token);
    void (*close)(struct eng_copy *c);
};

struct eng_copy {
    struct eng_copy_ops ops;
    void *cudart; /* dlopen handle */
};

/*
 * Parse a location: "cpu" -> -1, "cuda:N" -> N (0..1023). -EINVAL otherwise.
 */
int eng_location_parse(const char *loc, int *dev);

/*
 * The process-wide copy provider for device memory. 0 and *c_p, or -ENODEV
 * (cause logged through log) when no CUDA runtime can be dlopen'ed.
 */
struct teshim_engine;
int eng_copy_open(struct teshim_engine *eng, struct eng_copy **c_p);

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
/* Wait until no device task of eng is in a staging copy (engine destroy);
 * tasks in a transport are not waited for. */
void eng_dev_quiesce(struct teshim_engine *eng);

#endif
