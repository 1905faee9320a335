/* The registry of memory regions and queue pairs that all processes of one
 * user share (a file in /dev/shm, VERBS_EMU_REGISTRY overrides the path).
 * A remote access names only an rkey and a QP number; the registry tells
 * which process owns them and what they allow. Entries of processes that
 * died are reaped whenever a process opens the registry or adds an entry.
 * The file's name ends in the layout's version (".v3"): programs built
 * with another layout use another file. */
#ifndef TESHIM_EMU_REGISTRY_H
#define TESHIM_EMU_REGISTRY_H

#include <stdint.h>
#include <sys/types.h>

struct emu_reg_mr {
    uint32_t key;
    uint32_t pd;
    int32_t pid;
    uint32_t access;
    uint64_t start_time;
    uint64_t addr;
    uint64_t length;
    /* where the owner's bytes of [addr, +length) are reachable with
     * process_vm_*: addr itself, or for device memory registered through
     * the peer-memory client, the emulated runtime's read-write view */
    uint64_t view;
};

struct emu_reg_qp {
    uint32_t qpn;
    uint32_t pd;
    int32_t pid;
    uint32_t access;
    uint64_t start_time;
    uint32_t state;
    uint32_t dev_index;
};

/* Open (create on first use) the registry; 0 or -errno. Idempotent. */
int emu_reg_open(void);

/* Add a memory region owned by this process, its bytes reachable at view;
 * sets *key_p to a key unique among live entries (used as both lkey and
 * rkey). 0 or -errno. */
int emu_reg_mr_add(uint32_t pd, uint64_t addr, uint64_t length, uint64_t view, uint32_t access,
                   uint32_t *key_p);
/* Change an entry of this process (rereg; its bytes then at addr). 0 or
 * -ENOENT. */
int emu_reg_mr_update(uint32_t key, uint32_t pd, uint64_t addr, uint64_t length, uint32_t access);
int emu_reg_mr_del(uint32_t key);
/* Copy the entry with this key (any process); 0 or -ENOENT. */
int emu_reg_mr_find(uint32_t key, struct emu_reg_mr *out);

/* Allocate a QP number unique among live entries and publish the QP. */
int emu_reg_qp_add(uint32_t pd, uint32_t dev_index, uint32_t *qpn_p);
int emu_reg_qp_update(uint32_t qpn, uint32_t state, uint32_t access);
int emu_reg_qp_del(uint32_t qpn);
int emu_reg_qp_find(uint32_t qpn, struct emu_reg_qp *out);

/* Remove the entries of dead processes now; returns how many went. */
int emu_reg_reap(void);
/* Number of live-table entries (MRs and QPs) owned by pid. */
int emu_reg_count_pid(pid_t pid);

/* Start time of a process (clock ticks since boot), 0 if unknown. */
uint64_t emu_proc_start_time(pid_t pid);

#endif
