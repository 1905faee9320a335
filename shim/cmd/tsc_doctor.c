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
#include <sys/mman.h>
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

/*
 * What a program's file says about how it reaches CUDA and libibverbs: the
 * libraries it names (DT_NEEDED), the functions it imports (undefined
 * dynamic symbols), functions it defines itself (a static CUDA runtime,
 * when not stripped) and strings it carries (names it dlopen's or looks
 * up). Read from the file, never by loading it.
 */
struct elf_facts {
    bool elf64, dynamic;
    char cudart[64]; /* DT_NEEDED libcudart.so.N, "" if none */
    bool need_cuda, need_verbs;
    bool imp_dlopen, imp_dlsym, imp_devx, imp_cu, imp_ibv;
    bool def_cudart; /* defines cudaMemcpy itself */
    bool str_gpa, str_verbs, str_devx;
};

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void note_needed(struct elf_facts *f, const char *name)
{
    if (has_prefix(name, "libcudart.so"))
        snprintf(f->cudart, sizeof(f->cudart), "%s", name);
    f->need_cuda |= has_prefix(name, "libcuda.so");
    f->need_verbs |= has_prefix(name, "libibverbs.so");
}

static void note_symbol(struct elf_facts *f, const char *name, bool defined)
{
    if (!defined) {
        f->imp_dlopen |= strcmp(name, "dlopen") == 0;
        f->imp_dlsym |= strcmp(name, "dlsym") == 0 || strcmp(name, "dlvsym") == 0;
        f->imp_devx |= has_prefix(name, "mlx5dv_devx_");
        f->imp_cu |= has_prefix(name, "cuMemcpy") || has_prefix(name, "cuGetProcAddress");
        f->imp_ibv |= has_prefix(name, "ibv_");
    } else {
        f->def_cudart |= strcmp(name, "cudaMemcpy") == 0;
    }
}

/* Every symbol of the section headers' symbol tables (.dynsym, .symtab). */
static void scan_symbols(const unsigned char *img, size_t len, struct elf_facts *f)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;

    if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shoff > len ||
        (len - eh->e_shoff) / sizeof(Elf64_Shdr) < eh->e_shnum)
        return;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(img + eh->e_shoff);
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM && sh[i].sh_type != SHT_SYMTAB)
            continue;
        if (sh[i].sh_link >= eh->e_shnum || sh[i].sh_offset > len ||
            sh[i].sh_size > len - sh[i].sh_offset)
            continue;
        const Elf64_Shdr *st = &sh[sh[i].sh_link];
        if (st->sh_offset > len || st->sh_size > len - st->sh_offset || st->sh_size == 0)
            continue;
        const char *str = (const char *)img + st->sh_offset;
        const Elf64_Sym *sym = (const Elf64_Sym *)(img + sh[i].sh_offset);
        size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 1; k < n; k++) {
            if (sym[k].st_name >= st->sh_size ||
                !memchr(str + sym[k].st_name, '\0', st->sh_size - sym[k].st_name))
                continue;
            note_symbol(f, str + sym[k].st_name, sym[k].st_shndx != SHN_UNDEF);
        }
    }
}

/* DT_NEEDED names, through the dynamic segment and the load segments. */
static void scan_needed(const unsigned char *img, size_t len, const Elf64_Phdr *ph, int nph,
                        const Elf64_Phdr *dynp, struct elf_facts *f)
{
    Elf64_Addr strtab = 0;
    Elf64_Off stroff = 0;

    if (dynp->p_offset > len || dynp->p_filesz > len - dynp->p_offset)
        return;
    const Elf64_Dyn *dyn = (const Elf64_Dyn *)(img + dynp->p_offset);
    size_t ndyn = dynp->p_filesz / sizeof(Elf64_Dyn);
    for (size_t i = 0; i < ndyn; i++)
        if (dyn[i].d_tag == DT_STRTAB)
            strtab = dyn[i].d_un.d_ptr;
    for (int i = 0; i < nph; i++)
        if (ph[i].p_type == PT_LOAD && strtab >= ph[i].p_vaddr &&
            strtab < ph[i].p_vaddr + ph[i].p_filesz)
            stroff = strtab - ph[i].p_vaddr + ph[i].p_offset;
    if (!stroff)
        return;
    printf("  needs:");
    for (size_t i = 0; i < ndyn; i++) {
        if (dyn[i].d_tag != DT_NEEDED || stroff + dyn[i].d_un.d_val >= len)
            continue;
        const char *name = (const char *)img + stroff + dyn[i].d_un.d_val;
        if (!memchr(name, '\0', len - (stroff + dyn[i].d_un.d_val)))
            continue;
        printf(" %s", name);
        note_needed(f, name);
    }
    printf("\n");
}

static bool contains(const unsigned char *img, size_t len, const char *s)
{
    return memmem(img, len, s, strlen(s)) != NULL;
}

static void scan_elf(const unsigned char *img, size_t len, struct elf_facts *f)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;
    bool interp = false;
    const Elf64_Phdr *dynp = NULL;

    memset(f, 0, sizeof(*f));
    if (len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_phentsize != sizeof(Elf64_Phdr) ||
        eh->e_phoff > len || (len - eh->e_phoff) / sizeof(Elf64_Phdr) < eh->e_phnum)
        return;
    f->elf64 = true;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(img + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++) {
        interp |= ph[i].p_type == PT_INTERP;
        if (ph[i].p_type == PT_DYNAMIC)
            dynp = &ph[i];
    }
    /* A shared library has no PT_INTERP but is loaded by one. */
    f->dynamic = dynp && (interp || eh->e_type == ET_DYN);
    if (!f->dynamic)
        return;
    scan_needed(img, len, ph, eh->e_phnum, dynp, f);
    scan_symbols(img, len, f);
    f->str_gpa = contains(img, len, "cuGetProcAddress");
    f->str_verbs = contains(img, len, "libibverbs.so");
    f->str_devx = contains(img, len, "mlx5dv_devx_");
}

#if defined(__x86_64__)
#define DL_HOOKS true /* shim_hooks_dl.def: the dlsym/dlvsym hooks exist here */
#else
#define DL_HOOKS false
#endif

/* One line per path through which the program reaches CUDA or RDMA. */
static void predict(const struct elf_facts *f)
{
    bool looks_up = f->imp_dlopen && f->imp_dlsym, any = false;

    if (f->cudart[0]) {
        printf("  reach cuda-runtime: shared %s: the runtime hooks (cudaMemcpy*)\n", f->cudart);
        any = true;
    } else if (f->def_cudart || (f->str_gpa && !f->need_cuda)) {
        /* The name cuGetProcAddress in a program not linked with the driver
         * is what a static runtime looks up after dlopen'ing it (a
         * driver-API caller linked with libcuda.so.1 names it too). */
        if (looks_up && DL_HOOKS)
            printf("  reach cuda-static-runtime: a CUDA runtime linked in (%s): the driver hooks, "
                   "through dlsym of cuGetProcAddress_v2 and teshim's cuGetProcAddress\n",
                   f->def_cudart ? "defines cudaMemcpy" : "looks up cuGetProcAddress");
        else
            WARN("a CUDA runtime linked in, %s: not reachable\n",
                 looks_up ? "and dlsym hooks are x86-64 only" : "without dlopen/dlsym imports");
        any = true;
    }
    if (f->need_cuda || f->imp_cu) {
        printf("  reach cuda-driver: the driver API (%s): the driver copy hooks\n",
               f->need_cuda ? "libcuda.so.1 linked" : "cuMemcpy* imported");
        any = true;
    }
    if (f->need_verbs || f->imp_ibv) {
        printf("  reach verbs-linked: libibverbs linked: the verbs hooks (registrations, QP "
               "transitions)\n");
        any = true;
    } else if (f->str_verbs && f->imp_dlopen) {
        if (looks_up && DL_HOOKS)
            printf("  reach verbs-dlopen: libibverbs dlopen'ed: the verbs hooks, through "
                   "dlsym/dlvsym\n");
        else
            WARN("libibverbs dlopen'ed %s: not reachable\n",
                 looks_up ? "and dlsym hooks are x86-64 only" : "without dlsym/dlvsym imports");
        any = true;
    }
    if (f->imp_devx || f->str_devx) {
        WARN("not reachable devx: mlx5dv_devx_* (DevX) programs the NIC directly: traffic class "
             "or ordering set there is outside the verbs hooks\n");
        any = true;
    }
    if (!any)
        printf("  no CUDA or RDMA path in this file (the libraries it loads may have theirs: "
               "name them too)\n");
}

/* A bare name is looked for in PATH, as the shell would. */
static const char *find_program(const char *prog, char *buf, size_t len)
{
    const char *path = getenv("PATH");

    if (strchr(prog, '/') || !path)
        return prog;
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(buf, len, "%.*s%s%s", (int)n, p, n ? "/" : "", prog);
        if (access(buf, X_OK) == 0)
            return buf;
        p += n + (p[n] == ':');
    }
    return prog;
}

/* What LD_PRELOAD reaches in a program, path by path. */
static void check_program(const char *arg)
{
    char found[4096];
    const char *prog = find_program(arg, found, sizeof(found));
    struct elf_facts f;
    struct stat st;
    void *img;
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
    img =
        st.st_size > 0 ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    if (img == MAP_FAILED) {
        printf("  not a 64-bit ELF executable (a script? its interpreter is what runs)\n");
        return;
    }
    scan_elf(img, (size_t)st.st_size, &f);
    if (!f.elf64)
        printf("  not a 64-bit ELF executable (a script? its interpreter is what runs)\n");
    else if (!f.dynamic)
        WARN("not reachable static: statically linked: LD_PRELOAD has no effect on it, nothing "
             "is reached\n");
    else
        predict(&f);
    munmap(img, (size_t)st.st_size);
}

int tsc_cmd_doctor(int argc, char **argv)
{
    struct pol_config cfg;
    char lib[4096];

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: teshim doctor [PROGRAM...]\n"
                   "Checks libibverbs, RDMA devices (PCIe relaxed ordering, sysfs traffic "
                   "class),\nthe memlock limit, the policy gate, and for each PROGRAM (a path, "
                   "or a name\nlooked for in PATH) what teshim will reach, path by path: a "
                   "shared or static\nCUDA runtime, the driver API, libibverbs linked or "
                   "dlopen'ed, DevX, a static\nexecutable.\n");
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
