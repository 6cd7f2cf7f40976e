/* Unit tests for services/tunnel/tun_handshake: every transition and refusal of the hub-side
 * handshake state machine, driven with hand-built envelopes and a fake registry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "identity.h"
#include "tun_handshake.h"

#define PIN "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
#define OTHER_PIN "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define TTL_US (10 * 1000 * 1000)
#define T0 ((uint64_t)5 * 1000 * 1000 * 1000)

/* One agent of the fake registry. */
typedef struct {
    id_keypair_t kp;              /* its key pair (the test plays the agent) */
    char id[ID_AGENT_ID_LEN + 1]; /* derived id */
    bool disabled;                /* status */
    bool registered;              /* present in the registry */
    const char *name;             /* operator-given name */
} fake_agent_t;

/* The fake registry behind tun_hs_lookup_fn. */
typedef struct {
    fake_agent_t *agents; /* table */
    size_t n;             /* entries */
    bool not_loaded;      /* answer -EAGAIN to everything */
    int calls;            /* lookups made */
    char last_id[80];     /* id of the last lookup */
} fake_reg_t;

enum { A_OK = 0, A_DISABLED = 1, A_UNREGISTERED = 2, N_AGENTS = 3 };

static fake_agent_t s_agents[N_AGENTS]; /* alpha (enabled), beta (disabled), gamma (unknown) */
static fake_reg_t s_reg;                /* the registry the context points at */
static tun_hs_ctx_t s_ctx;              /* handshake context */

/* Registry lookup: registered agents by id, -ENOENT for others, -EAGAIN when not loaded. */
static int fake_lookup(void *arg, const char *agent_id, tun_hs_agent_t *out)
{
    fake_reg_t *r = arg;
    r->calls++;
    snprintf(r->last_id, sizeof r->last_id, "%s", agent_id);
    if (r->not_loaded)
        return -EAGAIN;
    for (size_t i = 0; i < r->n; i++) {
        fake_agent_t *a = &r->agents[i];
        if (a->registered && strcmp(a->id, agent_id) == 0) {
            memcpy(out->pubkey, a->kp.pk, ID_PUBKEY_LEN);
            out->disabled = a->disabled;
            snprintf(out->name, sizeof out->name, "%s", a->name);
            return 0;
        }
    }
    return -ENOENT;
}

/* Generates the agents once. */
static int group_setup(void **state)
{
    (void)state;
    if (id_init() != 0)
        return -1;
    const char *names[N_AGENTS] = {"alpha", "beta", "gamma"};
    for (int i = 0; i < N_AGENTS; i++) {
        if (id_keypair_generate(&s_agents[i].kp) != 0)
            return -1;
        id_agent_id(s_agents[i].kp.pk, s_agents[i].id);
        s_agents[i].name = names[i];
        s_agents[i].registered = i != A_UNREGISTERED;
        s_agents[i].disabled = i == A_DISABLED;
    }
    return 0;
}

/* Fresh registry state and context for each test. */
static int setup(void **state)
{
    (void)state;
    memset(&s_reg, 0, sizeof s_reg);
    s_reg.agents = s_agents;
    s_reg.n = N_AGENTS;
    s_ctx = (tun_hs_ctx_t){PIN, TTL_US, fake_lookup, &s_reg};
    return 0;
}

/* A hello envelope. */
static bus_env_t hello_env(uint64_t version, const char *agent_version)
{
    bus_env_t e;
    memset(&e, 0, sizeof e);
    e.type = BUS_T_HELLO;
    e.version = 1;
    e.u.hello.proto_version = version;
    e.u.hello.agent_version = bus_str_c(agent_version);
    return e;
}

/* An auth envelope borrowing id, nonce and signature. */
static bus_env_t auth_env(const char *agent_id, const uint8_t *nonce, size_t nonce_len,
                          const uint8_t *sig, size_t sig_len)
{
    bus_env_t e;
    memset(&e, 0, sizeof e);
    e.type = BUS_T_AUTH;
    e.version = 1;
    e.u.auth.agent_id = bus_str_c(agent_id);
    e.u.auth.nonce = (bus_bin_t){nonce, nonce_len};
    e.u.auth.signature = (bus_bin_t){sig, sig_len};
    e.u.auth.agent_version = bus_str_c("agent/2.0");
    return e;
}

/* Sends hello on a fresh hs and checks the challenge; copies the issued nonce. */
static void challenge(tun_hs_t *hs, uint64_t now, uint8_t nonce[ID_NONCE_LEN])
{
    tun_hs_init(hs);
    assert_int_equal(hs->state, TUN_HS_AWAIT_HELLO);
    bus_env_t h = hello_env(BUS_PROTO_VERSION, "agent/1.0");
    tun_hs_result_t r = tun_hs_on_message(hs, &s_ctx, &h, now);
    assert_int_equal(r.action, TUN_HS_SEND_CHALLENGE);
    assert_int_equal(hs->state, TUN_HS_CHALLENGED);
    memcpy(nonce, hs->nonce, ID_NONCE_LEN);
}

/* Checks that r closes with code and that hs is closed and unauthenticated. */
static void assert_closed(const tun_hs_t *hs, tun_hs_result_t r, int code)
{
    if (r.action != TUN_HS_CLOSE || r.close_code != code)
        fail_msg("expected close %d (%s), got action %d code %d (%s)", code, tun_close_name(code),
                 (int)r.action, r.close_code, r.reason ? r.reason : "");
    assert_int_equal(hs->state, TUN_HS_CLOSED);
    assert_non_null(r.reason);
    assert_string_equal(hs->agent_id, "");
}

/* Signs the auth message for agent a (with signer's key) and feeds it to hs. */
static tun_hs_result_t send_auth(tun_hs_t *hs, const fake_agent_t *signer, const char *claimed_id,
                                 const uint8_t nonce[ID_NONCE_LEN], const char *pin, uint64_t now)
{
    uint8_t sig[ID_SIG_LEN];
    assert_int_equal(id_auth_sign(&signer->kp, BUS_PROTO_VERSION, nonce, claimed_id, pin, sig), 0);
    bus_env_t a = auth_env(claimed_id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    return tun_hs_on_message(hs, &s_ctx, &a, now);
}

static void test_happy_path(void **state)
{
    (void)state;
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN], zero[ID_NONCE_LEN] = {0};
    challenge(&hs, T0, nonce);
    assert_memory_not_equal(nonce, zero, ID_NONCE_LEN);
    assert_int_equal(hs.nonce_at_us, T0);
    assert_int_equal(hs.proto_version, BUS_PROTO_VERSION);
    assert_string_equal(hs.agent_version, "agent/1.0");

    /* Every connection gets its own nonce. */
    tun_hs_t hs2;
    uint8_t nonce2[ID_NONCE_LEN];
    challenge(&hs2, T0, nonce2);
    assert_memory_not_equal(nonce, nonce2, ID_NONCE_LEN);

    const fake_agent_t *a = &s_agents[A_OK];
    tun_hs_result_t r = send_auth(&hs, a, a->id, nonce, PIN, T0 + 1000);
    assert_int_equal(r.action, TUN_HS_SEND_WELCOME);
    assert_int_equal(r.close_code, 0);
    assert_int_equal(hs.state, TUN_HS_READY);
    assert_string_equal(hs.agent_id, a->id);
    assert_string_equal(hs.name, "alpha");
    assert_string_equal(hs.agent_version, "agent/2.0"); /* auth's version wins */
    assert_int_equal(s_reg.calls, 1);
    assert_string_equal(s_reg.last_id, a->id);
    assert_string_equal(tun_hs_state_name(hs.state), "ready");
}

static void test_wrong_version(void **state)
{
    (void)state;
    static const uint64_t bad[] = {0, BUS_PROTO_VERSION + 1, 256, UINT64_MAX,
                                   ((uint64_t)1 << 32) | BUS_PROTO_VERSION};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tun_hs_t hs;
        tun_hs_init(&hs);
        bus_env_t h = hello_env(bad[i], "x");
        assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &h, T0), TUN_CLOSE_VERSION);
        assert_int_equal(tun_close_name(TUN_CLOSE_VERSION)[0], 'u');
    }
}

static void test_agent_version_limits(void **state)
{
    (void)state;
    /* envelopes.def allows agent_version up to 64 bytes in hello and auth: the longest
     * version the codec accepts must not be refused here. */
    char v64[65], v65[66];
    memset(v64, 'v', 64);
    v64[64] = '\0';
    memset(v65, 'w', 65);
    v65[65] = '\0';
    tun_hs_t hs;
    tun_hs_init(&hs);
    bus_env_t h = hello_env(BUS_PROTO_VERSION, v64);
    assert_int_equal(tun_hs_on_message(&hs, &s_ctx, &h, T0).action, TUN_HS_SEND_CHALLENGE);
    assert_string_equal(hs.agent_version, v64);

    /* A 64-byte version in auth replaces the hello's. */
    const fake_agent_t *a = &s_agents[A_OK];
    uint8_t sig[ID_SIG_LEN], nonce[ID_NONCE_LEN];
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    bus_env_t e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    e.u.auth.agent_version = bus_str_c(v64);
    assert_int_equal(tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1).action, TUN_HS_SEND_WELCOME);
    assert_string_equal(hs.agent_version, v64);

    /* Longer than the schema allows (the decoder would refuse it first). */
    tun_hs_init(&hs);
    h = hello_env(BUS_PROTO_VERSION, v65);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &h, T0), TUN_CLOSE_PROTOCOL);

    /* In auth, an over-long version is ignored, the hello's is kept. */
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    e.u.auth.agent_version = bus_str_c(v65);
    assert_int_equal(tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1).action, TUN_HS_SEND_WELCOME);
    assert_string_equal(hs.agent_version, "agent/1.0");
}

static void test_auth_before_hello(void **state)
{
    (void)state;
    tun_hs_t hs;
    tun_hs_init(&hs);
    uint8_t nonce[ID_NONCE_LEN] = {0}; /* the all-zero nonce of a fresh hs */
    const fake_agent_t *a = &s_agents[A_OK];
    assert_closed(&hs, send_auth(&hs, a, a->id, nonce, PIN, T0), TUN_CLOSE_NOT_AUTHENTICATED);
    assert_int_equal(s_reg.calls, 0);
}

static void test_other_types_before_ready(void **state)
{
    (void)state;
    for (int t = BUS_T_UNKNOWN; t < BUS_T__COUNT; t++) {
        bus_env_t e;
        memset(&e, 0, sizeof e);
        e.type = (bus_type_t)t;
        e.version = 1;
        tun_hs_t hs;
        if (t != BUS_T_HELLO) {
            tun_hs_init(&hs);
            tun_hs_result_t r = tun_hs_on_message(&hs, &s_ctx, &e, T0);
            if (r.action != TUN_HS_CLOSE || r.close_code != TUN_CLOSE_NOT_AUTHENTICATED)
                fail_msg("type %s in await_hello: action %d code %d", bus_type_name(e.type),
                         (int)r.action, r.close_code);
            assert_int_equal(hs.state, TUN_HS_CLOSED);
        }
        if (t != BUS_T_AUTH) {
            uint8_t nonce[ID_NONCE_LEN];
            challenge(&hs, T0, nonce);
            if (t == BUS_T_HELLO)
                e = hello_env(BUS_PROTO_VERSION, "again");
            tun_hs_result_t r = tun_hs_on_message(&hs, &s_ctx, &e, T0);
            if (r.action != TUN_HS_CLOSE || r.close_code != TUN_CLOSE_NOT_AUTHENTICATED)
                fail_msg("type %s in challenged: action %d code %d", bus_type_name(e.type),
                         (int)r.action, r.close_code);
            assert_int_equal(hs.state, TUN_HS_CLOSED);
        }
    }
    assert_int_equal(s_reg.calls, 0);
}

static void test_second_hello(void **state)
{
    (void)state;
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN];
    challenge(&hs, T0, nonce);
    bus_env_t h = hello_env(BUS_PROTO_VERSION, "again");
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &h, T0 + 1), TUN_CLOSE_NOT_AUTHENTICATED);
    /* The old nonce is useless now: a valid auth on the closed hs does nothing. */
    const fake_agent_t *a = &s_agents[A_OK];
    tun_hs_result_t r = send_auth(&hs, a, a->id, nonce, PIN, T0 + 2);
    assert_int_equal(r.action, TUN_HS_NONE);
    assert_int_equal(hs.state, TUN_HS_CLOSED);
    assert_string_equal(hs.agent_id, "");
}

static void test_nonce_replay(void **state)
{
    (void)state;
    const fake_agent_t *a = &s_agents[A_OK];
    /* Session 1 authenticates; its auth envelope is recorded. */
    tun_hs_t hs1;
    uint8_t n1[ID_NONCE_LEN], sig1[ID_SIG_LEN];
    challenge(&hs1, T0, n1);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, n1, a->id, PIN, sig1), 0);
    bus_env_t rec = auth_env(a->id, n1, ID_NONCE_LEN, sig1, ID_SIG_LEN);
    assert_int_equal(tun_hs_on_message(&hs1, &s_ctx, &rec, T0 + 1).action, TUN_HS_SEND_WELCOME);

    /* Session 2: replaying session 1's auth is refused as a replay, before any lookup. */
    tun_hs_t hs2;
    uint8_t n2[ID_NONCE_LEN];
    challenge(&hs2, T0 + 2, n2);
    int calls = s_reg.calls;
    assert_closed(&hs2, tun_hs_on_message(&hs2, &s_ctx, &rec, T0 + 3), TUN_CLOSE_NONCE_REPLAY);
    assert_int_equal(s_reg.calls, calls);

    /* A nonce that differs in one bit from the issued one. */
    tun_hs_t hs3;
    uint8_t n3[ID_NONCE_LEN];
    challenge(&hs3, T0, n3);
    n3[ID_NONCE_LEN - 1] ^= 0x80;
    assert_closed(&hs3, send_auth(&hs3, a, a->id, n3, PIN, T0 + 1), TUN_CLOSE_NONCE_REPLAY);

    /* The all-zero nonce is not accepted as "the consumed nonce" either. */
    tun_hs_t hs4;
    uint8_t n4[ID_NONCE_LEN], zero[ID_NONCE_LEN] = {0};
    challenge(&hs4, T0, n4);
    assert_closed(&hs4, send_auth(&hs4, a, a->id, zero, PIN, T0 + 1), TUN_CLOSE_NONCE_REPLAY);
}

static void test_nonce_expired(void **state)
{
    (void)state;
    const fake_agent_t *a = &s_agents[A_OK];
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN];
    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, a, a->id, nonce, PIN, T0 + TTL_US + 1),
                  TUN_CLOSE_NONCE_EXPIRED);
    assert_int_equal(s_reg.calls, 0);

    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, a, a->id, nonce, PIN, T0 + 3600ULL * 1000000),
                  TUN_CLOSE_NONCE_EXPIRED);

    /* Exactly at the deadline is still in time. */
    challenge(&hs, T0, nonce);
    assert_int_equal(send_auth(&hs, a, a->id, nonce, PIN, T0 + TTL_US).action, TUN_HS_SEND_WELCOME);
}

static void test_unknown_agent(void **state)
{
    (void)state;
    /* gamma holds a real key and signs correctly, but is not registered. */
    const fake_agent_t *g = &s_agents[A_UNREGISTERED];
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN];
    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, g, g->id, nonce, PIN, T0 + 1), TUN_CLOSE_UNKNOWN_AGENT);
    assert_int_equal(s_reg.calls, 1);
    assert_string_equal(s_reg.last_id, g->id);
}

static void test_malformed_agent_id(void **state)
{
    (void)state;
    const fake_agent_t *a = &s_agents[A_OK];
    char upper[ID_AGENT_ID_LEN + 1], short_id[ID_AGENT_ID_LEN], long_id[70];
    snprintf(upper, sizeof upper, "%s", a->id);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    if (strcmp(upper, a->id) == 0)
        upper[0] = 'G'; /* an id of digits only: make it invalid another way */
    snprintf(short_id, sizeof short_id, "%s", a->id);
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    const char *bad[] = {upper, short_id, long_id, "", "../../etc/passwd"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tun_hs_t hs;
        uint8_t nonce[ID_NONCE_LEN], sig[ID_SIG_LEN] = {0};
        challenge(&hs, T0, nonce);
        bus_env_t e = auth_env(bad[i], nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
        assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_UNKNOWN_AGENT);
    }

    /* The registered id followed by more bytes (a NUL among them): too long, not a match. */
    char withnul[ID_AGENT_ID_LEN + 8];
    memcpy(withnul, a->id, ID_AGENT_ID_LEN);
    memcpy(withnul + ID_AGENT_ID_LEN, "\0evil", 6);
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN], sig[ID_SIG_LEN];
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    bus_env_t e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    e.u.auth.agent_id = (bus_str_t){withnul, ID_AGENT_ID_LEN + 5};
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_UNKNOWN_AGENT);
    assert_int_equal(s_reg.calls, 0); /* no lookup for a malformed id */
}

static void test_malformed_auth(void **state)
{
    (void)state;
    const fake_agent_t *a = &s_agents[A_OK];
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN], sig[ID_SIG_LEN + 1];
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    bus_env_t e = auth_env(a->id, nonce, ID_NONCE_LEN - 1, sig, ID_SIG_LEN);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_PROTOCOL);
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN - 1);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_PROTOCOL);
    challenge(&hs, T0, nonce);
    e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN + 1);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_PROTOCOL);
    assert_int_equal(s_reg.calls, 0);
}

static void test_bad_signature(void **state)
{
    (void)state;
    const fake_agent_t *a = &s_agents[A_OK];
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN], sig[ID_SIG_LEN];

    /* One flipped bit. */
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    sig[17] ^= 0x04;
    bus_env_t e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_BAD_SIGNATURE);

    /* A valid signature by another key (gamma) claiming alpha's id. */
    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, &s_agents[A_UNREGISTERED], a->id, nonce, PIN, T0 + 1),
                  TUN_CLOSE_BAD_SIGNATURE);

    /* A valid signature by beta (registered too) claiming alpha's id. */
    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, &s_agents[A_DISABLED], a->id, nonce, PIN, T0 + 1),
                  TUN_CLOSE_BAD_SIGNATURE);

    /* Alpha's signature made for another protocol version. */
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION + 1, nonce, a->id, PIN, sig), 0);
    e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_BAD_SIGNATURE);
}

static void test_signature_binds_pin(void **state)
{
    (void)state;
    /* The agent saw another certificate (a TLS interceptor): its signature must not pass. */
    const fake_agent_t *a = &s_agents[A_OK];
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN];
    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, a, a->id, nonce, OTHER_PIN, T0 + 1), TUN_CLOSE_BAD_SIGNATURE);
    /* And the same agent with the hub's own pin passes (control). */
    challenge(&hs, T0, nonce);
    assert_int_equal(send_auth(&hs, a, a->id, nonce, PIN, T0 + 1).action, TUN_HS_SEND_WELCOME);
}

static void test_disabled_agent(void **state)
{
    (void)state;
    const fake_agent_t *b = &s_agents[A_DISABLED];
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN], sig[ID_SIG_LEN];

    /* The key holder learns that it is disabled. */
    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, b, b->id, nonce, PIN, T0 + 1), TUN_CLOSE_AGENT_DISABLED);

    /* Anyone else does not: a bad signature is a bad signature. */
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&b->kp, BUS_PROTO_VERSION, nonce, b->id, PIN, sig), 0);
    sig[0] ^= 1;
    bus_env_t e = auth_env(b->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_BAD_SIGNATURE);

    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, &s_agents[A_OK], b->id, nonce, PIN, T0 + 1),
                  TUN_CLOSE_BAD_SIGNATURE);

    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, b, b->id, nonce, OTHER_PIN, T0 + 1), TUN_CLOSE_BAD_SIGNATURE);
}

static void test_registry_not_loaded(void **state)
{
    (void)state;
    s_reg.not_loaded = true;
    const fake_agent_t *a = &s_agents[A_OK];
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN];
    challenge(&hs, T0, nonce);
    assert_closed(&hs, send_auth(&hs, a, a->id, nonce, PIN, T0 + 1), TUN_CLOSE_TRY_AGAIN);
    assert_int_equal(s_reg.calls, 1);
    /* Same for an id the registry would not know. */
    challenge(&hs, T0, nonce);
    const fake_agent_t *g = &s_agents[A_UNREGISTERED];
    assert_closed(&hs, send_auth(&hs, g, g->id, nonce, PIN, T0 + 1), TUN_CLOSE_TRY_AGAIN);
}

static void test_nonce_consumed(void **state)
{
    (void)state;
    const fake_agent_t *a = &s_agents[A_OK];
    uint8_t zero[ID_NONCE_LEN] = {0};
    tun_hs_t hs;
    uint8_t nonce[ID_NONCE_LEN], sig[ID_SIG_LEN];

    /* After a successful auth, a second auth is refused and changes nothing. */
    challenge(&hs, T0, nonce);
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    bus_env_t e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    assert_int_equal(tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1).action, TUN_HS_SEND_WELCOME);
    assert_memory_equal(hs.nonce, zero, ID_NONCE_LEN); /* wiped */
    tun_hs_result_t r = tun_hs_on_message(&hs, &s_ctx, &e, T0 + 2);
    assert_int_equal(r.action, TUN_HS_CLOSE);
    assert_int_equal(r.close_code, TUN_CLOSE_NOT_AUTHENTICATED);
    assert_int_equal(hs.state, TUN_HS_CLOSED);

    /* After a failed auth, retrying with a correct signature on the same hs gets nothing. */
    challenge(&hs, T0, nonce);
    uint8_t bad[ID_SIG_LEN];
    assert_int_equal(id_auth_sign(&a->kp, BUS_PROTO_VERSION, nonce, a->id, PIN, sig), 0);
    memcpy(bad, sig, sizeof bad);
    bad[5] ^= 0x10;
    e = auth_env(a->id, nonce, ID_NONCE_LEN, bad, ID_SIG_LEN);
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 1), TUN_CLOSE_BAD_SIGNATURE);
    assert_memory_equal(hs.nonce, zero, ID_NONCE_LEN);
    e = auth_env(a->id, nonce, ID_NONCE_LEN, sig, ID_SIG_LEN);
    r = tun_hs_on_message(&hs, &s_ctx, &e, T0 + 2);
    assert_int_equal(r.action, TUN_HS_NONE);
    assert_int_equal(hs.state, TUN_HS_CLOSED);
    assert_string_equal(hs.agent_id, "");

    /* Even if the state were wound back, the nonce itself is gone: the valid auth for it is
     * now a replay. */
    hs.state = TUN_HS_CHALLENGED;
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &e, T0 + 3), TUN_CLOSE_NONCE_REPLAY);
}

static void test_close_names(void **state)
{
    (void)state;
    static const int codes[] = {
        TUN_CLOSE_GOING_AWAY,        TUN_CLOSE_TOO_BIG,           TUN_CLOSE_TRY_AGAIN,
        TUN_CLOSE_PROTOCOL,          TUN_CLOSE_NOT_AUTHENTICATED, TUN_CLOSE_UNKNOWN_AGENT,
        TUN_CLOSE_AGENT_DISABLED,    TUN_CLOSE_BAD_SIGNATURE,     TUN_CLOSE_NONCE_REPLAY,
        TUN_CLOSE_NONCE_EXPIRED,     TUN_CLOSE_HEARTBEAT,         TUN_CLOSE_VERSION,
        TUN_CLOSE_HANDSHAKE_TIMEOUT, TUN_CLOSE_REPLACED,          TUN_CLOSE_TOO_SLOW,
        TUN_CLOSE_TOO_MANY,
    };
    const size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *name = tun_close_name(codes[i]);
        assert_non_null(name);
        assert_true(name[0] != '\0');
        assert_string_not_equal(name, "other");
        /* Usable as a Prometheus label value and a log event: [a-z_] only. */
        for (const char *p = name; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (size_t j = 0; j < i; j++) {
            if (strcmp(name, tun_close_name(codes[j])) == 0)
                fail_msg("codes %d and %d share the name %s", codes[i], codes[j], name);
        }
    }
    /* The application codes are consecutive from 4000: a code added to the enum but not to
     * the names would show up as a gap here. */
    int top = 4000;
    for (size_t i = 0; i < n; i++)
        top = codes[i] > top ? codes[i] : top;
    for (int c = 4000; c <= top; c++)
        assert_string_not_equal(tun_close_name(c), "other");
    assert_string_equal(tun_close_name(top + 1), "other");
    assert_string_equal(tun_close_name(1000), "other");
    assert_string_equal(tun_close_name(0), "other");
    assert_string_equal(tun_close_name(-1), "other");

    assert_string_equal(tun_hs_state_name(TUN_HS_AWAIT_HELLO), "await_hello");
    assert_string_equal(tun_hs_state_name(TUN_HS_CHALLENGED), "challenged");
    assert_string_equal(tun_hs_state_name(TUN_HS_CLOSED), "closed");
    assert_string_equal(tun_hs_state_name((tun_hs_state_t)42), "?");
}

static void test_closed_is_terminal(void **state)
{
    (void)state;
    tun_hs_t hs;
    tun_hs_init(&hs);
    bus_env_t h = hello_env(BUS_PROTO_VERSION + 1, "x");
    assert_closed(&hs, tun_hs_on_message(&hs, &s_ctx, &h, T0), TUN_CLOSE_VERSION);
    /* A good hello after the close does not reopen it. */
    h = hello_env(BUS_PROTO_VERSION, "x");
    tun_hs_result_t r = tun_hs_on_message(&hs, &s_ctx, &h, T0 + 1);
    assert_int_equal(r.action, TUN_HS_NONE);
    assert_int_equal(hs.state, TUN_HS_CLOSED);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, setup)
    const struct CMUnitTest tests[] = {
        T(test_happy_path),
        T(test_wrong_version),
        T(test_agent_version_limits),
        T(test_auth_before_hello),
        T(test_other_types_before_ready),
        T(test_second_hello),
        T(test_nonce_replay),
        T(test_nonce_expired),
        T(test_unknown_agent),
        T(test_malformed_agent_id),
        T(test_malformed_auth),
        T(test_bad_signature),
        T(test_signature_binds_pin),
        T(test_disabled_agent),
        T(test_registry_not_loaded),
        T(test_nonce_consumed),
        T(test_close_names),
        T(test_closed_is_terminal),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
