/*
 * libibverbs reached through dlopen (issue 15): a host that is not linked
 * with libibverbs and looks its entry points up through the handle, with
 * dlvsym like NCCL or dlsym like Mooncake's TENT, gets its registrations and
 * QP transitions injected exactly as a linked host does, and every other
 * lookup answered as without teshim.
 */
#include "tshim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REG_1_1 "ibv_reg_mr@IBVERBS_1.1"
#define REG_IOVA2 "ibv_reg_mr_iova2@IBVERBS_1.8"
#define REG_DMABUF "ibv_reg_dmabuf_mr@IBVERBS_1.12"
#define MODIFY_QP "ibv_modify_qp@IBVERBS_1.1"
#define DLSYM "dlsym@GLIBC_2.34"
#define DLVSYM "dlvsym@GLIBC_2.34"

static const char *const modes[] = {"nccl", "tent"};

static void policy_on(struct tshim_run *r)
{
    tshim_env(r, "TESHIM_RDMA_RELAXED_ORDERING", "on");
    tshim_env(r, "TESHIM_RDMA_TRAFFIC_CLASS", "106");
    tshim_env(r, "TESHIM_RDMA_SERVICE_LEVEL", "5");
}

#define STEPS "reg_const:1M", "reg_rt:1M:7", "reg_dmabuf:1M", "reg_rt:4K:7", "rts:grh", "qp:nogrh"

static void dlhost(struct tshim_run *r, const char *mode, ...)
{
    const char *argv[32];
    unsigned n = 0;
    va_list ap;

    argv[n++] = tshim_build("bin/tshim_dlhost");
    argv[n++] = mode;
    va_start(ap, mode);
    for (const char *s; (s = va_arg(ap, const char *)) && n < 31;)
        argv[n++] = s;
    va_end(ap);
    argv[n] = NULL;
    tshim_exec(r, argv);
    tshim_ck(r, r->status == 0);
    tshim_ck(r, r->pid > 0);
}

/* The record with what differs from run to run (process, addresses, keys,
 * QP numbers) zeroed: what libibverbs was asked, in order. */
static char *record_shape(const struct tshim_run *r)
{
    static const char *const vary[] = {
        "\"pid\":", "\"addr\":", "\"iova\":", "\"rkey\":", "\"dest_qp_num\":", "\"qp_num\":"};
    FILE *f = fopen(r->rec, "r");
    char *out = NULL, line[4096];
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);

    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(m);
    while (fgets(line, sizeof(line), f)) {
        for (const char *p = line; *p;) {
            size_t k = 0;
            for (size_t i = 0; i < sizeof(vary) / sizeof(vary[0]) && !k; i++)
                if (strncmp(p, vary[i], strlen(vary[i])) == 0)
                    k = strlen(vary[i]);
            if (!k) {
                fputc(*p++, m);
                continue;
            }
            fwrite(p, 1, k, m);
            fputc('0', m);
            for (p += k; *p >= '0' && *p <= '9'; p++)
                ;
        }
    }
    fclose(f);
    fclose(m);
    return out;
}

/* stdout without its "pid N" line. */
static const char *steps_out(const struct tshim_run *r)
{
    const char *nl = strchr(r->out, '\n');

    ck_assert_ptr_nonnull(nl);
    return nl + 1;
}

static const struct tsc_json *rtr_grh(const struct tshim_run *r)
{
    for (unsigned i = 0; i < tshim_rec_count(r, "modify_qp", NULL); i++) {
        const struct tsc_json *j = tshim_rec(r, "modify_qp", NULL, i);
        if (tsc_json_get(j, "ah_attr.is_global") && tshim_num(j, "ah_attr.is_global") == 1)
            return j;
    }
    ck_assert_msg(0, "no RTR transition with GRH in the record");
    return NULL;
}

START_TEST(injected_as_for_a_linked_host)
{
    const char *mode = modes[_i];
    struct tshim_run linked, dl, plain;
    static const char *const hooks[] = {REG_1_1, REG_IOVA2, REG_DMABUF, MODIFY_QP};
    static const char *const ctrs[] = {
        "calls",          "injected",  "observed", "skipped_by_policy",
        "not_applicable", "fallbacks", "errors",   "bytes"};

    tshim_init(&linked, true);
    policy_on(&linked);
    tshim_host(&linked, STEPS, NULL);
    tshim_init(&dl, true);
    policy_on(&dl);
    dlhost(&dl, mode, STEPS, NULL);
    tshim_init(&plain, false);
    policy_on(&plain);
    dlhost(&plain, mode, STEPS, NULL);

    /* Injected: relaxed ordering on the bulk registrations only, traffic
     * class and service level at RTR. */
    tshim_ck(&dl, tshim_num(tshim_rec(&dl, "reg_mr", "ibv_reg_mr", 0), "access") == (7 | TSHIM_RO));
    tshim_ck(&dl, tshim_num(tshim_rec(&dl, "reg_mr", "ibv_reg_mr_iova2", 0), "access") ==
                      (7 | TSHIM_RO));
    tshim_ck(&dl, tshim_num(tshim_rec(&dl, "reg_mr", "ibv_reg_mr_iova2", 1), "access") == 7);
    tshim_ck(&dl, tshim_num(tshim_rec(&dl, "reg_mr", "ibv_reg_dmabuf_mr", 0), "access") ==
                      (3 | TSHIM_RO));
    tshim_ck(&dl, tshim_num(rtr_grh(&dl), "ah_attr.grh.traffic_class") == 106);
    tshim_ck(&dl, tshim_num(rtr_grh(&dl), "ah_attr.sl") == 5);
    tshim_ck(&plain, tshim_num(rtr_grh(&plain), "ah_attr.grh.traffic_class") == 4);
    tshim_ck(&plain, tshim_num(tshim_rec(&plain, "reg_mr", "ibv_reg_mr", 0), "access") == 7);

    /* Exactly what the linked host's library received, call for call. */
    char *a = record_shape(&linked), *b = record_shape(&dl);
    ck_assert_msg(strcmp(a, b) == 0, "%s: linked\n%s\ndlopen'ed\n%s", mode, a, b);
    free(a);
    free(b);

    /* The host saw what it sees without teshim, and what a linked host sees. */
    ck_assert_str_eq(steps_out(&dl), steps_out(&plain));
    ck_assert_str_eq(steps_out(&dl), steps_out(&linked));
    tshim_ck(&dl, dl.err[0] == '\0');

    /* The report counts the same outcomes as for the linked host... */
    struct tsc_json *rl = tshim_report(&linked, 0), *rd = tshim_report(&dl, 0);
    for (size_t h = 0; h < sizeof(hooks) / sizeof(hooks[0]); h++)
        for (size_t c = 0; c < sizeof(ctrs) / sizeof(ctrs[0]); c++)
            ck_assert_msg(tshim_ctr(rl, hooks[h], ctrs[c]) == tshim_ctr(rd, hooks[h], ctrs[c]),
                          "%s: %s %s: linked %lld, dlopen'ed %lld", mode, hooks[h], ctrs[c],
                          tshim_ctr(rl, hooks[h], ctrs[c]), tshim_ctr(rd, hooks[h], ctrs[c]));
    ck_assert_int_eq(tshim_ctr(rd, REG_1_1, "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rd, MODIFY_QP, "injected"), 2);
    /* ...and the four lookups it substituted (reg_mr, iova2, dmabuf,
     * modify_qp), under the lookup the host made. */
    ck_assert_int_eq(tshim_ctr(rd, _i == 0 ? DLVSYM : DLSYM, "injected"), 4);
    ck_assert_int_eq(tshim_ctr(rd, _i == 0 ? DLVSYM : DLSYM, "calls"), 4);
    ck_assert_int_eq(tshim_ctr(rd, _i == 0 ? DLSYM : DLVSYM, "calls"), 0);
    tsc_json_free(rl);
    tsc_json_free(rd);
}
END_TEST

/* A lookup of a verbs function teshim does not hook, and of a hooked name
 * in another library, are answered as without teshim. */
START_TEST(other_lookups_untouched)
{
    const char *mode = modes[_i];
    struct tshim_run dl, plain;
    char other[700];

    snprintf(other, sizeof(other), "other:%s", tshim_build("lib/libtshim_dlother.so"));
    tshim_init(&dl, true);
    policy_on(&dl);
    dlhost(&dl, mode, "lookup:ibv_alloc_pd", "lookup:ibv_dereg_mr", "lookup:ibv_reg_mr", other,
           NULL);
    tshim_init(&plain, false);
    dlhost(&plain, mode, "lookup:ibv_alloc_pd", "lookup:ibv_dereg_mr", "lookup:ibv_reg_mr", other,
           NULL);

    tshim_ck(&plain, strstr(plain.out, "lookup:ibv_reg_mr in=libibverbs.so.1\n") != NULL);
    /* Hooked: teshim's. */
    tshim_ck(&dl, strstr(dl.out, "lookup:ibv_reg_mr in=libteshim.so\n") != NULL);
    /* Not hooked: the library's own, as without teshim. */
    tshim_ck(&dl, strstr(dl.out, "lookup:ibv_alloc_pd in=libibverbs.so.1\n") != NULL);
    tshim_ck(&dl, strstr(dl.out, "lookup:ibv_dereg_mr in=libibverbs.so.1\n") != NULL);
    /* A hooked name in another library: that library's, called as such. */
    tshim_ck(&dl, strstr(dl.out, " in=libtshim_dlother.so ret=0x7e5\n") != NULL);
    tshim_ck(&plain, strstr(plain.out, " in=libtshim_dlother.so ret=0x7e5\n") != NULL);

    struct tsc_json *rd = tshim_report(&dl, 0);
    const char *lk = _i == 0 ? DLVSYM : DLSYM;
    /* The host's 15 lookups at load and its lookup:ibv_reg_mr: five
     * substituted (reg_mr twice, iova2, dmabuf, modify_qp), nothing else
     * counted. */
    ck_assert_int_eq(tshim_ctr(rd, lk, "injected"), 5);
    ck_assert_int_eq(tshim_ctr(rd, lk, "calls"), 5);
    ck_assert_int_eq(tshim_ctr(rd, REG_1_1, "calls"), 0);
    tsc_json_free(rd);
}
END_TEST

/* A host that looks up only the 1.1 entry points of a libibverbs opened
 * RTLD_LOCAL: the library's ibv_reg_mr calls ibv_reg_mr_iova2 through its
 * PLT, which reaches teshim's iova2 hook, whose real function nobody looked
 * up and RTLD_NEXT cannot see. The registration must still be made. */
START_TEST(library_inner_calls_of_a_local_library)
{
    struct tshim_run dl, plain;

    tshim_init(&dl, true);
    policy_on(&dl);
    dlhost(&dl, "nccl-1.1", "reg_const:1M", "reg_const:4K", "rts:grh", NULL);
    tshim_init(&plain, false);
    dlhost(&plain, "nccl-1.1", "reg_const:1M", "reg_const:4K", "rts:grh", NULL);
    ck_assert_str_eq(steps_out(&dl), steps_out(&plain));
    tshim_ck(&dl, strstr(dl.out, "reg_const:1M ok\n") != NULL);
    tshim_ck(&dl, tshim_num(tshim_rec(&dl, "reg_mr", "ibv_reg_mr", 0), "access") == (7 | TSHIM_RO));
    tshim_ck(&dl, tshim_num(tshim_rec(&dl, "reg_mr", "ibv_reg_mr", 1), "access") == 7);
    tshim_ck(&dl, tshim_num(rtr_grh(&dl), "ah_attr.grh.traffic_class") == 106);
    struct tsc_json *rd = tshim_report(&dl, 0);
    ck_assert_int_eq(tshim_ctr(rd, REG_1_1, "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rd, REG_1_1, "not_applicable"), 1);
    /* The library's inner call is its own business: not counted. */
    ck_assert_int_eq(tshim_ctr(rd, REG_IOVA2, "calls"), 0);
    tsc_json_free(rd);
    tshim_ck(&dl, dl.err[0] == '\0');
}
END_TEST

Suite *tshim_dlopen_suite(void)
{
    Suite *s = suite_create("shim_dlopen");
    TCase *tc = tcase_create("dlopen");

    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, injected_as_for_a_linked_host, 0, 2);
    tcase_add_loop_test(tc, other_lookups_untouched, 0, 2);
    tcase_add_test(tc, library_inner_calls_of_a_local_library);
    suite_add_tcase(s, tc);
    return s;
}
