/* Host program linked against libsockctor.so; main only says it ran. */
#include <stdio.h>

int main(void)
{
    printf("main_ran 1\n");
    return 0;
}
