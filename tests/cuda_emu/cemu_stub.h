/*
 * Stubs for the CUDA runtime functions the emulation does not implement
 * (generated into cemu_stubs_gen.c by cemu_gen_stubs.cmake). Compiled
 * without the CUDA headers: a stub's prototype is not the real one, only its
 * return convention is. Arguments are ignored.
 */
#ifndef TESHIM_CEMU_STUB_H
#define TESHIM_CEMU_STUB_H

/* Report the call (once per name with CEMU_TRACE set), set the calling
 * thread's last error and return cudaErrorNotSupported. */
int cemu_not_supported(const char *name);

#define CEMU_STUB(name)                                                                            \
    int name(void);                                                                                \
    __attribute__((visibility("default"))) int name(void)                                          \
    {                                                                                              \
        return cemu_not_supported(#name);                                                          \
    }

/* nvcc's registration entry points return pointers or nothing: NULL. */
#define CEMU_STUB_NULL(name)                                                                       \
    void *name(void);                                                                              \
    __attribute__((visibility("default"))) void *name(void)                                        \
    {                                                                                              \
        cemu_not_supported(#name);                                                                 \
        return 0;                                                                                  \
    }

/* cudaCreateChannelDesc returns struct cudaChannelFormatDesc (x, y, z, w, f)
 * by value: a zeroed struct of that layout. */
struct cemu_channel_desc {
    int x, y, z, w, f;
};
#define CEMU_STUB_STRUCT(name)                                                                     \
    struct cemu_channel_desc name(void);                                                           \
    __attribute__((visibility("default"))) struct cemu_channel_desc name(void)                     \
    {                                                                                              \
        struct cemu_channel_desc d = {0, 0, 0, 0, 0};                                              \
        cemu_not_supported(#name);                                                                 \
        return d;                                                                                  \
    }

#endif
