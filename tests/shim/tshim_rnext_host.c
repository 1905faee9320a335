/* Prints what the wrapped tshim_value returns: 11 when RTLD_NEXT works. */
#include <stdio.h>

int tshim_value(void);

int main(void)
{
    printf("%d\n", tshim_value());
    return 0;
}
