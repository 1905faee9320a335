/* The shim suites. */
#include "tshim.h"

#include <stdlib.h>

int main(void)
{
    SRunner *sr = srunner_create(tshim_elf_suite());
    int failed;

    srunner_add_suite(sr, tshim_inject_suite());
    srunner_add_suite(sr, tshim_gate_suite());
    srunner_add_suite(sr, tshim_process_suite());
    srunner_add_suite(sr, tshim_dlopen_suite());
    srunner_add_suite(sr, tshim_scope_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
