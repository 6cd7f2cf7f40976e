/* ag_gtoken: the Google service-account token refresher of the Vertex AI adapter.
 *
 * Vertex AI takes `Authorization: Bearer <access token>`. The token comes from Google's token
 * endpoint in exchange for a JWT signed with the service account's RSA key (RFC 7523 bearer
 * grant): header {"alg":"RS256","typ":"JWT","kid":private_key_id}, claims iss = client_email,
 * scope = cloud-platform, aud = the token URI, iat = now, exp = now + 3600; the answer is
 * {"access_token","expires_in","token_type":"Bearer"}. This module loads the key, signs, builds
 * the exchange as a ready curl easy handle, reads the answer and keeps the token cache. It never
 * logs: the caller logs the error and warning strings it returns, which never hold the key, the
 * JWT or a token.
 *
 * Endpoint lock: the only token endpoint is AG_GTOKEN_TOKEN_URI, compiled in. A file whose
 * token_uri is anything else (another host, http, a trailing slash) is refused at load time.
 *
 * File permissions: a service-account file readable or writable by group or others loads, with
 * a warning (ag_gtoken_warning) for the caller to log. Not an error, because secret mounts
 * (Kubernetes, Docker) are often 0644 and the agent may run as a dedicated user anyway.
 *
 * Two clocks. Cache and retry times are monotonic microseconds (plat_mono_us()), so a wall
 * clock step never expires or keeps alive a token; the JWT's iat/exp are wall-clock seconds
 * (time(NULL)), which Google checks. Every function takes its times as arguments: the module
 * is testable without a clock or a network.
 *
 * The cache, at monotonic time now:
 *  - A token obtained by a refresh that started at S with expires_in E expires at S + E (the
 *    start, not the answer's arrival: conservative by the round trip). It is usable while
 *    now < expiry, also while a newer one is being fetched.
 *  - A refresh is due at expiry - margin, margin = min(300 s, E / 4): Google's libraries
 *    refresh 5 minutes early; a token that lives only 60 s is refreshed at 45 s, not on every
 *    request. A refresh is also due when there is no token, or after ag_gtoken_invalidate.
 *  - One refresh in flight at a time.
 *  - A failed refresh keeps its error (ag_gtoken_error) and makes the next one wait 1 s plus a
 *    lib/backoff delay (full jitter, ceiling 1 s doubling to 60 s). The failure count resets
 *    once a token has served for AG_GTOKEN_YOUNG_MS. Retries are lazy: the next request after
 *    the retry time starts one (ag_gtoken_refresh_due); no timer is needed.
 *  - A failed refresh does not drop a still-usable token: requests go on with it.
 *
 * The exchange (ag_gtoken_begin) sets on the easy handle:
 *   CURLOPT_URL (AG_GTOKEN_TOKEN_URI), CURLOPT_POST, CURLOPT_POSTFIELDS and
 *   CURLOPT_POSTFIELDSIZE (the form, owned here until ag_gtoken_finish), CURLOPT_HTTPHEADER
 *   (Content-Type: application/x-www-form-urlencoded, Accept: application/json, Expect:),
 *   CURLOPT_WRITEFUNCTION / CURLOPT_WRITEDATA (the answer, kept here, at most
 *   AG_GTOKEN_MAX_ANSWER bytes: more fails the transfer with CURLE_WRITE_ERROR),
 *   CURLOPT_ERRORBUFFER (kept here for the error text), CURLOPT_PROTOCOLS_STR and
 *   CURLOPT_REDIR_PROTOCOLS_STR "https", CURLOPT_FOLLOWLOCATION 0, CURLOPT_NOSIGNAL 1,
 *   CURLOPT_TIMEOUT_MS AG_GTOKEN_TIMEOUT_MS (a default the caller may override: a refresh that
 *   never ends would hold every waiting request).
 * It leaves to the caller, who must not change the ones above (the timeout aside):
 *   CURLOPT_PRIVATE (for the caller's done callback to recognise the transfer),
 *   CURLOPT_CONNECT_TO (tests), CURLOPT_CAINFO / CURLOPT_CAPATH, CURLOPT_CONNECTTIMEOUT_MS,
 *   CURLOPT_HTTP_VERSION, CURLOPT_PIPEWAIT, CURLOPT_TCP_KEEPALIVE, CURLOPT_VERBOSE (never on
 *   in production: it would print the assertion).
 *
 * Waiters are kept here: a request that finds no usable token while a refresh is in flight
 * queues an ag_gtoken_waiter_t (embedded in the request, no allocation); ag_gtoken_finish calls
 * each waiter once, in arrival order, with 0 (a token is ready) or the refresh's negative errno.
 *
 * The adapter's recipe, for each request on a vertex instance (now = plat_mono_us()):
 *
 *   if (ag_gtoken_refresh_due(g, now) && ag_gtoken_begin(g, now, time(NULL), &easy) == 0) {
 *       set CURLOPT_PRIVATE, CONNECT_TO, CAINFO, ... on easy;
 *       if (ag_curl_add(curl, easy) != 0)
 *           ag_gtoken_finish(g, easy, CURLE_FAILED_INIT, 0, now);  // a failure like any other
 *   }
 *   switch (ag_gtoken_state(g, now)) {
 *   case AG_GTOKEN_READY:  ag_gtoken_auth_header(g, now, line, sizeof line, &x->gen); send.
 *   case AG_GTOKEN_WAIT:   ag_gtoken_wait(g, &x->waiter, cb, x); on cb(0): send as READY;
 *                          on cb(rc < 0): fail the request with ag_gtoken_error(g).
 *   case AG_GTOKEN_FAILED: fail the request (502) with ag_gtoken_error(g).
 *   }
 *
 * On the refresh's curl "done": ag_curl_remove it, read CURLINFO_RESPONSE_CODE, then
 * ag_gtoken_finish (which cleans the handle up and wakes the waiters). On a vendor 401:
 * ag_gtoken_invalidate(g, x->gen, now), then run the recipe again once for that request.
 * To shut down with a refresh in flight: ag_curl_remove(ag_gtoken_inflight(g)) first, then
 * ag_gtoken_destroy (queued waiters are dropped, not called).
 */
#ifndef AG_GTOKEN_H
#define AG_GTOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#define AG_GTOKEN_TOKEN_URI "https://oauth2.googleapis.com/token" /* the only token endpoint */
#define AG_GTOKEN_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define AG_GTOKEN_JWT_LIFETIME 3600      /* exp - iat, seconds (Google's maximum) */
#define AG_GTOKEN_MAX_MARGIN 300         /* refresh at most this many seconds early */
#define AG_GTOKEN_MAX_FILE (64 * 1024)   /* largest service-account file */
#define AG_GTOKEN_MAX_ANSWER (64 * 1024) /* largest token endpoint answer */
#define AG_GTOKEN_MAX_TOKEN 4096         /* longest access token accepted */
#define AG_GTOKEN_MAX_EXPIRES_IN 86400   /* a longer expires_in is taken as this */
#define AG_GTOKEN_TIMEOUT_MS 30000       /* default CURLOPT_TIMEOUT_MS of the exchange */
#define AG_GTOKEN_RETRY_MIN_MS 1000      /* least wait after a failed refresh */
#define AG_GTOKEN_BACKOFF_BASE_MS 1000   /* first backoff ceiling, added to the above */
#define AG_GTOKEN_BACKOFF_CAP_MS 60000   /* largest backoff ceiling */
#define AG_GTOKEN_YOUNG_MS 10000         /* a replacement token rejected younger than this
                                            is a failure */
#define AG_GTOKEN_ERR_MAX 256            /* size of the error and warning texts */

typedef struct ag_gtoken ag_gtoken_t;

/* What a request should do now (ag_gtoken_state). */
typedef enum {
    AG_GTOKEN_READY,  /* a usable token: send with it */
    AG_GTOKEN_WAIT,   /* no usable token; a refresh is in flight or due: queue a waiter */
    AG_GTOKEN_FAILED, /* no usable token, the last refresh failed, the next is not due yet */
} ag_gtoken_state_t;

typedef struct ag_gtoken_waiter ag_gtoken_waiter_t;

/* The refresh a waiter was queued for ended: rc 0 (ag_gtoken_token has a fresh token) or the
 * negative errno of the failure (ag_gtoken_error says why). w is no longer queued; the callee
 * may free it, queue it again, cancel other waiters, or begin a refresh; it must not destroy
 * the ag_gtoken_t. */
typedef void (*ag_gtoken_wake_cb)(ag_gtoken_waiter_t *w, int rc, void *arg);

/* A queued request; embed it in the request and zero it before first use. */
struct ag_gtoken_waiter {
    ag_gtoken_waiter_t *next; /* next in the queue (NULL when not queued) */
    ag_gtoken_waiter_t *prev; /* previous in the queue */
    ag_gtoken_wake_cb cb;     /* called once when the refresh ends */
    void *arg;                /* its context */
};

/* Loads the service-account JSON at path: type "service_account", client_email,
 * private_key (an unencrypted RSA PEM of at least 2048 bits, PKCS#8 or PKCS#1),
 * private_key_id, and token_uri absent or exactly AG_GTOKEN_TOKEN_URI. 0 with *out set, or a
 * negative errno (-ENOENT, -EACCES... from open; -EFBIG over AG_GTOKEN_MAX_FILE; -EINVAL for
 * content; -ENOMEM) with one line in err that names the field and never quotes the key. */
int ag_gtoken_load(const char *path, ag_gtoken_t **out, char *err, size_t errlen);

/* Frees the key (OpenSSL clears it), wipes the token, cleans up an in-flight easy handle
 * (remove it from the multi first) and drops queued waiters uncalled. Accepts NULL. */
void ag_gtoken_destroy(ag_gtoken_t **g);

/* The load warning (file readable or writable by group or others), or NULL. Borrowed. */
const char *ag_gtoken_warning(const ag_gtoken_t *g);

/* The service account's client_email (not a secret; for log lines). Borrowed. */
const char *ag_gtoken_client_email(const ag_gtoken_t *g);

/* The signed JWT assertion for wall-clock time now. 0 with *out malloc'd (a credential: wipe
 * it with sodium_memzero before free), -ENOMEM, or -EIO if signing fails. */
int ag_gtoken_jwt(const ag_gtoken_t *g, time_t now, char **out);

/* The exchange's form body, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer
 * &assertion=<JWT>". As ag_gtoken_jwt; *len (may be NULL) gets the length. */
int ag_gtoken_form(const ag_gtoken_t *g, time_t now, char **out, size_t *len);

/* Reads a token endpoint answer (http_status and body). 0 with *token malloc'd (wipe it before
 * free; visible ASCII only, at most AG_GTOKEN_MAX_TOKEN) and *expires_in in seconds (1 to
 * AG_GTOKEN_MAX_EXPIRES_IN); or, with one line in err: -EACCES for Google's refusal
 * ({"error":"invalid_grant","error_description":...}, or {"error":{"message","status"}}),
 * -EPROTO for a non-200 without that shape, -EBADMSG for a 200 that is not JSON or lacks a
 * field (token_type must be "Bearer", any case), -ENOMEM. Texts from the answer are cut and
 * stripped of control characters. */
int ag_gtoken_parse(long http_status, const char *body, size_t len, char **token,
                    int64_t *expires_in, char *err, size_t errlen);

/* The refresh margin for a token that lives expires_in seconds: min(300, expires_in / 4). */
int64_t ag_gtoken_margin_s(int64_t expires_in);

/* What a request should do at monotonic time now_us (see the recipe above). */
ag_gtoken_state_t ag_gtoken_state(const ag_gtoken_t *g, uint64_t now_us);

/* True when the caller should begin a refresh now: none in flight, and no token, or the token
 * within its margin or invalidated, or a failed refresh's retry time reached. */
bool ag_gtoken_refresh_due(const ag_gtoken_t *g, uint64_t now_us);

/* The usable token (borrowed until the next finish, invalidate or destroy), or NULL. *gen (may
 * be NULL) gets its generation, for ag_gtoken_invalidate. */
const char *ag_gtoken_token(const ag_gtoken_t *g, uint64_t now_us, uint64_t *gen);

/* Writes "Authorization: Bearer <token>" into out: 0 (wipe out after use), -EAGAIN without a
 * usable token, -ENOSPC. *gen as in ag_gtoken_token. */
int ag_gtoken_auth_header(const ag_gtoken_t *g, uint64_t now_us, char *out, size_t outlen,
                          uint64_t *gen);

/* The last refresh's error ("" after a success or before any refresh). Borrowed. */
const char *ag_gtoken_error(const ag_gtoken_t *g);

/* The vendor answered 401 to a request sent with token generation gen. If gen is still the
 * current token, it is dropped and a refresh becomes due; if that token was younger than
 * AG_GTOKEN_YOUNG_MS and was itself fetched to replace a refused one, it counts as a failed
 * refresh (error kept, backoff), so a vendor that
 * refuses every new token does not cause a refresh per request. An older gen (a newer token
 * exists already) changes nothing. True when the token was dropped. */
bool ag_gtoken_invalidate(ag_gtoken_t *g, uint64_t gen, uint64_t now_us);

/* The vendor took token generation gen (an answer other than 401): a later refusal of it is
 * a revocation, not the sign of a vendor that takes no new token. */
void ag_gtoken_accepted(ag_gtoken_t *g, uint64_t gen);

/* Starts a refresh at monotonic now_us, signing with wall-clock now_wall: *easy is a new curl
 * easy handle with the options listed above, for the caller to complete and add to its multi;
 * the module owns it until ag_gtoken_finish. 0; -EALREADY when one is in flight; -ENOMEM or
 * -EIO, recorded as a failed refresh (error kept, backoff) as well. */
int ag_gtoken_begin(ag_gtoken_t *g, uint64_t now_us, time_t now_wall, CURL **easy);

/* The easy handle in flight, or NULL. */
CURL *ag_gtoken_inflight(const ag_gtoken_t *g);

/* The refresh transfer ended (the caller has removed easy from its multi): result is curl's
 * code, http_status CURLINFO_RESPONSE_CODE (0 if none). Cleans the handle up, stores the new
 * token or the error (with backoff), then calls every waiter. Also the way to abort (any error
 * code, e.g. CURLE_ABORTED_BY_CALLBACK). 0, a negative errno as ag_gtoken_parse or -EIO for a
 * transport failure, -EMSGSIZE for an answer over AG_GTOKEN_MAX_ANSWER; -EINVAL (nothing done)
 * when easy is not the handle in flight. */
int ag_gtoken_finish(ag_gtoken_t *g, CURL *easy, CURLcode result, long http_status,
                     uint64_t now_us);

/* Queues w until the refresh in flight ends. 0; -EINVAL when none is in flight (begin one
 * first: ag_gtoken_state says WAIT only then, or when one is due); -EALREADY if w is queued. */
int ag_gtoken_wait(ag_gtoken_t *g, ag_gtoken_waiter_t *w, ag_gtoken_wake_cb cb, void *arg);

/* Takes w out of the queue (a request cancelled while waiting); no-op if not queued. */
void ag_gtoken_cancel(ag_gtoken_waiter_t *w);

/* Waiters queued. */
size_t ag_gtoken_waiting(const ag_gtoken_t *g);

#endif
