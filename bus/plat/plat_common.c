/* plat_common: the parts of the platform layer that are the same on every OS (see bus_plat.h
 * and plat_internal.h): pure string code, path handling over a per-OS path grammar, the bounded
 * file-reading loop, and plat_random_below over the OS's plat_random. No system calls of its
 * own. */
#include "bus_plat.h"
#include "plat_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The path grammar: the only place where the path code below differs by OS. */
#ifdef _WIN32
#define PLAT_SEP "\\"             /* separator put in by plat_path_join */
#define PLAT_COMPONENT_BAD "\\/:" /* characters a data-dir component must not hold */

int plat_is_sep(char c)
{
    return c == '\\' || c == '/';
}

size_t plat_root_len(const char *p)
{
    if (((p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= 'a' && p[0] <= 'z')) && p[1] == ':')
        return plat_is_sep(p[2]) ? 3 : 2;
    if (plat_is_sep(p[0]) && plat_is_sep(p[1])) {
        /* UNC: skip "\\server\share" and one separator after it. */
        size_t i = 2;
        for (int part = 0; part < 2; part++) {
            while (p[i] && !plat_is_sep(p[i]))
                i++;
            if (p[i])
                i++;
        }
        return i;
    }
    return plat_is_sep(p[0]) ? 1 : 0;
}
#else
#define PLAT_SEP "/"
#define PLAT_COMPONENT_BAD "/"

int plat_is_sep(char c)
{
    return c == '/';
}

size_t plat_root_len(const char *p)
{
    /* POSIX leaves "//x" implementation-defined; Linux and macOS treat it as "/x". */
    return p[0] == '/' ? 1 : 0;
}
#endif

char *plat_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

char *plat_concat(const char *a, const char *b, const char *c, const char *d)
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

int plat_component_ok(const char *component)
{
    return component && *component && !strpbrk(component, PLAT_COMPONENT_BAD) &&
           strcmp(component, ".") != 0 && strcmp(component, "..") != 0;
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

char *plat_path_join(const char *dir, const char *name)
{
    if (!dir || !name) {
        errno = EINVAL;
        return NULL;
    }
    if (plat_path_is_absolute(name) || !*dir)
        return plat_strdup(name);
    if (!*name)
        return plat_strdup(dir);
    size_t dl = strlen(dir);
    return plat_concat(dir, plat_is_sep(dir[dl - 1]) ? "" : PLAT_SEP, name, NULL);
}

char *plat_dirname(const char *path)
{
    if (!path) {
        errno = EINVAL;
        return NULL;
    }
    /* POSIX dirname(3) rules, without modifying the input (and without the static buffer some
     * libcs' dirname uses): trailing separators do not count, then drop the last component
     * and the separators before it, never eating into the root ("/", "C:\", "\\srv\share\"). */
    size_t root = plat_root_len(path);
    size_t n = strlen(path);
    while (n > root && plat_is_sep(path[n - 1]))
        n--;
    while (n > root && !plat_is_sep(path[n - 1]))
        n--;
    while (n > root && plat_is_sep(path[n - 1]))
        n--;
    if (n == 0)
        return plat_strdup(".");
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    memcpy(out, path, n);
    out[n] = '\0';
    return out;
}

int plat_path_is_absolute(const char *path)
{
    /* A path with a root does not depend on the current directory for joining purposes, except
     * Windows's drive-relative "C:x" (root "C:", length 2), which depends on drive C's. */
    if (!path)
        return 0;
    size_t r = plat_root_len(path);
    return r > 0 && !(r == 2 && path[1] == ':');
}

int plat_walk_prefixes(const char *dir, int (*one)(const char *prefix, void *ctx), void *ctx)
{
    char *buf = plat_strdup(dir);
    if (!buf)
        return -ENOMEM;
    size_t n = strlen(buf);
    int rc = 0;
    /* Cut the path at each separator that follows a component (past the root: a drive or UNC
     * share is not created), hand out the prefix, and put the separator back. */
    for (size_t i = plat_root_len(buf) + 1; i < n && rc == 0; i++) {
        if (!plat_is_sep(buf[i]) || plat_is_sep(buf[i - 1]))
            continue;
        char keep = buf[i];
        buf[i] = '\0';
        rc = one(buf, ctx);
        buf[i] = keep;
    }
    if (rc == 0)
        rc = one(buf, ctx);
    free(buf);
    return rc;
}

int plat_read_capped(plat_read_fn rd, void *src, uint64_t size_hint, size_t max, char **out,
                     size_t *out_len)
{
    if (size_hint > max)
        return -EFBIG;
    /* The size is only a hint (files in /proc say 0, files may grow): read until EOF, one byte
     * past max at most, so that a file larger than max is seen as such. */
    size_t cap = size_hint > 0 ? (size_t)size_hint + 1 : 4096;
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
        size_t got = 0;
        rc = rd(src, buf + len, cap - len, &got);
        if (rc < 0 || got == 0)
            break;
        len += got;
    }
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
