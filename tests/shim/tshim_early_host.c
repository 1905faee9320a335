/* The executable of the early-constructor test: all the work happened in
 * libtshim_early.so's constructor before main. */
#include <stdio.h>
#include <unistd.h>

extern int tshim_early_ok;
extern int tshim_early_threads_ok;

int main(void)
{
    printf("pid %d\n", (int)getpid());
    printf("early registration %s\n", tshim_early_ok ? "ok" : "failed");
    printf("early threads registered=%d\n", tshim_early_threads_ok);
    return tshim_early_ok ? 0 : 1;
}
