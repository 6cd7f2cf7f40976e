/* al_verify: the verdict on one ledger row (see al_verify.h for the rules). */
#include "al_verify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const uint8_t s_zeros[LEDGER_HASH_LEN];

/* Marks out disputed with reason and a printf detail. */
__attribute__((format(printf, 3, 4))) static al_verdict_t
s_dispute(al_result_t *out, al_reason_t reason, const char *fmt, ...)
{
    out->verdict = AL_DISPUTED;
    out->reason = reason;
    out->capped = false;
    out->unbilled = 0;
    int n = snprintf(out->text, sizeof out->text, "%s: ", al_reason_name(reason));
    if (n > 0 && (size_t)n < sizeof out->text) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(out->text + n, sizeof out->text - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return AL_DISPUTED;
}

/* Marks out with a verdict that is not a dispute. */
static al_verdict_t s_verdict(al_result_t *out, al_verdict_t v, bool capped, int64_t unbilled)
{
    out->verdict = v;
    out->reason = AL_R_NONE;
    out->capped = capped;
    out->unbilled = unbilled;
    out->text[0] = '\0';
    return v;
}

al_verdict_t al_verify(const ledger_row_t *row, const char *agent_id,
                       const uint8_t prev[LEDGER_HASH_LEN], const money_price_t *price,
                       const al_usage_t *local, al_result_t *out)
{
    memset(out, 0, sizeof *out);
    uint8_t h[LEDGER_HASH_LEN];
    if (ledger_hash(row, h) != 0 || memcmp(h, row->hash, LEDGER_HASH_LEN) != 0)
        return s_dispute(out, AL_R_BAD_HASH, "the hash of row %llu does not match its contents",
                         (unsigned long long)row->seq);
    if (memcmp(row->prev_hash, prev ? prev : s_zeros, LEDGER_HASH_LEN) != 0)
        return s_dispute(out, AL_R_BAD_PREV,
                         "prev_hash of row %llu is not the hash of the agent's row %llu",
                         (unsigned long long)row->seq, (unsigned long long)(row->seq - 1));
    if (!agent_id || strcmp(row->agent_id, agent_id) != 0)
        return s_dispute(out, AL_R_AGENT_ID, "the row is of agent \"%s\", not this agent",
                         row->agent_id);
    if (!price)
        return s_dispute(out, AL_R_UNKNOWN_PRICE, "no price of %s effective from %lld", row->model,
                         (long long)row->price_from);

    /* The amounts, recomputed from the row's own figures by the one cost rule. */
    money_usage_t ru = {row->input_tokens, row->cached_tokens, row->output_tokens};
    money_split_t want;
    if (row->hold < 0 || money_price(price, &ru, row->fee_ppm, &want) != 0)
        return s_dispute(out, AL_R_BAD_AMOUNTS,
                         "figures out of range (tokens %lld/%lld/%lld, fee_ppm %lld, hold %lld)",
                         (long long)row->input_tokens, (long long)row->cached_tokens,
                         (long long)row->output_tokens, (long long)row->fee_ppm,
                         (long long)row->hold);
    bool capped = false;
    if (row->cost != want.cost || row->fee != want.fee || row->credit != want.credit) {
        /* A charge capped at the request's hold (the gateway died mid-stream and the agent's
         * figure was above the hold): the cost is the hold, split by the same fee rule. A hold
         * of 0 (a request that reserved nothing) caps the charge at 0, as hub-billing does. */
        money_split_t split;
        if (row->cost == row->hold && row->cost < want.cost &&
            money_split(row->cost, row->fee_ppm, &split) == 0 && split.fee == row->fee &&
            split.credit == row->credit) {
            capped = true;
        } else {
            return s_dispute(out, AL_R_BAD_AMOUNTS,
                             "cost/fee/credit %lld/%lld/%lld, the price gives %lld/%lld/%lld",
                             (long long)row->cost, (long long)row->fee, (long long)row->credit,
                             (long long)want.cost, (long long)want.fee, (long long)want.credit);
        }
    }

    if (!local) {
        /* The agent has no record (it crashed mid-request, or the wait ran out): the hub's word
         * is taken up to the hold the request had. */
        if (row->cost <= row->hold)
            return s_verdict(out, AL_HUB_ATTESTED, capped, 0);
        return s_dispute(out, AL_R_OVER_HOLD, "no local record and cost %lld above the hold %lld",
                         (long long)row->cost, (long long)row->hold);
    }
    if (local->model[0] && strcmp(local->model, row->model) != 0)
        return s_dispute(out, AL_R_MODEL, "billed as %s, the local record is of %s", row->model,
                         local->model);

    /* The agent's own figure priced by the same rule and fee rate. */
    money_usage_t lu = {local->input_tokens, local->cached_tokens, local->output_tokens};
    money_split_t mine;
    if (money_price(price, &lu, row->fee_ppm, &mine) != 0)
        return s_dispute(out, AL_R_TOKENS_DIFFER,
                         "the local record's figures %lld/%lld/%lld "
                         "cannot be priced",
                         (long long)lu.input, (long long)lu.cached_input, (long long)lu.output);
    bool same =
        ru.input == lu.input && ru.cached_input == lu.cached_input && ru.output == lu.output;
    if (same) {
        if (!capped)
            return s_verdict(out, AL_VERIFIED, false, 0);
        return s_verdict(out, AL_ACCEPTED, true, mine.cost - row->cost);
    }
    /* Both complete, with the vendor's own figures: they must agree. When either side was
     * interrupted (the user left, the vendor dropped: the hub's row is estimated, or our
     * record is), the hub saw at most what we sent. */
    if (local->complete && !local->estimated && !row->estimated)
        return s_dispute(out, AL_R_TOKENS_DIFFER,
                         "tokens %lld/%lld/%lld, the completed stream's record has %lld/%lld/%lld",
                         (long long)ru.input, (long long)ru.cached_input, (long long)ru.output,
                         (long long)lu.input, (long long)lu.cached_input, (long long)lu.output);
    /* An interrupted stream: the hub may have seen a prefix of what the agent sent, so each
     * priced quantity may be lower than the agent's, none higher. */
    if (ru.input - ru.cached_input > lu.input - lu.cached_input ||
        ru.cached_input > lu.cached_input || ru.output > lu.output || row->cost > mine.cost)
        return s_dispute(out, AL_R_HUB_HIGHER,
                         "tokens %lld/%lld/%lld (cost %lld), the local record has %lld/%lld/%lld "
                         "(cost %lld)",
                         (long long)ru.input, (long long)ru.cached_input, (long long)ru.output,
                         (long long)row->cost, (long long)lu.input, (long long)lu.cached_input,
                         (long long)lu.output, (long long)mine.cost);
    return s_verdict(out, AL_ACCEPTED, capped, mine.cost - row->cost);
}

const char *al_verdict_name(al_verdict_t v)
{
    switch (v) {
    case AL_VERIFIED:
        return "verified";
    case AL_ACCEPTED:
        return "accepted";
    case AL_HUB_ATTESTED:
        return "hub-attested";
    case AL_DISPUTED:
        return "disputed";
    }
    return "disputed";
}

int al_verdict_parse(const char *name, al_verdict_t *out)
{
    static const al_verdict_t all[] = {AL_VERIFIED, AL_ACCEPTED, AL_HUB_ATTESTED, AL_DISPUTED};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(name, al_verdict_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return -EINVAL;
}

const char *al_reason_name(al_reason_t r)
{
    switch (r) {
    case AL_R_NONE:
        return "";
    case AL_R_BAD_HASH:
        return "bad_hash";
    case AL_R_BAD_PREV:
        return "bad_prev";
    case AL_R_AGENT_ID:
        return "agent_id";
    case AL_R_UNKNOWN_PRICE:
        return "unknown_price";
    case AL_R_BAD_AMOUNTS:
        return "bad_amounts";
    case AL_R_MODEL:
        return "model";
    case AL_R_HUB_HIGHER:
        return "hub_higher";
    case AL_R_TOKENS_DIFFER:
        return "tokens_differ";
    case AL_R_OVER_HOLD:
        return "over_hold";
    case AL_R__COUNT:
        break;
    }
    return "unknown";
}
