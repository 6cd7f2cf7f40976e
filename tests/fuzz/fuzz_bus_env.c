/* fuzz_bus_env: libFuzzer target for the envelope decoder.
 *
 * Any input must decode to 0 or a negative errno without a crash or an out-of-bounds read.
 * When it decodes, the envelope must re-encode, that encoding must decode to the same bytes
 * again (encode(decode(encode(x))) == encode(x)), every list must iterate to its end, and the
 * JSON rendering must succeed.
 *
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -o /tmp/fuzz_bus_env tests/fuzz/fuzz_bus_env.c bus/bus_env.c bus/bus_mp.c \
 *       $(pkg-config --cflags --libs msgpack)
 *   /tmp/fuzz_bus_env -max_total_time=60 -max_len=4096 tests/vectors
 */
#include "../../bus/bus_env.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walks a list to its end; a decoded list must never fail. */
static void s_walk(bus_list_t it, bool kv)
{
    bus_str_t k, v;
    int rc;
    do
        rc = kv ? bus_list_next_kv(&it, &k, &v) : bus_list_next_str(&it, &k);
    while (rc == 1);
    if (rc != 0)
        abort();
}

/* Walks every list field of a decoded envelope. */
static void s_walk_lists(const bus_env_t *e)
{
    switch (e->type) {
#define BUS_F(id, name, kind, min, max, req) BUS_W_##kind(e->u.id.name)
#define BUS_W_U64(x)
#define BUS_W_I64(x)
#define BUS_W_BOOL(x)
#define BUS_W_STR(x)
#define BUS_W_BIN(x)
#define BUS_W_STRLIST(x) s_walk((x), false);
#define BUS_W_KVLIST(x) s_walk((x), true);
#define BUS_TYPE(ID, id, wire, fields)                                                             \
    case BUS_T_##ID:                                                                               \
        fields break;
#include "../../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F
    default:
        abort();
    }
}

/* Decodes; on success re-encodes, decodes again and checks the encoding is stable. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bus_env_t env, env2;
    bus_buf_t a, b;
    char err[256], *json = NULL;
    int rc = bus_env_decode(data, size, &env, err, sizeof err);
    if (rc != 0) {
        if (rc != -EBADMSG && rc != -ENOTSUP && rc != -EPROTO)
            abort();
        if (err[0] == '\0' || memchr(err, '\n', strlen(err)))
            abort();
        return 0;
    }
    s_walk_lists(&env);
    if (bus_env_to_json(&env, &json) != 0)
        abort();
    free(json);

    bus_buf_init(&a, 0);
    bus_buf_init(&b, 0);
    if (bus_env_encode(&env, &a) != 0)
        abort();
    if (bus_env_decode(a.data, a.len, &env2, err, sizeof err) != 0)
        abort();
    if (env2.type != env.type || env2.has_req_id != env.has_req_id ||
        (env.has_req_id && memcmp(env.req_id, env2.req_id, sizeof env.req_id) != 0))
        abort();
    if (bus_env_encode(&env2, &b) != 0)
        abort();
    if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
        abort();
    bus_buf_free(&a);
    bus_buf_free(&b);
    return 0;
}
