/* Unmodified Debian rdma-core tools and perftest against the emulated
 * libibverbs, server and client on 127.0.0.1, through
 * scripts/emulated-verbs. Built twice: EMU_PERSONALITY "ib" and "roce".
 * Every child is bounded by a timeout and killed on failure. */
#include "emu_testlib.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef EMU_PERSONALITY
#error "EMU_PERSONALITY must be defined"
#endif
#ifndef EMU_PORT_BASE
#error "EMU_PORT_BASE must be defined"
#endif

#define EMU_TOOL_TIMEOUT 60

struct tool_case {
    const char *tool;
    const char *args;
    bool paired;
    const char *expect; /* in the client's output, if set */
};

/* RoCE needs a GID for ibv_rc_pingpong (as on real RoCE NICs); perftest
 * picks the RoCE v2 IPv4 GID itself. */
static const struct tool_case emu_cases[] = {
    {"ibv_devices", "", false, "    emu0            \t7e5e000000000001"},
    {"ibv_devinfo", "-v", false, NULL},
    {"ibv_rc_pingpong", "", true, NULL},
    {"ibv_rc_pingpong", "-e", true, NULL},
    {"ibv_rc_pingpong", "-s 1048576 -c", true, NULL}, /* -c: received data checked */
    {"ibv_rc_pingpong", "-N -c", true, NULL},         /* the ibv_wr_* API */
    {"ib_write_bw", "-n 100", true, NULL},
    {"ib_read_bw", "-n 100", true, NULL},
    {"ib_send_bw", "-n 100", true, NULL},
    {"ib_write_lat", "-n 100", true, NULL},
};

static bool emu_roce(void)
{
    return strcmp(EMU_PERSONALITY, "roce") == 0;
}

static char emu_dir[300];

/* outputs stay in the build tree for diagnosis */
static void emu_setup(void)
{
    const char *b = getenv("TESHIM_BUILD_DIR");
    char parent[280];

    snprintf(parent, sizeof(parent), "%s/verbs_emu_out", b != NULL ? b : "/tmp");
    snprintf(emu_dir, sizeof(emu_dir), "%s/%s", parent, EMU_PERSONALITY);
    mkdir(parent, 0755);
    mkdir(emu_dir, 0755);
    ck_assert_int_eq(access(emu_dir, W_OK), 0);
}

/* argv: scripts/emulated-verbs --<pers> --record REC -- tool args... [host] */
static int emu_argv(char **argv, int max, const char *rec, const char *tool, const char *args,
                    int port, const char *host, char *storage, size_t slen)
{
    const char *src = getenv("TESHIM_SOURCE_DIR");
    int n = 0;
    size_t off = 0;
    char *tok, *save = NULL;

    off += (size_t)snprintf(storage + off, slen - off, "%s/scripts/emulated-verbs",
                            src != NULL ? src : ".") +
           1;
    argv[n++] = storage;
    argv[n++] = emu_roce() ? "--roce" : "--ib";
    argv[n++] = "--record";
    argv[n++] = (char *)rec;
    argv[n++] = "--";
    argv[n++] = (char *)tool;
    snprintf(storage + off, slen - off, "%s", args);
    for (tok = strtok_r(storage + off, " ", &save); tok != NULL && n < max - 5;
         tok = strtok_r(NULL, " ", &save))
        argv[n++] = tok;
    if (port > 0) {
        static char portbuf[2][16];
        int which = host != NULL;

        snprintf(portbuf[which], sizeof(portbuf[which]), "%d", port);
        argv[n++] = "-p";
        argv[n++] = portbuf[which];
    }
    if (host != NULL)
        argv[n++] = (char *)host;
    argv[n] = NULL;
    return n;
}

static void emu_run_case(const struct tool_case *c, int port, const char *tag,
                         bool (*check_record)(const char *rec))
{
    char rec[400], sout[400], cout[400], s1[1024], s2[1024];
    char *sargv[32], *cargv[32];
    pid_t srv = -1, cli;
    int rs = 0, rc;

    emu_setup();
    snprintf(rec, sizeof(rec), "%s/%s.record.jsonl", emu_dir, tag);
    snprintf(sout, sizeof(sout), "%s/%s.server.out", emu_dir, tag);
    snprintf(cout, sizeof(cout), "%s/%s.client.out", emu_dir, tag);
    unlink(rec);
    unlink(sout);
    unlink(cout);
    if (c->paired) {
        emu_argv(sargv, 32, rec, c->tool, c->args, port, NULL, s1, sizeof(s1));
        ck_assert_int_gt(port, 0);
        srv = et_spawn(sargv, sout);
        ck_assert_int_gt(srv, 0);
        if (!et_wait_listen(port, 20000)) {
            et_kill(srv);
            et_dump(sout);
            ck_abort_msg("%s server did not listen on %d", c->tool, port);
        }
    }
    emu_argv(cargv, 32, rec, c->tool, c->args, c->paired ? port : 0, c->paired ? "127.0.0.1" : NULL,
             s2, sizeof(s2));
    cli = et_spawn(cargv, cout);
    rc = et_wait(cli, EMU_TOOL_TIMEOUT);
    if (c->paired) {
        rs = et_wait(srv, rc == 0 ? EMU_TOOL_TIMEOUT : 2);
        if (rs != 0)
            et_dump(sout);
    }
    if (rc != 0)
        et_dump(cout);
    ck_assert_msg(rc == 0, "%s %s client exited with %d", c->tool, c->args, rc);
    ck_assert_msg(rs == 0, "%s %s server exited with %d", c->tool, c->args, rs);
    if (c->expect != NULL) {
        const char *want[] = {c->expect, NULL};

        if (et_count_lines(cout, want) != 1) {
            et_dump(cout);
            ck_abort_msg("%s %s: output lacks '%s'", c->tool, c->args, c->expect);
        }
    }
    if (check_record != NULL && !check_record(rec)) {
        et_dump(rec);
        ck_abort_msg("%s %s: record does not show what the tool asked for", c->tool, c->args);
    }
}

static bool emu_record_paired(const char *rec)
{
    const char *rtr[] = {"\"call\":\"modify_qp\"", "\"qp_state\":2", NULL};
    const char *rtr_addr[] = {"\"call\":\"modify_qp\"", "\"qp_state\":2",
                              emu_roce() ? "\"ah_attr.is_global\":1" : "\"ah_attr.is_global\":0",
                              NULL};
    const char *mr[] = {"\"call\":\"reg_mr\"", "\"ret\":0", NULL};
    const char *qp[] = {"\"call\":\"create_qp\"", "\"ret\":0", NULL};

    return et_count_lines(rec, rtr) >= 2 && et_count_lines(rec, rtr_addr) >= 2 &&
           et_count_lines(rec, mr) >= 2 && et_count_lines(rec, qp) >= 2;
}

static bool emu_record_open(const char *rec)
{
    const char *open[] = {"\"call\":\"open_device\"", "\"dev\":\"emu0\"",
                          emu_roce() ? "\"personality\":\"roce\"" : "\"personality\":\"ib\"", NULL};

    return et_count_lines(rec, open) >= 1;
}

START_TEST(test_tool)
{
    struct tool_case c = emu_cases[_i];
    char args[128], tag[64];

    /* on RoCE ibv_rc_pingpong needs a GID index, like on a real RoCE NIC */
    if (emu_roce() && strcmp(c.tool, "ibv_rc_pingpong") == 0) {
        snprintf(args, sizeof(args), "-g 3%s%s", c.args[0] ? " " : "", c.args);
        c.args = args;
    }
    snprintf(tag, sizeof(tag), "%s-%d", c.tool, _i);
    emu_run_case(&c, et_free_port(EMU_PORT_BASE, 100), tag,
                 c.paired                             ? emu_record_paired
                 : strcmp(c.tool, "ibv_devinfo") == 0 ? emu_record_open
                                                      : NULL);
}
END_TEST

START_TEST(test_devinfo_personality)
{
    struct tool_case c = {"ibv_devinfo", "-v", false, NULL};
    char out[400];
    const char *ll[] = {emu_roce() ? "link_layer:\t\tEthernet" : "link_layer:\t\tInfiniBand", NULL};
    const char *gid[] = {emu_roce() ? "::ffff:127.0.0.1, RoCE v2" : "port_lid:\t\t1", NULL};

    emu_run_case(&c, 0, "devinfo-check", NULL);
    snprintf(out, sizeof(out), "%s/devinfo-check.client.out", emu_dir);
    ck_assert_int_eq(et_count_lines(out, ll), 1);
    ck_assert_int_eq(et_count_lines(out, gid), 1);
}
END_TEST

/* --- with libteshim.so preloaded (RoCE) ------------------------------ */

struct emu_ro_scan {
    int large_ro, small_ro, large, tc106, rtr;
};

static void emu_scan_line(const char *line, void *arg)
{
    struct emu_ro_scan *s = arg;
    uint64_t len, access, tc, state;

    if (strstr(line, "\"call\":\"reg_mr\"") != NULL && et_field_u64(line, "length", &len) &&
        et_field_u64(line, "access", &access)) {
        bool ro = (access & (1u << 20)) != 0;

        if (len >= 65536) {
            s->large++;
            s->large_ro += ro;
        } else {
            s->small_ro += ro;
        }
    }
    if (strstr(line, "\"call\":\"modify_qp\"") != NULL && et_field_u64(line, "qp_state", &state) &&
        state == 2) {
        s->rtr++;
        if (et_field_u64(line, "ah_attr.grh.traffic_class", &tc) && tc == 106)
            s->tc106++;
    }
}

static const char *emu_teshim_lib(char *buf, size_t len)
{
    const char *b = getenv("TESHIM_BUILD_DIR");

    snprintf(buf, len, "%s/lib/libteshim.so", b != NULL ? b : "build");
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static bool emu_record_teshim_on(const char *rec)
{
    struct emu_ro_scan s = {0};

    et_each_line(rec, emu_scan_line, &s);
    return s.large >= 2 && s.large_ro == s.large && s.small_ro == 0 && s.rtr >= 2 &&
           s.tc106 == s.rtr;
}

static bool emu_record_teshim_off(const char *rec)
{
    struct emu_ro_scan s = {0};

    et_each_line(rec, emu_scan_line, &s);
    return s.large >= 2 && s.large_ro == 0 && s.small_ro == 0 && s.rtr >= 2 && s.tc106 == 0;
}

START_TEST(test_teshim_ro_tc)
{
    struct tool_case c = {"ib_write_bw", "--disable_pcie_relaxed -n 100", true, NULL};
    char lib[512];

    if (emu_teshim_lib(lib, sizeof(lib)) == NULL)
        ck_abort_msg("libteshim.so not built at %s", lib);
    setenv("LD_PRELOAD", lib, 1);
    setenv("TESHIM_RDMA_RELAXED_ORDERING", "on", 1);
    setenv("TESHIM_RDMA_TRAFFIC_CLASS", "106", 1);
    emu_run_case(&c, et_free_port(EMU_PORT_BASE, 100), "teshim-on", emu_record_teshim_on);
}
END_TEST

START_TEST(test_teshim_kill_switch)
{
    struct tool_case c = {"ib_write_bw", "--disable_pcie_relaxed -n 100", true, NULL};
    char lib[512];

    if (emu_teshim_lib(lib, sizeof(lib)) == NULL)
        ck_abort_msg("libteshim.so not built at %s", lib);
    setenv("LD_PRELOAD", lib, 1);
    setenv("TESHIM_RDMA_RELAXED_ORDERING", "on", 1);
    setenv("TESHIM_RDMA_TRAFFIC_CLASS", "106", 1);
    setenv("TESHIM_DISABLE", "1", 1);
    emu_run_case(&c, et_free_port(EMU_PORT_BASE, 100), "teshim-off", emu_record_teshim_off);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("verbs_emu_tools_" EMU_PERSONALITY);
    TCase *tc = tcase_create("tools");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 150);
    tcase_add_loop_test(tc, test_tool, 0, (int)(sizeof(emu_cases) / sizeof(emu_cases[0])));
    tcase_add_test(tc, test_devinfo_personality);
    if (emu_roce()) {
        tcase_add_test(tc, test_teshim_ro_tc);
        tcase_add_test(tc, test_teshim_kill_switch);
    }
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
