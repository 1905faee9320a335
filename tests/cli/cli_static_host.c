/* A statically linked executable: no dynamic linker, so no LD_PRELOAD. */
#include <stdio.h>

int main(void)
{
    printf("static\n");
    return 0;
}
