/* teshim demo: placeholder replaced below. */
#include "tsc.h"

int tsc_cmd_demo(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 1;
}
