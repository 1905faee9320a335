/*
 * delayline: a constant one-way delay between two network interfaces, in user
 * space, for kernels built without sch_netem (this project's CI kernel).
 * Every frame that arrives on one interface of a pair leaves on the other
 * DELAY later, in arrival order, like `tc qdisc add ... netem delay DELAY`
 * without jitter, loss or reordering.
 *
 *   delayline --delay-us N [--limit PACKETS] IFA:IFB [IFA:IFB ...]
 *
 * Both interfaces of a pair live in the namespace the program runs in and
 * carry no address: a veth end towards a host and a veth end whose peer is a
 * bridge port. The TCP stacks at both ends are the kernel's and see the delay
 * as a longer path, which is what the namespace harness needs: congestion
 * windows, pacing and retransmission timers that grow with the round trip.
 *
 * Frames are read and written through AF_PACKET sockets with PACKET_VNET_HDR,
 * so a TSO/GSO frame of up to 64 KiB crosses as one frame with its
 * segmentation and checksum-offload state and is segmented later (by tbf or
 * the receiving veth), as netem passes it on. A direction holding --limit
 * frames (default 10000, netem's default 1000 is too few for a 64 KiB GSO
 * queue at a 2 ms delay) drops the next one, as netem does.
 *
 * Prints "delayline ready" once every socket is bound, and on SIGTERM or
 * SIGINT one line per direction: "IFA>IFB forwarded N dropped_full N
 * truncated N send_errors N" and exits 0. Exit status 1 on a socket error, 2 on bad
 * arguments.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 16
#define MAX_DIRS (2 * MAX_PAIRS)
/* virtio_net_hdr (10 bytes) + the largest GSO frame a veth builds by default
 * (gso_max_size 65536) + an Ethernet header, with room to spare: a larger
 * frame is counted as truncated and dropped. */
#define FRAME_MAX (256 * 1024)
#define RX_BURST 64

struct frame {
    struct frame *next;
    uint64_t due_ns;
    size_t len;
    unsigned char data[];
};

/* One direction: frames read from fd_in wait in a FIFO until due, then go out
 * on fd_out. A constant delay keeps the FIFO sorted by due time. */
struct dir {
    char name[2 * IF_NAMESIZE + 2];
    int fd_in, fd_out;
    struct frame *head, *tail;
    unsigned queued;
    uint64_t forwarded, dropped_full, truncated, send_errors;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A packet socket bound to ifname that hands over frames with their
 * virtio_net_hdr and never sees the frames it (or anyone) sends. */
static int open_port(const char *ifname)
{
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL)};
    int one = 1, fd;

    sll.sll_ifindex = (int)if_nametoindex(ifname);
    if (!sll.sll_ifindex) {
        fprintf(stderr, "delayline: interface %s: %m\n", ifname);
        return -1;
    }
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) {
        fprintf(stderr, "delayline: packet socket for %s: %m\n", ifname);
        return -1;
    }
    if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) ||
        setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) ||
        setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&sll, sizeof(sll))) {
        fprintf(stderr, "delayline: packet socket options or bind on %s: %m\n", ifname);
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what fd_in holds now (a bounded burst), queued due at now + delay. */
static int take_in(struct dir *d, uint64_t delay_ns, unsigned limit, unsigned char *buf)
{
    for (int n = 0; n < RX_BURST; n++) {
        ssize_t len = recv(d->fd_in, buf, FRAME_MAX, MSG_TRUNC);
        struct frame *f;

        if (len < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            fprintf(stderr, "delayline: %s: receive: %m\n", d->name);
            return -1;
        }
        if (len > FRAME_MAX) {
            d->truncated++;
            continue;
        }
        if (d->queued >= limit) {
            d->dropped_full++;
            continue;
        }
        f = malloc(sizeof(*f) + (size_t)len);
        if (!f) {
            d->dropped_full++;
            continue;
        }
        memcpy(f->data, buf, (size_t)len);
        f->len = (size_t)len;
        f->due_ns = now_ns() + delay_ns;
        f->next = NULL;
        if (d->tail)
            d->tail->next = f;
        else
            d->head = f;
        d->tail = f;
        d->queued++;
    }
    return 0;
}

/* Sends every frame that is due. A full transmit queue (EAGAIN, ENOBUFS)
 * leaves the frame at the head for the next pass; any other error drops it,
 * as a qdisc would. Returns when the head is not yet due. */
static void give_out(struct dir *d, uint64_t now)
{
    while (d->head && d->head->due_ns <= now) {
        struct frame *f = d->head;

        if (send(d->fd_out, f->data, f->len, 0) < 0) {
            if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR)
                return;
            d->send_errors++;
        } else {
            d->forwarded++;
        }
        d->head = f->next;
        if (!d->head)
            d->tail = NULL;
        d->queued--;
        free(f);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: delayline --delay-us N [--limit PACKETS] IFA:IFB [IFA:IFB ...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct dir dirs[MAX_DIRS];
    struct pollfd pfd[MAX_DIRS];
    int ndirs = 0, rc = 1;
    long delay_us = -1, limit = 10000;
    unsigned char *buf;
    struct sigaction sa = {.sa_handler = on_signal};
    sigset_t stop_sigs, wait_mask;

    for (int i = 1; i < argc; i++) {
        char *end, *colon;

        if (!strcmp(argv[i], "--delay-us") && i + 1 < argc) {
            delay_us = strtol(argv[++i], &end, 10);
            if (*end || delay_us < 0 || delay_us > 10000000) {
                fprintf(stderr, "delayline: --delay-us %s: not 0..10000000\n", argv[i]);
                usage();
            }
        } else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            limit = strtol(argv[++i], &end, 10);
            if (*end || limit < 1 || limit > 10000000) {
                fprintf(stderr, "delayline: --limit %s: not 1..10000000\n", argv[i]);
                usage();
            }
        } else if ((colon = strchr(argv[i], ':')) && colon != argv[i] && colon[1] &&
                   ndirs + 2 <= MAX_DIRS) {
            *colon = '\0';
            const char *a = argv[i], *b = colon + 1;
            int fa = open_port(a), fb = fa < 0 ? -1 : open_port(b);

            if (fa < 0 || fb < 0)
                return 1;
            dirs[ndirs] = (struct dir){.fd_in = fa, .fd_out = fb};
            snprintf(dirs[ndirs].name, sizeof(dirs[ndirs].name), "%s>%s", a, b);
            dirs[ndirs + 1] = (struct dir){.fd_in = fb, .fd_out = fa};
            snprintf(dirs[ndirs + 1].name, sizeof(dirs[ndirs + 1].name), "%s>%s", b, a);
            ndirs += 2;
        } else {
            fprintf(stderr, "delayline: %s: not an option or IFA:IFB pair (at most %d pairs)\n",
                    argv[i], MAX_PAIRS);
            usage();
        }
    }
    if (delay_us < 0 || !ndirs)
        usage();
    buf = malloc(FRAME_MAX);
    if (!buf)
        return 1;
    /* the signals are taken only inside ppoll (its mask unblocks them):
     * one arriving between the stop check and the wait would otherwise be
     * handled before the wait, which then sleeps without a timeout */
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_sigs, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i < ndirs; i++)
        pfd[i] = (struct pollfd){.fd = dirs[i].fd_in, .events = POLLIN};
    printf("delayline ready: %d directions, delay %ld us, limit %ld frames\n", ndirs, delay_us,
           limit);
    fflush(stdout);

    while (!stop_flag) {
        uint64_t now = now_ns(), next = UINT64_MAX;
        struct timespec ts, *tsp = NULL;

        for (int i = 0; i < ndirs; i++) {
            give_out(&dirs[i], now);
            if (dirs[i].head && dirs[i].head->due_ns < next)
                next = dirs[i].head->due_ns;
        }
        if (next != UINT64_MAX) {
            /* a head left behind by a full transmit queue is retried soon */
            uint64_t wait = next > now ? next - now : 20000;

            ts = (struct timespec){.tv_sec = (time_t)(wait / 1000000000u),
                                   .tv_nsec = (long)(wait % 1000000000u)};
            tsp = &ts;
        }
        if (ppoll(pfd, (nfds_t)ndirs, tsp, &wait_mask) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "delayline: poll: %m\n");
            goto out;
        }
        for (int i = 0; i < ndirs; i++)
            if ((pfd[i].revents & POLLIN) &&
                take_in(&dirs[i], (uint64_t)delay_us * 1000u, (unsigned)limit, buf))
                goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < ndirs; i++) {
        printf("%s forwarded %llu dropped_full %llu truncated %llu send_errors %llu\n",
               dirs[i].name, (unsigned long long)dirs[i].forwarded,
               (unsigned long long)dirs[i].dropped_full, (unsigned long long)dirs[i].truncated,
               (unsigned long long)dirs[i].send_errors);
        while (dirs[i].head) {
            struct frame *f = dirs[i].head;

            dirs[i].head = f->next;
            free(f);
        }
    }
    free(buf);
    return rc;
}
