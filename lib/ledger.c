/* ledger: canonical encoding, SHA-256 chaining and the incremental check of an agent's chain.
 *
 * canonical(row), in this order (every integer big-endian, fixed width):
 *
 *   "relayhub/ledger/v1\0"   19 bytes, domain separation: no other relayhub hash input starts so
 *   agent_id                 u16 length + bytes
 *   seq                      u64
 *   req_id                   16 bytes
 *   attempt                  u32
 *   user_id                  i64 (two's complement)
 *   model                    u16 length + bytes
 *   input_tokens, cached_tokens, output_tokens          i64 each
 *   estimated                u8 (0 or 1)
 *   cost, fee, credit, hold, price_from, fee_ppm, created_ms   i64 each
 *
 * The layout is frozen: hub and agents verify old rows with it forever, and the unit test holds
 * one row's hash as a fixed vector. A new field means a new domain tag ("v2"), not an edit.
 */
#include "ledger.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

static const char s_domain[] = "relayhub/ledger/v1"; /* sizeof includes the NUL, which is hashed */

/* Appends v as n big-endian bytes. */
static uint8_t *s_put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
    return p + n;
}

/* Appends a NUL-terminated string of an array of cap bytes as u16 length + bytes; NULL if the
 * array holds no NUL. */
static uint8_t *s_put_str(uint8_t *p, const char *s, size_t cap)
{
    const char *nul = memchr(s, '\0', cap);
    if (!nul)
        return NULL;
    size_t n = (size_t)(nul - s);
    p = s_put_be(p, n, 2);
    memcpy(p, s, n);
    return p + n;
}

int ledger_canonical(const ledger_row_t *row, uint8_t out[LEDGER_CANONICAL_MAX])
{
    if (!row || !out)
        return -EINVAL;
    uint8_t *p = out;
    memcpy(p, s_domain, sizeof s_domain);
    p += sizeof s_domain;
    if (!(p = s_put_str(p, row->agent_id, sizeof row->agent_id)))
        return -EINVAL;
    p = s_put_be(p, row->seq, 8);
    memcpy(p, row->req_id, sizeof row->req_id);
    p += sizeof row->req_id;
    p = s_put_be(p, row->attempt, 4);
    p = s_put_be(p, (uint64_t)row->user_id, 8);
    if (!(p = s_put_str(p, row->model, sizeof row->model)))
        return -EINVAL;
    p = s_put_be(p, (uint64_t)row->input_tokens, 8);
    p = s_put_be(p, (uint64_t)row->cached_tokens, 8);
    p = s_put_be(p, (uint64_t)row->output_tokens, 8);
    *p++ = row->estimated ? 1 : 0;
    p = s_put_be(p, (uint64_t)row->cost, 8);
    p = s_put_be(p, (uint64_t)row->fee, 8);
    p = s_put_be(p, (uint64_t)row->credit, 8);
    p = s_put_be(p, (uint64_t)row->hold, 8);
    p = s_put_be(p, (uint64_t)row->price_from, 8);
    p = s_put_be(p, (uint64_t)row->fee_ppm, 8);
    p = s_put_be(p, (uint64_t)row->created_ms, 8);
    return (int)(p - out);
}

/* The longest encoding must fit the buffer callers give (checked once, at compile time). */
_Static_assert(sizeof s_domain + 2 + LEDGER_AGENT_ID_MAX + 8 + 16 + 4 + 8 + 2 + LEDGER_MODEL_MAX +
                       3 * 8 + 1 + 7 * 8 <=
                   LEDGER_CANONICAL_MAX,
               "LEDGER_CANONICAL_MAX too small");

int ledger_hash(const ledger_row_t *row, uint8_t out[LEDGER_HASH_LEN])
{
    if (!row || !out)
        return -EINVAL;
    uint8_t buf[LEDGER_HASH_LEN + LEDGER_CANONICAL_MAX];
    memcpy(buf, row->prev_hash, LEDGER_HASH_LEN);
    int n = ledger_canonical(row, buf + LEDGER_HASH_LEN);
    if (n < 0)
        return n;
    unsigned int len = 0;
    if (EVP_Digest(buf, LEDGER_HASH_LEN + (size_t)n, out, &len, EVP_sha256(), NULL) != 1 ||
        len != LEDGER_HASH_LEN)
        return -EIO;
    return 0;
}

int ledger_seal(ledger_row_t *row, const uint8_t prev[LEDGER_HASH_LEN])
{
    if (!row)
        return -EINVAL;
    if (prev)
        memmove(row->prev_hash, prev, LEDGER_HASH_LEN);
    else
        memset(row->prev_hash, 0, LEDGER_HASH_LEN);
    return ledger_hash(row, row->hash);
}

const char *ledger_fault_name(ledger_fault_t f)
{
    switch (f) {
    case LEDGER_OK:
        return "ok";
    case LEDGER_BAD_SEQ:
        return "bad_seq";
    case LEDGER_BAD_PREV:
        return "bad_prev";
    case LEDGER_BAD_HASH:
        return "bad_hash";
    case LEDGER_BAD_AMOUNTS:
        return "bad_amounts";
    case LEDGER_BAD_AGENT:
        return "bad_agent";
    }
    return "unknown";
}

void ledger_walk_init(ledger_walk_t *w, const char *agent_id, uint64_t seq,
                      const uint8_t hash[LEDGER_HASH_LEN])
{
    memset(w, 0, sizeof *w);
    /* An id longer than LEDGER_AGENT_ID_MAX is kept cut: no row can carry it, so every row is
     * refused as another agent's, which is the truth. */
    snprintf(w->agent_id, sizeof w->agent_id, "%s", agent_id ? agent_id : "");
    if (agent_id && strlen(agent_id) > LEDGER_AGENT_ID_MAX)
        w->agent_id[0] = '\0';
    w->seq = seq;
    if (hash)
        memcpy(w->hash, hash, LEDGER_HASH_LEN);
}

/* The figures of a row are consistent: nothing negative, cached within input, and the cost
 * exactly the hub's fee plus the provider's credit. */
static bool s_amounts_ok(const ledger_row_t *r)
{
    if (r->input_tokens < 0 || r->cached_tokens < 0 || r->output_tokens < 0 || r->cost < 0 ||
        r->fee < 0 || r->credit < 0 || r->hold < 0 || r->fee_ppm < 0)
        return false;
    if (r->cached_tokens > r->input_tokens)
        return false;
    /* fee and credit are both >= 0 here, so fee <= cost rules out any overflow of the sum. */
    return r->fee <= r->cost && r->credit == r->cost - r->fee;
}

ledger_fault_t ledger_walk_next(ledger_walk_t *w, const ledger_row_t *row)
{
    if (!w->agent_id[0] || !memchr(row->agent_id, '\0', sizeof row->agent_id) ||
        strcmp(row->agent_id, w->agent_id) != 0)
        return LEDGER_BAD_AGENT;
    if (row->seq != w->seq + 1)
        return LEDGER_BAD_SEQ;
    if (memcmp(row->prev_hash, w->hash, LEDGER_HASH_LEN) != 0)
        return LEDGER_BAD_PREV;
    if (!s_amounts_ok(row))
        return LEDGER_BAD_AMOUNTS;
    uint8_t h[LEDGER_HASH_LEN];
    if (ledger_hash(row, h) != 0 || memcmp(h, row->hash, LEDGER_HASH_LEN) != 0)
        return LEDGER_BAD_HASH;
    w->seq = row->seq;
    memcpy(w->hash, row->hash, LEDGER_HASH_LEN);
    return LEDGER_OK;
}
