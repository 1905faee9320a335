/* The teshim command: config, run, stats, doctor. */
#include "tshim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void);

START_TEST(placeholder)
{
}
END_TEST

int main(void)
{
    Suite *s = suite_create("teshim_cmd");
    TCase *tc = tcase_create("cmd");
    tcase_add_test(tc, placeholder);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
