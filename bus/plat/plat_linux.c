/* plat_linux: the parts of the platform layer that are Linux's own (see bus_plat.h): clocks,
 * getrandom(2), the XDG data directory, renameat2(2) and the parent-death signal. The rest is in
 * plat_posix.c (shared with macOS) and plat_common.c (every OS). */
#include "bus_plat.h"
#include "plat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
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

char *plat_default_data_dir(const char *component)
{
    if (!plat_component_ok(component)) {
        errno = EINVAL;
        return NULL;
    }
    /* The XDG spec says a relative $XDG_DATA_HOME is invalid and must be ignored. */
    const char *xdg = getenv("XDG_DATA_HOME");
    if (xdg && xdg[0] == '/')
        return plat_concat(xdg, xdg[strlen(xdg) - 1] == '/' ? "" : "/", "relayhub/", component);
    return plat_posix_home_path(".local/share/relayhub/", component);
}

int plat_os_sync(int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}

int plat_os_rename_noreplace(const char *tmp, const char *path)
{
    /* renameat2(RENAME_NOREPLACE) checks and renames in one step. Filesystems without it
     * report EINVAL (kernels without it ENOSYS); plat_posix.c then falls back to link(2). */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    return errno == EINVAL || errno == ENOSYS || errno == ENOTSUP ? -ENOTSUP : -errno;
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
