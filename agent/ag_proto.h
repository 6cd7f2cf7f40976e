/* ag_proto: what `agent run` and its agent-adapter workers say to each other, and the error
 * answers both of them give in OpenAI's shape.
 *
 * Transport: ZeroMQ over ipc:// in the agent's directory (agent.adapter_ipc); `agent run` binds
 * a ROUTER, each adapter connects a DEALER whose routing id is "adapter-SLOT-PID". Every message
 * is two or three frames:
 *   [sid: 8 bytes, big-endian] [envelope: one bus_env msgpack envelope] [instance: NAME]
 * sid is the supervisor's number for one stream (never reused while the process lives; a
 * req_id can come back for a retry, a sid cannot, so late frames of an old attempt are told
 * apart). The third frame comes only with req.open: the instance the supervisor chose.
 * sid 0 carries control envelopes: an adapter says `hello` when it is ready, the supervisor
 * sends `ping` and the adapter answers `pong`.
 * Stream envelopes are those of the tunnel, relayed unchanged: req.open, req.body, req.cancel,
 * credit towards the adapter; resp.head, resp.chunk, resp.end back.
 */
#ifndef AG_PROTO_H
#define AG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "bus_env.h"

#define AG_SID_LEN 8
#define AG_WINDOW_BYTES (256u * 1024u) /* each stream's first credit window */
#define AG_MAX_BODY_BYTES ((int64_t)64 * 1024 * 1024) /* largest request body an adapter takes */
#define AG_INCLUDE_USAGE_HEADER "x-relayhub-add-include-usage"
#define AG_INCLUDE_USAGE_TEXT "\"stream_options\":{\"include_usage\":true},"

/* Writes sid big-endian into b. */
void ag_sid_put(uint8_t b[AG_SID_LEN], uint64_t sid);
/* Reads a big-endian sid. */
uint64_t ag_sid_get(const uint8_t b[AG_SID_LEN]);

/* Sends one envelope of a stream (the caller's transport). 0 or a negative errno. */
typedef int (*ag_send_fn)(void *arg, const bus_env_t *env);

/* Writes OpenAI's error body {"error":{"message","type","param":null,"code"}} (code may be
 * NULL: JSON null). Returns its length, or -ENOSPC. */
int ag_openai_error(char *out, size_t outlen, const char *message, const char *type,
                    const char *code);

/* Writes an error body in the shape of the request's format (the API the user speaks):
 *   "openai", "azure" (or NULL)  {"error":{"message","type","param":null,"code"}}
 *   "anthropic"                  {"type":"error","error":{"type","message"}} (type by status)
 *   "gemini"                     {"error":{"code","message","status"}} (Google's status name)
 *   "bedrock"                    {"message"}; *aws_type is set to the x-amzn-ErrorType value
 * type and code are the OpenAI-shape fields (ignored by the other shapes). Returns the length,
 * or -ENOSPC. aws_type may be NULL. */
int ag_format_error(char *out, size_t outlen, const char *format, int status, const char *type,
                    const char *code, const char *message, const char **aws_type);

/* Answers a stream with an error of the agent's own: resp.head {status, content-type json},
 * resp.chunk {the error body in format's shape: ag_format_error}, resp.end {error: end_error}.
 * 0 or the first send error. */
int ag_reply_error(ag_send_fn send, void *arg, const uint8_t req_id[BUS_REQ_ID_LEN],
                   const char *format, int status, const char *type, const char *code,
                   const char *message, const char *end_error);

/* Sends resp.end with an error and no head (a failure the gateway may retry elsewhere). */
int ag_reply_end_error(ag_send_fn send, void *arg, const uint8_t req_id[BUS_REQ_ID_LEN],
                       const char *error);

#endif
