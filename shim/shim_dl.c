/*
 * dlsym and dlvsym: reach what a host looks up itself (shim_hooks_dl.def).
 *
 * Three duties:
 *   - find glibc's own dlsym and dlvsym without asking dlsym (teshim's
 *     definitions come first in the search order, its own calls included):
 *     read them from the dynamic symbol table of the object that defines
 *     dladdr1, the same object (libc, or libdl before glibc 2.34);
 *   - keep RTLD_NEXT relative to the real caller: glibc takes the caller
 *     from dlsym's return address, so the real function is entered with a
 *     return address inside the caller's object, a "ret" instruction found
 *     in that object's executable segment, which returns on to us. Every
 *     lookup answers exactly as glibc would answer the caller: order,
 *     namespaces, dlerror text. Calls from teshim itself go straight;
 *   - substitute: where the real answer is the real function of a hooked
 *     row, return teshim's hook instead (the CUDA driver's lookup and copy
 *     family, shim_cudrv.c; libibverbs rows when the answer lies in
 *     libibverbs). Everything else is returned untouched.
 * No allocation, no stdio, no initialisation here: shim_resolve runs
 * through these hooks from inside the allocator hooks.
 */
#include "shim.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <string.h>

/* This file defines the rows of shim_hooks_dl.def. */
#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_dl.def"
#undef HOOK

#ifdef SHIM_HAVE_DL_HOOKS

typedef void *(*dlsym_fn)(void *, const char *);
typedef void *(*dlvsym_fn)(void *, const char *, const char *);

/* ---- the real functions, from libc's dynamic symbol table ---------------- */

struct elf_tab {
    ElfW(Addr) base;
    const ElfW(Sym) * sym;
    const char *str;
    const ElfW(Half) * versym;
    const Elf32_Word *gnu_hash;
    const Elf32_Word *sysv_hash;
};

static const void *dyn_ptr(ElfW(Addr) base, ElfW(Addr) p)
{
    /* glibc relocates these entries in place where the section is writable;
     * an unrelocated one is an offset from the load base. */
    return (const void *)(p < base ? base + p : p);
}

static bool elf_tab_of(const struct link_map *lm, struct elf_tab *t)
{
    memset(t, 0, sizeof(*t));
    t->base = lm->l_addr;
    for (const ElfW(Dyn) *d = lm->l_ld; d && d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB:
            t->sym = dyn_ptr(t->base, d->d_un.d_ptr);
            break;
        case DT_STRTAB:
            t->str = dyn_ptr(t->base, d->d_un.d_ptr);
            break;
        case DT_VERSYM:
            t->versym = dyn_ptr(t->base, d->d_un.d_ptr);
            break;
        case DT_GNU_HASH:
            t->gnu_hash = dyn_ptr(t->base, d->d_un.d_ptr);
            break;
        case DT_HASH:
            t->sysv_hash = dyn_ptr(t->base, d->d_un.d_ptr);
            break;
        default:
            break;
        }
    }
    return t->sym && t->str && (t->gnu_hash || t->sysv_hash);
}

static bool sym_ok(const struct elf_tab *t, Elf32_Word i, const char *name)
{
    const ElfW(Sym) *s = &t->sym[i];

    if (s->st_shndx == SHN_UNDEF || ELF64_ST_TYPE(s->st_info) != STT_FUNC ||
        strcmp(t->str + s->st_name, name) != 0)
        return false;
    /* The default version (not hidden), as dlsym would answer. */
    return !t->versym || !(t->versym[i] & 0x8000);
}

/* A defined function name of t (its default version), or NULL. */
static void *elf_lookup(const struct elf_tab *t, const char *name)
{
    if (t->gnu_hash) {
        const Elf32_Word *h = t->gnu_hash;
        Elf32_Word nbuckets = h[0], symoff = h[1], bloom = h[2];
        const Elf32_Word *buckets = (const Elf32_Word *)((const ElfW(Addr) *)(h + 4) + bloom);
        const Elf32_Word *chain = buckets + nbuckets;
        uint32_t hv = 5381;

        for (const unsigned char *c = (const unsigned char *)name; *c; c++)
            hv = hv * 33 + *c;
        for (Elf32_Word i = buckets[hv % nbuckets]; i >= symoff && i; i++) {
            Elf32_Word ch = chain[i - symoff];
            if ((ch | 1) == (hv | 1) && sym_ok(t, i, name))
                return (void *)(t->base + t->sym[i].st_value);
            if (ch & 1)
                break;
        }
        return NULL;
    }
    {
        const Elf32_Word *h = t->sysv_hash;
        Elf32_Word nbucket = h[0];
        const Elf32_Word *bucket = h + 2, *chain = bucket + nbucket;
        uint32_t hv = 0, g;

        for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
            hv = (hv << 4) + *c;
            g = hv & 0xf0000000u;
            if (g)
                hv ^= g >> 24;
            hv &= ~g;
        }
        for (Elf32_Word i = bucket[hv % nbucket]; i; i = chain[i])
            if (sym_ok(t, i, name))
                return (void *)(t->base + t->sym[i].st_value);
    }
    return NULL;
}

static _Atomic(dlsym_fn) real_dlsym;
static _Atomic(dlvsym_fn) real_dlvsym;

/* Idempotent: racing threads compute the same answer. */
static bool real_fns(void)
{
    Dl_info info;
    struct link_map *lm = NULL;
    struct elf_tab t;
    void *s, *v;

    if (atomic_load_explicit(&real_dlvsym, memory_order_acquire))
        return true;
    if (!dladdr1((void *)dladdr1, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm ||
        !elf_tab_of(lm, &t))
        return false;
    s = elf_lookup(&t, "dlsym");
    v = elf_lookup(&t, "dlvsym");
    if (!s || !v || shim_is_own(s) || shim_is_own(v))
        return false;
    atomic_store_explicit(&real_dlsym, (dlsym_fn)s, memory_order_release);
    atomic_store_explicit(&real_dlvsym, (dlvsym_fn)v, memory_order_release);
    return true;
}

/* ---- calling as the caller ---------------------------------------------------- */

/*
 * shim_dl_as3(a, b, c, fn, gadget): fn(a, b, c) entered with return
 * address gadget, a "ret" in the caller's object, below which the stack
 * holds gadget once more (keeping the 16-byte alignment of a call) and our
 * own return address: fn returns to gadget, gadget returns to gadget, that
 * returns here. glibc reads its caller from that first return address.
 */
void *shim_dl_as3(void *a, const void *b, const void *c, void *fn, const void *gadget);
__asm__(".text\n"
        ".globl shim_dl_as3\n"
        ".hidden shim_dl_as3\n"
        ".type shim_dl_as3, @function\n"
        "shim_dl_as3:\n"
        "    pushq %r8\n"
        "    pushq %r8\n"
        "    jmpq *%rcx\n"
        ".size shim_dl_as3, .-shim_dl_as3\n");

/* A "ret" byte (0xc3) in the executable segment of the object at base. */
static const void *find_gadget(const void *base)
{
    static _Atomic(const void *) cache_base[16], cache_gadget[16];
    unsigned slot = (unsigned)(((uintptr_t)base >> 12) % 16);
    const ElfW(Ehdr) *eh = base;
    const ElfW(Phdr) * ph;
    struct link_map *lm = NULL;
    Dl_info info;

    if (atomic_load_explicit(&cache_base[slot], memory_order_acquire) == base)
        return atomic_load_explicit(&cache_gadget[slot], memory_order_relaxed);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        !dladdr1(base, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return NULL;
    ph = (const ElfW(Phdr) *)((const char *)base + eh->e_phoff);
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        const unsigned char *p, *end;
        if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_X))
            continue;
        p = (const unsigned char *)(lm->l_addr + ph[i].p_vaddr);
        end = p + ph[i].p_filesz;
        for (; p < end; p++)
            if (*p == 0xc3) {
                atomic_store_explicit(&cache_gadget[slot], p, memory_order_relaxed);
                atomic_store_explicit(&cache_base[slot], base, memory_order_release);
                return p;
            }
    }
    return NULL;
}

/* Run a real lookup as caller would have: (void *) result. */
static void *lookup_as(const void *caller, void *handle, const char *name, const char *version)
{
    Dl_info info;
    const void *gadget = NULL;
    dlsym_fn s = atomic_load_explicit(&real_dlsym, memory_order_acquire);
    dlvsym_fn v = atomic_load_explicit(&real_dlvsym, memory_order_acquire);
    void *fn;

    if (!shim_is_own(caller) && dladdr(caller, &info) && info.dli_fbase)
        gadget = find_gadget(info.dli_fbase);
    if (!gadget)
        return version ? v(handle, name, version) : s(handle, name);
    fn = version ? (void *)v : (void *)s;
    return shim_dl_as3(handle, name, version, fn, gadget);
}

/* ---- substitution --------------------------------------------------------------- */

/*
 * The verbs row a lookup of name (at version, or the default one) names,
 * when p is that function of the real libibverbs: its hook, with p adopted
 * as the real function if the hook had none (a library opened RTLD_LOCAL).
 * A real function other than the one the hook forwards to stays untouched.
 */
static void *ibv_substitute(const char *name, const char *version, void *p)
{
    for (int id = 0; id < SHIM_HK_COUNT; id++) {
        const struct shim_hook_info *h = &shim_hooks[id];
        void *real;
        if (h->lib != SHIM_LIB_IBV || strcmp(h->name, name) != 0)
            continue;
        if (version ? strcmp(h->version, version) != 0 : false)
            continue;
        if (!shim_in_library(p, "libibverbs.so"))
            return p;
        real = shim_resolve((enum shim_hook_id)id);
        if (!real) {
            real = shim_adopt_real((enum shim_hook_id)id, p);
            /* A library RTLD_NEXT does not see: every verbs row takes its
             * real function from it (auto relaxed ordering asks whether
             * ibv_reg_mr_iova2 exists). */
            for (int j = 0; j < SHIM_HK_COUNT; j++)
                if (shim_hooks[j].lib == SHIM_LIB_IBV)
                    shim_resolve_in((enum shim_hook_id)j, p);
        }
        if (real != p) {
            /* dlsym without a version: the default one; another row of the
             * name may be it. */
            if (!version)
                continue;
            return p;
        }
        return shim_hook_addr((enum shim_hook_id)id);
    }
    return p;
}

static void *substitute(enum shim_hook_id id, const void *caller, const char *name,
                        const char *version, void *p)
{
    void *q = p;

    if (!p || !name || shim_is_own(caller) || shim_is_own(p))
        return p;
    if (name[0] == 'c' && name[1] == 'u')
        q = shim_cudrv_substitute(name, p);
    else if (name[0] == 'i' && name[1] == 'b' && name[2] == 'v')
        q = ibv_substitute(name, version, p);
    if (q != p) {
        shim_count_call(id);
        shim_count_result(id, SHIM_C_INJECTED, (intptr_t)q, 0);
    }
    return q;
}

static void *dl_hook(enum shim_hook_id id, const void *caller, void *handle, const char *name,
                     const char *version)
{
    void *p;

    if (!real_fns())
        return NULL; /* cannot happen with a working libc; nothing to forward to */
    p = lookup_as(caller, handle, name, version);
    return substitute(id, caller, name, version, p);
}

void *shim_hook_dlsym_g2_34(void *handle, const char *name)
{
    return dl_hook(SHIM_HK_dlsym_g2_34, __builtin_return_address(0), handle, name, NULL);
}

void *shim_hook_dlsym_g_old(void *handle, const char *name)
{
    return dl_hook(SHIM_HK_dlsym_g_old, __builtin_return_address(0), handle, name, NULL);
}

void *shim_hook_dlvsym_g2_34(void *handle, const char *name, const char *version)
{
    return dl_hook(SHIM_HK_dlvsym_g2_34, __builtin_return_address(0), handle, name, version);
}

void *shim_hook_dlvsym_g_old(void *handle, const char *name, const char *version)
{
    return dl_hook(SHIM_HK_dlvsym_g_old, __builtin_return_address(0), handle, name, version);
}

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_dl.def"
#undef HOOK

#endif
