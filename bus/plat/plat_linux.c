/* plat_linux: the platform layer on Linux (see bus_plat.h). */
#include "bus_plat.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Reads clock id as microseconds. */
static uint64_t s_clock_us(clockid_t id)
{
    struct timespec ts;
    /* clock_gettime cannot fail for these clocks with a valid pointer. */
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t plat_mono_us(void)
{
    return s_clock_us(CLOCK_MONOTONIC);
}

uint64_t plat_wall_us(void)
{
    return s_clock_us(CLOCK_REALTIME);
}

/* Fills buf from /dev/urandom: only for kernels or sandboxes without getrandom(2). */
static int s_urandom(unsigned char *buf, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            return -e;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

int plat_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t got = 0;
    /* getrandom blocks only until the pool is first initialised, then never; it may return
     * fewer bytes than asked (over 256 bytes, or when a signal arrives), hence the loop. */
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOSYS)
                return s_urandom(p + got, n - got);
            return -errno;
        }
        got += (size_t)r;
    }
    return 0;
}

uint64_t plat_random_below(uint64_t bound)
{
    if (bound <= 1)
        return 0;
    /* Rejection sampling: drop the lowest (2^64 mod bound) values so that every residue is
     * equally likely; at worst (bound just over 2^63) half the draws are dropped. */
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r;
        if (plat_random(&r, sizeof r) < 0)
            abort(); /* no secure randomness: continuing would hand out guessable values */
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
    /* The XDG spec says a relative $XDG_DATA_HOME is invalid and must be ignored. */
    const char *xdg = getenv("XDG_DATA_HOME");
    if (xdg && xdg[0] == '/')
        return s_concat(xdg, xdg[strlen(xdg) - 1] == '/' ? "" : "/", "relayhub/", component);
    char *home = s_home();
    if (!home) {
        errno = ENOENT;
        return NULL;
    }
    char *out =
        s_concat(home, strcmp(home, "/") == 0 ? "" : "/", ".local/share/relayhub/", component);
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
    /* POSIX dirname(3) rules, without modifying the input: trailing slashes do not count,
     * then drop the last component and the slashes before it. */
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
    /* Create each prefix that ends before a slash, then the whole path. */
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

/* Moves tmp to path without ever replacing an existing path. 0, -EEXIST or a negative errno. */
static int s_publish_exclusive(const char *tmp, const char *path)
{
    /* renameat2(RENAME_NOREPLACE) checks and renames in one step. Filesystems without it
     * report EINVAL; then link(2), which also fails with EEXIST atomically, does the same. */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
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
    /* The temporary file sits beside path: rename(2) is atomic only within one filesystem. */
    char *tmp = s_concat(path, ".tmp.XXXXXX", NULL, NULL);
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
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
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
    /* st_size is only a hint (files in /proc say 0, files may grow): read until EOF, one byte
     * past max at most, so that a file larger than max is seen as such. */
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

int plat_die_with_parent(void)
{
    /* The signal fires when the thread that forked us exits. If the parent died before this
     * call we are already re-parented and nothing will fire: a caller that cares compares
     * getppid() with the parent pid it was given after this returns. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
        return -errno;
    return 0;
}
