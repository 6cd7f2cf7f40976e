/* Tests for lib/apierror: each API's name for every status the hub and the agent answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "apierror.h"

static void test_status_table(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *anthropic, *google, *aws;
    } cases[] = {
        {400, "invalid_request_error", "INVALID_ARGUMENT", "ValidationException"},
        {401, "authentication_error", "UNAUTHENTICATED", "UnrecognizedClientException"},
        {402, "billing_error", "FAILED_PRECONDITION", "AccessDeniedException"},
        {403, "permission_error", "PERMISSION_DENIED", "AccessDeniedException"},
        {404, "not_found_error", "NOT_FOUND", "ResourceNotFoundException"},
        {405, "invalid_request_error", "INVALID_ARGUMENT", "ValidationException"},
        {411, "invalid_request_error", "INVALID_ARGUMENT", "ValidationException"},
        {413, "request_too_large", "INVALID_ARGUMENT", "ValidationException"},
        {429, "rate_limit_error", "RESOURCE_EXHAUSTED", "ThrottlingException"},
        {500, "api_error", "INTERNAL", "InternalServerException"},
        {502, "api_error", "UNAVAILABLE", "ServiceUnavailableException"},
        {503, "overloaded_error", "UNAVAILABLE", "ServiceUnavailableException"},
        {504, "timeout_error", "DEADLINE_EXCEEDED", "ModelTimeoutException"},
        {529, "overloaded_error", "INTERNAL", "InternalServerException"},
        {599, "api_error", "INTERNAL", "InternalServerException"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(apierror_anthropic_type(cases[i].status), cases[i].anthropic);
        assert_string_equal(apierror_google_status(cases[i].status), cases[i].google);
        assert_string_equal(apierror_aws_type(cases[i].status), cases[i].aws);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
