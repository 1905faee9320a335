#include "emu_registry.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define EMU_REG_MAGIC 0x74657368696d7631ull /* "teshimv1" */
#define EMU_REG_VERSION 3
#define EMU_REG_MRS 8192
#define EMU_REG_QPS 4096
#define EMU_KEY_FIRST 0x1000u
#define EMU_QPN_FIRST 0x100u
#define EMU_QPN_MASK 0xffffffu

struct emu_registry {
    uint64_t magic;
    uint32_t version;
    uint32_t next_key;
    uint32_t next_qpn;
    pthread_mutex_t lock;
    struct emu_reg_mr mrs[EMU_REG_MRS];
    struct emu_reg_qp qps[EMU_REG_QPS];
};

static struct emu_registry *emu_reg;
static pthread_mutex_t emu_reg_open_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t emu_self_start;
static pid_t emu_self_pid;

static uint64_t emu_my_start(void)
{
    /* recomputed after fork: the child is a different process */
    if (emu_self_pid != getpid()) {
        emu_self_pid = getpid();
    }
    return emu_self_start;
}

uint64_t emu_proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    ssize_t n;
    int fd;
    char *p;
    uint64_t start = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* the command name may hold spaces: count fields after its ')' */
    p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    p += 2;
    for (int field = 3; field < 22 && p != NULL; field++) {
        p = strchr(p, ' ');
        if (p != NULL)
            p++;
    }
    if (p != NULL)
        start = strtoull(p, NULL, 10);
    return start;
}

static const char *emu_reg_path(char *buf, size_t len)
{
    const char *env = getenv("VERBS_EMU_REGISTRY");

    if (env != NULL && env[0] != '\0')
        snprintf(buf, len, "%s.v%d", env, EMU_REG_VERSION);
    else
        snprintf(buf, len, "/dev/shm/teshim-verbs-emu.%u.v%d", (unsigned)getuid(), EMU_REG_VERSION);
    return buf;
}

static int emu_reg_init_file(int fd, struct emu_registry *reg)
{
    pthread_mutexattr_t ma;
    int rc;

    memset(reg, 0, sizeof(*reg));
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    rc = pthread_mutex_init(&reg->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (rc != 0)
        return -rc;
    reg->next_key = EMU_KEY_FIRST;
    reg->next_qpn = EMU_QPN_FIRST;
    reg->version = EMU_REG_VERSION;
    __atomic_store_n(&reg->magic, EMU_REG_MAGIC, __ATOMIC_RELEASE);
    (void)fd;
    return 0;
}

int emu_reg_open(void)
{
    char pathbuf[4096];
    const char *path;
    struct emu_registry *reg;
    struct stat st;
    int fd, rc = 0;

    pthread_mutex_lock(&emu_reg_open_lock);
    if (emu_reg != NULL)
        goto out_unlock;
    path = emu_reg_path(pathbuf, sizeof(pathbuf));
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out_unlock;
    }
    /* flock serialises the creator's initialisation against other openers */
    if (flock(fd, LOCK_EX) != 0 || fstat(fd, &st) != 0) {
        rc = -errno;
        goto out_close;
    }
    if ((size_t)st.st_size != sizeof(*reg) && ftruncate(fd, sizeof(*reg)) != 0) {
        rc = -errno;
        goto out_close;
    }
    reg = mmap(NULL, sizeof(*reg), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (reg == MAP_FAILED) {
        rc = -errno;
        goto out_close;
    }
    if (reg->magic != EMU_REG_MAGIC || reg->version != EMU_REG_VERSION) {
        rc = emu_reg_init_file(fd, reg);
        if (rc != 0) {
            munmap(reg, sizeof(*reg));
            goto out_close;
        }
    }
    emu_reg = reg;
out_close:
    /* explicit: the mapping keeps the open file (and its flock) alive */
    flock(fd, LOCK_UN);
    close(fd);
out_unlock:
    pthread_mutex_unlock(&emu_reg_open_lock);
    if (rc == 0)
        emu_reg_reap();
    return rc;
}

static int emu_reg_lock(void)
{
    int rc;

    if (emu_reg == NULL) {
        rc = emu_reg_open();
        if (rc != 0)
            return rc;
    }
    rc = pthread_mutex_lock(&emu_reg->lock);
    /* a process died holding the lock: the tables are updated entry by
     * entry with the key written last, so they stay usable */
    if (rc == EOWNERDEAD)
        rc = pthread_mutex_consistent(&emu_reg->lock);
    return -rc;
}

static void emu_reg_unlock(void)
{
    pthread_mutex_unlock(&emu_reg->lock);
}

static bool emu_pid_dead(pid_t pid, uint64_t start)
{
    uint64_t now;

    if (pid == getpid())
        return false;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    now = emu_proc_start_time(pid);
    return now != 0 && start != 0 && now != start;
}

static int emu_reg_reap_locked(void)
{
    int reaped = 0;

    for (size_t i = 0; i < EMU_REG_MRS; i++) {
        struct emu_reg_mr *m = &emu_reg->mrs[i];
        if (m->key != 0 && emu_pid_dead(m->pid, m->start_time)) {
            m->key = 0;
            reaped++;
        }
    }
    for (size_t i = 0; i < EMU_REG_QPS; i++) {
        struct emu_reg_qp *q = &emu_reg->qps[i];
        if (q->qpn != 0 && emu_pid_dead(q->pid, q->start_time)) {
            q->qpn = 0;
            reaped++;
        }
    }
    return reaped;
}

int emu_reg_reap(void)
{
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    rc = emu_reg_reap_locked();
    emu_reg_unlock();
    return rc;
}

static struct emu_reg_mr *emu_mr_slot(uint32_t key)
{
    for (size_t i = 0; i < EMU_REG_MRS; i++)
        if (emu_reg->mrs[i].key == key)
            return &emu_reg->mrs[i];
    return NULL;
}

static struct emu_reg_qp *emu_qp_slot(uint32_t qpn)
{
    for (size_t i = 0; i < EMU_REG_QPS; i++)
        if (emu_reg->qps[i].qpn == qpn)
            return &emu_reg->qps[i];
    return NULL;
}

int emu_reg_mr_add(uint32_t pd, uint64_t addr, uint64_t length, uint64_t view, uint32_t access,
                   uint32_t *key_p)
{
    struct emu_reg_mr *slot;
    uint32_t key;
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    slot = emu_mr_slot(0);
    if (slot == NULL && emu_reg_reap_locked() > 0)
        slot = emu_mr_slot(0);
    if (slot == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    do {
        key = emu_reg->next_key++;
        if (emu_reg->next_key == 0)
            emu_reg->next_key = EMU_KEY_FIRST;
    } while (key == 0 || emu_mr_slot(key) != NULL);
    slot->pd = pd;
    slot->pid = getpid();
    slot->start_time = emu_my_start();
    slot->addr = addr;
    slot->length = length;
    slot->view = view;
    slot->access = access;
    __atomic_store_n(&slot->key, key, __ATOMIC_RELEASE);
    *key_p = key;
out:
    emu_reg_unlock();
    return rc;
}

int emu_reg_mr_update(uint32_t key, uint32_t pd, uint64_t addr, uint64_t length, uint32_t access)
{
    struct emu_reg_mr *slot;
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    slot = emu_mr_slot(key);
    if (slot == NULL || slot->pid != getpid()) {
        rc = -ENOENT;
    } else {
        slot->pd = pd;
        slot->addr = addr;
        slot->length = length;
        slot->view = addr;
        slot->access = access;
    }
    emu_reg_unlock();
    return rc;
}

int emu_reg_mr_del(uint32_t key)
{
    struct emu_reg_mr *slot;
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    slot = emu_mr_slot(key);
    if (slot == NULL || slot->pid != getpid())
        rc = -ENOENT;
    else
        slot->key = 0;
    emu_reg_unlock();
    return rc;
}

int emu_reg_mr_find(uint32_t key, struct emu_reg_mr *out)
{
    struct emu_reg_mr *slot;
    int rc;

    if (key == 0)
        return -ENOENT;
    rc = emu_reg_lock();
    if (rc != 0)
        return rc;
    slot = emu_mr_slot(key);
    if (slot == NULL)
        rc = -ENOENT;
    else
        *out = *slot;
    emu_reg_unlock();
    return rc;
}

int emu_reg_qp_add(uint32_t pd, uint32_t dev_index, uint32_t *qpn_p)
{
    struct emu_reg_qp *slot;
    uint32_t qpn;
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    slot = emu_qp_slot(0);
    if (slot == NULL && emu_reg_reap_locked() > 0)
        slot = emu_qp_slot(0);
    if (slot == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    do {
        qpn = emu_reg->next_qpn++ & EMU_QPN_MASK;
        if ((emu_reg->next_qpn & EMU_QPN_MASK) == 0)
            emu_reg->next_qpn = EMU_QPN_FIRST;
    } while (qpn < EMU_QPN_FIRST || emu_qp_slot(qpn) != NULL);
    slot->pd = pd;
    slot->pid = getpid();
    slot->start_time = emu_my_start();
    slot->access = 0;
    slot->state = 0; /* IBV_QPS_RESET */
    slot->dev_index = dev_index;
    __atomic_store_n(&slot->qpn, qpn, __ATOMIC_RELEASE);
    *qpn_p = qpn;
out:
    emu_reg_unlock();
    return rc;
}

int emu_reg_qp_update(uint32_t qpn, uint32_t state, uint32_t access)
{
    struct emu_reg_qp *slot;
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    slot = emu_qp_slot(qpn);
    if (slot == NULL || slot->pid != getpid()) {
        rc = -ENOENT;
    } else {
        slot->state = state;
        slot->access = access;
    }
    emu_reg_unlock();
    return rc;
}

int emu_reg_qp_del(uint32_t qpn)
{
    struct emu_reg_qp *slot;
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    slot = emu_qp_slot(qpn);
    if (slot == NULL || slot->pid != getpid())
        rc = -ENOENT;
    else
        slot->qpn = 0;
    emu_reg_unlock();
    return rc;
}

int emu_reg_qp_find(uint32_t qpn, struct emu_reg_qp *out)
{
    struct emu_reg_qp *slot;
    int rc;

    if (qpn == 0)
        return -ENOENT;
    rc = emu_reg_lock();
    if (rc != 0)
        return rc;
    slot = emu_qp_slot(qpn);
    if (slot == NULL)
        rc = -ENOENT;
    else
        *out = *slot;
    emu_reg_unlock();
    return rc;
}

int emu_reg_count_pid(pid_t pid)
{
    int n = 0;
    int rc = emu_reg_lock();

    if (rc != 0)
        return rc;
    for (size_t i = 0; i < EMU_REG_MRS; i++)
        if (emu_reg->mrs[i].key != 0 && emu_reg->mrs[i].pid == pid)
            n++;
    for (size_t i = 0; i < EMU_REG_QPS; i++)
        if (emu_reg->qps[i].qpn != 0 && emu_reg->qps[i].pid == pid)
            n++;
    emu_reg_unlock();
    return n;
}
