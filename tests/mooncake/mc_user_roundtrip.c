/*
 * A program written against Mooncake's documented C API
 * (transfer_engine_c.h), the way a Mooncake user writes one: nothing in it
 * is teshim's. The test builds it with `pkg-config teshim-mooncake` and
 * runs it: a target process serves a buffer, an initiator process reads
 * it, writes its own pattern over it, reads it back and compares
 * checksums; the target checks what landed in its memory too.
 *
 * Usage: mc_user_roundtrip [BYTES]   exit 0 = round trip intact
 */
#include "transfer_engine_c.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 2654435761u + seed) >> 7);
}

/* Submit one request and poll its status until it is no longer waiting. */
static int transfer(transfer_engine_t engine, int opcode, void *local, segment_id_t seg,
                    uint64_t remote, uint64_t len)
{
    struct transfer_request req = {opcode, local, seg, remote, len};
    struct transfer_status st;
    batch_id_t batch = allocateBatchID(engine, 1);
    int ret;

    if (batch == INVALID_BATCH)
        return -1;
    ret = submitTransfer(engine, batch, &req, 1);
    if (ret) {
        fprintf(stderr, "submitTransfer: %d\n", ret);
        freeBatchID(engine, batch);
        return -1;
    }
    do {
        ret = getTransferStatus(engine, batch, 0, &st);
        if (ret) {
            fprintf(stderr, "getTransferStatus: %d\n", ret);
            return -1;
        }
    } while (st.status == STATUS_WAITING || st.status == STATUS_PENDING);
    if (st.status != STATUS_COMPLETED || st.transferred_bytes != len) {
        fprintf(stderr, "transfer status %d, %llu of %llu bytes\n", st.status,
                (unsigned long long)st.transferred_bytes, (unsigned long long)len);
        freeBatchID(engine, batch);
        return -1;
    }
    return freeBatchID(engine, batch);
}

/* Serve a buffer; tell the parent where; report its checksum when asked. */
static int target(size_t len, int to_parent, int from_parent)
{
    char name[256], cmd;
    unsigned char *buf = malloc(len);
    transfer_engine_t engine;
    uint64_t sum;

    engine = createTransferEngine("P2PHANDSHAKE", "127.0.0.1:12345", "127.0.0.1", 0, 1);
    if (!engine || !buf || getLocalIpAndPort(engine, name, sizeof(name)))
        return 1;
    fill(buf, len, 1);
    if (registerLocalMemory(engine, buf, len, "cpu:0", 1))
        return 1;
    dprintf(to_parent, "%s %llu\n", name, (unsigned long long)(uintptr_t)buf);
    while (read(from_parent, &cmd, 1) == 1) {
        sum = fnv1a(buf, len);
        if (write(to_parent, &sum, sizeof(sum)) != sizeof(sum))
            return 1;
    }
    unregisterLocalMemory(engine, buf);
    destroyTransferEngine(engine);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    size_t len = argc > 1 ? strtoull(argv[1], NULL, 0) : (3u << 20) + 17;
    int up[2], down[2], status, ok = 0;
    char line[512], name[256], cmd = 's';
    unsigned long long remote;
    unsigned char *local;
    uint64_t want, got;
    transfer_engine_t engine = NULL;
    segment_id_t seg;
    FILE *in;
    pid_t pid;

    alarm(60);
    if (pipe(up) || pipe(down))
        return 1;
    pid = fork();
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        _exit(target(len, up[1], down[0]));
    }
    close(up[1]);
    close(down[0]);
    in = fdopen(up[0], "r");
    if (!in || !fgets(line, sizeof(line), in) || sscanf(line, "%255s %llu", name, &remote) != 2) {
        fprintf(stderr, "target did not start\n");
        goto out;
    }
    setvbuf(in, NULL, _IONBF, 0);

    engine = createTransferEngine("P2PHANDSHAKE", "127.0.0.1", "127.0.0.1", 0, 0);
    local = malloc(2 * len);
    if (!engine || !local || !installTransport(engine, "tcp", NULL) ||
        registerLocalMemory(engine, local, 2 * len, "cpu:0", 1)) {
        fprintf(stderr, "initiator setup failed\n");
        goto out;
    }
    seg = openSegment(engine, name);
    if (seg < 0) {
        fprintf(stderr, "openSegment %s: %d\n", name, seg);
        goto out;
    }

    /* read what the target holds */
    fill(local + len, len, 1);
    want = fnv1a(local + len, len);
    memset(local + len, 0, len);
    if (transfer(engine, OPCODE_READ, local + len, seg, remote, len) ||
        fnv1a(local + len, len) != want) {
        fprintf(stderr, "read of the target's buffer: wrong data\n");
        goto out;
    }
    /* write ours over it, read it back */
    fill(local, len, 2);
    want = fnv1a(local, len);
    memset(local + len, 0, len);
    if (transfer(engine, OPCODE_WRITE, local, seg, remote, len) ||
        transfer(engine, OPCODE_READ, local + len, seg, remote, len) ||
        fnv1a(local + len, len) != want) {
        fprintf(stderr, "write then read back: wrong data\n");
        goto out;
    }
    /* and the target's memory holds it */
    if (write(down[1], &cmd, 1) != 1 || fread(&got, sizeof(got), 1, in) != 1 || got != want) {
        fprintf(stderr, "target's checksum differs\n");
        goto out;
    }
    ok = closeSegment(engine, seg) == 0 && unregisterLocalMemory(engine, local) == 0;
    printf("round trip of %zu bytes through %s: checksum %016llx %s\n", len, name,
           (unsigned long long)want, ok ? "ok" : "but cleanup failed");
out:
    destroyTransferEngine(engine);
    close(down[1]);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
        ok = 0;
    return ok ? 0 : 1;
}
