/* plat_macos: the parts of the platform layer that are macOS's own (see bus_plat.h): clocks,
 * arc4random, the Application Support data directory, F_FULLFSYNC, renamex_np and the absent
 * parent-death signal. The rest is in plat_posix.c (shared with Linux) and plat_common.c (every
 * OS). Not built on the Linux machines. */
#include "bus_plat.h"
#include "plat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
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

char *plat_default_data_dir(const char *component)
{
    if (!plat_component_ok(component)) {
        errno = EINVAL;
        return NULL;
    }
    return plat_posix_home_path("Library/Application Support/relayhub/", component);
}

int plat_os_sync(int fd)
{
    /* fsync on macOS only reaches the drive's cache; F_FULLFSYNC asks the drive to flush.
     * Some filesystems (SMB, FAT) refuse it: fall back to fsync there. */
    if (fcntl(fd, F_FULLFSYNC) == 0)
        return 0;
    return fsync(fd) == 0 ? 0 : -errno;
}

int plat_os_rename_noreplace(const char *tmp, const char *path)
{
    /* renamex_np(RENAME_EXCL) (macOS 10.12+) checks and renames in one step; on filesystems
     * that lack it (ENOTSUP), plat_posix.c falls back to link(2). */
    if (renamex_np(tmp, path, RENAME_EXCL) == 0)
        return 0;
    return errno == ENOTSUP || errno == EINVAL ? -ENOTSUP : -errno;
}

int plat_die_with_parent(void)
{
    /* macOS has no PR_SET_PDEATHSIG. The supervisor gives each child the read end of a pipe
     * whose write end only it holds; the child's loop watches it and exits on EOF, which
     * happens however the supervisor dies. (A kqueue EVFILT_PROC/NOTE_EXIT watch on the parent
     * pid would also work but races with a parent that is already gone.) Nothing to do here. */
    return 0;
}
