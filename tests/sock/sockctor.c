/*
 * A library whose constructor makes a TCP connection: it runs before
 * libteshim.so's own constructor (the loader initialises a program's
 * libraries before the preloaded ones), so the hooks must initialise lazily.
 * SOCKCTOR_PORT names the port; the result is printed as "ctor_tos N".
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((constructor)) static void sockctor_connect(void)
{
    const char *port = getenv("SOCKCTOR_PORT");
    struct sockaddr_in a = {.sin_family = AF_INET};
    int one = 1, tos = -1;
    socklen_t l = sizeof(tos);

    if (!port)
        return;
    a.sin_port = htons((uint16_t)atoi(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 1) != 0)
        return;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof(a)) == 0)
        getsockopt(c, IPPROTO_IP, IP_TOS, &tos, &l);
    printf("ctor_tos %d\n", tos);
    fflush(stdout);
    close(c);
    close(lfd);
}
