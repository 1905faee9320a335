/* PCIe state of RDMA devices, read from sysfs (root configurable for tests). */
#include "pol.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#define PCI_STATUS 0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAPABILITY_LIST 0x34
#define PCI_CAP_ID_EXP 0x10
#define PCI_EXP_DEVCTL 0x08
#define PCI_EXP_DEVCTL_RELAX_EN 0x0010

int pol_pcie_relaxed_ordering(const char *sysfs_root, const char *device)
{
    unsigned char cfg[4096];
    char path[512];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/class/infiniband/%s/device/config",
             sysfs_root && *sysfs_root ? sysfs_root : "/sys", device);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = pread(fd, cfg, sizeof(cfg), 0);
    close(fd);
    if (n < 0)
        return -errno;
    /* Without CAP_SYS_ADMIN the kernel returns only the 64-byte header. */
    if (n <= PCI_CAPABILITY_LIST)
        return -EACCES;
    if (!(cfg[PCI_STATUS] & PCI_STATUS_CAP_LIST))
        return -ENOENT;
    unsigned pos = cfg[PCI_CAPABILITY_LIST] & ~3u;
    for (int guard = 0; pos >= 0x40 && guard < 48; guard++) {
        if (pos + PCI_EXP_DEVCTL + 2 > (size_t)n)
            return -EACCES;
        if (cfg[pos] == PCI_CAP_ID_EXP) {
            unsigned devctl = cfg[pos + PCI_EXP_DEVCTL] | (cfg[pos + PCI_EXP_DEVCTL + 1] << 8);
            return (devctl & PCI_EXP_DEVCTL_RELAX_EN) ? 1 : 0;
        }
        pos = cfg[pos + 1] & ~3u;
    }
    return -ENOENT;
}
