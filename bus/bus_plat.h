/* bus_plat: the small platform layer (paths, data directory, secure random, monotonic time,
 * file permissions). Implemented in bus/plat/, files chosen by meson: plat_common.c on every OS,
 * plat_posix.c on Linux and macOS, and one file per OS for what differs: plat_linux.c (built
 * and tested), plat_macos.c, plat_windows.c (see bus/plat/plat_internal.h). */
#ifndef BUS_PLAT_H
#define BUS_PLAT_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in microseconds; never goes backwards, unaffected by wall-clock changes. */
uint64_t plat_mono_us(void);

/* Wall clock in microseconds since the Unix epoch. */
uint64_t plat_wall_us(void);

/* Fills buf with n cryptographically secure random bytes. Returns 0 or a negative errno. */
int plat_random(void *buf, size_t n);

/* Uniform random integer in [0, bound) from the secure source (rejection sampling, no modulo
 * bias); bound 0 or 1 gives 0. Aborts if the OS source fails, which it does not on supported
 * systems: there is no safe value to return instead. */
uint64_t plat_random_below(uint64_t bound);

/* The default data directory for a component ("agent", "hub"): $XDG_DATA_HOME/relayhub/<name>
 * (an absolute $XDG_DATA_HOME only) or ~/.local/share/relayhub/<name> on Linux,
 * ~/Library/Application Support/relayhub/<name> on macOS, %LOCALAPPDATA%\relayhub\<name> on
 * Windows. Not created. Returns a malloc'd string, or NULL (component empty or holding a path
 * separator, no home directory, no memory). */
char *plat_default_data_dir(const char *component);

/* Joins dir and name with the OS separator (none added after a trailing one); an absolute name,
 * or an empty dir, gives name as is. Returns a malloc'd string or NULL. */
char *plat_path_join(const char *dir, const char *name);

/* The directory part of path ("." when it has none), by POSIX dirname(3) rules: "a/b/" -> "a",
 * "/a" -> "/". Does not touch path. Returns a malloc'd string or NULL. */
char *plat_dirname(const char *path);

/* 1 if path is absolute, else 0. */
int plat_path_is_absolute(const char *path);

/* Creates dir (and missing parents) with owner-only permissions (0700 whatever the umask).
 * Directories that already exist are fine and left as they are. 0, -ENOTDIR when a file is in
 * the way, or a negative errno. */
int plat_mkdir_private(const char *dir);

/* Writes data to path atomically (temporary file, fsync, rename) with owner-only permissions
 * (0600) when private_file is set, else 0644. With exclusive set, fails with -EEXIST if path
 * exists; the check and the rename are one step, so of several racing writers exactly one wins.
 * The temporary file ("<path>.tmp.XXXXXX", beside path) never survives a failure; readers see
 * the old content or the new, never a mix. 0 or a negative errno. */
int plat_write_file(const char *path, const void *data, size_t len, int private_file,
                    int exclusive);

/* Reads a whole file of at most max bytes; *out is malloc'd and NUL-terminated (out_len may be
 * NULL). Files whose size the OS does not report (/proc) are read to EOF, still capped.
 * 0, -EFBIG when larger than max, -EISDIR, or a negative errno; *out is NULL on failure. */
int plat_read_file(const char *path, size_t max, char **out, size_t *out_len);

/* 0 if path is readable and writable by its owner only (no group/other bits), -EPERM if
 * group or others have any access or the owner is neither this user nor root, or a negative
 * errno. (Windows: the owner, SYSTEM and Administrators are the only ones the DACL allows.) */
int plat_check_private(const char *path);

/* Takes an exclusive advisory lock on path (created 0600 if missing), held until the process
 * exits or plat_unlock is called. Returns a handle >= 0, -EWOULDBLOCK if another process (or
 * another handle in this one) holds it, or a negative errno. The handle is not inherited by
 * exec'd children, so a supervisor's lock dies with the supervisor. */
int plat_lock_file(const char *path);
/* Releases a lock from plat_lock_file; a negative handle is ignored. */
void plat_unlock(int handle);

/* Asks the OS to send SIGTERM to this process when its parent dies (no-op where the OS has no
 * such facility; supervisors there use a watched pipe, or a Job object on Windows). A parent
 * that died before the call goes unnoticed: compare getppid() with the expected parent after
 * it. 0 or a negative errno. */
int plat_die_with_parent(void);

#endif
