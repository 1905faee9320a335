/*
 * A library that wraps a function of a library after it, the way
 * interposers do: dlsym(RTLD_NEXT, ...) must give the next definition after
 * THIS library, whoever hooks dlsym (tshim_rnext_test.sh). Looked up
 * relative to libteshim.so instead, the lookup would find this wrapper
 * again and recurse.
 */
#include <dlfcn.h>
#include <stdio.h>

int tshim_value(void);
int tshim_value(void)
{
    int (*next)(void) = (int (*)(void))dlsym(RTLD_NEXT, "tshim_value");

    if (!next)
        return -1;
    if (next == tshim_value)
        return -2;
    return next() + 10;
}
