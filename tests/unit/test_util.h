/* test_util: helpers the unit tests in tests/unit share: a scratch directory made and removed
 * again, file permission bits, reading a file or a descriptor whole, writing a text file, a
 * NUL-terminated copy of some bytes.
 *
 * Header-only: every helper is static inline, so a test that uses none of them pays nothing
 * and gets no unused-function warning. Include it after <cmocka.h>: helpers called from a test
 * fail that test through cmocka's assertions; the two meant for group setup and teardown
 * (tu_tmpdir_new, tu_rm_rf) return a status instead, as cmocka expects there. Needs
 * _GNU_SOURCE or _XOPEN_SOURCE >= 500 for nftw and mkdtemp (meson sets -D_GNU_SOURCE). */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#ifndef cmocka_unit_test
#error "include <cmocka.h> before test_util.h"
#endif

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A malloc'd copy of n bytes with a NUL after them (bytes that need not end in one, or may
 * hold NULs: event names and values, header fields). Fails the test without memory. */
static inline char *tu_dup_n(const char *p, size_t n)
{
    char *q = malloc(n + 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    q[n] = '\0';
    return q;
}

/* Creates a new private directory "/tmp/<prefix>.XXXXXX" and copies its path into out (n
 * bytes). For a group setup: 0, or -1 when it cannot be created or out is too small. */
static inline int tu_tmpdir_new(char *out, size_t n, const char *prefix)
{
    char tmpl[PATH_MAX];
    int len = snprintf(tmpl, sizeof tmpl, "/tmp/%s.XXXXXX", prefix);
    if (len < 0 || (size_t)len >= sizeof tmpl || !mkdtemp(tmpl))
        return -1;
    if ((size_t)len >= n) {
        rmdir(tmpl);
        return -1;
    }
    memcpy(out, tmpl, (size_t)len + 1);
    return 0;
}

/* nftw callback for tu_rm_rf: removes one entry (FTW_DEPTH hands out children first). */
static inline int tu_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes path and everything below it, never following a symbolic link. For a group
 * teardown: 0, or non-zero when something could not be removed. */
static inline int tu_rm_rf(const char *path)
{
    return nftw(path, tu_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Permission bits of path (with set-id and sticky bits); fails the test if stat fails. */
static inline unsigned tu_mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* Reads fd until end of file. Returns the bytes, malloc'd and NUL-terminated, and sets *len
 * (if not NULL) to their count; fails the test on a read error or when out of memory. */
static inline char *tu_read_fd(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        assert_true(r >= 0);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Reads the whole file at path, as tu_read_fd does; fails the test if it cannot be opened. */
static inline char *tu_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char *buf = tu_read_fd(fd, len);
    close(fd);
    return buf;
}

/* Writes text to path, created (with the umask's permissions) or truncated; fails the test
 * unless all of it is written and the file closes cleanly. */
static inline void tu_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

#endif
