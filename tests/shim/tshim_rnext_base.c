/* The next definition of tshim_value after the wrapper (tshim_rnext_test.sh). */
int tshim_value(void);
int tshim_value(void)
{
    return 1;
}
