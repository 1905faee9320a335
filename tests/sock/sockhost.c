/*
 * A small host program built like an unmodified application (nothing of
 * teshim linked): the socket hook tests run it under LD_PRELOAD and read what
 * it prints, one "key value" pair per line.
 *
 *   sockhost opts ADDR PORT [preset]   connect to an own listener, print options
 *                                      of both ends; preset: set some first
 *   sockhost errno ADDR PORT           passthrough return values and errno
 *   sockhost accept4 ADDR PORT         accept4 flags as seen by fcntl
 *   sockhost hold ADDR PORT N          N connections held open, then one more
 *   sockhost burst ADDR PORT N HOLD_MS N threads connect at once, hold, close
 *   sockhost fork ADDR PORT            options in a forked and an exec'd child
 *   sockhost connect ADDR PORT         one blocking connect, its result
 *   sockhost acceptloop ADDR PORT N    a non-blocking listener polled by an accept
 *                                      loop, as Mooncake's: N empty polls, then a
 *                                      non-blocking connect is accepted
 *   sockhost loop ADDR PORT MS STOP    a long-running host: a new connection every
 *                                      MS ms, "conn I tos V at_ms T" each (T:
 *                                      CLOCK_MONOTONIC), until file STOP exists
 *                                      (at most 60 s)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_storage target;
static socklen_t target_len;
static int family;

static void die(const char *what)
{
    fprintf(stderr, "sockhost: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void parse_target(const char *addr, const char *port)
{
    memset(&target, 0, sizeof(target));
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&target;
        family = AF_INET6;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)atoi(port));
        if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1)
            die("address");
        target_len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&target;
        family = AF_INET;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)atoi(port));
        if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1)
            die("address");
        target_len = sizeof(*s4);
    }
}

static int make_listener(void)
{
    int one = 1;
    int fd = socket(family, SOCK_STREAM, 0);

    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&target, target_len) != 0)
        die("bind");
    if (listen(fd, 128) != 0)
        die("listen");
    return fd;
}

static int getopt_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof(v);

    if (getsockopt(fd, level, name, &v, &l) != 0)
        return -1;
    return v;
}

static void print_opts(const char *who, int fd)
{
    if (family == AF_INET)
        printf("%s_tos %d\n", who, getopt_int(fd, IPPROTO_IP, IP_TOS));
    else
        printf("%s_tclass %d\n", who, getopt_int(fd, IPPROTO_IPV6, IPV6_TCLASS));
    printf("%s_priority %d\n", who, getopt_int(fd, SOL_SOCKET, SO_PRIORITY));
    printf("%s_nodelay %d\n", who, getopt_int(fd, IPPROTO_TCP, TCP_NODELAY));
    printf("%s_sndbuf %d\n", who, getopt_int(fd, SOL_SOCKET, SO_SNDBUF));
    printf("%s_rcvbuf %d\n", who, getopt_int(fd, SOL_SOCKET, SO_RCVBUF));
    printf("%s_keepalive %d\n", who, getopt_int(fd, SOL_SOCKET, SO_KEEPALIVE));
    printf("%s_keepidle %d\n", who, getopt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE));
    printf("%s_keepintvl %d\n", who, getopt_int(fd, IPPROTO_TCP, TCP_KEEPINTVL));
    printf("%s_keepcnt %d\n", who, getopt_int(fd, IPPROTO_TCP, TCP_KEEPCNT));
    printf("%s_user_timeout %d\n", who, getopt_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT));
}

static int cmd_opts(int preset)
{
    int lfd = make_listener();
    int c = socket(family, SOCK_STREAM, 0);

    if (c < 0)
        die("socket");
    if (preset) {
        /* What an application may set itself before connecting. */
        int tos = 0x20, buf = 65536, idle = 99;
        if (family == AF_INET)
            setsockopt(c, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
        else
            setsockopt(c, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof(tos));
        setsockopt(c, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        setsockopt(c, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    }
    if (connect(c, (struct sockaddr *)&target, target_len) != 0)
        die("connect");
    int s = accept(lfd, NULL, NULL);
    if (s < 0)
        die("accept");
    print_opts("cli", c);
    print_opts("srv", s);
    close(s);
    close(c);
    close(lfd);
    return 0;
}

static void report(const char *name, int rc)
{
    printf("%s %d %s\n", name, rc, rc < 0 ? strerrorname_np(errno) : "-");
}

static int cmd_errno(void)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int fd, nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

    /* A port nobody listens on: the target itself. */
    fd = socket(family, SOCK_STREAM, 0);
    report("connect_refused", connect(fd, (struct sockaddr *)&target, target_len));
    report("connect_again", connect(fd, (struct sockaddr *)&target, target_len));
    close(fd);
    report("connect_badfd", connect(9999, (struct sockaddr *)&target, target_len));
    report("connect_notsock", connect(nul, (struct sockaddr *)&target, target_len));
    report("connect_null", connect(socket(family, SOCK_STREAM, 0), NULL, 0));
    report("connect_short", connect(socket(family, SOCK_STREAM, 0), (struct sockaddr *)&target, 4));
    snprintf(un.sun_path, sizeof(un.sun_path), "/nonexistent/teshim.sock");
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    report("connect_unix", connect(fd, (struct sockaddr *)&un, sizeof(un)));
    close(fd);
    fd = socket(family, SOCK_DGRAM, 0);
    report("connect_udp", connect(fd, (struct sockaddr *)&target, target_len));
    close(fd);
    report("socket_badtype", socket(family, 999, 0));
    report("socket_badfamily", socket(12345, SOCK_STREAM, 0));
    report("listen_badfd", listen(9999, 1));
    report("listen_notsock", listen(nul, 1));
    fd = socket(family, SOCK_STREAM, 0);
    report("accept_notlistening", accept(fd, NULL, NULL));
    report("accept4_badflags", accept4(fd, NULL, NULL, 0x7fff0000));
    report("accept_badfd", accept(9999, NULL, NULL));
    report("accept4_badfd", accept4(9999, NULL, NULL, SOCK_CLOEXEC));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    listen(fd, 1);
    report("accept_wouldblock", accept(fd, NULL, NULL));
    close(fd);
    report("close_badfd", close(9999));
    report("close_negative", close(-1));
    close(nul);
    report("close_twice", close(nul));
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int lfd = make_listener();
    report("connect_nonblock", connect(fd, (struct sockaddr *)&target, target_len));
    close(lfd);
    close(fd);
    return 0;
}

static int cmd_accept4(void)
{
    int lfd = make_listener();
    int c1 = socket(family, SOCK_STREAM, 0), c2 = socket(family, SOCK_STREAM, 0);

    if (connect(c1, (struct sockaddr *)&target, target_len) != 0 ||
        connect(c2, (struct sockaddr *)&target, target_len) != 0)
        die("connect");
    int a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    int b = accept4(lfd, NULL, NULL, 0);
    if (a < 0 || b < 0)
        die("accept4");
    printf("flags_cloexec %d\n", (fcntl(a, F_GETFD) & FD_CLOEXEC) != 0);
    printf("flags_nonblock %d\n", (fcntl(a, F_GETFL) & O_NONBLOCK) != 0);
    printf("plain_cloexec %d\n", (fcntl(b, F_GETFD) & FD_CLOEXEC) != 0);
    printf("plain_nonblock %d\n", (fcntl(b, F_GETFL) & O_NONBLOCK) != 0);
    return 0;
}

static int connect_one(void)
{
    int fd = socket(family, SOCK_STREAM, 0);

    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&target, target_len) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

static int cmd_hold(int n)
{
    int lfd = make_listener();
    int fds[256], ok = 0, eagain = 0, other = 0;

    for (int i = 0; i < n && i < 256; i++) {
        fds[i] = connect_one();
        if (fds[i] >= 0)
            ok++;
        else if (fds[i] == -EAGAIN)
            eagain++;
        else
            other++;
    }
    printf("ok %d\neagain %d\nother %d\n", ok, eagain, other);
    for (int i = 0; i < n && i < 256; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    int again = connect_one();
    printf("after_close %s\n", again >= 0 ? "ok" : strerror(-again));
    close(lfd);
    return 0;
}

static atomic_int open_now, open_max, n_ok, n_eagain, n_other;
static int hold_ms;

static void *burst_thread(void *arg)
{
    (void)arg;
    int fd = connect_one();
    if (fd < 0) {
        atomic_fetch_add(fd == -EAGAIN ? &n_eagain : &n_other, 1);
        return NULL;
    }
    int now = atomic_fetch_add(&open_now, 1) + 1;
    int m = atomic_load(&open_max);
    while (now > m && !atomic_compare_exchange_weak(&open_max, &m, now))
        ;
    struct timespec ts = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    atomic_fetch_sub(&open_now, 1);
    atomic_fetch_add(&n_ok, 1);
    close(fd);
    return NULL;
}

static int cmd_burst(int n)
{
    int lfd = make_listener();
    pthread_t th[256];

    if (n > 256)
        n = 256;
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, burst_thread, NULL);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    printf("ok %d\neagain %d\nother %d\nmaxopen %d\n", atomic_load(&n_ok), atomic_load(&n_eagain),
           atomic_load(&n_other), atomic_load(&open_max));
    close(lfd);
    return 0;
}

static int tos_of_new_connection(void)
{
    int fd = connect_one();

    if (fd < 0)
        return fd;
    int v = family == AF_INET ? getopt_int(fd, IPPROTO_IP, IP_TOS)
                              : getopt_int(fd, IPPROTO_IPV6, IPV6_TCLASS);
    close(fd);
    return v;
}

static int cmd_fork(const char *self, const char *addr, const char *port)
{
    int lfd = make_listener();
    printf("parent_tos %d\n", tos_of_new_connection());
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        printf("child_tos %d\n", tos_of_new_connection());
        fflush(stdout);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    close(lfd);
    pid = fork();
    if (pid == 0) {
        /* The exec'd image is a fresh process under the same preload. */
        execl(self, self, "connect", addr, port, "listen", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    printf("exec_status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}

static int cmd_connect(int with_listener)
{
    int lfd = with_listener ? make_listener() : -1;
    int fd = socket(family, SOCK_STREAM, 0);
    int rc = connect(fd, (struct sockaddr *)&target, target_len);

    report("connect", rc);
    if (rc == 0)
        printf("exec_tos %d\n", family == AF_INET ? getopt_int(fd, IPPROTO_IP, IP_TOS)
                                                  : getopt_int(fd, IPPROTO_IPV6, IPV6_TCLASS));
    close(fd);
    if (lfd >= 0)
        close(lfd);
    return 0;
}

/*
 * The accept loop of an event-driven server: the listener is non-blocking
 * and polled with accept and accept4 in turn; an empty queue answers EAGAIN
 * (printed as would_block). Then a non-blocking connect (EINPROGRESS on
 * loopback, or 0) is accepted by the loop.
 */
static int cmd_acceptloop(int n)
{
    int lfd = make_listener(), wb = 0, got = -1;

    if (fcntl(lfd, F_SETFL, O_NONBLOCK) != 0)
        die("fcntl");
    for (int i = 0; i < n; i++) {
        int fd = i % 2 ? accept4(lfd, NULL, NULL, SOCK_CLOEXEC) : accept(lfd, NULL, NULL);
        if (fd >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            die("accept on an empty queue");
        wb++;
    }
    int c = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(c, (struct sockaddr *)&target, target_len);
    if (rc != 0 && errno != EINPROGRESS)
        die("non-blocking connect");
    printf("connect_in_progress %d\n", rc != 0);
    for (int i = 0; got < 0 && i < 5000; i++) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        poll(&p, 1, 1);
        got = accept(lfd, NULL, NULL);
        if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            die("accept");
        if (got < 0)
            wb++;
    }
    printf("would_block %d\naccepted %d\n", wb, got >= 0);
    close(got);
    close(c);
    close(lfd);
    return 0;
}

static long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmd_loop(int ms, const char *stop)
{
    int lfd = make_listener();
    long end = mono_ms() + 60000;

    printf("pid %d\n", (int)getpid());
    for (int i = 0; access(stop, F_OK) != 0 && mono_ms() < end; i++) {
        int fd = connect_one();
        if (fd < 0)
            die("connect");
        int v = family == AF_INET ? getopt_int(fd, IPPROTO_IP, IP_TOS)
                                  : getopt_int(fd, IPPROTO_IPV6, IPV6_TCLASS);
        printf("conn %d tos %d at_ms %ld\n", i, v, mono_ms());
        close(fd);
        int a = accept(lfd, NULL, NULL); /* the backlog stays empty */
        if (a >= 0)
            close(a);
        struct timespec d = {ms / 1000, (long)(ms % 1000) * 1000000};
        nanosleep(&d, NULL);
    }
    close(lfd);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 4) {
        fprintf(stderr, "usage: sockhost CMD ADDR PORT [ARGS]\n");
        return 2;
    }
    parse_target(argv[2], argv[3]);
    if (strcmp(argv[1], "opts") == 0)
        return cmd_opts(argc > 4);
    if (strcmp(argv[1], "errno") == 0)
        return cmd_errno();
    if (strcmp(argv[1], "accept4") == 0)
        return cmd_accept4();
    if (strcmp(argv[1], "hold") == 0 && argc > 4)
        return cmd_hold(atoi(argv[4]));
    if (strcmp(argv[1], "burst") == 0 && argc > 5) {
        hold_ms = atoi(argv[5]);
        return cmd_burst(atoi(argv[4]));
    }
    if (strcmp(argv[1], "fork") == 0)
        return cmd_fork(argv[0], argv[2], argv[3]);
    if (strcmp(argv[1], "connect") == 0)
        return cmd_connect(argc > 4);
    if (strcmp(argv[1], "acceptloop") == 0 && argc > 4)
        return cmd_acceptloop(atoi(argv[4]));
    if (strcmp(argv[1], "loop") == 0 && argc > 5)
        return cmd_loop(atoi(argv[4]), argv[5]);
    fprintf(stderr, "sockhost: unknown command %s\n", argv[1]);
    return 2;
}
