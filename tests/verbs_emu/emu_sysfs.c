/* The emulated devices' PCIe functions as a sysfs tree on disk.
 *
 * With VERBS_EMU_SYSFS=DIR the emulation writes, when it sets its devices
 * up, what a reader of PCIe config space finds under /sys for a NIC behind
 * a root port:
 *   DIR/class/infiniband/emuN/device -> ../../../devices/pci0000:00/0000:00:0M.0/0000:0M:00.0
 *   DIR/devices/pci0000:00/0000:00:0M.0/config           the root port (M = N + 1)
 *   DIR/devices/pci0000:00/0000:00:0M.0/0000:0M:00.0/config   the NIC's function
 * Each config file is a 4 KiB config space with a PCI Express capability
 * whose Device Control register has Relaxed Ordering enabled, or disabled
 * with VERBS_EMU_PCIE_RO=0 (a platform that turned it off). Readers given
 * DIR as their sysfs root (teshim's rdma.sysfs_root) see it; the devices'
 * ibdev_path stays /sys/class/infiniband/emuN. Files are replaced by
 * rename, so processes that start together never read a half-written one.
 */
#include "emu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_SIZE 4096
#define CFG_CAP 0x40           /* where the PCIe capability sits */
#define PCIE_TYPE_ENDPOINT 0x0 /* Device/Port Type of the capability */
#define PCIE_TYPE_ROOT_PORT 0x4
#define DEVCTL_BASE 0x5820     /* max read 4 KiB, no snoop off, payload 256 */
#define DEVCTL_RELAX_EN 0x0010 /* "RlxdOrd", bit 4 of Device Control */

static void put16(unsigned char *c, size_t off, unsigned v)
{
    c[off] = (unsigned char)(v & 0xff);
    c[off + 1] = (unsigned char)(v >> 8);
}

/* A type-0 (endpoint) or type-1 (bridge) header with one capability. */
static void make_config(unsigned char *c, bool root_port, bool ro)
{
    memset(c, 0, CFG_SIZE);
    put16(c, 0x00, 0x7e5e);                      /* vendor: the emulation's own */
    put16(c, 0x02, root_port ? 0x0001 : 0x0002); /* device */
    put16(c, 0x04, 0x0406);                      /* command: memory, bus master */
    put16(c, 0x06, 0x0010);                      /* status: capability list */
    c[0x0a] = root_port ? 0x04 : 0x07;           /* subclass: PCI bridge / InfiniBand */
    c[0x0b] = root_port ? 0x06 : 0x02;           /* class: bridge / network */
    c[0x0e] = root_port ? 0x01 : 0x00;           /* header type */
    c[0x34] = CFG_CAP;
    c[CFG_CAP] = 0x10; /* PCI Express capability, last in the list */
    put16(c, CFG_CAP + 2, 0x2 | (root_port ? PCIE_TYPE_ROOT_PORT : PCIE_TYPE_ENDPOINT) << 4);
    put16(c, CFG_CAP + 8, DEVCTL_BASE | (ro ? DEVCTL_RELAX_EN : 0));
}

static int mkdirs(const char *path)
{
    char buf[4096];

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -errno : 0;
}

/* Write path through a temporary and rename; 0 or -errno. */
static int write_file(const char *path, const unsigned char *data, size_t len)
{
    char tmp[4500];
    int fd, rc = 0;

    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (write(fd, data, len) != (ssize_t)len)
        rc = -EIO;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

static int make_link(const char *target, const char *path)
{
    char tmp[4500];

    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    unlink(tmp);
    if (symlink(target, tmp) != 0)
        return -errno;
    if (rename(tmp, path) != 0) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    return 0;
}

static int publish_one(const char *dir, int index, bool ro, unsigned char *cfg)
{
    char port[4200], fn[4300], path[4400], cls[4200], target[256];
    int rc;

    snprintf(port, sizeof(port), "%s/devices/pci0000:00/0000:00:%02x.0", dir, index + 1);
    snprintf(fn, sizeof(fn), "%s/0000:%02x:00.0", port, index + 1);
    snprintf(cls, sizeof(cls), "%s/class/infiniband/emu%d", dir, index);
    if ((rc = mkdirs(fn)) != 0 || (rc = mkdirs(cls)) != 0)
        return rc;
    make_config(cfg, true, ro);
    snprintf(path, sizeof(path), "%s/config", port);
    if ((rc = write_file(path, cfg, CFG_SIZE)) != 0)
        return rc;
    make_config(cfg, false, ro);
    snprintf(path, sizeof(path), "%s/config", fn);
    if ((rc = write_file(path, cfg, CFG_SIZE)) != 0)
        return rc;
    snprintf(target, sizeof(target), "../../../devices/pci0000:00/0000:00:%02x.0/0000:%02x:00.0",
             index + 1, index + 1);
    snprintf(path, sizeof(path), "%s/device", cls);
    return make_link(target, path);
}

void emu_sysfs_publish(int ndevices)
{
    const char *dir = getenv("VERBS_EMU_SYSFS");
    const char *ro_env = getenv("VERBS_EMU_PCIE_RO");
    bool ro = !(ro_env && strcmp(ro_env, "0") == 0);
    unsigned char *cfg;

    if (dir == NULL || *dir == '\0')
        return;
    cfg = malloc(CFG_SIZE);
    if (cfg == NULL)
        return;
    for (int i = 0; i < ndevices; i++) {
        int rc = publish_one(dir, i, ro, cfg);
        if (rc != 0) {
            emu_log("VERBS_EMU_SYSFS=%s: emu%d's PCIe config not written: %s", dir, i,
                    strerror(-rc));
            break;
        }
    }
    free(cfg);
}
