/* Unit tests for lib/ledger: the canonical encoding is frozen (two rows' hashes are fixed
 * vectors, computed outside this code from the layout in ledger.c), every field is covered by
 * the hash, genesis chains from zeros, and the chain check catches each kind of tampering: a
 * changed amount or token count, a dropped, reordered or foreign row, a wrong prev_hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger.h"

#define AGENT_A "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define AGENT_B "b1b2c3d4e5f60718293a4b5c6d7e8f90"

/* Lowercase hex of n bytes into out (2n + 1 bytes). */
static void s_hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* The fully filled row of the first fixed vector. */
static void s_vector_row(ledger_row_t *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->agent_id, sizeof r->agent_id, "%s", AGENT_A);
    r->seq = 77;
    for (int i = 0; i < 16; i++)
        r->req_id[i] = (uint8_t)i;
    r->attempt = 2;
    r->user_id = 42;
    snprintf(r->model, sizeof r->model, "gpt-4o-mini");
    r->input_tokens = 1200;
    r->cached_tokens = 1024;
    r->output_tokens = 345;
    r->estimated = true;
    r->cost = 1851;
    r->fee = 185;
    r->credit = 1666;
    r->hold = 20000;
    r->price_from = 1764115200000;
    r->fee_ppm = 100000;
    r->created_ms = 1795000000123;
    for (int i = 0; i < LEDGER_HASH_LEN; i++)
        r->prev_hash[i] = (uint8_t)(i + 1);
}

/* Row seq of a test chain of agent (sealed after prev, NULL for the first). */
static void s_chain_row(ledger_row_t *r, const char *agent, uint64_t seq,
                        const uint8_t prev[LEDGER_HASH_LEN])
{
    memset(r, 0, sizeof *r);
    snprintf(r->agent_id, sizeof r->agent_id, "%s", agent);
    r->seq = seq;
    for (int i = 0; i < 8; i++)
        r->req_id[i] = (uint8_t)(seq >> (8 * i));
    r->req_id[15] = 0x5a;
    r->attempt = 1 + (uint32_t)(seq % 3);
    r->user_id = 1 + (int64_t)(seq % 7);
    snprintf(r->model, sizeof r->model, "%s", seq % 2 ? "gpt-4o-mini" : "gpt-4o");
    r->input_tokens = 100 + (int64_t)seq;
    r->cached_tokens = (int64_t)(seq % 50);
    r->output_tokens = 10 + (int64_t)(seq % 200);
    r->estimated = seq % 5 == 0;
    r->cost = 1000 + (int64_t)seq * 3;
    r->fee = r->cost / 10;
    r->credit = r->cost - r->fee;
    r->hold = 5000;
    r->price_from = 1764115200000;
    r->fee_ppm = 100000;
    r->created_ms = 1795000000000 + (int64_t)seq;
    assert_int_equal(ledger_seal(r, prev), 0);
}

/* A good chain of n rows of AGENT_A (malloc'd). */
static ledger_row_t *s_chain(size_t n)
{
    ledger_row_t *rows = calloc(n, sizeof *rows);
    assert_non_null(rows);
    for (size_t i = 0; i < n; i++)
        s_chain_row(&rows[i], AGENT_A, i + 1, i ? rows[i - 1].hash : NULL);
    return rows;
}

/* Walks rows from the start of AGENT_A's chain; returns the first fault and its index in *at
 * (n when every row verified). */
static ledger_fault_t s_walk(const ledger_row_t *rows, size_t n, size_t *at)
{
    ledger_walk_t w;
    ledger_walk_init(&w, AGENT_A, 0, NULL);
    for (size_t i = 0; i < n; i++) {
        ledger_fault_t f = ledger_walk_next(&w, &rows[i]);
        if (f != LEDGER_OK) {
            *at = i;
            return f;
        }
    }
    *at = n;
    return LEDGER_OK;
}

/* Two fixed vectors: the encoding may never change (the hashes were computed with Python's
 * hashlib from the layout documented in ledger.c, not by this code). */
static void test_fixed_vectors(void **state)
{
    (void)state;
    ledger_row_t r;
    uint8_t buf[LEDGER_CANONICAL_MAX], h[LEDGER_HASH_LEN];
    char hex[2 * LEDGER_HASH_LEN + 1];
    s_vector_row(&r);
    assert_int_equal(ledger_canonical(&r, buf), 183);
    assert_memory_equal(buf, "relayhub/ledger/v1\0\0\x20" AGENT_A, 19 + 2 + 32);
    assert_int_equal(ledger_hash(&r, h), 0);
    s_hex(h, sizeof h, hex);
    assert_string_equal(hex, "8e75b9faebabbf8945882beb3393d028c2b78efbc7bcbf3e01241ca8bd998dee");

    /* Longest strings (a UTF-8 model of exactly 256 bytes), extreme integers, zero prev. */
    memset(&r, 0, sizeof r);
    memset(r.agent_id, 'z', LEDGER_AGENT_ID_MAX);
    r.seq = UINT64_MAX;
    memset(r.req_id, 0xff, sizeof r.req_id);
    r.attempt = UINT32_MAX;
    r.user_id = INT64_MIN;
    const char *head = "\xe6\xa8\xa1\xe5\x9e\x8b-\xc3\xbc"; /* "模型-ü", 9 bytes */
    memcpy(r.model, head, strlen(head));
    memset(r.model + strlen(head), 'm', LEDGER_MODEL_MAX - strlen(head));
    r.input_tokens = INT64_MAX;
    r.cached_tokens = -1;
    r.cost = INT64_MIN;
    r.fee = INT64_MAX;
    r.credit = -1;
    r.price_from = -1;
    r.fee_ppm = 1000000;
    r.created_ms = INT64_MAX;
    assert_int_equal(ledger_canonical(&r, buf), 460);
    assert_int_equal(ledger_hash(&r, h), 0);
    s_hex(h, sizeof h, hex);
    assert_string_equal(hex, "234bce752aed5695b2bc476433d907a6163028d19cb9a7793d3635b3b062fa1f");
}

/* Changing any one field (or prev_hash) changes the hash; the stored hash itself is not an
 * input. */
static void test_every_field_changes_hash(void **state)
{
    (void)state;
    ledger_row_t base, r;
    uint8_t h0[LEDGER_HASH_LEN], h[LEDGER_HASH_LEN];
    s_vector_row(&base);
    assert_int_equal(ledger_hash(&base, h0), 0);
    for (int field = 0; field < 20; field++) {
        r = base;
        switch (field) {
        case 0: r.agent_id[0] = 'b'; break;
        case 1: r.seq++; break;
        case 2: r.req_id[15] ^= 1; break;
        case 3: r.attempt++; break;
        case 4: r.user_id++; break;
        case 5: r.model[4] = '5'; break;
        case 6: r.input_tokens++; break;
        case 7: r.cached_tokens++; break;
        case 8: r.output_tokens++; break;
        case 9: r.estimated = false; break;
        case 10: r.cost++; break;
        case 11: r.fee++; break;
        case 12: r.credit++; break;
        case 13: r.hold++; break;
        case 14: r.price_from++; break;
        case 15: r.fee_ppm++; break;
        case 16: r.created_ms++; break;
        case 17: r.prev_hash[31] ^= 0x80; break;
        case 18: r.model[11] = 'x'; r.model[12] = '\0'; break; /* longer string */
        case 19: r.agent_id[31] = '\0'; break;                /* shorter string */
        }
        assert_int_equal(ledger_hash(&r, h), 0);
        if (memcmp(h, h0, sizeof h) == 0)
            fail_msg("field %d does not change the hash", field);
    }
    /* Bytes after a string's NUL and the hash field are not part of the row. */
    r = base;
    r.model[200] = 'q';
    r.agent_id[50] = 'q';
    memset(r.hash, 0xee, sizeof r.hash);
    assert_int_equal(ledger_hash(&r, h), 0);
    assert_memory_equal(h, h0, sizeof h);

    /* Moving bytes between the two strings changes the encoding (lengths are prefixed). */
    ledger_row_t a = base, b = base;
    snprintf(a.agent_id, sizeof a.agent_id, "ab");
    snprintf(a.model, sizeof a.model, "c");
    snprintf(b.agent_id, sizeof b.agent_id, "a");
    snprintf(b.model, sizeof b.model, "bc");
    uint8_t ha[LEDGER_HASH_LEN], hb[LEDGER_HASH_LEN];
    assert_int_equal(ledger_hash(&a, ha), 0);
    assert_int_equal(ledger_hash(&b, hb), 0);
    assert_memory_not_equal(ha, hb, sizeof ha);
}

/* Strings not terminated within their arrays are refused, not read past. */
static void test_unterminated_strings(void **state)
{
    (void)state;
    ledger_row_t r;
    uint8_t buf[LEDGER_CANONICAL_MAX], h[LEDGER_HASH_LEN];
    s_vector_row(&r);
    memset(r.agent_id, 'a', sizeof r.agent_id);
    assert_int_equal(ledger_canonical(&r, buf), -EINVAL);
    assert_int_equal(ledger_hash(&r, h), -EINVAL);
    assert_int_equal(ledger_seal(&r, NULL), -EINVAL);
    s_vector_row(&r);
    memset(r.model, 'm', sizeof r.model);
    assert_int_equal(ledger_canonical(&r, buf), -EINVAL);
    assert_int_equal(ledger_canonical(NULL, buf), -EINVAL);
    assert_int_equal(ledger_hash(NULL, h), -EINVAL);
    assert_int_equal(ledger_seal(NULL, NULL), -EINVAL);

    /* A walk refuses such a row as not of its agent, and never reads past the array. */
    ledger_walk_t w;
    ledger_walk_init(&w, AGENT_A, 0, NULL);
    s_chain_row(&r, AGENT_A, 1, NULL);
    memset(r.agent_id, 'a', sizeof r.agent_id);
    assert_int_equal(ledger_walk_next(&w, &r), LEDGER_BAD_AGENT);
    s_chain_row(&r, AGENT_A, 1, NULL);
    memset(r.model, 'm', sizeof r.model);
    assert_int_equal(ledger_walk_next(&w, &r), LEDGER_BAD_HASH);
}

/* Genesis: prev_hash is 32 zero bytes, and sealing is hashing. */
static void test_genesis_and_seal(void **state)
{
    (void)state;
    static const uint8_t zeros[LEDGER_HASH_LEN];
    ledger_row_t r, r2;
    uint8_t h[LEDGER_HASH_LEN];
    s_vector_row(&r); /* prev_hash filled with 1..32 */
    assert_int_equal(ledger_seal(&r, NULL), 0);
    assert_memory_equal(r.prev_hash, zeros, sizeof zeros);
    assert_int_equal(ledger_hash(&r, h), 0);
    assert_memory_equal(r.hash, h, sizeof h);

    /* A row sealed after another carries that one's hash; sealing in place works. */
    s_chain_row(&r2, AGENT_A, 2, r.hash);
    assert_memory_equal(r2.prev_hash, r.hash, LEDGER_HASH_LEN);
    assert_int_equal(ledger_seal(&r2, r2.prev_hash), 0);
    assert_memory_equal(r2.prev_hash, r.hash, LEDGER_HASH_LEN);

    /* A first row whose prev is not zeros does not start a chain. */
    ledger_walk_t w;
    ledger_walk_init(&w, AGENT_A, 0, NULL);
    s_chain_row(&r, AGENT_A, 1, h);
    assert_int_equal(ledger_walk_next(&w, &r), LEDGER_BAD_PREV);
    s_chain_row(&r, AGENT_A, 1, NULL);
    assert_int_equal(ledger_walk_next(&w, &r), LEDGER_OK);
}

/* A good chain of 1,000 rows verifies, and so does its tail from a resumed walk. */
static void test_good_chain(void **state)
{
    (void)state;
    size_t n = 1000, at = 0;
    ledger_row_t *rows = s_chain(n);
    assert_int_equal(s_walk(rows, n, &at), LEDGER_OK);
    assert_int_equal(at, n);
    ledger_walk_t w;
    ledger_walk_init(&w, AGENT_A, 500, rows[499].hash);
    for (size_t i = 500; i < n; i++)
        assert_int_equal(ledger_walk_next(&w, &rows[i]), LEDGER_OK);
    assert_int_equal(w.seq, n);
    assert_memory_equal(w.hash, rows[n - 1].hash, LEDGER_HASH_LEN);
    free(rows);
}

/* Each kind of tampering is caught at the row it touches, with the right fault. */
static void test_tampering(void **state)
{
    (void)state;
    size_t n = 50, at = 0;
    ledger_row_t *good = s_chain(n);
    ledger_row_t *rows = calloc(n, sizeof *rows);
    assert_non_null(rows);

    /* A changed amount that still adds up: only the hash tells. */
    memcpy(rows, good, n * sizeof *rows);
    rows[20].cost += 1;
    rows[20].credit += 1;
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_HASH);
    assert_int_equal(at, 20);

    /* A changed amount that does not add up. */
    memcpy(rows, good, n * sizeof *rows);
    rows[21].fee += 1;
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_AMOUNTS);
    assert_int_equal(at, 21);

    /* A changed token count. */
    memcpy(rows, good, n * sizeof *rows);
    rows[22].output_tokens += 1;
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_HASH);
    assert_int_equal(at, 22);

    /* A changed row re-hashed by the forger: the next row's prev_hash no longer matches. */
    memcpy(rows, good, n * sizeof *rows);
    rows[23].input_tokens += 7;
    assert_int_equal(ledger_seal(&rows[23], rows[23].prev_hash), 0);
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_PREV);
    assert_int_equal(at, 24);

    /* A dropped row. */
    memcpy(rows, good, n * sizeof *rows);
    memmove(&rows[10], &rows[11], (n - 11) * sizeof *rows);
    assert_int_equal(s_walk(rows, n - 1, &at), LEDGER_BAD_SEQ);
    assert_int_equal(at, 10);

    /* A dropped last row cannot be seen from the rows alone: the chain is shorter. */
    assert_int_equal(s_walk(good, n - 1, &at), LEDGER_OK);

    /* Two rows swapped. */
    memcpy(rows, good, n * sizeof *rows);
    rows[30] = good[31];
    rows[31] = good[30];
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_SEQ);
    assert_int_equal(at, 30);

    /* Seqs renumbered to hide the swap: prev_hash gives it away. */
    rows[30].seq = 31;
    rows[31].seq = 32;
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_PREV);
    assert_int_equal(at, 30);

    /* A wrong prev_hash, the row re-sealed over it so that its own hash is right. */
    memcpy(rows, good, n * sizeof *rows);
    rows[40].prev_hash[0] ^= 1;
    assert_int_equal(ledger_hash(&rows[40], rows[40].hash), 0);
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_PREV);
    assert_int_equal(at, 40);

    /* A row of another agent, right seq and prev, well sealed. */
    memcpy(rows, good, n * sizeof *rows);
    s_chain_row(&rows[15], AGENT_B, 16, good[14].hash);
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_AGENT);
    assert_int_equal(at, 15);

    /* A repeated row. */
    memcpy(rows, good, n * sizeof *rows);
    rows[5] = good[4];
    assert_int_equal(s_walk(rows, n, &at), LEDGER_BAD_SEQ);
    assert_int_equal(at, 5);

    free(rows);
    free(good);
}

/* The amount rules: negative figures, cached over input, cost not fee + credit. */
static void test_amount_rules(void **state)
{
    (void)state;
    ledger_row_t r;
    ledger_walk_t w;
    for (int c = 0; c < 11; c++) {
        s_chain_row(&r, AGENT_A, 1, NULL);
        switch (c) {
        case 0: r.input_tokens = -1; r.cached_tokens = 0; break;
        case 1: r.cached_tokens = -1; break;
        case 2: r.output_tokens = -1; break;
        case 3: r.cost = -1; r.fee = 0; r.credit = -1; break;
        case 4: r.fee = -1; r.credit = r.cost + 1; break;
        case 5: r.credit = -1; r.fee = r.cost + 1; break;
        case 6: r.hold = -1; break;
        case 7: r.fee_ppm = -1; break;
        case 8: r.cached_tokens = r.input_tokens + 1; break;
        case 9: r.credit -= 1; break;
        case 10: r.cost = INT64_MAX; r.fee = INT64_MAX; r.credit = 1; break; /* would wrap */
        }
        assert_int_equal(ledger_seal(&r, NULL), 0);
        ledger_walk_init(&w, AGENT_A, 0, NULL);
        if (ledger_walk_next(&w, &r) != LEDGER_BAD_AMOUNTS)
            fail_msg("case %d: bad amounts not caught", c);
        assert_int_equal(w.seq, 0);
    }
    /* Edges that are fine: all zero, cached == input, the whole cost as fee. */
    s_chain_row(&r, AGENT_A, 1, NULL);
    r.input_tokens = r.cached_tokens = r.output_tokens = 0;
    r.cost = r.fee = r.credit = r.hold = 0;
    assert_int_equal(ledger_seal(&r, NULL), 0);
    ledger_walk_init(&w, AGENT_A, 0, NULL);
    assert_int_equal(ledger_walk_next(&w, &r), LEDGER_OK);
    uint8_t first[LEDGER_HASH_LEN];
    memcpy(first, r.hash, sizeof first);
    s_chain_row(&r, AGENT_A, 2, first);
    r.cached_tokens = r.input_tokens;
    r.fee = r.cost;
    r.credit = 0;
    assert_int_equal(ledger_seal(&r, r.prev_hash), 0);
    assert_int_equal(ledger_walk_next(&w, &r), LEDGER_OK);
}

/* The order of the checks, a walk that stays put after a fault, names of the faults. */
static void test_walk_order_and_names(void **state)
{
    (void)state;
    ledger_row_t r1, r2, bad;
    ledger_walk_t w;
    s_chain_row(&r1, AGENT_A, 1, NULL);
    s_chain_row(&r2, AGENT_A, 2, r1.hash);
    ledger_walk_init(&w, AGENT_A, 0, NULL);
    assert_int_equal(ledger_walk_next(&w, &r1), LEDGER_OK);

    /* Everything wrong at once: the agent is reported first, then seq, prev, amounts, hash. */
    bad = r2;
    snprintf(bad.agent_id, sizeof bad.agent_id, "%s", AGENT_B);
    bad.seq = 9;
    bad.prev_hash[3] ^= 1;
    bad.fee = -5;
    assert_int_equal(ledger_walk_next(&w, &bad), LEDGER_BAD_AGENT);
    snprintf(bad.agent_id, sizeof bad.agent_id, "%s", AGENT_A);
    assert_int_equal(ledger_walk_next(&w, &bad), LEDGER_BAD_SEQ);
    bad.seq = 2;
    assert_int_equal(ledger_walk_next(&w, &bad), LEDGER_BAD_PREV);
    bad.prev_hash[3] ^= 1;
    assert_int_equal(ledger_walk_next(&w, &bad), LEDGER_BAD_AMOUNTS);
    bad.fee = r2.fee;
    bad.hash[0] ^= 1;
    assert_int_equal(ledger_walk_next(&w, &bad), LEDGER_BAD_HASH);
    /* None of those moved the walk: the good row still follows. */
    assert_int_equal(w.seq, 1);
    assert_int_equal(ledger_walk_next(&w, &r2), LEDGER_OK);
    assert_int_equal(w.seq, 2);
    /* The same row again is a replay. */
    assert_int_equal(ledger_walk_next(&w, &r2), LEDGER_BAD_SEQ);

    /* A walk for an id too long for any row accepts nothing. */
    char longid[LEDGER_AGENT_ID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    ledger_walk_init(&w, longid, 0, NULL);
    s_chain_row(&r1, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1, NULL);
    assert_int_equal(ledger_walk_next(&w, &r1), LEDGER_BAD_AGENT);

    assert_string_equal(ledger_fault_name(LEDGER_OK), "ok");
    assert_string_equal(ledger_fault_name(LEDGER_BAD_SEQ), "bad_seq");
    assert_string_equal(ledger_fault_name(LEDGER_BAD_PREV), "bad_prev");
    assert_string_equal(ledger_fault_name(LEDGER_BAD_HASH), "bad_hash");
    assert_string_equal(ledger_fault_name(LEDGER_BAD_AMOUNTS), "bad_amounts");
    assert_string_equal(ledger_fault_name(LEDGER_BAD_AGENT), "bad_agent");
    assert_string_equal(ledger_fault_name((ledger_fault_t)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_vectors),
        cmocka_unit_test(test_every_field_changes_hash),
        cmocka_unit_test(test_unterminated_strings),
        cmocka_unit_test(test_genesis_and_seal),
        cmocka_unit_test(test_good_chain),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_amount_rules),
        cmocka_unit_test(test_walk_order_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
