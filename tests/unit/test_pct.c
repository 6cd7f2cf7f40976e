/* Tests for lib/pct: hex digits and percent-decoding. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pct.h"

static void test_hexval(void **state)
{
    (void)state;
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        assert_int_equal(pct_hexval(digits[i]), i);
        assert_int_equal(pct_hexval(digits[i] >= 'a' ? digits[i] - 32 : digits[i]), i);
    }
    static const char bad[] = "gG/:@`% \x7f";
    for (size_t i = 0; i < sizeof bad - 1; i++)
        assert_int_equal(pct_hexval((unsigned char)bad[i]), -1);
    assert_int_equal(pct_hexval(0), -1);
    assert_int_equal(pct_hexval(0xe9), -1);
}

static void test_decode(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;          /* length or -errno */
        const char *out; /* on success */
    } cases[] = {
        {"", 0, ""},
        {"plain", 5, "plain"},
        {"anthropic.claude-3-5-haiku-20241022-v1%3A0", 40,
         "anthropic.claude-3-5-haiku-20241022-v1:0"},
        {"arn%3aaws%3Abedrock%2Fx", 17, "arn:aws:bedrock/x"},
        {"a+b", 3, "a+b"},
        {"p%40ss%25", 5, "p@ss%"},
        {"%", -EINVAL, NULL},
        {"%4", -EINVAL, NULL},
        {"ab%4", -EINVAL, NULL},
        {"%zz", -EINVAL, NULL},
        {"%00", -EINVAL, NULL},
        {"%C3%A9", 2, "\xc3\xa9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        int rc = pct_decode(cases[i].in, strlen(cases[i].in), out, sizeof out);
        assert_int_equal(rc, cases[i].rc);
        if (rc >= 0)
            assert_string_equal(out, cases[i].out);
    }
    char small[4];
    assert_int_equal(pct_decode("abc", 3, small, sizeof small), 3);
    assert_int_equal(pct_decode("abcd", 4, small, sizeof small), -ENOSPC);
    assert_int_equal(pct_decode("%41%42%43", 9, small, sizeof small), 3);
    assert_string_equal(small, "ABC");
    assert_int_equal(pct_decode("", 0, small, 0), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hexval),
        cmocka_unit_test(test_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
