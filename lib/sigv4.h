/* sigv4: AWS Signature Version 4 header signing, for the Bedrock runtime adapter.
 *
 * Bedrock (like every AWS API) authenticates each request with SigV4: a canonical form of the
 * request (method, URI, query, the signed headers, the payload's SHA-256) is hashed into a
 * "string to sign", which is HMAC-ed with a key derived from the secret, the date, the region
 * and the service. This module builds those texts exactly as AWS does and returns the headers
 * to add (X-Amz-Security-Token, X-Amz-Date, x-amz-content-sha256, Authorization, in that
 * order). It is proven against AWS's public signing test suite (tests/vectors/aws-sigv4).
 *
 * Rules worth knowing (all checked by the suite):
 * - Header names are case-insensitive; repeated names are joined with "," in request order;
 *   values are trimmed and every inner run of whitespace (including the line breaks of a
 *   folded value) becomes one space. Every header given is signed.
 * - normalize = 1 (every service but S3, Bedrock included): "." and ".." segments and empty
 *   segments are removed, then each segment is URI-encoded, '%' included -- so a path that is
 *   already encoded on the wire (".../v1%3A0/...") is encoded again (".../v1%253A0/...").
 * - normalize = 0 (S3): the path is kept as it is and taken as already encoded: only bytes
 *   that are neither unreserved, '/' nor a valid %XX escape are encoded.
 * - Query parameters are decoded, re-encoded, and sorted by name then value; "=" is always
 *   present.
 *
 * The secret never leaves this module and the derived keys are wiped; the result holds the
 * session token and a signature, so callers must not log it (STYLE §4).
 */
#ifndef SIGV4_H
#define SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SIGV4_MAX_HEADERS 64       /* headers the caller may pass */
#define SIGV4_MAX_TEXT (64 * 1024) /* limit of each text the signer builds */
#define SIGV4_ADDED_MAX 4          /* headers the signer adds */

/* One header: name and value as they go on the wire. */
typedef struct {
    const char *name;  /* e.g. "Host"; case-insensitive */
    const char *value; /* raw value; trimmed and collapsed for signing only */
} sigv4_header_t;

/* What to sign. */
typedef struct {
    const char *method;            /* "POST" */
    const char *path;              /* raw path of the request line, "/model/x%3A0/invoke" */
    const char *query;             /* raw query without '?', or NULL / "" */
    const sigv4_header_t *headers; /* in request order; must not include the ones added */
    size_t n_headers;              /* at most SIGV4_MAX_HEADERS */
    const char *payload_sha256;    /* lowercase hex SHA-256 of the body, or NULL to hash body */
    const void *body;              /* the body when payload_sha256 is NULL (may be NULL if 0) */
    size_t body_len;               /* its length */
    time_t now;                    /* signing time (Unix seconds, UTC) */
    int normalize;                 /* 1: normalize and encode the path (all but S3) */
    int add_content_sha256;        /* 1: add and sign x-amz-content-sha256 */
} sigv4_request_t;

/* Who signs, and where. */
typedef struct {
    const char *access_key_id;     /* "AKIA..." */
    const char *secret_access_key; /* never logged, never copied into the result */
    const char *session_token;     /* NULL or "" without session credentials */
    int token_unsigned;            /* 1: add X-Amz-Security-Token after signing (rare) */
    const char *region;            /* "us-east-1" */
    const char *service;           /* "bedrock" */
} sigv4_credentials_t;

/* The outcome of signing. All strings are owned by the result. */
typedef struct {
    char *canonical_request;               /* the canonical request, for debugging */
    char *string_to_sign;                  /* the string to sign */
    char signature[65];                    /* lowercase hex */
    char amz_date[17];                     /* yyyymmddThhmmssZ */
    char *authorization;                   /* the Authorization header's value */
    sigv4_header_t added[SIGV4_ADDED_MAX]; /* headers to append, in order, Authorization last */
    size_t n_added;                        /* how many */
    char *token_value;                     /* storage of the X-Amz-Security-Token value */
    char payload_hash[65];                 /* storage of the x-amz-content-sha256 value */
} sigv4_result_t;

/* Signs a request. 0 and *out set, or -EINVAL (missing or malformed input, a header the signer
 * adds passed in, control characters in names), -E2BIG (too many headers, a text over
 * SIGV4_MAX_TEXT), -ENOMEM, -EIO (OpenSSL failed). */
int sigv4_sign(const sigv4_request_t *req, const sigv4_credentials_t *cred, sigv4_result_t **out);

/* Frees a result (wiping it: it holds a token). Accepts NULL; sets *p = NULL. */
void sigv4_result_destroy(sigv4_result_t **p);

/* URI-encodes len bytes of in per SigV4: unreserved bytes kept, the rest as %XX uppercase;
 * '/' kept when keep_slash. Writes to out (cap bytes, NUL-terminated). Returns the length
 * written (excluding NUL) or -E2BIG if it does not fit. */
int sigv4_uri_encode(const char *in, size_t len, int keep_slash, char *out, size_t cap);

/* Writes a header value as signed: trimmed, whitespace runs collapsed to one space.
 * Returns the length written or -E2BIG. */
int sigv4_trim_value(const char *value, char *out, size_t cap);

#endif
