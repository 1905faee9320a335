/* A statically linked program (no PT_INTERP): LD_PRELOAD cannot reach it. */
int main(void)
{
    return 3;
}
