/*
 * A program built against an installed engine, like a user's: only
 * <teshim/engine.h> and -lteshim_engine from pkg-config or the CMake
 * package. It serves on a loopback port, registers a buffer and exits 0.
 */
#include <teshim/engine.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    static char buf[1 << 16];
    struct teshim_engine_opts opts;
    struct teshim_engine *eng = NULL;
    int rc, port;

    memset(&opts, 0, sizeof(opts));
    opts.size = sizeof(opts);
    opts.listen = "127.0.0.1:0";
    opts.no_policy = true;
    rc = teshim_engine_create(&opts, &eng);
    if (rc != 0) {
        fprintf(stderr, "teshim_engine_create: %s\n", strerror(-rc));
        return 1;
    }
    port = teshim_engine_port(eng);
    rc = teshim_register(eng, buf, sizeof(buf), "cpu", true);
    if (rc == 0)
        rc = teshim_unregister(eng, buf);
    teshim_engine_destroy(eng);
    if (port <= 0 || rc != 0) {
        fprintf(stderr, "port %d, register/unregister: %s\n", port, strerror(-rc));
        return 1;
    }
    printf("engine served on port %d\n", port);
    return 0;
}
