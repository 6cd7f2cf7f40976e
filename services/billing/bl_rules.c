/* bl_rules: hold amounts, the choice of the settling report, and ledger rows (pure). */
#include "bl_rules.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bl_unpriced_parse(const char *text, bl_unpriced_t *out)
{
    if (text && strcmp(text, "refuse") == 0)
        *out = BL_UNPRICED_REFUSE;
    else if (text && strcmp(text, "free") == 0)
        *out = BL_UNPRICED_FREE;
    else
        return -EINVAL;
    return 0;
}

/* Orders price versions by model (bytes), then effective_from. */
static int s_cmp_price(const void *a, const void *b)
{
    const store_price_t *x = a, *y = b;
    int c = strcmp(x->model, y->model);
    if (c != 0)
        return c;
    return x->effective_from < y->effective_from ? -1 : x->effective_from > y->effective_from;
}

void bl_prices_sort(store_price_t *list, size_t n)
{
    if (list && n > 1)
        qsort(list, n, sizeof *list, s_cmp_price);
}

/* Index of the first version of model in the sorted list, or p->n when there is none. The
 * store may order models by its collation (MySQL's can ignore case), hence our own sort and
 * a byte comparison here. */
static size_t s_first_of(const bl_prices_t *p, const char *model)
{
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(p->list[mid].model, model) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->n && strcmp(p->list[lo].model, model) == 0 ? lo : p->n;
}

const store_price_t *bl_price_at(const bl_prices_t *p, const char *model, int64_t at_ms)
{
    if (!p || !model)
        return NULL;
    const store_price_t *best = NULL;
    for (size_t i = s_first_of(p, model); i < p->n && strcmp(p->list[i].model, model) == 0; i++) {
        if (p->list[i].effective_from > at_ms)
            break;
        best = &p->list[i];
    }
    return best;
}

const store_price_t *bl_price_version(const bl_prices_t *p, const char *model,
                                      int64_t effective_from)
{
    if (!p || !model)
        return NULL;
    for (size_t i = s_first_of(p, model); i < p->n && strcmp(p->list[i].model, model) == 0; i++) {
        if (p->list[i].effective_from == effective_from)
            return &p->list[i];
    }
    return NULL;
}

/* lib/money's price of a store price row. */
static money_price_t s_money_price(const store_price_t *p)
{
    return (money_price_t){.input = p->input, .cached_input = p->cached_input, .output = p->output};
}

int bl_hold_amount(const store_price_t *price, bl_unpriced_t unpriced, int64_t body_bytes,
                   int64_t max_tokens, int64_t default_max_tokens, int64_t *amount)
{
    if (body_bytes < 0 || max_tokens < 0 || default_max_tokens < 0)
        return -EINVAL;
    if (!price) {
        if (unpriced != BL_UNPRICED_FREE)
            return -ENOENT;
        *amount = 0;
        return 0;
    }
    /* A token is at least one byte of the request body, so body_bytes bounds the input; with
     * max_tokens the output is bounded too and the hold is an exact upper bound. */
    money_price_t mp = s_money_price(price);
    money_usage_t u = {.input = body_bytes,
                       .cached_input = 0,
                       .output = max_tokens ? max_tokens : default_max_tokens};
    money_split_t split;
    int rc = money_price(&mp, &u, 0, &split);
    if (rc == -ERANGE) {
        *amount = INT64_MAX; /* no balance covers it: refused as insufficient */
        return 0;
    }
    if (rc != 0)
        return rc;
    *amount = split.cost;
    return 0;
}

/* Whether a report carries any tokens. */
static bool s_has_tokens(const store_usage_t *r)
{
    return r->input_tokens > 0 || r->output_tokens > 0 || r->cached_tokens > 0;
}

/* The delivered report of source with the highest attempt, or NULL. */
static const store_usage_t *s_delivered(const store_usage_t *reports, size_t n, const char *source)
{
    const store_usage_t *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const store_usage_t *r = &reports[i];
        if (strcmp(r->source, source) != 0 || !r->delivered)
            continue;
        if (!best || r->attempt > best->attempt)
            best = r;
    }
    return best;
}

/* The agent that served the chosen attempt: the report's own agent_id, else that of another
 * report of the same attempt. NULL when no report names it. */
static const char *s_agent_of(const store_usage_t *reports, size_t n, const store_usage_t *chosen)
{
    if (chosen->agent_id[0])
        return chosen->agent_id;
    for (size_t i = 0; i < n; i++) {
        if (reports[i].attempt == chosen->attempt && reports[i].agent_id[0])
            return reports[i].agent_id;
    }
    return NULL;
}

/* The model the chosen report names, else the first model another report names. */
static const char *s_model_of(const store_usage_t *reports, size_t n, const store_usage_t *chosen)
{
    if (chosen->model[0])
        return chosen->model;
    for (size_t i = 0; i < n; i++) {
        if (reports[i].model[0])
            return reports[i].model;
    }
    return NULL;
}

/* Sets a NOTHING verdict with its reason. */
static void s_nothing(bl_decision_t *out, const char *why)
{
    out->verdict = BL_NOTHING;
    out->report = NULL;
    out->capped = false;
    out->agent_id = NULL;
    out->model = NULL;
    out->why = why;
}

void bl_settle_decide(const store_usage_t *reports, size_t n, const store_hold_t *hold,
                      int64_t now_ms, int64_t grace_ms, bl_decision_t *out)
{
    memset(out, 0, sizeof *out);
    out->verdict = BL_WAIT;
    out->why = "no report";
    if (!reports || n == 0)
        return;
    if (hold && hold->state == STORE_HOLD_REFUSED)
        hold = NULL; /* never granted: nothing was reserved */
    bool gateway = false;
    int64_t oldest = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(reports[i].source, "gateway") == 0) {
            gateway = true;
            if (reports[i].user_id > 0 && out->user_id == 0)
                out->user_id = reports[i].user_id;
        }
        if (reports[i].received_at < oldest)
            oldest = reports[i].received_at;
    }
    if (out->user_id == 0 && hold)
        out->user_id = hold->user_id;

    const store_usage_t *chosen;
    if (gateway) {
        /* DESIGN §4: billing settles on the gateway's figure, what the user received. */
        chosen = s_delivered(reports, n, "gateway");
        if (!chosen) {
            s_nothing(out, "gateway: no attempt delivered");
            return;
        }
        if (chosen->estimated) {
            for (size_t i = 0; i < n; i++)
                if (strcmp(reports[i].source, "agent") == 0 &&
                    reports[i].attempt == chosen->attempt)
                    out->limit = &reports[i];
            if (!out->limit && now_ms - chosen->received_at < grace_ms) {
                out->why = "estimated gateway report waits for the agent's";
                return;
            }
        }
    } else {
        /* The gateway may still report (or may have died mid-stream): wait for it a while. */
        if (now_ms - oldest < grace_ms) {
            out->why = "agent report within grace";
            return;
        }
        if (!hold) {
            s_nothing(out, "agent report without a hold: no user to charge");
            return;
        }
        chosen = s_delivered(reports, n, "agent");
        if (!chosen) {
            s_nothing(out, "agent: no attempt delivered");
            return;
        }
    }
    if (!s_has_tokens(chosen)) {
        s_nothing(out, "no tokens");
        return;
    }
    const char *agent = s_agent_of(reports, n, chosen);
    const char *model = s_model_of(reports, n, chosen);
    if (!agent) {
        s_nothing(out, "no report names the agent");
        return;
    }
    if (!model) {
        s_nothing(out, "no report names the model");
        return;
    }
    if (out->user_id <= 0) {
        s_nothing(out, "no user to charge");
        return;
    }
    out->verdict = BL_BILL;
    out->report = chosen;
    out->capped = !gateway;
    out->agent_id = agent;
    out->model = model;
    out->why = gateway ? "gateway figure" : "agent figure, capped by the hold";
}

int bl_build_row(const bl_decision_t *d, const uint8_t req_id[16], const store_price_t *price,
                 const store_hold_t *hold, int64_t fee_ppm, int64_t now_ms, uint64_t seq,
                 const uint8_t prev[LEDGER_HASH_LEN], ledger_row_t *row)
{
    if (!d || d->verdict != BL_BILL || !d->report || !d->agent_id || !d->model || !row)
        return -EINVAL;
    if (hold && hold->state == STORE_HOLD_REFUSED)
        hold = NULL;
    const store_usage_t *r = d->report;
    if (r->input_tokens < 0 || r->cached_tokens < 0 || r->output_tokens < 0)
        return -EINVAL;
    memset(row, 0, sizeof *row);
    if (strlen(d->agent_id) > LEDGER_AGENT_ID_MAX || strlen(d->model) > LEDGER_MODEL_MAX)
        return -EINVAL;
    snprintf(row->agent_id, sizeof row->agent_id, "%s", d->agent_id);
    snprintf(row->model, sizeof row->model, "%s", d->model);
    row->seq = seq;
    memcpy(row->req_id, req_id, sizeof row->req_id);
    row->attempt = r->attempt;
    row->user_id = d->user_id;
    row->input_tokens = r->input_tokens;
    /* Vendors count cached tokens inside the input; a report saying otherwise is clamped so
     * that the row stays consistent (the ledger check refuses cached > input). */
    row->cached_tokens = r->cached_tokens > r->input_tokens ? r->input_tokens : r->cached_tokens;
    row->output_tokens = r->output_tokens;
    if (d->limit) {
        /* An estimate is bounded by what the agent counted itself. */
        const store_usage_t *a = d->limit;
        if (a->input_tokens >= 0 && row->input_tokens > a->input_tokens)
            row->input_tokens = a->input_tokens;
        if (a->output_tokens >= 0 && row->output_tokens > a->output_tokens)
            row->output_tokens = a->output_tokens;
        int64_t uncached = row->input_tokens - row->cached_tokens;
        int64_t a_uncached = a->input_tokens - a->cached_tokens;
        if (a_uncached >= 0 && uncached > a_uncached)
            row->cached_tokens = row->input_tokens - a_uncached;
        if (row->cached_tokens > a->cached_tokens && a->cached_tokens >= 0)
            row->cached_tokens = a->cached_tokens;
        if (row->cached_tokens > row->input_tokens)
            row->cached_tokens = row->input_tokens;
    }
    row->estimated = r->estimated;
    row->hold = hold ? hold->amount : 0;
    row->fee_ppm = fee_ppm;
    row->created_ms = now_ms;
    money_split_t split = {0, 0, 0};
    if (price) {
        row->price_from = price->effective_from;
        money_price_t mp = s_money_price(price);
        money_usage_t u = {.input = row->input_tokens,
                           .cached_input = row->cached_tokens,
                           .output = row->output_tokens};
        int rc = money_price(&mp, &u, fee_ppm, &split);
        if (rc != 0)
            return rc;
    } else if (money_split(0, fee_ppm, &split) != 0) {
        return -EINVAL;
    }
    if (d->capped) {
        /* The agent's figure alone (the gateway never reported): it can be higher than what the
         * user received, so the charge never exceeds what the request reserved. */
        int64_t cap = hold ? hold->amount : 0;
        if (split.cost > cap) {
            int rc = money_split(cap, fee_ppm, &split);
            if (rc != 0)
                return rc;
        }
    }
    row->cost = split.cost;
    row->fee = split.fee;
    row->credit = split.credit;
    return ledger_seal(row, seq > 1 ? prev : NULL);
}
