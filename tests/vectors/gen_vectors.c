/* gen_vectors: writes the known-good envelope samples tests/vectors/<name>.bin.
 *
 * Run once, by hand, when a vector is added (the .bin files are committed; the unit test
 * compares against them, so a change of the wire format shows up as a failing test):
 *   gcc -std=c11 -D_GNU_SOURCE -o /tmp/gen_vectors tests/vectors/gen_vectors.c \
 *       bus/bus_env.c bus/bus_mp.c $(pkg-config --cflags --libs msgpack)
 *   /tmp/gen_vectors tests/vectors
 *
 * The table below is also the test's source of expected values: tests/unit/test_bus_env.c
 * includes this file with GEN_VECTORS_NO_MAIN defined.
 *
 * Two kinds of vectors:
 *  - canonical ("<type>.bin", one per type, every field set): the bytes bus_env_encode()
 *    produces for the expected envelope. The test decodes them and re-encodes byte for byte.
 *  - hand-packed ("x_*.bin"): what another encoder might send (keys in another order, unknown
 *    keys and fields of odd shapes, nil req_id, non-minimal integer and length formats). The
 *    test only decodes them and compares the fields.
 */
#include "../../bus/bus_env.h"

#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *file;                                  /* name under tests/vectors/ */
    void (*build)(bus_env_t *env, bus_buf_t *scratch); /* fills the expected envelope */
    int (*pack)(msgpack_packer *pk);                   /* NULL: canonical, else hand-packed */
} gv_vector_t;

/* Fills a request id with 0x00, 0x11, ... 0xff (or a fixed id for control messages). */
static void s_gv_req_id(bus_env_t *env)
{
    env->has_req_id = true;
    for (int i = 0; i < BUS_REQ_ID_LEN; i++)
        env->req_id[i] = (uint8_t)(i * 0x11);
}

/* A static byte pattern for bins: 0, 7, 14, ... (mod 256). */
static const uint8_t *s_gv_bytes(void)
{
    static uint8_t b[512];
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (uint8_t)(i * 7);
    return b;
}

/* Expected "hello". */
static void s_gv_hello(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_HELLO;
    e->u.hello.proto_version = 1;
    e->u.hello.agent_version = bus_str_c("relayhub-agent/0.1.0");
}

/* Expected "challenge". */
static void s_gv_challenge(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_CHALLENGE;
    e->u.challenge.proto_version = 1;
    e->u.challenge.nonce = (bus_bin_t){s_gv_bytes(), 32};
    e->u.challenge.expires_ms = 1718000000000ull;
}

/* Expected "auth". */
static void s_gv_auth(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_AUTH;
    e->u.auth.agent_id = bus_str_c("ag_3q2f7k9x");
    e->u.auth.nonce = (bus_bin_t){s_gv_bytes(), 32};
    e->u.auth.signature = (bus_bin_t){s_gv_bytes() + 32, 64};
    e->u.auth.agent_version = bus_str_c("relayhub-agent/0.1.0");
}

/* Expected "welcome". */
static void s_gv_welcome(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_WELCOME;
    e->u.welcome.agent_id = bus_str_c("ag_3q2f7k9x");
    e->u.welcome.heartbeat_ms = 15000;
    e->u.welcome.dead_after_ms = 45000;
}

/* Expected "ping". */
static void s_gv_ping(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_PING;
    e->u.ping.seq = 42;
    e->u.ping.t_us = 1718000000123456ull;
}

/* Expected "pong". */
static void s_gv_pong(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_PONG;
    e->u.pong.seq = 42;
    e->u.pong.t_us = UINT64_MAX;
}

/* Expected "presence". */
static void s_gv_presence(bus_env_t *e, bus_buf_t *scratch)
{
    static const char *const models[] = {"gpt-4o-mini", "claude-3-5-haiku", "gemini-1.5-flash"};
    bus_str_t m[3];
    for (int i = 0; i < 3; i++)
        m[i] = bus_str_c(models[i]);
    e->type = BUS_T_PRESENCE;
    e->u.presence.agent_id = bus_str_c("ag_3q2f7k9x");
    e->u.presence.state = bus_str_c("up");
    e->u.presence.name = bus_str_c("home-box");
    e->u.presence.tunnel = bus_str_c("ipc:///var/lib/relayhub/tunnel-1.pub");
    if (bus_list_encode_strs(scratch, m, 3, &e->u.presence.models) < 0)
        e->type = BUS_T_UNKNOWN;
    static const char *const formats[] = {"openai", "anthropic openai", "gemini"};
    bus_str_t f[3];
    for (int i = 0; i < 3; i++)
        f[i] = bus_str_c(formats[i]);
    /* A second list in the same scratch could move the first one's bytes: its own buffer. */
    static bus_buf_t fscratch;
    static bool fscratch_ready;
    if (!fscratch_ready)
        bus_buf_init(&fscratch, 0);
    fscratch_ready = true;
    bus_buf_reset(&fscratch);
    if (bus_list_encode_strs(&fscratch, f, 3, &e->u.presence.model_formats) < 0)
        e->type = BUS_T_UNKNOWN;
    e->u.presence.in_flight = 3;
    e->u.presence.capacity = 16;
    e->u.presence.reason = bus_str_c("connected");
}

/* Expected "admin.echo" (multi-byte UTF-8, quotes and a control character). */
static void s_gv_admin_echo(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_ADMIN_ECHO;
    e->u.admin_echo.agent_id = bus_str_c("ag_3q2f7k9x");
    e->u.admin_echo.text = bus_str_c("h\xc3\xa9llo \"w\xc3\xb6rld\"\n\xe4\xb8\x96\xe7\x95\x8c "
                                     "\xf0\x9f\x8c\x8d");
}

/* Expected "error". */
static void s_gv_error(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_ERROR;
    s_gv_req_id(e);
    e->u.error.code = -95;
    e->u.error.message = bus_str_c("unknown envelope type \"ledger.frob\"");
}

/* Expected "req.open". */
static void s_gv_req_open(bus_env_t *e, bus_buf_t *scratch)
{
    static const char *const kv[] = {"content-type",      "application/json",  "accept",
                                     "text/event-stream", "anthropic-version", "2023-06-01"};
    bus_str_t h[6];
    for (int i = 0; i < 6; i++)
        h[i] = bus_str_c(kv[i]);
    e->type = BUS_T_REQ_OPEN;
    s_gv_req_id(e);
    e->u.req_open.attempt = 2;
    e->u.req_open.format = bus_str_c("anthropic");
    e->u.req_open.model = bus_str_c("claude-3-5-haiku");
    e->u.req_open.method = bus_str_c("POST");
    e->u.req_open.path = bus_str_c("/v1/messages");
    e->u.req_open.query = bus_str_c("beta=true");
    if (bus_list_encode_kvs(scratch, h, 3, &e->u.req_open.headers) < 0)
        e->type = BUS_T_UNKNOWN;
    e->u.req_open.body_size = -1;
    e->u.req_open.agent_id = bus_str_c("0123456789abcdef0123456789abcdef");
}

/* Expected "req.body" (300 bytes). */
static void s_gv_req_body(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_REQ_BODY;
    s_gv_req_id(e);
    e->u.req_body.data = (bus_bin_t){s_gv_bytes(), 300};
}

/* Expected "req.cancel". */
static void s_gv_req_cancel(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_REQ_CANCEL;
    s_gv_req_id(e);
    e->u.req_cancel.reason = bus_str_c("client went away");
}

/* Expected "credit". */
static void s_gv_credit(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_CREDIT;
    s_gv_req_id(e);
    e->u.credit.bytes = 262144;
}

/* Expected "resp.head". */
static void s_gv_resp_head(bus_env_t *e, bus_buf_t *scratch)
{
    static const char *const kv[] = {"content-type", "text/event-stream",
                                     "x-ratelimit-remaining-requests", "4999"};
    bus_str_t h[4];
    for (int i = 0; i < 4; i++)
        h[i] = bus_str_c(kv[i]);
    e->type = BUS_T_RESP_HEAD;
    s_gv_req_id(e);
    e->u.resp_head.status = 200;
    if (bus_list_encode_kvs(scratch, h, 2, &e->u.resp_head.headers) < 0)
        e->type = BUS_T_UNKNOWN;
}

/* Expected "resp.chunk" (100 bytes: past the JSON 64-byte preview). */
static void s_gv_resp_chunk(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_RESP_CHUNK;
    s_gv_req_id(e);
    e->u.resp_chunk.data = (bus_bin_t){s_gv_bytes() + 100, 100};
}

/* Expected "resp.end". */
static void s_gv_resp_end(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_RESP_END;
    s_gv_req_id(e);
    e->u.resp_end.error = bus_str_c("upstream closed early");
    e->u.resp_end.input_tokens = 1234;
    e->u.resp_end.output_tokens = 567;
    e->u.resp_end.cached_tokens = 1024;
    e->u.resp_end.estimated = true;
    e->u.resp_end.complete = true;
}

static void s_gv_registry_changed(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_REGISTRY_CHANGED;
    e->u.registry_changed.what = bus_str_c("keys");
}

/* Expected money envelopes (every field set). */
static const uint8_t s_gv_hash_a[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                        17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                                        31, 32};
static const uint8_t s_gv_hash_b[32] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                                        0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
                                        0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
                                        0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf};
#define S_GV_AGENT "b3k5q2m7x9c4t6w8z2n4p6r8s1u3v5y7"

static void s_gv_hold_req(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_HOLD_REQ;
    s_gv_req_id(e);
    e->u.hold_req.user_id = 42;
    e->u.hold_req.model = bus_str_c("gpt-4o-mini");
    e->u.hold_req.body_bytes = 1834;
    e->u.hold_req.max_tokens = 256;
}

static void s_gv_hold_reply(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_HOLD_REPLY;
    s_gv_req_id(e);
    e->u.hold_reply.ok = true;
    e->u.hold_reply.amount = 1234567;
    e->u.hold_reply.status = 402;
    e->u.hold_reply.code = bus_str_c("insufficient_quota");
    e->u.hold_reply.message = bus_str_c("balance too low for this request");
}

static void s_gv_usage_report(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_USAGE_REPORT;
    s_gv_req_id(e);
    e->u.usage_report.source = bus_str_c("gateway");
    e->u.usage_report.attempt = 2;
    e->u.usage_report.agent_id = bus_str_c(S_GV_AGENT);
    e->u.usage_report.user_id = 42;
    e->u.usage_report.model = bus_str_c("gpt-4o-mini");
    e->u.usage_report.status = 200;
    e->u.usage_report.delivered = true;
    e->u.usage_report.complete = true;
    e->u.usage_report.estimated = true;
    e->u.usage_report.input_tokens = 1200;
    e->u.usage_report.cached_tokens = 1024;
    e->u.usage_report.output_tokens = 345;
}

static void s_gv_usage_ack(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_USAGE_ACK;
    s_gv_req_id(e);
    e->u.usage_ack.source = bus_str_c("agent");
    e->u.usage_ack.attempt = 1;
    e->u.usage_ack.agent_id = bus_str_c(S_GV_AGENT);
}

static void s_gv_ledger_tx(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_LEDGER_TX;
    s_gv_req_id(e);
    e->u.ledger_tx.agent_id = bus_str_c(S_GV_AGENT);
    e->u.ledger_tx.seq = 77;
    e->u.ledger_tx.attempt = 1;
    e->u.ledger_tx.user_id = 42;
    e->u.ledger_tx.model = bus_str_c("gpt-4o-mini");
    e->u.ledger_tx.input_tokens = 1200;
    e->u.ledger_tx.cached_tokens = 1024;
    e->u.ledger_tx.output_tokens = 345;
    e->u.ledger_tx.estimated = true;
    e->u.ledger_tx.cost = 1851;
    e->u.ledger_tx.fee = 185;
    e->u.ledger_tx.credit = 1666;
    e->u.ledger_tx.hold = 20000;
    e->u.ledger_tx.price_from = 1764115200000;
    e->u.ledger_tx.fee_ppm = 100000;
    e->u.ledger_tx.created_ms = 1795000000123;
    e->u.ledger_tx.prev_hash = (bus_bin_t){s_gv_hash_a, 32};
    e->u.ledger_tx.hash = (bus_bin_t){s_gv_hash_b, 32};
    e->u.ledger_tx.in_flight = true;
}

static void s_gv_ledger_ack(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_LEDGER_ACK;
    e->u.ledger_ack.agent_id = bus_str_c(S_GV_AGENT);
    e->u.ledger_ack.seq = 77;
    e->u.ledger_ack.verdict = bus_str_c("verified");
}

static void s_gv_ledger_nack(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_LEDGER_NACK;
    e->u.ledger_nack.agent_id = bus_str_c(S_GV_AGENT);
    e->u.ledger_nack.seq = 79;
    e->u.ledger_nack.last_seq = 77;
    e->u.ledger_nack.reason = bus_str_c("seq 79 does not follow 77");
}

static void s_gv_ledger_sync(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_LEDGER_SYNC;
    e->u.ledger_sync.agent_id = bus_str_c(S_GV_AGENT);
    e->u.ledger_sync.last_seq = 77;
    e->u.ledger_sync.last_hash = (bus_bin_t){s_gv_hash_b, 32};
}

static void s_gv_price_table(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_PRICE_TABLE;
    e->u.price_table.agent_id = bus_str_c(S_GV_AGENT);
    e->u.price_table.model = bus_str_c("gpt-4o-mini");
    e->u.price_table.effective_from = 1764115200000;
    e->u.price_table.input = 150000;
    e->u.price_table.output = 600000;
    e->u.price_table.cached_input = 75000;
}

/* Expected "instance.switch". */
static void s_gv_instance_switch(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_INSTANCE_SWITCH;
    s_gv_req_id(e);
    e->u.instance_switch.instance = bus_str_c("claude-eu");
    e->u.instance_switch.reason = bus_str_c("the vendor answered 429");
}

static void s_gv_billing_poke(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_BILLING_POKE;
    e->u.billing_poke.what = bus_str_c("topups");
}

/* ---- hand-packed vectors ---- */

/* Packs a str. */
static int s_gv_str(msgpack_packer *pk, const char *s)
{
    return msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Appends raw bytes. */
static int s_gv_raw(msgpack_packer *pk, const void *p, size_t n)
{
    return pk->callback(pk->data, p, n);
}

/* Expected envelope of x_admin_echo_reordered.bin. */
static void s_gv_x_reordered(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_ADMIN_ECHO;
    e->u.admin_echo.agent_id = bus_str_c("ag1");
    e->u.admin_echo.text = bus_str_c("reordered");
}

/* Payload first, unknown keys of every shape, nil req_id, "v" as a uint8. */
static int s_gv_x_reordered_pack(msgpack_packer *pk)
{
    static const uint8_t v_u8[] = {0xcc, 0x01};
    int rc = msgpack_pack_map(pk, 5);
    rc |= s_gv_str(pk, "payload");
    rc |= msgpack_pack_map(pk, 4);
    rc |= s_gv_str(pk, "zzz");
    rc |= msgpack_pack_map(pk, 1);
    rc |= s_gv_str(pk, "nested");
    rc |= msgpack_pack_array(pk, 5);
    rc |= msgpack_pack_int8(pk, -5);
    rc |= msgpack_pack_double(pk, 2.5);
    rc |= msgpack_pack_nil(pk);
    rc |= msgpack_pack_ext_with_body(pk, "\x01\x02\x03\x04", 4, 7);
    rc |= msgpack_pack_float(pk, 1.5f);
    rc |= s_gv_str(pk, "text");
    rc |= s_gv_str(pk, "reordered");
    rc |= s_gv_str(pk, "agent_id");
    rc |= s_gv_str(pk, "ag1");
    rc |= s_gv_str(pk, "future_flag");
    rc |= msgpack_pack_true(pk);
    rc |= s_gv_str(pk, "x-extra");
    rc |= msgpack_pack_array(pk, 2);
    rc |= msgpack_pack_bin_with_body(pk, "\0\1", 2);
    rc |= msgpack_pack_map(pk, 0);
    rc |= s_gv_str(pk, "req_id");
    rc |= msgpack_pack_nil(pk);
    rc |= s_gv_str(pk, "type");
    rc |= s_gv_str(pk, "admin.echo");
    rc |= s_gv_str(pk, "v");
    rc |= s_gv_raw(pk, v_u8, sizeof v_u8);
    return rc;
}

/* Expected envelope of x_ping_wide.bin. */
static void s_gv_x_wide(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_PING;
    s_gv_req_id(e);
    e->u.ping.seq = 5;
    e->u.ping.t_us = 100000;
}

/* Non-minimal formats everywhere: int64 "v", str8 "type", bin32 req_id, map16 payload, a
 * uint64 holding 5 and a positive int32. */
static int s_gv_x_wide_pack(msgpack_packer *pk)
{
    static const uint8_t v_i64[] = {0xd3, 0, 0, 0, 0, 0, 0, 0, 1};
    static const uint8_t type_str8[] = {0xd9, 4, 'p', 'i', 'n', 'g'};
    static const uint8_t rid_bin32[] = {0xc6, 0, 0, 0, 16};
    static const uint8_t pl_map16[] = {0xde, 0, 2};
    static const uint8_t seq_u64[] = {0xcf, 0, 0, 0, 0, 0, 0, 0, 5};
    static const uint8_t t_i32[] = {0xd2, 0x00, 0x01, 0x86, 0xa0};
    bus_env_t ids = {0};
    s_gv_req_id(&ids);
    int rc = msgpack_pack_map(pk, 4);
    rc |= s_gv_str(pk, "v");
    rc |= s_gv_raw(pk, v_i64, sizeof v_i64);
    rc |= s_gv_str(pk, "type");
    rc |= s_gv_raw(pk, type_str8, sizeof type_str8);
    rc |= s_gv_str(pk, "req_id");
    rc |= s_gv_raw(pk, rid_bin32, sizeof rid_bin32);
    rc |= s_gv_raw(pk, ids.req_id, BUS_REQ_ID_LEN);
    rc |= s_gv_str(pk, "payload");
    rc |= s_gv_raw(pk, pl_map16, sizeof pl_map16);
    rc |= s_gv_str(pk, "seq");
    rc |= s_gv_raw(pk, seq_u64, sizeof seq_u64);
    rc |= s_gv_str(pk, "t_us");
    rc |= s_gv_raw(pk, t_i32, sizeof t_i32);
    return rc;
}

/* Expected envelope of x_resp_head_nils.bin. */
static void s_gv_x_nils(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_RESP_HEAD;
    e->u.resp_head.status = 404;
}

/* Optional fields given as nil, unknown key "hint" carrying a nil. */
static int s_gv_x_nils_pack(msgpack_packer *pk)
{
    int rc = msgpack_pack_map(pk, 3);
    rc |= s_gv_str(pk, "type");
    rc |= s_gv_str(pk, "resp.head");
    rc |= s_gv_str(pk, "payload");
    rc |= msgpack_pack_map(pk, 3);
    rc |= s_gv_str(pk, "headers");
    rc |= msgpack_pack_nil(pk);
    rc |= s_gv_str(pk, "status");
    rc |= msgpack_pack_uint16(pk, 404);
    rc |= s_gv_str(pk, "hint");
    rc |= msgpack_pack_nil(pk);
    rc |= s_gv_str(pk, "v");
    rc |= msgpack_pack_uint8(pk, 1);
    return rc;
}

/* Expected envelope of x_credit_no_payload.bin: no payload key at all. */
static void s_gv_x_nopayload(bus_env_t *e, bus_buf_t *scratch)
{
    (void)scratch;
    e->type = BUS_T_CREDIT;
    s_gv_req_id(e);
}

/* {"v":1,"type":"credit","req_id":...} */
static int s_gv_x_nopayload_pack(msgpack_packer *pk)
{
    bus_env_t ids = {0};
    s_gv_req_id(&ids);
    int rc = msgpack_pack_map(pk, 3);
    rc |= s_gv_str(pk, "v");
    rc |= msgpack_pack_uint8(pk, 1);
    rc |= s_gv_str(pk, "type");
    rc |= s_gv_str(pk, "credit");
    rc |= s_gv_str(pk, "req_id");
    rc |= msgpack_pack_bin_with_body(pk, ids.req_id, BUS_REQ_ID_LEN);
    return rc;
}

static const gv_vector_t gv_vectors[] = {
    {"hello.bin", s_gv_hello, NULL},
    {"challenge.bin", s_gv_challenge, NULL},
    {"auth.bin", s_gv_auth, NULL},
    {"welcome.bin", s_gv_welcome, NULL},
    {"ping.bin", s_gv_ping, NULL},
    {"pong.bin", s_gv_pong, NULL},
    {"presence.bin", s_gv_presence, NULL},
    {"admin_echo.bin", s_gv_admin_echo, NULL},
    {"error.bin", s_gv_error, NULL},
    {"req_open.bin", s_gv_req_open, NULL},
    {"req_body.bin", s_gv_req_body, NULL},
    {"req_cancel.bin", s_gv_req_cancel, NULL},
    {"credit.bin", s_gv_credit, NULL},
    {"resp_head.bin", s_gv_resp_head, NULL},
    {"resp_chunk.bin", s_gv_resp_chunk, NULL},
    {"resp_end.bin", s_gv_resp_end, NULL},
    {"registry_changed.bin", s_gv_registry_changed, NULL},
    {"hold_req.bin", s_gv_hold_req, NULL},
    {"hold_reply.bin", s_gv_hold_reply, NULL},
    {"usage_report.bin", s_gv_usage_report, NULL},
    {"usage_ack.bin", s_gv_usage_ack, NULL},
    {"ledger_tx.bin", s_gv_ledger_tx, NULL},
    {"ledger_ack.bin", s_gv_ledger_ack, NULL},
    {"ledger_nack.bin", s_gv_ledger_nack, NULL},
    {"ledger_sync.bin", s_gv_ledger_sync, NULL},
    {"price_table.bin", s_gv_price_table, NULL},
    {"billing_poke.bin", s_gv_billing_poke, NULL},
    {"instance_switch.bin", s_gv_instance_switch, NULL},
    {"x_admin_echo_reordered.bin", s_gv_x_reordered, s_gv_x_reordered_pack},
    {"x_ping_wide.bin", s_gv_x_wide, s_gv_x_wide_pack},
    {"x_resp_head_nils.bin", s_gv_x_nils, s_gv_x_nils_pack},
    {"x_credit_no_payload.bin", s_gv_x_nopayload, s_gv_x_nopayload_pack},
};

#define GV_NVECTORS (sizeof gv_vectors / sizeof gv_vectors[0])

/* Appends msgpack bytes to a bus_buf_t (msgpack-c write callback). */
static int s_gv_write(void *data, const char *buf, size_t len)
{
    return bus_buf_append(data, buf, len);
}

/* Produces the bytes of vector i into out (reset first): 0 or a negative errno. */
static int gv_vector_bytes(size_t i, bus_buf_t *out)
{
    bus_env_t env = {0};
    bus_buf_t scratch;
    int rc;
    bus_buf_reset(out);
    bus_buf_init(&scratch, 0);
    gv_vectors[i].build(&env, &scratch);
    if (gv_vectors[i].pack) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, out, s_gv_write);
        rc = gv_vectors[i].pack(&pk) ? -EIO : 0;
    } else {
        rc = bus_env_encode(&env, out);
    }
    bus_buf_free(&scratch);
    return rc;
}

#ifndef GEN_VECTORS_NO_MAIN
/* Writes every vector into the directory argv[1], after checking that each one decodes. */
int main(int argc, char **argv)
{
    bus_buf_t out;
    char path[4096];
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    bus_buf_init(&out, 0);
    for (size_t i = 0; i < GV_NVECTORS; i++) {
        if (gv_vector_bytes(i, &out) < 0) {
            fprintf(stderr, "%s: cannot encode\n", gv_vectors[i].file);
            return 1;
        }
        bus_env_t check;
        char err[256];
        if (bus_env_decode(out.data, out.len, &check, err, sizeof err) < 0) {
            fprintf(stderr, "%s: does not decode: %s\n", gv_vectors[i].file, err);
            return 1;
        }
        snprintf(path, sizeof path, "%s/%s", argv[1], gv_vectors[i].file);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(out.data, 1, out.len, f) != out.len || fclose(f) != 0) {
            fprintf(stderr, "%s: cannot write\n", path);
            return 1;
        }
        printf("%s: %zu bytes\n", path, out.len);
    }
    bus_buf_free(&out);
    return 0;
}
#endif
