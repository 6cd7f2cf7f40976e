/* plat_posix: the parts of the platform layer that Linux and macOS share (see bus_plat.h and
 * plat_internal.h): the home directory, private directories, atomic file writes, bounded
 * reads, permission checks and lock files. Where the two differ inside one of these (the file
 * sync and the no-replace rename of plat_write_file) this file calls the plat_os_* hooks that
 * plat_linux.c and plat_macos.c define. */
#include "bus_plat.h"
#include "plat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The user's home directory from $HOME or the password database; malloc'd or NULL. */
static char *s_home(void)
{
    const char *home = getenv("HOME");
    if (home && home[0] == '/')
        return plat_strdup(home);
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) != 0 || !res || !res->pw_dir ||
        res->pw_dir[0] != '/')
        return NULL;
    return plat_strdup(res->pw_dir);
}

char *plat_posix_home_path(const char *sub, const char *component)
{
    char *home = s_home();
    if (!home) {
        errno = ENOENT;
        return NULL;
    }
    char *out = plat_concat(home, strcmp(home, "/") == 0 ? "" : "/", sub, component);
    free(home);
    return out;
}

/* mkdir with mode 0700 exactly (whatever the umask); an existing directory is fine. */
static int s_mkdir_one(const char *dir, void *ctx)
{
    (void)ctx;
    if (mkdir(dir, 0700) == 0) {
        if (chmod(dir, 0700) < 0)
            return -errno;
        return 0;
    }
    int e = errno;
    struct stat st;
    if (e == EEXIST) {
        if (stat(dir, &st) < 0)
            return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    }
    return -e;
}

int plat_mkdir_private(const char *dir)
{
    if (!dir || !*dir)
        return -EINVAL;
    /* Create each prefix that ends before a slash, then the whole path. */
    return plat_walk_prefixes(dir, s_mkdir_one, NULL);
}

/* Writes all len bytes to fd, retrying short writes and EINTR. 0 or a negative errno. */
static int s_write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Moves tmp to path without ever replacing an existing path. 0, -EEXIST or a negative errno. */
static int s_publish_exclusive(const char *tmp, const char *path)
{
    int rc = plat_os_rename_noreplace(tmp, path);
    if (rc != -ENOTSUP)
        return rc;
    /* No no-replace rename on this filesystem: link(2) fails with EEXIST just as atomically;
     * then the temporary name is dropped. */
    if (link(tmp, path) < 0)
        return -errno;
    unlink(tmp);
    return 0;
}

/* fsyncs the directory holding path so a rename or link in it is durable. */
static void s_sync_dir(const char *path)
{
    char *dir = plat_dirname(path);
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return;
    /* Best effort: some filesystems refuse fsync on directories (EINVAL). */
    (void)fsync(fd);
    close(fd);
}

int plat_write_file(const char *path, const void *data, size_t len, int private_file, int exclusive)
{
    if (!path || !*path || (!data && len))
        return -EINVAL;
    /* The temporary file sits beside path: rename(2) is atomic only within one filesystem. */
    char *tmp = plat_concat(path, ".tmp.XXXXXX", NULL, NULL);
    if (!tmp)
        return -ENOMEM;
    int rc = 0;
    int fd = mkostemp(tmp, O_CLOEXEC); /* created 0600, never following a planted file */
    if (fd < 0) {
        rc = -errno;
        free(tmp);
        return rc;
    }
    if (!private_file && fchmod(fd, 0644) < 0)
        rc = -errno;
    if (rc == 0)
        rc = s_write_all(fd, data, len);
    if (rc == 0)
        rc = plat_os_sync(fd);
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0) {
        if (exclusive)
            rc = s_publish_exclusive(tmp, path);
        else if (rename(tmp, path) < 0)
            rc = -errno;
    }
    if (rc < 0)
        unlink(tmp);
    else
        s_sync_dir(path);
    free(tmp);
    return rc;
}

/* plat_read_fn over a file descriptor (src points to it), retrying EINTR. */
static int s_read_fd(void *src, char *buf, size_t want, size_t *got)
{
    int fd = *(const int *)src;
    for (;;) {
        ssize_t r = read(fd, buf, want);
        if (r >= 0) {
            *got = (size_t)r;
            return 0;
        }
        if (errno != EINTR)
            return -errno;
    }
}

int plat_read_file(const char *path, size_t max, char **out, size_t *out_len)
{
    if (!path || !out || max >= SIZE_MAX - 1)
        return -EINVAL;
    *out = NULL;
    if (out_len)
        *out_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    /* Only a regular file's size means anything (/proc files say 0 but have content). */
    uint64_t hint = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    int rc = plat_read_capped(s_read_fd, &fd, hint, max, out, out_len);
    close(fd);
    return rc;
}

int plat_check_private(const char *path)
{
    struct stat st;
    if (!path)
        return -EINVAL;
    if (stat(path, &st) < 0)
        return -errno;
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        return -EPERM;
    /* A file of ours must be owned by us (or root, who could read it anyway). */
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return -EPERM;
    return 0;
}

int plat_lock_file(const char *path)
{
    if (!path)
        return -EINVAL;
    /* O_CLOEXEC matters: a child that exec'd with the descriptor would keep the lock alive
     * after we die. flock locks belong to the open file description, so a second open of the
     * same path, even in this process, conflicts. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return -errno;
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (e == EINTR)
            continue;
        close(fd);
        return e == EWOULDBLOCK ? -EWOULDBLOCK : -e;
    }
    return fd;
}

void plat_unlock(int handle)
{
    if (handle < 0)
        return;
    flock(handle, LOCK_UN);
    close(handle);
}
