/* gw_billing: the gateway's side of hub-billing: holds before the first byte, usage reports
 * after the last.
 *
 * Holds: a request asks for a hold on its user's balance as soon as its first attempt is open,
 * so the vendor call and the hold overlap (DESIGN §6); no response byte reaches the user before
 * the hold is granted. hold.req is re-sent every 500 ms until hub-billing answers (a billing
 * restart loses nothing: holds are idempotent by req_id), and gateway.hold_timeout after the
 * first ask the request gives up (503).
 *
 * Usage reports: one per request that opened a stream, the figures read from exactly the bytes
 * the user got (lib/usage's usage_bill). Each stays in an outbox, re-sent every
 * gateway.report_resend until hub-billing acknowledges it after its commit; ZeroMQ's queues are
 * never trusted with money. A gateway that is stopped waits (up to its stop deadline) for its
 * outbox to drain.
 */
#ifndef GW_BILLING_H
#define GW_BILLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus_env.h"
#include "bus_loop.h"
#include "bus_metrics.h"
#include "bus_tap.h"
#include "hub_config.h"

typedef struct gw_billing gw_billing_t;

/* The answer to a hold: reply is hub-billing's, or NULL when it did not answer in time. */
typedef void (*gw_hold_cb)(void *arg, const bus_hold_reply_t *reply);

/* Connects a DEALER (identity ident) to [bus] billing_router. NULL on failure (logged). */
gw_billing_t *gw_billing_new(bus_loop_t *loop, const hub_config_t *cfg, const char *ident,
                             bus_tap_t *tap, bus_metrics_t *metrics);
/* Frees everything; pending holds get no callback. Accepts NULL. */
void gw_billing_destroy(gw_billing_t **b);

/* Asks for a hold on user_id's balance for a request of model with body_bytes of body and
 * max_tokens (0 = not given). cb runs once, later (never from inside this call). 0 or a
 * negative errno (-EEXIST: a hold for this req_id is already pending). */
int gw_billing_hold(gw_billing_t *b, const uint8_t req_id[16], int64_t user_id,
                    const char *model, size_t model_len, int64_t body_bytes, int64_t max_tokens,
                    gw_hold_cb cb, void *arg);
/* Forgets a pending hold (its request is gone); no callback. */
void gw_billing_hold_cancel(gw_billing_t *b, const uint8_t req_id[16]);

/* What a request used, as the gateway saw it. */
typedef struct {
    uint32_t attempt;      /* the attempt the request ended on (>= 1) */
    const char *agent_id;  /* its agent */
    int64_t user_id;       /* the paying user */
    const char *model;     /* the model asked for */
    size_t model_len;
    int status;            /* the vendor's status (0 = no answer) */
    bool delivered;        /* the hold was granted and this attempt is the one the user got */
    bool complete;         /* the answer ended properly */
    bool estimated;        /* figures from the early-end estimate */
    int64_t input_tokens, cached_tokens, output_tokens;
} gw_report_t;

/* Queues a usage report and sends it; it is re-sent until acknowledged. 0 or -ENOMEM. */
int gw_billing_report(gw_billing_t *b, const uint8_t req_id[16], const gw_report_t *rep);

/* Reports not acknowledged yet. */
size_t gw_billing_unacked(const gw_billing_t *b);

#endif
