/* plat_internal: what the files in bus/plat/ share with each other; not part of the bus API
 * (callers include bus_plat.h only).
 *
 * The platform layer is split three ways, chosen by meson (bus/meson.build, plat_src):
 *   plat_common.c  every OS: the path grammar, the path functions, the pure string and buffer
 *                  helpers, plat_random_below;
 *   plat_posix.c   Linux and macOS: files, directories, permissions and locks;
 *   plat_<os>.c    what really differs: clocks, randomness, the data directory, the
 *                  parent-death signal, and on Linux/macOS the two steps of plat_write_file
 *                  that need OS-specific system calls (the plat_os_* hooks below). Windows keeps
 *                  its own file code: handles, ACLs and UTF-16 have little in common with POSIX. */
#ifndef PLAT_INTERNAL_H
#define PLAT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* ---- plat_common.c (every OS) ---- */

/* Duplicates s; malloc'd, or NULL. */
char *plat_strdup(const char *s);

/* Concatenates up to four parts (a NULL part counts as empty); malloc'd, or NULL. */
char *plat_concat(const char *a, const char *b, const char *c, const char *d);

/* 1 if c separates path components: '/' on POSIX, '\\' or '/' on Windows. */
int plat_is_sep(char c);

/* Length of the root of path: on POSIX 1 for a leading '/', else 0; on Windows "C:\" 3, "C:" 2,
 * "\\server\share\" up to and including the separator after the share, "\" 1, relative 0. */
size_t plat_root_len(const char *path);

/* 1 if component is one usable path component: not empty, not "." or "..", and without a
 * separator (on Windows, without ':' either). */
int plat_component_ok(const char *component);

/* Calls one(prefix, ctx) for each prefix of dir that ends just before a separator, past dir's
 * root (empty components skipped), then one(dir, ctx); stops at the first failure. Used to
 * create missing parent directories. 0, -ENOMEM, or what one returned. */
int plat_walk_prefixes(const char *dir, int (*one)(const char *prefix, void *ctx), void *ctx);

/* Reads up to want bytes from src into buf, setting *got (0 at end of file). 0 or a negative
 * errno. */
typedef int (*plat_read_fn)(void *src, char *buf, size_t want, size_t *got);

/* The bounded read-to-EOF behind plat_read_file, for an already opened source. size_hint is
 * the size the OS reports (0 when unknown): larger than max gives -EFBIG at once, otherwise it
 * sizes the first buffer. Needs max < SIZE_MAX - 1. On success *out is malloc'd and
 * NUL-terminated and *out_len (if not NULL) set; on failure neither is touched. 0, -EFBIG,
 * -ENOMEM, or what rd returned. */
int plat_read_capped(plat_read_fn rd, void *src, uint64_t size_hint, size_t max, char **out,
                     size_t *out_len);

#ifndef _WIN32
/* ---- plat_posix.c (Linux, macOS) ---- */

/* "<home>/<sub><component>" for the user's home directory ($HOME if absolute, else the password
 * database); malloc'd, or NULL with errno ENOENT (no home) or ENOMEM. */
char *plat_posix_home_path(const char *sub, const char *component);

/* ---- plat_linux.c, plat_macos.c: the steps of plat_write_file that differ ---- */

/* Flushes fd's data to stable storage. 0 or a negative errno. */
int plat_os_sync(int fd);

/* Renames tmp to path in one step that fails with -EEXIST if path exists. -ENOTSUP when the
 * OS or the filesystem cannot (the caller then falls back to link(2)), 0, or a negative errno. */
int plat_os_rename_noreplace(const char *tmp, const char *path);
#endif

#endif
