/* Unit tests for agent/ag_vendor: instances from agent.conf, model mapping, the path
 * allow-list, URL building per vendor, auth headers and header filters. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_util.h"

#include "ag_config.h"
#include "ag_vendor.h"

#define GOOD_URL "wss://hub.example.org:8443/tunnel/connect"
#define GOOD_PIN "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

static char s_dir[256];
static char s_warned[512];

static int s_setup(void **state)
{
    (void)state;
    return tu_tmpdir_new(s_dir, sizeof s_dir, "test_ag_vendor");
}

static int s_teardown(void **state)
{
    (void)state;
    return tu_rm_rf(s_dir);
}

/* Collects warnings. */
static void s_warn(void *arg, const char *msg)
{
    (void)arg;
    snprintf(s_warned, sizeof s_warned, "%s", msg);
}

/* Loads agent.conf with the given instance sections and builds the set. */
static int s_build(const char *instances, ag_config_t *cfg, ag_instances_t *set, char *err,
                   size_t errlen)
{
    char path[300], text[4096];
    snprintf(path, sizeof path, "%s/agent.conf", s_dir);
    snprintf(text, sizeof text, "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n%s", instances);
    tu_write_text(path, text);
    s_warned[0] = '\0';
    err[0] = '\0';
    int rc = ag_config_load(cfg, path, NULL, 0, err, errlen);
    if (rc != 0)
        return rc;
    rc = ag_instances_build(set, cfg, s_warn, NULL, err, errlen);
    if (rc != 0)
        ag_config_free(cfg);
    return rc;
}

static void test_instances(void **state)
{
    (void)state;
    ag_config_t cfg;
    ag_instances_t set;
    char err[512];
    int rc = s_build("[instance.main]\nvendor = openai\napi_key = sk-a\n"
                     "models = gpt-4o-mini, alias = ft:gpt-4o:org:x1\n"
                     "[instance.az]\nvendor = azure\napi_key = k2\nresource = my-res\n"
                     "models = gpt-4o=my-gpt4o\nmax_concurrency = 3\n"
                     "[instance.g]\nvendor = gemini\nproject = p\n",
                     &cfg, &set, err, sizeof err);
    if (rc != 0)
        fail_msg("build: %s", err);
    assert_int_equal(set.n, 2);
    assert_non_null(strstr(s_warned, "[instance.g]"));
    assert_non_null(strstr(s_warned, "gemini"));
    const ag_instance_t *m = ag_instances_find(&set, "main", 4);
    assert_non_null(m);
    assert_int_equal(m->vendor, AG_VENDOR_OPENAI);
    assert_int_equal(m->max_concurrency, AG_DEFAULT_MAX_CONCURRENCY);
    assert_string_equal(ag_instance_upstream(m, "gpt-4o-mini", 11), "gpt-4o-mini");
    assert_string_equal(ag_instance_upstream(m, "alias", 5), "ft:gpt-4o:org:x1");
    assert_null(ag_instance_upstream(m, "gpt-4o", 6));
    assert_null(ag_instance_upstream(m, "gpt-4o-min", 10));
    const ag_instance_t *az = ag_instances_find(&set, "az", 2);
    assert_non_null(az);
    assert_string_equal(az->resource, "my-res");
    assert_string_equal(az->api_version, AG_DEFAULT_AZURE_API_VERSION);
    assert_int_equal(az->max_concurrency, 3);
    assert_string_equal(ag_instance_upstream(az, "gpt-4o", 6), "my-gpt4o");
    assert_null(ag_instances_find(&set, "g", 1));
    ag_instances_free(&set);
    ag_instances_free(&set); /* twice is fine */
    ag_config_free(&cfg);
}

static void test_instance_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text; /* instance sections */
        const char *want; /* the error must hold this */
    } cases[] = {
        {"[instance.a]\nvendor = openai\nmodels = m\n", "instance.a.api_key"},
        {"[instance.a]\nvendor = openai\napi_key = k\n", "instance.a.models"},
        {"[instance.a]\nvendor = openai\napi_key = k\nmodels = ,\n", "models"},
        {"[instance.a]\nvendor = openai\napi_key = k\nmodels = a b\n", "models"},
        {"[instance.a]\nvendor = openai\napi_key = k\nmodels = a, a=b\n", "twice"},
        {"[instance.a]\nvendor = openai\napi_key = k\nmodels = m\nbase_url = http://x\n",
         "instance.a.base_url"},
        {"[instance.a]\nvendor = openai\napi_key = k\nmodels = m\nresource = r\n",
         "instance.a.resource"},
        {"[instance.a]\nvendor = openai\napi_key = k\nmodels = m\nmax_concurrency = 0\n",
         "max_concurrency"},
        {"[instance.a]\nvendor = openai\napi_key = k k\nmodels = m\n", "api_key"},
        {"[instance.z]\nvendor = azure\napi_key = k\nmodels = m\n", "instance.z.resource"},
        {"[instance.z]\nvendor = azure\napi_key = k\nmodels = m\nresource = evil.com/x\n",
         "resource"},
        {"[instance.z]\nvendor = azure\napi_key = k\nmodels = m\nresource = Ab\n", "resource"},
        {"[instance.z]\nvendor = azure\napi_key = k\nmodels = m=a/b\nresource = r1\n",
         "models"},
        {"[instance.z]\nvendor = azure\napi_key = k\nmodels = m=..\nresource = r1\n", "models"},
        {"[instance.z]\nvendor = azure\napi_key = k\nmodels = m\nresource = r1\n"
         "api_version = 2024?x\n", "api_version"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ag_config_t cfg;
        ag_instances_t set;
        char err[512];
        int rc = s_build(cases[i].text, &cfg, &set, err, sizeof err);
        if (rc != -EINVAL)
            fail_msg("case %zu: expected -EINVAL, got %d (%s)", i, rc, err);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: error \"%s\" does not hold \"%s\"", i, err, cases[i].want);
        assert_null(strstr(err, "k k")); /* never the key */
    }
}

static void test_models_parse(void **state)
{
    (void)state;
    ag_model_t *m;
    size_t n;
    char err[256];
    assert_int_equal(ag_models_parse(" a ,b=c,, d = e ", false, &m, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(m[0].pub, "a");
    assert_string_equal(m[0].up, "a");
    assert_string_equal(m[1].pub, "b");
    assert_string_equal(m[1].up, "c");
    assert_string_equal(m[2].pub, "d");
    assert_string_equal(m[2].up, "e");
    ag_models_free(&m, &n);
    assert_null(m);
    assert_int_equal(ag_models_parse("x=ft:y", true, &m, &n, err, sizeof err), -EINVAL);
    assert_int_equal(ag_models_parse("x=\"y\"", false, &m, &n, err, sizeof err), -EINVAL);
    assert_int_equal(ag_models_parse(NULL, false, &m, &n, err, sizeof err), -EINVAL);
    char big[400];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(ag_models_parse(big, false, &m, &n, err, sizeof err), -EINVAL);
}

/* Parses with NUL-terminated arguments. */
static int s_path(const char *fmt, const char *method, const char *path, ag_path_t *p)
{
    return ag_path_parse(fmt, strlen(fmt), method, strlen(method), path, strlen(path), p);
}

static void test_path_allow_list(void **state)
{
    (void)state;
    ag_path_t p;
    static const struct {
        const char *fmt, *method, *path;
        ag_op_t op;
    } good[] = {
        {"openai", "POST", "/v1/chat/completions", AG_OP_CHAT},
        {"openai", "POST", "/v1/completions", AG_OP_COMPLETIONS},
        {"openai", "POST", "/v1/embeddings", AG_OP_EMBEDDINGS},
        {"openai", "POST", "/v1/responses", AG_OP_RESPONSES},
        {"openai", "GET", "/v1/models", AG_OP_MODELS},
        {"azure", "POST", "/openai/deployments/my-dep/chat/completions", AG_OP_CHAT},
        {"azure", "POST", "/openai/deployments/d.1_x/embeddings", AG_OP_EMBEDDINGS},
        {"azure", "POST", "/openai/deployments/d/completions", AG_OP_COMPLETIONS},
        {"azure", "POST", "/openai/v1/chat/completions", AG_OP_CHAT},
        {"azure", "POST", "/openai/v1/responses", AG_OP_RESPONSES},
        {"azure", "GET", "/openai/v1/models", AG_OP_MODELS},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int rc = s_path(good[i].fmt, good[i].method, good[i].path, &p);
        if (rc != 0 || p.op != good[i].op)
            fail_msg("%s %s: rc %d op %d", good[i].method, good[i].path, rc, (int)p.op);
    }
    assert_int_equal(s_path("azure", "POST", "/openai/deployments/my-dep/chat/completions", &p),
                     0);
    assert_int_equal(p.path_model_len, 6);
    assert_memory_equal(p.path_model, "my-dep", 6);

    static const char *const bad[] = {
        "/v1/files", "/v1/chat/completions/", "/v1/chat/completions?x=1", "/v1//completions",
        "/v1/chat/../completions", "/v1/models/gpt-4o", "//api.evil.com/v1/completions",
        "/v2/chat/completions", "", "/", "/v1/", "/V1/chat/completions",
        "/v1/chat/completions\r\nHost: x", "/openai/deployments/x/chat/completions",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (s_path("openai", "POST", bad[i], &p) != -ENOENT)
            fail_msg("openai path \"%s\" accepted", bad[i]);
    }
    static const char *const bad_az[] = {
        "/openai/deployments/../x/chat/completions", "/openai/deployments/a%2Fb/embeddings",
        "/openai/deployments//chat/completions", "/openai/deployments/d/responses",
        "/openai/deployments/d/models", "/openai/deployments/d",
        "/openai/deployments/a/b/embeddings",
        "/openai/v1/files", "/v1/chat/completions", "/openai/deployments/./embeddings",
    };
    for (size_t i = 0; i < sizeof bad_az / sizeof bad_az[0]; i++) {
        if (s_path("azure", "POST", bad_az[i], &p) != -ENOENT)
            fail_msg("azure path \"%s\" accepted", bad_az[i]);
    }
    assert_int_equal(s_path("openai", "GET", "/v1/chat/completions", &p), -EINVAL);
    assert_int_equal(s_path("openai", "POST", "/v1/models", &p), -EINVAL);
    assert_int_equal(s_path("anthropic", "POST", "/v1/messages", &p), -ENOTSUP);
    assert_int_equal(s_path("", "POST", "/v1/chat/completions", &p), -ENOTSUP);
    assert_int_equal(ag_path_parse("openai", 6, "POST", 4, NULL, 0, &p), -ENOENT);
}

static void test_request_model(void **state)
{
    (void)state;
    ag_path_t p;
    const char *m;
    assert_int_equal(s_path("azure", "POST", "/openai/deployments/dep/embeddings", &p), 0);
    assert_int_equal(ag_request_model(&p, NULL, 0, &m), 3);
    assert_memory_equal(m, "dep", 3);
    assert_int_equal(ag_request_model(&p, "dep", 3, &m), 3);
    assert_int_equal(ag_request_model(&p, "other", 5, &m), -EINVAL);
    assert_int_equal(s_path("openai", "POST", "/v1/chat/completions", &p), 0);
    assert_int_equal(ag_request_model(&p, "gpt", 3, &m), 3);
    assert_int_equal(ag_request_model(&p, NULL, 0, &m), 0);
}

static void test_urls(void **state)
{
    (void)state;
    ag_model_t om = {"pub", "up"};
    ag_instance_t oai = {.name = "o", .vendor = AG_VENDOR_OPENAI, .api_key = "sk-x",
                         .models = &om, .n_models = 1};
    ag_instance_t az = {.name = "a", .vendor = AG_VENDOR_AZURE, .api_key = "k", .resource = "res1",
                        .api_version = "2024-10-21", .models = &om, .n_models = 1};
    char url[AG_URL_MAX];
    static const struct {
        ag_op_t op;
        const char *openai, *azure;
    } want[] = {
        {AG_OP_CHAT, "https://api.openai.com/v1/chat/completions",
         "https://res1.openai.azure.com/openai/deployments/dep/chat/completions"
         "?api-version=2024-10-21"},
        {AG_OP_COMPLETIONS, "https://api.openai.com/v1/completions",
         "https://res1.openai.azure.com/openai/deployments/dep/completions?api-version=2024-10-21"},
        {AG_OP_EMBEDDINGS, "https://api.openai.com/v1/embeddings",
         "https://res1.openai.azure.com/openai/deployments/dep/embeddings?api-version=2024-10-21"},
        {AG_OP_RESPONSES, "https://api.openai.com/v1/responses",
         "https://res1.openai.azure.com/openai/v1/responses"},
        {AG_OP_MODELS, "https://api.openai.com/v1/models",
         "https://res1.openai.azure.com/openai/v1/models"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(ag_url_build(&oai, want[i].op, "dep", url, sizeof url), 0);
        assert_string_equal(url, want[i].openai);
        assert_int_equal(ag_url_build(&az, want[i].op, "dep", url, sizeof url), 0);
        assert_string_equal(url, want[i].azure);
    }
    assert_int_equal(ag_url_build(&az, AG_OP_CHAT, "a/b", url, sizeof url), -EINVAL);
    assert_int_equal(ag_url_build(&az, AG_OP_CHAT, NULL, url, sizeof url), -EINVAL);
    assert_int_equal(ag_url_build(&oai, AG_OP_NONE, "x", url, sizeof url), -EINVAL);
    assert_int_equal(ag_url_build(&oai, AG_OP_CHAT, "x", url, 10), -ENOSPC);
    /* Where the upstream model name goes. */
    assert_true(ag_model_in_body(&oai, AG_OP_CHAT));
    assert_true(ag_model_in_body(&oai, AG_OP_EMBEDDINGS));
    assert_false(ag_model_in_body(&oai, AG_OP_MODELS));
    assert_false(ag_model_in_body(&az, AG_OP_CHAT));
    assert_true(ag_model_in_body(&az, AG_OP_RESPONSES));
    assert_true(ag_op_takes_include_usage(AG_OP_CHAT));
    assert_true(ag_op_takes_include_usage(AG_OP_COMPLETIONS));
    assert_false(ag_op_takes_include_usage(AG_OP_EMBEDDINGS));
    assert_false(ag_op_takes_include_usage(AG_OP_RESPONSES));
    char auth[128];
    assert_int_equal(ag_auth_header(&oai, auth, sizeof auth), 0);
    assert_string_equal(auth, "Authorization: Bearer sk-x");
    assert_int_equal(ag_auth_header(&az, auth, sizeof auth), 0);
    assert_string_equal(auth, "api-key: k");
    assert_int_equal(ag_auth_header(&oai, auth, 8), -ENOSPC);
    assert_string_equal(ag_vendor_name(AG_VENDOR_AZURE), "azure");
    assert_int_equal(ag_vendor_from_name("openai"), AG_VENDOR_OPENAI);
    assert_int_equal(ag_vendor_from_name("bedrock"), AG_VENDOR_NONE);
}

/* ag_hdr_to_vendor with NUL-terminated arguments. */
static int s_to(const char *n, const char *v)
{
    return ag_hdr_to_vendor(n, strlen(n), v, strlen(v));
}

static void test_header_filters(void **state)
{
    (void)state;
    static const char *const dropped[] = {
        "Authorization", "authorization", "API-Key", "x-api-key", "X-Goog-Api-Key", "Cookie",
        "Connection", "keep-alive", "Proxy-Authorization", "proxy-connection", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Expect", "Accept-Encoding",
        "OpenAI-Organization", "openai-project", "x-relayhub-add-include-usage",
        "X-Relayhub-Stream", "X-Forwarded-For", "Forwarded", "x-real-ip", "http2-settings",
        "bad name", "bad:name", "",
    };
    for (size_t i = 0; i < sizeof dropped / sizeof dropped[0]; i++) {
        if (s_to(dropped[i], "v"))
            fail_msg("%s forwarded to the vendor", dropped[i]);
    }
    static const char *const kept[] = {"Content-Type", "accept", "user-agent", "OpenAI-Beta",
                                       "x-stainless-lang", "idempotency-key", "x-custom"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        if (!s_to(kept[i], "v"))
            fail_msg("%s dropped", kept[i]);
    }
    assert_false(s_to("x-custom", "a\r\nHost: evil"));
    assert_false(s_to("x-custom", "a\nb"));
    assert_true(s_to("x-custom", "a\tb"));
    assert_false(ag_hdr_to_vendor("x-custom", 8, "a\0b", 3));

    static const char *const back_dropped[] = {
        "Set-Cookie", "set-cookie2", "Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade",
        "Trailer", "TE", "Proxy-Authenticate", "Content-Length", "Alt-Svc",
        "Strict-Transport-Security", "openai-organization", "OpenAI-Project", "x y", "",
    };
    for (size_t i = 0; i < sizeof back_dropped / sizeof back_dropped[0]; i++) {
        if (ag_hdr_from_vendor(back_dropped[i], strlen(back_dropped[i])))
            fail_msg("%s relayed back", back_dropped[i]);
    }
    static const char *const back_kept[] = {"content-type", "x-request-id", "retry-after",
                                            "x-ratelimit-remaining-tokens", "openai-processing-ms",
                                            "content-encoding"};
    for (size_t i = 0; i < sizeof back_kept / sizeof back_kept[0]; i++) {
        if (!ag_hdr_from_vendor(back_kept[i], strlen(back_kept[i])))
            fail_msg("%s not relayed", back_kept[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instances),       cmocka_unit_test(test_instance_errors),
        cmocka_unit_test(test_models_parse),    cmocka_unit_test(test_path_allow_list),
        cmocka_unit_test(test_request_model),   cmocka_unit_test(test_urls),
        cmocka_unit_test(test_header_filters),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
