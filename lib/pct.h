/* pct: hex digits and percent-decoding (RFC 3986 %XX escapes), shared by every parser that reads
 * them: JSON \u escapes, MySQL URLs, SigV4 canonical forms, Bedrock model ids in paths.
 * (Percent-encoding is sigv4_uri_encode: AWS's unreserved set is RFC 3986's.) */
#ifndef PCT_H
#define PCT_H

#include <stddef.h>

/* The value of hex digit c (either case), or -1. */
int pct_hexval(int c);

/* Decodes the %XX escapes of s[0..n) into out (cap bytes, NUL-terminated); other bytes are
 * copied ('+' stays '+'). Returns the decoded length, -EINVAL for a '%' without two hex digits
 * after it or an escape that decodes to NUL, -ENOSPC when out is too small. */
int pct_decode(const char *s, size_t n, char *out, size_t cap);

#endif
