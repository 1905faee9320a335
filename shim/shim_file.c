/*
 * The files libteshim.so writes: the per-process report (stats.dir) and the
 * log (log.file). A process under teshim may be root, or a setuid program
 * loaded system-wide, writing into a directory someone else can write to
 * (/tmp). Nothing here follows a symlink in the last component, opens a
 * non-regular file, or writes into a directory another user owns or may
 * replace files in without the sticky bit. Every later step is relative to
 * the one directory descriptor checked (openat, renameat2): a directory
 * swapped after the check is never written into.
 */
#include "shim.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Refuse a directory another user controls; 0 or -EPERM (logged). */
static int check_dir(const char *what, const char *dir, const struct stat *st)
{
    uid_t me = geteuid();

    if (st->st_uid != 0 && st->st_uid != me) {
        shim_warn("%s %s: owned by uid %u, not by this user or root; refused", what, dir,
                  (unsigned)st->st_uid);
        return -EPERM;
    }
    if ((st->st_mode & S_IWOTH) && !(st->st_mode & S_ISVTX)) {
        shim_warn("%s %s: writable by every user without the sticky bit; refused", what, dir);
        return -EPERM;
    }
    return 0;
}

int shim_dir_open(const char *what, const char *dir, bool create, bool *shared_p)
{
    struct stat st;
    int fd, rc;

    if (strnlen(dir, PATH_MAX) >= PATH_MAX) {
        shim_warn("%s: path longer than %d bytes; refused", what, PATH_MAX - 1);
        return -ENAMETOOLONG;
    }
    if (create && mkdir(dir, 0755) != 0 && errno != EEXIST) {
        int err = -errno;
        shim_warn("%s %s: %m", what, dir);
        return err;
    }
    /* O_NOFOLLOW: a symlink planted at the directory's own name is refused;
     * components above it are the configuration's to choose. */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int err = -errno;
        shim_warn("%s %s: %m", what, dir);
        return err;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        shim_warn("%s %s: %m", what, dir);
        goto err_close;
    }
    rc = check_dir(what, dir, &st);
    if (rc)
        goto err_close;
    if (shared_p)
        *shared_p = (st.st_mode & S_IWOTH) != 0;
    return fd;

err_close:
    close(fd);
    return rc;
}

int shim_file_check(const char *what, const char *path, int fd, bool shared)
{
    struct stat st;

    if (fstat(fd, &st) != 0) {
        shim_warn("%s %s: %m", what, path);
        return -EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        shim_warn("%s %s: not a regular file; refused", what, path);
        return -EINVAL;
    }
    if (st.st_nlink != 1) {
        shim_warn("%s %s: has %lu hard links; refused", what, path, (unsigned long)st.st_nlink);
        return -EPERM;
    }
    if (shared && st.st_uid != geteuid()) {
        shim_warn("%s %s: owned by uid %u in a directory every user may write to; refused", what,
                  path, (unsigned)st.st_uid);
        return -EPERM;
    }
    return 0;
}

int shim_log_file_open(const char *path)
{
    char dir[PATH_MAX];
    const char *base = strrchr(path, '/');
    bool shared = false;
    int dfd, fd, rc;

    if (strnlen(path, PATH_MAX) >= PATH_MAX) {
        shim_warn("log.file: path longer than %d bytes; refused", PATH_MAX - 1);
        return -ENAMETOOLONG;
    }
    if (!base) {
        snprintf(dir, sizeof(dir), ".");
        base = path;
    } else {
        size_t n = (size_t)(base - path);
        if (n == 0)
            n = 1; /* "/name": the root directory */
        memcpy(dir, path, n);
        dir[n] = '\0';
        base++;
    }
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        shim_warn("log.file %s: not a file name; refused", path);
        return -EINVAL;
    }
    dfd = shim_dir_open("log.file directory", dir, false, &shared);
    if (dfd < 0)
        return dfd;
    /* Non-blocking: a FIFO planted at the name must not hang the program
     * (the type check below then refuses it). Existing file first, so an
     * owner's log keeps its mode; created exclusively otherwise. */
    int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    fd = openat(dfd, base, flags);
    if (fd < 0 && errno == ENOENT)
        fd = openat(dfd, base, flags | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        rc = -errno;
        shim_warn("log.file %s: %m", path);
        goto out_close_dir;
    }
    rc = shim_file_check("log.file", path, fd, shared);
    if (rc) {
        close(fd);
        goto out_close_dir;
    }
    rc = fd;
out_close_dir:
    close(dfd);
    return rc;
}
