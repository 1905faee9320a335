/* teshim doctor: what the shim will find on this host, and on a target. */
#include "tsc.h"

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

struct ibv_device;
typedef struct ibv_device **(*get_list_fn)(int *);
typedef void (*free_list_fn)(struct ibv_device **);
typedef const char *(*get_name_fn)(struct ibv_device *);

static int warnings;

#define WARN(...)                                                                                  \
    do {                                                                                           \
        printf("  warning: " __VA_ARGS__);                                                         \
        warnings++;                                                                                \
    } while (0)

static void read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");

    buf[0] = '\0';
    if (!f)
        return;
    if (fgets(buf, (int)len, f))
        buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
}

static void check_device(const char *sysfs, const char *name)
{
    int ro = pol_pcie_relaxed_ordering(sysfs, name);
    char path[512], buf[64];

    printf("  device %s\n", name);
    if (ro >= 0)
        printf("    PCIe relaxed ordering: %s in Device Control (rdma.relaxed_ordering=auto "
               "%s it)\n",
               ro ? "enabled" : "disabled", ro ? "uses" : "skips");
    else
        printf("    PCIe relaxed ordering: unknown (%s%s); auto leaves it off\n", strerror(-ro),
               ro == -EACCES ? ": reading the PCIe capability needs root" : "");
    snprintf(path, sizeof(path), "%s/class/infiniband/%s/tc", sysfs, name);
    DIR *d = opendir(path);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char f[1024];
        snprintf(f, sizeof(f), "%s/%s/traffic_class", path, e->d_name);
        read_line(f, buf, sizeof(buf));
        if (buf[0]) {
            printf("    port %s: sysfs traffic_class override '%s'\n", e->d_name, buf);
            WARN("the driver's sysfs traffic class on %s port %s overrides rdma.traffic_class\n",
                 name, e->d_name);
        }
    }
    closedir(d);
}

static void check_verbs(const struct pol_config *cfg)
{
    void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    struct link_map *lm = NULL;

    printf("libibverbs\n");
    if (!h) {
        printf("  not found (%s): RDMA hooks stay idle\n", dlerror());
        return;
    }
    if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm) {
        char *real = realpath(lm->l_name, NULL);
        const char *v = real ? strstr(real, ".so.") : NULL;
        printf("  %s (version %s)\n", real ? real : lm->l_name, v ? v + 4 : "unknown");
        free(real);
    }
    bool iova2 = dlvsym(h, "ibv_reg_mr_iova2", "IBVERBS_1.8") != NULL;
    printf("  ibv_reg_mr_iova2@IBVERBS_1.8: %s\n", iova2 ? "present" : "absent");
    if (!iova2 && pol_int(cfg, POL_RDMA_RELAXED_ORDERING) == POL_RO_AUTO)
        WARN("rdma.relaxed_ordering=auto needs ibv_reg_mr_iova2: it will stay off\n");

    get_list_fn get_list = (get_list_fn)dlvsym(h, "ibv_get_device_list", "IBVERBS_1.1");
    free_list_fn free_list = (free_list_fn)dlvsym(h, "ibv_free_device_list", "IBVERBS_1.1");
    get_name_fn get_name = (get_name_fn)dlvsym(h, "ibv_get_device_name", "IBVERBS_1.1");
    if (!get_list || !free_list || !get_name) {
        WARN("libibverbs lacks the 1.1 device-list functions\n");
        dlclose(h);
        return;
    }
    int n = 0;
    struct ibv_device **list = get_list(&n);
    if (!list || n == 0)
        printf("  no RDMA devices\n");
    for (int i = 0; list && i < n; i++)
        check_device(pol_str(cfg, POL_RDMA_SYSFS_ROOT), get_name(list[i]));
    if (list)
        free_list(list);
    dlclose(h);
}

static void check_limits(void)
{
    struct rlimit rl;

    printf("limits\n");
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY)
            printf("  memlock: unlimited\n");
        else {
            printf("  memlock: %llu KiB\n", (unsigned long long)rl.rlim_cur / 1024);
            if (rl.rlim_cur < 64ull << 20)
                WARN("memlock limit below 64 MiB: large registrations and pinned pools fail "
                     "(ulimit -l)\n");
        }
    }
}

/* The ELF facts that decide whether LD_PRELOAD reaches a program. */
static void check_program(const char *prog)
{
    struct stat st;
    Elf64_Ehdr eh;
    int fd;

    printf("program %s\n", prog);
    fd = open(prog, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        WARN("cannot open %s: %s\n", prog, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    if (st.st_mode & (S_ISUID | S_ISGID))
        WARN("set%sid: the dynamic linker ignores LD_PRELOAD for it unless run by root\n",
             (st.st_mode & S_ISUID) ? "u" : "g");
    if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) || memcmp(eh.e_ident, ELFMAG, 4) ||
        eh.e_ident[EI_CLASS] != ELFCLASS64) {
        printf("  not a 64-bit ELF executable (a script? its interpreter is what runs)\n");
        close(fd);
        return;
    }
    bool interp = false, dynamic = false;
    Elf64_Phdr ph[64];
    int nph = eh.e_phnum < 64 ? eh.e_phnum : 64;
    Elf64_Off dyn_off = 0;
    Elf64_Xword dyn_size = 0;
    if (pread(fd, ph, sizeof(ph[0]) * (size_t)nph, (off_t)eh.e_phoff) ==
        (ssize_t)(sizeof(ph[0]) * (size_t)nph)) {
        for (int i = 0; i < nph; i++) {
            interp |= ph[i].p_type == PT_INTERP;
            if (ph[i].p_type == PT_DYNAMIC) {
                dynamic = true;
                dyn_off = ph[i].p_offset;
                dyn_size = ph[i].p_filesz;
            }
        }
    }
    if (!interp || !dynamic) {
        WARN("statically linked: LD_PRELOAD has no effect on it\n");
        close(fd);
        return;
    }
    /* DT_NEEDED names: the string table's address maps back through PT_LOAD. */
    Elf64_Dyn dyn[512];
    size_t ndyn = dyn_size / sizeof(Elf64_Dyn);
    if (ndyn > 512)
        ndyn = 512;
    Elf64_Addr strtab = 0;
    if (pread(fd, dyn, ndyn * sizeof(Elf64_Dyn), (off_t)dyn_off) ==
        (ssize_t)(ndyn * sizeof(Elf64_Dyn))) {
        for (size_t i = 0; i < ndyn; i++)
            if (dyn[i].d_tag == DT_STRTAB)
                strtab = dyn[i].d_un.d_ptr;
        Elf64_Off stroff = 0;
        for (int i = 0; i < nph; i++)
            if (ph[i].p_type == PT_LOAD && strtab >= ph[i].p_vaddr &&
                strtab < ph[i].p_vaddr + ph[i].p_filesz)
                stroff = strtab - ph[i].p_vaddr + ph[i].p_offset;
        bool verbs = false, cudart = false;
        printf("  needs:");
        for (size_t i = 0; stroff && i < ndyn; i++) {
            if (dyn[i].d_tag != DT_NEEDED)
                continue;
            char name[256] = "";
            if (pread(fd, name, sizeof(name) - 1, (off_t)(stroff + dyn[i].d_un.d_val)) > 0) {
                name[sizeof(name) - 1] = '\0';
                printf(" %s", name);
                verbs |= strncmp(name, "libibverbs.so", 13) == 0;
                cudart |= strncmp(name, "libcudart.so", 12) == 0;
            }
        }
        printf("\n");
        if (!verbs)
            printf("  libibverbs is not linked directly: if the program dlopen()s it and looks "
                   "symbols up by handle, the RDMA hooks do not see those calls\n");
        if (!cudart)
            printf("  libcudart is not linked directly: a static or dlopen()ed CUDA runtime "
                   "bypasses the CUDA hooks\n");
    }
    close(fd);
}

int tsc_cmd_doctor(int argc, char **argv)
{
    struct pol_config cfg;
    char lib[4096];

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: teshim doctor [PROGRAM...]\n"
                   "Checks libibverbs, RDMA devices (PCIe relaxed ordering, sysfs traffic "
                   "class),\nthe memlock limit, the policy gate, and for each PROGRAM whether "
                   "LD_PRELOAD can reach it.\n");
            return 0;
        }
    printf("teshim %s\n", TESHIM_VERSION);
    if (tsc_library_path(lib, sizeof(lib)) == 0)
        printf("  library %s\n", lib);
    else
        warnings++;
    tsc_load_policy(&cfg, "teshim", false);
    printf("policy\n  gate %s, arm %s, config file %s\n", pol_gate_name(cfg.gate),
           pol_arm_name(cfg.arm), cfg.config_path[0] ? cfg.config_path : "(none)");
    if (cfg.gate == POL_GATE_KILLED)
        WARN("the kill switch is on (TESHIM_DISABLE or %s): nothing will be injected\n",
             pol_str(&cfg, POL_KILL_SWITCH_FILE));
    if (cfg.nwarnings)
        WARN("%u configuration problems (above)\n", cfg.nwarnings);
    check_verbs(&cfg);
    check_limits();
    for (int i = 1; i < argc; i++)
        check_program(argv[i]);
    printf("%d warning%s\n", warnings, warnings == 1 ? "" : "s");
    return warnings ? 1 : 0;
}
