/* apierror: each vendor API's own name for an HTTP error status. */
#include "apierror.h"

const char *apierror_anthropic_type(int status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return status < 500 ? "invalid_request_error" : "api_error";
    }
}

const char *apierror_google_status(int status)
{
    switch (status) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 402:
        return "FAILED_PRECONDITION";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 413:
        return "INVALID_ARGUMENT";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 500:
        return "INTERNAL";
    case 502:
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return status < 500 ? "INVALID_ARGUMENT" : "INTERNAL";
    }
}

const char *apierror_aws_type(int status)
{
    switch (status) {
    case 401:
        return "UnrecognizedClientException";
    case 402:
    case 403:
        return "AccessDeniedException";
    case 404:
        return "ResourceNotFoundException";
    case 429:
        return "ThrottlingException";
    case 500:
        return "InternalServerException";
    case 502:
    case 503:
        return "ServiceUnavailableException";
    case 504:
        return "ModelTimeoutException";
    default:
        return status < 500 ? "ValidationException" : "InternalServerException";
    }
}
