/* Location strings and the run-time lookup of a CUDA runtime. */
#include "eng.h"
#include "eng_copy.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

int eng_location_parse(const char *loc, int *dev)
{
    char *end;
    long n;

    if (!loc)
        return -EINVAL;
    if (!strcmp(loc, "cpu")) {
        *dev = -1;
        return 0;
    }
    if (strncmp(loc, "cuda:", 5) || loc[5] < '0' || loc[5] > '9')
        return -EINVAL;
    errno = 0;
    n = strtol(loc + 5, &end, 10);
    if (errno || *end || n > 1023)
        return -EINVAL;
    *dev = (int)n;
    return 0;
}

static int copy_unsupported(struct eng_copy *c, void *a, const void *b, size_t n, int device,
                            void **token)
{
    return -EOPNOTSUPP;
}

static int copy_to_device_unsupported(struct eng_copy *c, void *dev, const void *host, size_t n,
                                      int device, void **token)
{
    return -EOPNOTSUPP;
}

static int copy_poll_unsupported(struct eng_copy *c, void *token)
{
    return -EOPNOTSUPP;
}

static void copy_close(struct eng_copy *c)
{
}

static pthread_mutex_t copy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct eng_copy copy_cudart;
static int copy_state; /* 0 untried, 1 loaded, <0 error */

int eng_copy_open(struct teshim_engine *eng, struct eng_copy **c_p)
{
    static const char *const names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
    int ret;

    pthread_mutex_lock(&copy_lock);
    if (!copy_state) {
        copy_state = -ENODEV;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
            if (!h)
                continue;
            copy_cudart.cudart = h;
            copy_cudart.ops = (struct eng_copy_ops){
                .size = sizeof(struct eng_copy_ops),
                .name = names[i],
                .to_host = copy_unsupported,
                .to_device = copy_to_device_unsupported,
                .poll = copy_poll_unsupported,
                .close = copy_close,
            };
            copy_state = 1;
            break;
        }
    }
    ret = copy_state < 0 ? copy_state : 0;
    pthread_mutex_unlock(&copy_lock);
    if (ret) {
        eng_err(eng, "cuda memory: no CUDA runtime could be loaded (%s): %s", names[0],
                "libcudart.so.13/.12 not found");
        return ret;
    }
    *c_p = &copy_cudart;
    return 0;
}
