/*
 * A small program the security suite installs setuid-root: says its pid,
 * whether the kernel marked it AT_SECURE and its ids, makes one hooked
 * libc call (a socket, closed), and exits normally so teshim reports.
 */
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
    printf("pid %d\nsecure %lu ruid %u euid %u\n", (int)getpid(), getauxval(AT_SECURE),
           (unsigned)getuid(), (unsigned)geteuid());
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0)
        close(fd);
    return 0;
}
