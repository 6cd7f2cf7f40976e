/* apierror: each vendor API's own name for an HTTP error status.
 *
 * An error the hub or the agent makes itself (a wrong key, an unknown model, a body over a
 * limit, a vendor that could not be reached) is written in the shape of the API the user
 * speaks, so the user's SDK raises its usual exception. The gateway (gw_dialect) and the agent
 * (ag_proto) build those bodies; this module is their one vocabulary:
 *   Anthropic  {"type":"error","error":{"type": apierror_anthropic_type(status), ...}}
 *   Google     {"error":{"code":status,"status": apierror_google_status(status), ...}}
 *   AWS        x-amzn-ErrorType: apierror_aws_type(status), {"message": ...}
 * 402 is the hub's "insufficient balance": Anthropic's billing_error, Google's
 * FAILED_PRECONDITION, AWS's AccessDeniedException (the status itself stays 402).
 */
#ifndef APIERROR_H
#define APIERROR_H

/* Anthropic's error type: 400 invalid_request_error, 401 authentication_error, 402
 * billing_error, 403 permission_error, 404 not_found_error, 413 request_too_large, 429
 * rate_limit_error, 503 and 529 overloaded_error, 504 timeout_error; other 4xx
 * invalid_request_error, other 5xx api_error. */
const char *apierror_anthropic_type(int status);

/* Google's canonical status: 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 402
 * FAILED_PRECONDITION, 403 PERMISSION_DENIED, 404 NOT_FOUND, 413 INVALID_ARGUMENT, 429
 * RESOURCE_EXHAUSTED, 500 INTERNAL, 502 and 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED; other 4xx
 * INVALID_ARGUMENT, other 5xx INTERNAL. */
const char *apierror_google_status(int status);

/* AWS's x-amzn-ErrorType: 401 UnrecognizedClientException, 402 and 403 AccessDeniedException,
 * 404 ResourceNotFoundException, 429 ThrottlingException, 500 InternalServerException, 502
 * and 503 ServiceUnavailableException, 504 ModelTimeoutException; other 4xx
 * ValidationException, other 5xx InternalServerException. */
const char *apierror_aws_type(int status);

#endif
