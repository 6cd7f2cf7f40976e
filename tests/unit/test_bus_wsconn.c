/* Unit tests for bus_wsconn: the outgoing queue's accounting and message reassembly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus_wsconn.h"

static void test_queue_accounting(void **state)
{
    (void)state;
    bus_wsconn_t c;
    memset(&c, 0, sizeof c);
    uint8_t a[10] = "0123456789", b[3] = "abc";
    const uint8_t *qa = bus_wsconn_queue(&c, a, sizeof a);
    const uint8_t *qb = bus_wsconn_queue(&c, b, sizeof b);
    assert_non_null(qa);
    assert_non_null(qb);
    /* queued copies, not the caller's memory */
    assert_ptr_not_equal(qa, a);
    assert_memory_equal(qa, a, sizeof a);
    assert_memory_equal(qb, b, sizeof b);
    assert_int_equal(c.queued, 13);
    assert_non_null(c.head);
    bus_wsconn_drop(&c);
    assert_int_equal(c.queued, 0);
    assert_null(c.head);
    assert_null(c.tail);
    bus_wsconn_queue(&c, b, sizeof b);
    assert_int_equal(c.queued, 3);
    bus_wsconn_free(&c);
    assert_int_equal(c.queued, 0);
}

static void test_single_piece_is_used_in_place(void **state)
{
    (void)state;
    bus_wsconn_t c;
    memset(&c, 0, sizeof c);
    const uint8_t in[] = "whole";
    const uint8_t *msg = NULL;
    size_t len = 0;
    assert_int_equal(bus_wsconn_rx(&c, true, true, in, 5, 100, &msg, &len), 1);
    assert_ptr_equal(msg, in);
    assert_int_equal(len, 5);
    assert_int_equal(bus_wsconn_rx(&c, true, true, in, 5, 4, &msg, &len), -EMSGSIZE);
    bus_wsconn_free(&c);
}

static void test_reassembly(void **state)
{
    (void)state;
    bus_wsconn_t c;
    memset(&c, 0, sizeof c);
    uint8_t big[20000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    const uint8_t *msg = NULL;
    size_t len = 0;
    size_t off = 0;
    int rc = 0;
    /* delivered in 4 KiB pieces, as a small rx buffer does */
    while (off < sizeof big) {
        size_t n = sizeof big - off < 4096 ? sizeof big - off : 4096;
        rc = bus_wsconn_rx(&c, off == 0, off + n == sizeof big, big + off, n, sizeof big, &msg,
                           &len);
        off += n;
        if (off < sizeof big)
            assert_int_equal(rc, 0);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(len, sizeof big);
    assert_memory_equal(msg, big, sizeof big);
    /* the next message starts afresh, even after a whole one */
    assert_int_equal(bus_wsconn_rx(&c, true, false, "ab", 2, 100, &msg, &len), 0);
    assert_int_equal(bus_wsconn_rx(&c, false, true, "cd", 2, 100, &msg, &len), 1);
    assert_int_equal(len, 4);
    assert_memory_equal(msg, "abcd", 4);
    /* an abandoned message is discarded when a new first piece arrives */
    assert_int_equal(bus_wsconn_rx(&c, true, false, "xx", 2, 100, &msg, &len), 0);
    assert_int_equal(bus_wsconn_rx(&c, true, false, "yy", 2, 100, &msg, &len), 0);
    assert_int_equal(bus_wsconn_rx(&c, false, true, "z", 1, 100, &msg, &len), 1);
    assert_int_equal(len, 3);
    assert_memory_equal(msg, "yyz", 3);
    bus_wsconn_free(&c);
}

static void test_reassembly_limit(void **state)
{
    (void)state;
    bus_wsconn_t c;
    memset(&c, 0, sizeof c);
    uint8_t piece[600];
    memset(piece, 'p', sizeof piece);
    const uint8_t *msg = NULL;
    size_t len = 0;
    assert_int_equal(bus_wsconn_rx(&c, true, false, piece, 600, 1000, &msg, &len), 0);
    assert_int_equal(bus_wsconn_rx(&c, false, false, piece, 600, 1000, &msg, &len), -EMSGSIZE);
    /* exactly at the limit is fine */
    assert_int_equal(bus_wsconn_rx(&c, true, false, piece, 500, 1000, &msg, &len), 0);
    assert_int_equal(bus_wsconn_rx(&c, false, true, piece, 500, 1000, &msg, &len), 1);
    assert_int_equal(len, 1000);
    bus_wsconn_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_accounting),
        cmocka_unit_test(test_single_piece_is_used_in_place),
        cmocka_unit_test(test_reassembly),
        cmocka_unit_test(test_reassembly_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
