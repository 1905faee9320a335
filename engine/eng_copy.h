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

#endif
