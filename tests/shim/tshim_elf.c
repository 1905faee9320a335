/*
 * ELF facts: the host programs bind the versions they are meant to, and
 * libteshim.so depends on nothing of the host's and exports only the hooks
 * listed in shim/shim_hooks*.def, each with its exact version.
 */
#include "tshim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Output of a command, NUL-terminated (heap). */
static char *command_output(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);

    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(buf);
    for (size_t n; (n = fread(buf + len, 1, cap - len - 1, p)) > 0;)
        len += n;
    buf[len] = '\0';
    ck_assert_msg(pclose(p) == 0, "%s failed", cmd);
    return buf;
}

/* The dynamic symbols of an object: lines "Ndx Name" of readelf. */
static char *dyn_syms(const char *path)
{
    char cmd[1200];

    snprintf(cmd, sizeof(cmd), "readelf --dyn-syms -W '%s'", path);
    return command_output(cmd);
}

START_TEST(host_binds_expected_versions)
{
    char *syms = dyn_syms(tshim_build("bin/tshim_host"));

    /* Constant flags reach the exported 1.1 function; run-time flags go
     * through ibv_reg_mr_iova2, as verbs.h's inline decides. */
    ck_assert_msg(strstr(syms, " ibv_reg_mr@IBVERBS_1.1") != NULL, "%s", syms);
    ck_assert_msg(strstr(syms, " ibv_reg_mr_iova2@IBVERBS_1.8") != NULL, "%s", syms);
    ck_assert_msg(strstr(syms, " ibv_reg_mr_iova@IBVERBS_1.7") != NULL, "%s", syms);
    ck_assert_msg(strstr(syms, " ibv_reg_dmabuf_mr@IBVERBS_1.12") != NULL, "%s", syms);
    ck_assert_msg(strstr(syms, " ibv_rereg_mr@IBVERBS_1.1") != NULL, "%s", syms);
    ck_assert_msg(strstr(syms, " ibv_modify_qp@IBVERBS_1.1") != NULL, "%s", syms);
    free(syms);

    syms = dyn_syms(tshim_build("bin/tshim_host10"));
    ck_assert_msg(strstr(syms, " ibv_reg_mr@IBVERBS_1.0") != NULL, "%s", syms);
    ck_assert_msg(strstr(syms, " ibv_reg_mr@IBVERBS_1.1") == NULL, "%s", syms);
    free(syms);

    syms = dyn_syms(tshim_build("lib/libtshim_early.so"));
    ck_assert_msg(strstr(syms, " ibv_reg_mr@IBVERBS_1.1") != NULL, "%s", syms);
    free(syms);
}
END_TEST

START_TEST(no_needed_on_host_libraries)
{
    char cmd[1200];

    snprintf(cmd, sizeof(cmd), "readelf -d -W '%s'", tshim_build("lib/libteshim.so"));
    char *dyn = command_output(cmd);
    ck_assert_msg(strstr(dyn, "(NEEDED)") != NULL, "%s", dyn);
    ck_assert_msg(strstr(dyn, "libibverbs") == NULL, "%s", dyn);
    ck_assert_msg(strstr(dyn, "libcudart") == NULL, "%s", dyn);
    ck_assert_msg(strstr(dyn, "libcuda.") == NULL, "%s", dyn);
    free(dyn);
}
END_TEST

/* Every row of the hook list, from the list itself (shim/shim_hooks.def):
 * the name, the version and how it is exported. The types of a row are
 * never expanded here, so no host header is needed. */
static const struct {
    const char *name, *version;
    int is_default;
} hook_rows[] = {
#define HOOK(lib, tag, ver, def, ret, name, params, args, ...) {#name, ver, def},
#include "shim_hooks.def"
#undef HOOK
};
#define NROWS (sizeof(hook_rows) / sizeof(hook_rows[0]))

START_TEST(exports_only_versioned_hooks)
{
    char rows[16384] = "";

    /* "|name@@version|" for a default export, "|name@version|" otherwise. */
    for (size_t i = 0; i < NROWS; i++) {
        size_t len = strlen(rows);
        snprintf(rows + len, sizeof(rows) - len, "|%s%s%s|", hook_rows[i].name,
                 hook_rows[i].is_default ? "@@" : "@", hook_rows[i].version);
    }
    ck_assert_uint_ge(NROWS, 6);
    ck_assert_msg(strstr(rows, "|ibv_reg_mr@@IBVERBS_1.1|") != NULL, "%s", rows);

    char *syms = dyn_syms(tshim_build("lib/libteshim.so"));
    unsigned exported = 0;
    for (char *line = strtok(syms, "\n"); line; line = strtok(NULL, "\n")) {
        char num[16], value[32], size[32], type[16], bind[16], vis[16], ndx[16], name[256];
        if (sscanf(line, "%15s %31s %31s %15s %15s %15s %15s %255s", num, value, size, type, bind,
                   vis, ndx, name) != 8 ||
            !isdigit((unsigned char)num[0]) || strchr(num, ':') == NULL)
            continue;
        if (strcmp(ndx, "UND") == 0 || strcmp(bind, "LOCAL") == 0)
            continue;
        /* Version definitions appear as absolute symbols named after the node. */
        if (strcmp(ndx, "ABS") == 0 && strcmp(type, "OBJECT") == 0 && strchr(name, '@') == NULL)
            continue;
        char key[300];
        ck_assert_msg(strchr(name, '@') != NULL, "exported without a version: %s", line);
        snprintf(key, sizeof(key), "|%s|", name);
        ck_assert_msg(strcmp(type, "FUNC") == 0, "exported non-function: %s", line);
        ck_assert_msg(strstr(rows, key) != NULL, "exported but not a hook row as listed: %s", line);
        exported++;
    }
    /* Every row is exported. */
    ck_assert_uint_eq(exported, NROWS);
    free(syms);
}
END_TEST

Suite *tshim_elf_suite(void)
{
    Suite *s = suite_create("shim_elf");
    TCase *tc = tcase_create("elf");

    tcase_add_test(tc, host_binds_expected_versions);
    tcase_add_test(tc, no_needed_on_host_libraries);
    tcase_add_test(tc, exports_only_versioned_hooks);
    suite_add_tcase(s, tc);
    return s;
}
