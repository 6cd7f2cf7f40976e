/* pct: hex digits and percent-decoding. */
#include "pct.h"

#include <errno.h>

int pct_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? pct_hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? pct_hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -EINVAL;
            c = hi << 4 | lo;
            i += 2;
        }
        if (o + 1 >= cap)
            return -ENOSPC;
        out[o++] = (char)c;
    }
    if (cap == 0)
        return -ENOSPC;
    out[o] = '\0';
    return (int)o;
}
