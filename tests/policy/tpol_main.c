/* The policy suites, run without preloading anything. */
#include "tpol.h"

#include <stdlib.h>

int main(void)
{
    SRunner *sr = srunner_create(tpol_table_suite());
    int failed;

    srunner_add_suite(sr, tpol_sources_suite());
    srunner_add_suite(sr, tpol_values_suite());
    srunner_add_suite(sr, tpol_gate_suite());
    srunner_add_suite(sr, tpol_rdma_suite());
    srunner_add_suite(sr, tpol_sysfs_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
