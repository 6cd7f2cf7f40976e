/* plat_macos: the platform layer on macOS (see bus_plat.h). Not built on the Linux machines;
 * kept in step with plat_linux.c, from which it differs in clocks, randomness, the data
 * directory, F_FULLFSYNC, renamex_np and the parent-death signal. */
#include "bus_plat.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t plat_mono_us(void)
{
    /* CLOCK_UPTIME_RAW is mach_absolute_time() in nanoseconds: monotonic and, like Linux's
     * CLOCK_MONOTONIC, stopped while the machine sleeps. */
    return clock_gettime_nsec_np(CLOCK_UPTIME_RAW) / 1000u;
}

uint64_t plat_wall_us(void)
{
    return clock_gettime_nsec_np(CLOCK_REALTIME) / 1000u;
}

int plat_random(void *buf, size_t n)
{
    /* arc4random_buf draws from the kernel's CSPRNG and cannot fail. */
    if (n)
        arc4random_buf(buf, n);
    return 0;
}

uint64_t plat_random_below(uint64_t bound)
{
    if (bound <= 1)
        return 0;
    if (bound <= UINT32_MAX)
        return arc4random_uniform((uint32_t)bound);
    /* Rejection sampling over 64 bits: drop the lowest (2^64 mod bound) values. */
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r;
        arc4random_buf(&r, sizeof r);
        if (r >= threshold)
            return r % bound;
    }
}

/* Duplicates s, or NULL. */
static char *s_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Concatenates up to four parts into one malloc'd string, or NULL. */
static char *s_concat(const char *a, const char *b, const char *c, const char *d)
{
    const char *parts[4] = {a, b, c, d};
    size_t lens[4];
    size_t total = 1;
    for (int i = 0; i < 4; i++) {
        lens[i] = parts[i] ? strlen(parts[i]) : 0;
        total += lens[i];
    }
    char *out = malloc(total);
    if (!out)
        return NULL;
    size_t o = 0;
    for (int i = 0; i < 4; i++) {
        memcpy(out + o, parts[i] ? parts[i] : "", lens[i]);
        o += lens[i];
    }
    out[o] = '\0';
    return out;
}

/* The user's home directory from $HOME or the password database; malloc'd or NULL. */
static char *s_home(void)
{
    const char *home = getenv("HOME");
    if (home && home[0] == '/')
        return s_strdup(home);
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) != 0 || !res || !res->pw_dir ||
        res->pw_dir[0] != '/')
        return NULL;
    return s_strdup(res->pw_dir);
}

char *plat_default_data_dir(const char *component)
{
    if (!component || !*component || strchr(component, '/') || strcmp(component, ".") == 0 ||
        strcmp(component, "..") == 0) {
        errno = EINVAL;
        return NULL;
    }
    char *home = s_home();
    if (!home) {
        errno = ENOENT;
        return NULL;
    }
    char *out = s_concat(home, strcmp(home, "/") == 0 ? "" : "/",
                         "Library/Application Support/relayhub/", component);
    free(home);
    return out;
}

char *plat_path_join(const char *dir, const char *name)
{
    if (!dir || !name) {
        errno = EINVAL;
        return NULL;
    }
    if (plat_path_is_absolute(name) || !*dir)
        return s_strdup(name);
    if (!*name)
        return s_strdup(dir);
    size_t dl = strlen(dir);
    return s_concat(dir, dir[dl - 1] == '/' ? "" : "/", name, NULL);
}

char *plat_dirname(const char *path)
{
    if (!path) {
        errno = EINVAL;
        return NULL;
    }
    size_t n = strlen(path);
    /* POSIX dirname(3) rules without touching the input (macOS's dirname uses a static
     * buffer and is not thread-safe). */
    while (n > 1 && path[n - 1] == '/')
        n--;
    while (n > 0 && path[n - 1] != '/')
        n--;
    if (n == 0)
        return s_strdup(".");
    while (n > 1 && path[n - 1] == '/')
        n--;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    memcpy(out, path, n);
    out[n] = '\0';
    return out;
}

int plat_path_is_absolute(const char *path)
{
    return path && path[0] == '/';
}

/* mkdir with mode 0700 exactly (whatever the umask); an existing directory is fine. */
static int s_mkdir_one(const char *dir)
{
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
    size_t n = strlen(dir);
    char *buf = s_strdup(dir);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++) {
        if (buf[i] != '/' || buf[i - 1] == '/')
            continue;
        buf[i] = '\0';
        rc = s_mkdir_one(buf);
        buf[i] = '/';
    }
    if (rc == 0)
        rc = s_mkdir_one(buf);
    free(buf);
    return rc;
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

/* Flushes fd to stable storage. 0 or a negative errno. */
static int s_full_sync(int fd)
{
    /* fsync on macOS only reaches the drive's cache; F_FULLFSYNC asks the drive to flush.
     * Some filesystems (SMB, FAT) refuse it: fall back to fsync there. */
    if (fcntl(fd, F_FULLFSYNC) == 0)
        return 0;
    return fsync(fd) == 0 ? 0 : -errno;
}

/* Syncs the directory holding path so a rename in it is durable (best effort). */
static void s_sync_dir(const char *path)
{
    char *dir = plat_dirname(path);
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return;
    (void)fsync(fd);
    close(fd);
}

/* Moves tmp to path without ever replacing an existing path. 0, -EEXIST or a negative errno. */
static int s_publish_exclusive(const char *tmp, const char *path)
{
    /* renamex_np(RENAME_EXCL) (macOS 10.12+) checks and renames in one step; on filesystems
     * that lack it (ENOTSUP), link(2) fails with EEXIST just as atomically. */
    if (renamex_np(tmp, path, RENAME_EXCL) == 0)
        return 0;
    if (errno != ENOTSUP && errno != EINVAL)
        return -errno;
    if (link(tmp, path) < 0)
        return -errno;
    unlink(tmp);
    return 0;
}

int plat_write_file(const char *path, const void *data, size_t len, int private_file, int exclusive)
{
    if (!path || !*path || (!data && len))
        return -EINVAL;
    char *tmp = s_concat(path, ".tmp.XXXXXX", NULL, NULL);
    if (!tmp)
        return -ENOMEM;
    int rc = 0;
    int fd = mkostemp(tmp, O_CLOEXEC); /* 0600, O_EXCL: never opens a planted file */
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
        rc = s_full_sync(fd);
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
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    /* st_size is a hint: read to EOF, one byte past max at most. */
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
    if (cap > max + 1)
        cap = max + 1;
    char *buf = malloc(cap + 1);
    size_t len = 0;
    int rc = buf ? 0 : -ENOMEM;
    while (rc == 0) {
        if (len == cap) {
            if (cap == max + 1) {
                rc = -EFBIG;
                break;
            }
            size_t ncap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            char *grown = realloc(buf, ncap + 1);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            buf = grown;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno != EINTR)
                rc = -errno;
            continue;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (rc == 0 && len > max)
        rc = -EFBIG;
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    *out = buf;
    if (out_len)
        *out_len = len;
    return 0;
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
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return -EPERM;
    return 0;
}

int plat_lock_file(const char *path)
{
    if (!path)
        return -EINVAL;
    /* O_CLOEXEC: an exec'd child must not keep the lock alive after we die. */
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

int plat_die_with_parent(void)
{
    /* macOS has no PR_SET_PDEATHSIG. The supervisor gives each child the read end of a pipe
     * whose write end only it holds; the child's loop watches it and exits on EOF, which
     * happens however the supervisor dies. (A kqueue EVFILT_PROC/NOTE_EXIT watch on the parent
     * pid would also work but races with a parent that is already gone.) Nothing to do here. */
    return 0;
}
