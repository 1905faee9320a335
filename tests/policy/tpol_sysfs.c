/* pol_pcie_relaxed_ordering on a fake sysfs tree. */
#include "tpol.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/*
 * A PCIe function's config space: status with the capability-list bit, the
 * list starting at 0x40 with a power-management capability, then the PCI
 * Express capability at 0x60 whose Device Control (offset 8) has RlxdOrd
 * (bit 4) set or clear, as a root reader of sysfs sees it.
 */
static void write_config(struct tpol *t, const char *dev, size_t len, bool cap_list, bool pcie,
                         bool ro)
{
    unsigned char cfg[4096] = {0};
    char name[256], path[512];

    cfg[0] = 0xb3, cfg[1] = 0x15; /* vendor */
    cfg[0x06] = cap_list ? 0x10 : 0;
    cfg[0x34] = 0x40;
    cfg[0x40] = 0x01; /* PM */
    cfg[0x41] = 0x60;
    cfg[0x60] = pcie ? 0x10 : 0x05; /* PCI Express, or MSI */
    cfg[0x61] = 0x00;
    /* Device Control: max payload 256, max read 4096 (0x5000), plus RlxdOrd
     * and the neighbouring bits (No Snoop 0x0800, extended tags 0x0100). */
    unsigned devctl = 0x5000 | 0x0800 | 0x0100 | 0x0020 | (ro ? 0x0010 : 0);
    cfg[0x68] = (unsigned char)(devctl & 0xff);
    cfg[0x69] = (unsigned char)(devctl >> 8);
    snprintf(name, sizeof(name), "class/infiniband/%s/device/config", dev);
    snprintf(path, sizeof(path), "%s", tpol_write(t, name, ""));
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(cfg, 1, len, f), len);
    fclose(f);
}

START_TEST(ro_enabled)
{
    struct tpol t;

    tpol_init(&t);
    write_config(&t, "mlx5_0", 4096, true, true, true);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "mlx5_0"), 1);
    /* A non-root reader of a real sysfs sees 256 bytes: still enough here. */
    write_config(&t, "mlx5_1", 256, true, true, true);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "mlx5_1"), 1);
}
END_TEST

START_TEST(ro_disabled)
{
    struct tpol t;

    tpol_init(&t);
    write_config(&t, "mlx5_0", 4096, true, true, false);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "mlx5_0"), 0);
}
END_TEST

START_TEST(header_only_is_eacces)
{
    struct tpol t;

    tpol_init(&t);
    /* Without privileges the kernel gives the 64-byte header only. */
    write_config(&t, "mlx5_0", 64, true, true, true);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "mlx5_0"), -EACCES);
    /* Cut inside the capability list. */
    write_config(&t, "mlx5_1", 0x62, true, true, true);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "mlx5_1"), -EACCES);
}
END_TEST

START_TEST(no_pcie_capability)
{
    struct tpol t;

    tpol_init(&t);
    write_config(&t, "mlx5_0", 4096, true, false, true);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "mlx5_0"), -ENOENT);
}
END_TEST

/* A function without a capability list (status bit 4 clear) has no PCI
 * Express capability: not a question of privileges. */
START_TEST(no_capability_list)
{
    struct tpol t;

    tpol_init(&t);
    write_config(&t, "mlx5_0", 4096, false, true, true);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "mlx5_0"), -ENOENT);
}
END_TEST

START_TEST(missing_device)
{
    struct tpol t;

    tpol_init(&t);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "nosuch0"), -ENOENT);
}
END_TEST

START_TEST(capability_loop_terminates)
{
    struct tpol t;
    unsigned char cfg[256] = {0};

    tpol_init(&t);
    cfg[0x06] = 0x10;
    cfg[0x34] = 0x40;
    cfg[0x40] = 0x01;
    cfg[0x41] = 0x40; /* points at itself */
    const char *path = tpol_write(&t, "class/infiniband/loop0/device/config", "");
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(cfg, 1, sizeof(cfg), f), sizeof(cfg));
    fclose(f);
    ck_assert_int_eq(pol_pcie_relaxed_ordering(t.dir, "loop0"), -ENOENT);
}
END_TEST

Suite *tpol_sysfs_suite(void)
{
    Suite *s = suite_create("policy_sysfs");
    TCase *tc = tcase_create("pcie_relaxed_ordering");

    tcase_add_test(tc, ro_enabled);
    tcase_add_test(tc, ro_disabled);
    tcase_add_test(tc, header_only_is_eacces);
    tcase_add_test(tc, no_pcie_capability);
    tcase_add_test(tc, no_capability_list);
    tcase_add_test(tc, missing_device);
    tcase_add_test(tc, capability_loop_terminates);
    suite_add_tcase(s, tc);
    return s;
}
