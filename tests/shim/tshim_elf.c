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

/* "name@version" of every HOOK row in shim/shim_hooks*.def, as
 * "|name@version|" strings appended to list. */
static void hook_rows(const char *def, char *list, size_t cap)
{
    FILE *f = fopen(tshim_source(def), "r");
    char text[65536];
    size_t n;

    ck_assert_msg(f != NULL, "%s", def);
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    for (char *p = text; (p = strstr(p, "HOOK(")); p += 5) {
        /* Skip the macro's definition in comments: rows start a line. */
        if (p != text && p[-1] != '\n')
            continue;
        char *field[8];
        char *q = p + 5;
        int nf = 0;
        while (nf < 6) {
            field[nf++] = q;
            q = strchr(q, ',');
            if (!q)
                break;
            q++;
        }
        ck_assert_int_eq(nf, 6);
        char ver[64], name[128];
        ck_assert_int_eq(sscanf(field[2], " \"%63[^\"]\"", ver), 1);
        ck_assert_int_eq(sscanf(field[5], " %127[A-Za-z0-9_]", name), 1);
        size_t len = strlen(list);
        snprintf(list + len, cap - len, "|%s@%s|", name, ver);
    }
}

START_TEST(exports_only_versioned_hooks)
{
    static const char *const defs[] = {"shim/shim_hooks_ibv.def", "shim/shim_hooks_cuda.def",
                                       "shim/shim_hooks_sock.def"};
    char rows[16384] = "";
    unsigned nrows = 0;

    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        hook_rows(defs[i], rows, sizeof(rows));
    for (const char *p = rows; *p; p++)
        nrows += *p == '|';
    nrows /= 2;
    ck_assert_uint_ge(nrows, 6);
    ck_assert_msg(strstr(rows, "|ibv_reg_mr@IBVERBS_1.1|") != NULL, "%s", rows);

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
        char key[300], *at = strchr(name, '@');
        ck_assert_msg(at != NULL, "exported without a version: %s", line);
        snprintf(key, sizeof(key), "|%.*s@%s|", (int)(at - name), name,
                 at + (at[1] == '@' ? 2 : 1));
        ck_assert_msg(strcmp(type, "FUNC") == 0, "exported non-function: %s", line);
        ck_assert_msg(strstr(rows, key) != NULL, "exported but not a hook row: %s", line);
        exported++;
    }
    /* Every row is exported. */
    ck_assert_uint_eq(exported, nrows);
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
