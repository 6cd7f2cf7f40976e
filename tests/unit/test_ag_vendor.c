/* Unit tests for agent/ag_vendor and agent/adapters/: instances from agent.conf for every
 * vendor, model mapping, the path allow-list of every format, URL building per vendor and
 * operation, the formats served, auth and default headers, usage formats, Bedrock's SigV4
 * signature and the header filters. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_util.h"

#include "adapters/adapters.h"
#include "ag_config.h"
#include "ag_vendor.h"
#include "usage.h"

#define GOOD_URL "wss://hub.example.org:8443/tunnel/connect"
#define GOOD_PIN "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
#define SECRET "s3cr3t" /* every secret in the config cases holds it; no error may */

static char s_dir[256];
static char s_warned[512];

/* Makes the scratch directory with a service-account file and a subdirectory in it. */
static int s_setup(void **state)
{
    (void)state;
    if (tu_tmpdir_new(s_dir, sizeof s_dir, "test_ag_vendor") != 0)
        return -1;
    char path[300];
    snprintf(path, sizeof path, "%s/sa.json", s_dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs("{\"type\":\"service_account\"}\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/adir", s_dir);
    return mkdir(path, 0700);
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

/* Loads conf (a path) holding the given instance sections and builds the set. */
static int s_build_at(const char *conf, const char *instances, ag_config_t *cfg,
                      ag_instances_t *set, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof text, "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n%s", instances);
    tu_write_text(conf, text);
    s_warned[0] = '\0';
    err[0] = '\0';
    int rc = ag_config_load(cfg, conf, NULL, 0, err, errlen);
    if (rc != 0)
        return rc;
    rc = ag_instances_build(set, cfg, s_warn, NULL, err, errlen);
    if (rc != 0)
        ag_config_free(cfg);
    return rc;
}

/* s_build_at with DIR/agent.conf. */
static int s_build(const char *instances, ag_config_t *cfg, ag_instances_t *set, char *err,
                   size_t errlen)
{
    char path[300];
    snprintf(path, sizeof path, "%s/agent.conf", s_dir);
    return s_build_at(path, instances, cfg, set, err, errlen);
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
                     "[instance.g]\nvendor = cohere\nproject = p\n"
                     "[instance.an]\nvendor = anthropic\napi_key = sk-ant-1\n"
                     "models = claude-x, c=claude-3-5-haiku-20241022\n"
                     "[instance.an2]\nvendor = anthropic\napi_key = sk-ant-2\nmodels = c\n"
                     "openai_compatible = true\n"
                     "[instance.gm]\nvendor = gemini\napi_key = AIza-1\n"
                     "models = gemini-2.0-flash\nopenai_compatible = no\n"
                     "[instance.vx]\nvendor = vertex\nproject = my-proj-1\nregion = us-central1\n"
                     "service_account_file = sa.json\nmodels = gemini-2.0-flash\n"
                     "[instance.br]\nvendor = bedrock\nregion = us-west-2\n"
                     "access_key_id = AKIDEXAMPLE\n"
                     "secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n"
                     "models = haiku=anthropic.claude-3-5-haiku-20241022-v1:0\n"
                     "[instance.br2]\nvendor = bedrock\nregion = eu-central-1\n"
                     "access_key_id = ASIAEXAMPLE\nsecret_access_key = sk/x+y=\n"
                     "session_token = FQoG/x+y=\nmax_body_bytes = 2MiB\n"
                     "models = p=arn:aws:bedrock:eu-central-1:1:inference-profile/eu.m-v1:0\n",
                     &cfg, &set, err, sizeof err);
    if (rc != 0)
        fail_msg("build: %s", err);
    assert_int_equal(set.n, 8);
    assert_non_null(strstr(s_warned, "[instance.g]"));
    assert_non_null(strstr(s_warned, "cohere"));
    assert_null(ag_instances_find(&set, "g", 1));

    const ag_instance_t *m = ag_instances_find(&set, "main", 4);
    assert_non_null(m);
    assert_int_equal(m->vendor, AG_VENDOR_OPENAI);
    assert_int_equal(m->max_concurrency, AG_DEFAULT_MAX_CONCURRENCY);
    assert_string_equal(m->api_key, "sk-a");
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

    const ag_instance_t *an = ag_instances_find(&set, "an", 2);
    assert_int_equal(an->vendor, AG_VENDOR_ANTHROPIC);
    assert_false(an->openai_compatible);
    assert_string_equal(ag_instance_upstream(an, "c", 1), "claude-3-5-haiku-20241022");
    assert_true(ag_instances_find(&set, "an2", 3)->openai_compatible);

    const ag_instance_t *gm = ag_instances_find(&set, "gm", 2);
    assert_int_equal(gm->vendor, AG_VENDOR_GEMINI);
    assert_string_equal(gm->api_key, "AIza-1");
    assert_false(gm->openai_compatible);

    const ag_instance_t *vx = ag_instances_find(&set, "vx", 2);
    assert_int_equal(vx->vendor, AG_VENDOR_VERTEX);
    assert_string_equal(vx->project, "my-proj-1");
    assert_string_equal(vx->region, "us-central1");
    assert_null(vx->api_key);
    char want[PATH_MAX + 16], real[PATH_MAX];
    assert_non_null(realpath(s_dir, real));
    snprintf(want, sizeof want, "%s/sa.json", real);
    assert_string_equal(vx->service_account_file, want); /* made absolute */

    const ag_instance_t *br = ag_instances_find(&set, "br", 2);
    assert_int_equal(br->vendor, AG_VENDOR_BEDROCK);
    assert_string_equal(br->region, "us-west-2");
    assert_string_equal(br->access_key_id, "AKIDEXAMPLE");
    assert_string_equal(br->secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    assert_null(br->session_token);
    assert_int_equal(br->max_body_bytes, AG_DEFAULT_BEDROCK_MAX_BODY);
    assert_string_equal(ag_instance_upstream(br, "haiku", 5),
                        "anthropic.claude-3-5-haiku-20241022-v1:0");
    const ag_instance_t *br2 = ag_instances_find(&set, "br2", 3);
    assert_string_equal(br2->session_token, "FQoG/x+y=");
    assert_int_equal(br2->max_body_bytes, 2 * 1024 * 1024);
    assert_string_equal(ag_instance_upstream(br2, "p", 1),
                        "arn:aws:bedrock:eu-central-1:1:inference-profile/eu.m-v1:0");

    ag_instances_free(&set);
    ag_instances_free(&set); /* twice is fine */
    ag_config_free(&cfg);
}

/* A relative agent.conf: the service-account path is still made absolute. */
static void test_vertex_relative_config(void **state)
{
    (void)state;
    char cwd[PATH_MAX], real[PATH_MAX], want[PATH_MAX + 16], err[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(s_dir), 0);
    ag_config_t cfg;
    ag_instances_t set;
    int rc = s_build_at("agent.conf",
                        "[instance.vx]\nvendor = vertex\nproject = my-proj-1\nregion = global\n"
                        "service_account_file = ./sa.json\nmodels = gemini-2.5-pro\n",
                        &cfg, &set, err, sizeof err);
    assert_non_null(getcwd(real, sizeof real));
    assert_int_equal(chdir(cwd), 0);
    if (rc != 0)
        fail_msg("build: %s", err);
    snprintf(want, sizeof want, "%s/sa.json", real);
    assert_string_equal(set.v[0].service_account_file, want);
    ag_instances_free(&set);
    ag_config_free(&cfg);
    /* A config in a subdirectory named relatively. */
    assert_int_equal(chdir(s_dir), 0);
    rc = s_build_at("adir/agent.conf",
                    "[instance.vx]\nvendor = vertex\nproject = my-proj-1\nregion = global\n"
                    "service_account_file = ../sa.json\nmodels = gemini-2.5-pro\n",
                    &cfg, &set, err, sizeof err);
    assert_int_equal(chdir(cwd), 0);
    if (rc != 0)
        fail_msg("build: %s", err);
    snprintf(want, sizeof want, "%s/adir/../sa.json", real);
    assert_string_equal(set.v[0].service_account_file, want);
    ag_instances_free(&set);
    ag_config_free(&cfg);
}

static void test_instance_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text; /* instance sections */
        const char *want; /* the error must hold this */
    } cases[] = {
        /* openai, and what every vendor shares */
        {"[instance.a]\nvendor = openai\nmodels = m\n", "instance.a.api_key: required"},
        {"[instance.a]\nvendor = openai\napi_key =\nmodels = m\n", "instance.a.api_key"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\n", "instance.a.models"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = ,\n", "models"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = a b\n", "models"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = a, a=b\n", "twice"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = m\nbase_url = http://x\n",
         "instance.a.base_url: not a key of vendor openai"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = m\nresource = r\n",
         "instance.a.resource"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = m\n"
         "openai_compatible = true\n", "instance.a.openai_compatible"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = m\nmax_concurrency = 0\n",
         "max_concurrency"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\nmodels = m\nmax_concurrency = x\n",
         "max_concurrency"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET " " SECRET "\nmodels = m\n",
         "instance.a.api_key"},
        {"[instance.a]\nvendor = openai\napi_key = " SECRET "\xc3\xa9\nmodels = m\n",
         "instance.a.api_key"},
        /* azure */
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m\n", "instance.z.resource"},
        {"[instance.z]\nvendor = azure\nresource = r1\nmodels = m\n", "instance.z.api_key"},
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m\nresource = evil.com/x\n",
         "resource"},
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m\nresource = Ab\n",
         "resource"},
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m\nresource = -ab\n",
         "resource"},
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m=a/b\nresource = r1\n",
         "models"},
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m=..\nresource = r1\n",
         "models"},
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m\nresource = r1\n"
         "api_version = 2024?x\n", "api_version"},
        {"[instance.z]\nvendor = azure\napi_key = " SECRET "\nmodels = m\nresource = r1\n"
         "region = x\n", "instance.z.region"},
        /* anthropic */
        {"[instance.c]\nvendor = anthropic\nmodels = m\n", "instance.c.api_key: required"},
        {"[instance.c]\nvendor = anthropic\napi_key = " SECRET "\nmodels = m\n"
         "openai_compatible = maybe\n", "instance.c.openai_compatible"},
        {"[instance.c]\nvendor = anthropic\napi_key = " SECRET "\nmodels = m\nregion = us\n",
         "instance.c.region: not a key of vendor anthropic"},
        {"[instance.c]\nvendor = anthropic\napi_key = \t\nmodels = m\n", "instance.c.api_key"},
        /* gemini */
        {"[instance.g]\nvendor = gemini\nmodels = m\n", "instance.g.api_key: required"},
        {"[instance.g]\nvendor = gemini\napi_key = " SECRET "\nmodels = m=models/x\n", "models"},
        {"[instance.g]\nvendor = gemini\napi_key = " SECRET "\nmodels = m=a:b\n", "models"},
        {"[instance.g]\nvendor = gemini\napi_key = " SECRET "\nmodels = m\n"
         "openai_compatible = 2\n", "instance.g.openai_compatible"},
        {"[instance.g]\nvendor = gemini\napi_key = " SECRET "\nmodels = m\nproject = my-proj\n",
         "instance.g.project"},
        /* vertex */
        {"[instance.v]\nvendor = vertex\nregion = us-central1\nservice_account_file = sa.json\n"
         "models = m\n", "instance.v.project: required"},
        {"[instance.v]\nvendor = vertex\nproject = Bad_Proj\nregion = us-central1\n"
         "service_account_file = sa.json\nmodels = m\n", "instance.v.project"},
        {"[instance.v]\nvendor = vertex\nproject = short\nregion = us-central1\n"
         "service_account_file = sa.json\nmodels = m\n", "instance.v.project"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj-\nregion = us-central1\n"
         "service_account_file = sa.json\nmodels = m\n", "instance.v.project"},
        {"[instance.v]\nvendor = vertex\nproject = 1my-proj\nregion = us-central1\n"
         "service_account_file = sa.json\nmodels = m\n", "instance.v.project"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nservice_account_file = sa.json\n"
         "models = m\n", "instance.v.region: required"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nregion = evil.com/x\n"
         "service_account_file = sa.json\nmodels = m\n", "instance.v.region"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nregion = US-CENTRAL1\n"
         "service_account_file = sa.json\nmodels = m\n", "instance.v.region"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nregion = us-central1\nmodels = m\n",
         "instance.v.service_account_file: required"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nregion = us-central1\n"
         "service_account_file = nosuch.json\nmodels = m\n",
         "/nosuch.json: No such file or directory"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nregion = us-central1\n"
         "service_account_file = adir\nmodels = m\n", "adir: not a regular file"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nregion = us-central1\n"
         "service_account_file = sa.json\nmodels = m=a/b\n", "instance.v.models"},
        {"[instance.v]\nvendor = vertex\nproject = my-proj\nregion = us-central1\n"
         "service_account_file = sa.json\nmodels = m\napi_key = " SECRET "\n",
         "instance.v.api_key: not a key of vendor vertex"},
        /* bedrock */
        {"[instance.b]\nvendor = bedrock\naccess_key_id = AKID\nsecret_access_key = " SECRET "\n"
         "models = m\n", "instance.b.region: required"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1.evil.com\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmodels = m\n", "instance.b.region"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\nsecret_access_key = " SECRET "\n"
         "models = m\n", "instance.b.access_key_id: required"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AK/ID\n"
         "secret_access_key = " SECRET "\nmodels = m\n", "instance.b.access_key_id"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\nmodels = m\n",
         "instance.b.secret_access_key: required"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET " x\nmodels = m\n", "instance.b.secret_access_key"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nsession_token = " SECRET " y\nmodels = m\n",
         "instance.b.session_token"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmax_body_bytes = 0\nmodels = m\n",
         "instance.b.max_body_bytes"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmax_body_bytes = 65MiB\nmodels = m\n",
         "instance.b.max_body_bytes"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmax_body_bytes = 1x\nmodels = m\n",
         "instance.b.max_body_bytes"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmax_body_bytes = 99999999999999999999\nmodels = m\n",
         "instance.b.max_body_bytes"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmodels = m=a b\n", "instance.b.models"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmodels = m\ncredentials = AKID:" SECRET "\n",
         "instance.b.credentials: not a key of vendor bedrock"},
        {"[instance.b]\nvendor = bedrock\nregion = us-east-1\naccess_key_id = AKID\n"
         "secret_access_key = " SECRET "\nmodels = m\napi_key = " SECRET "\n",
         "instance.b.api_key"},
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
        if (strstr(err, SECRET))
            fail_msg("case %zu: error \"%s\" shows a secret", i, err);
    }
    /* The good bedrock sizes. */
    static const struct {
        const char *v;
        int64_t want;
    } sizes[] = {{"1", 1}, {"512KiB", 512 * 1024}, {"64m", 64 * 1024 * 1024},
                 {"1g", -1}, {"1024k", 1024 * 1024}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char text[512], err[512];
        snprintf(text, sizeof text, "[instance.b]\nvendor = bedrock\nregion = us-east-1\n"
                 "access_key_id = AKID\nsecret_access_key = x\nmax_body_bytes = %s\nmodels = m\n",
                 sizes[i].v);
        ag_config_t cfg;
        ag_instances_t set;
        int rc = s_build(text, &cfg, &set, err, sizeof err);
        if (sizes[i].want < 0) {
            assert_int_equal(rc, -EINVAL);
            continue;
        }
        if (rc != 0)
            fail_msg("max_body_bytes = %s: %s", sizes[i].v, err);
        assert_int_equal(set.v[0].max_body_bytes, sizes[i].want);
        ag_instances_free(&set);
        ag_config_free(&cfg);
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

/* Parses with NUL-terminated arguments (query may be NULL). */
static int s_path(const char *fmt, const char *method, const char *path, const char *query,
                  ag_path_t *p)
{
    return ag_path_parse(fmt, strlen(fmt), method, strlen(method), path, strlen(path), query,
                         query ? strlen(query) : 0, p);
}

static void test_path_parse(void **state)
{
    (void)state;
    static const struct {
        const char *fmt, *method, *path, *query;
        int rc;            /* expected result */
        ag_op_t op;        /* on 0 */
        const char *model; /* the path's model on 0, or NULL */
        bool sse;          /* on 0 */
    } cases[] = {
        /* openai */
        {"openai", "POST", "/v1/chat/completions", NULL, 0, AG_OP_CHAT, NULL, false},
        {"openai", "POST", "/v1/completions", "x=1", 0, AG_OP_COMPLETIONS, NULL, false},
        {"openai", "POST", "/v1/embeddings", NULL, 0, AG_OP_EMBEDDINGS, NULL, false},
        {"openai", "POST", "/v1/responses", NULL, 0, AG_OP_RESPONSES, NULL, false},
        {"openai", "GET", "/v1/models", NULL, 0, AG_OP_MODELS, NULL, false},
        {"openai", "GET", "/v1/chat/completions", NULL, -EINVAL, 0, NULL, false},
        {"openai", "POST", "/v1/models", NULL, -EINVAL, 0, NULL, false},
        {"openai", "post", "/v1/chat/completions", NULL, -EINVAL, 0, NULL, false},
        {"openai", "POST", "/v1/files", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/v1/chat/completions/", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/v1/chat/completions?x=1", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/v1//completions", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/v1/chat/../completions", NULL, -ENOENT, 0, NULL, false},
        {"openai", "GET", "/v1/models/gpt-4o", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "//api.evil.com/v1/completions", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/v2/chat/completions", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/v1/", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/V1/chat/completions", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/v1/chat/completions\r\nHost: x", NULL, -ENOENT, 0, NULL, false},
        {"openai", "POST", "/openai/deployments/x/chat/completions", NULL, -ENOENT, 0, NULL,
         false},
        {"openai", "POST", "/v1/messages", NULL, -ENOENT, 0, NULL, false},
        /* azure */
        {"azure", "POST", "/openai/deployments/my-dep/chat/completions", "api-version=1", 0,
         AG_OP_CHAT, "my-dep", false},
        {"azure", "POST", "/openai/deployments/d.1_x/embeddings", NULL, 0, AG_OP_EMBEDDINGS,
         "d.1_x", false},
        {"azure", "POST", "/openai/deployments/d/completions", NULL, 0, AG_OP_COMPLETIONS, "d",
         false},
        {"azure", "POST", "/openai/v1/chat/completions", NULL, 0, AG_OP_CHAT, NULL, false},
        {"azure", "POST", "/openai/v1/completions", NULL, 0, AG_OP_COMPLETIONS, NULL, false},
        {"azure", "POST", "/openai/v1/embeddings", NULL, 0, AG_OP_EMBEDDINGS, NULL, false},
        {"azure", "POST", "/openai/v1/responses", NULL, 0, AG_OP_RESPONSES, NULL, false},
        {"azure", "GET", "/openai/v1/models", NULL, 0, AG_OP_MODELS, NULL, false},
        {"azure", "GET", "/openai/deployments/d/embeddings", NULL, -EINVAL, 0, NULL, false},
        {"azure", "POST", "/openai/deployments/a%2Fb/embeddings", NULL, -EINVAL, 0, NULL, false},
        {"azure", "POST", "/openai/deployments//chat/completions", NULL, -EINVAL, 0, NULL, false},
        {"azure", "POST", "/openai/deployments/./embeddings", NULL, -EINVAL, 0, NULL, false},
        {"azure", "POST", "/openai/deployments/../embeddings", NULL, -EINVAL, 0, NULL, false},
        {"azure", "POST", "/openai/deployments/../x/chat/completions", NULL, -ENOENT, 0, NULL,
         false},
        {"azure", "POST", "/openai/deployments/d/responses", NULL, -ENOENT, 0, NULL, false},
        {"azure", "GET", "/openai/deployments/d/models", NULL, -ENOENT, 0, NULL, false},
        {"azure", "POST", "/openai/deployments/d", NULL, -ENOENT, 0, NULL, false},
        {"azure", "POST", "/openai/deployments/a/b/embeddings", NULL, -ENOENT, 0, NULL, false},
        {"azure", "POST", "/openai/v1/files", NULL, -ENOENT, 0, NULL, false},
        {"azure", "POST", "/v1/chat/completions", NULL, -ENOENT, 0, NULL, false},
        /* anthropic */
        {"anthropic", "POST", "/v1/messages", "beta=true", 0, AG_OP_MESSAGES, NULL, false},
        {"anthropic", "POST", "/v1/messages/count_tokens", NULL, 0, AG_OP_COUNT_TOKENS, NULL,
         false},
        {"anthropic", "GET", "/v1/messages", NULL, -EINVAL, 0, NULL, false},
        {"anthropic", "POST", "/v1/messages/", NULL, -ENOENT, 0, NULL, false},
        {"anthropic", "POST", "/v1/messages/batches", NULL, -ENOENT, 0, NULL, false},
        {"anthropic", "POST", "/v1/complete", NULL, -ENOENT, 0, NULL, false},
        {"anthropic", "POST", "/v1/chat/completions", NULL, -ENOENT, 0, NULL, false},
        {"anthropic", "GET", "/v1/models", NULL, -ENOENT, 0, NULL, false},
        /* gemini */
        {"gemini", "POST", "/v1beta/models/gemini-2.0-flash:generateContent", NULL, 0,
         AG_OP_GENERATE, "gemini-2.0-flash", false},
        {"gemini", "POST", "/v1beta/models/gemini-2.0-flash:generateContent", "alt=sse", 0,
         AG_OP_GENERATE, "gemini-2.0-flash", false},
        {"gemini", "POST", "/v1beta/models/g_1.5-x:streamGenerateContent", "alt=sse", 0,
         AG_OP_STREAM_GENERATE, "g_1.5-x", true},
        {"gemini", "POST", "/v1beta/models/g:streamGenerateContent", "?alt=sse", 0,
         AG_OP_STREAM_GENERATE, "g", true},
        {"gemini", "POST", "/v1beta/models/g:streamGenerateContent", "key=AIza&alt=sse&x=1", 0,
         AG_OP_STREAM_GENERATE, "g", true},
        {"gemini", "POST", "/v1beta/models/g:streamGenerateContent", NULL, 0,
         AG_OP_STREAM_GENERATE, "g", false},
        {"gemini", "POST", "/v1beta/models/g:streamGenerateContent", "alt=json", 0,
         AG_OP_STREAM_GENERATE, "g", false},
        {"gemini", "POST", "/v1beta/models/g:streamGenerateContent", "xalt=sse&alt=ssex", 0,
         AG_OP_STREAM_GENERATE, "g", false},
        {"gemini", "GET", "/v1beta/models/g:generateContent", NULL, -EINVAL, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/a%2Fb:generateContent", NULL, -EINVAL, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/..:generateContent", NULL, -EINVAL, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/:generateContent", NULL, -EINVAL, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/a:b:generateContent", NULL, -EINVAL, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/g:countTokens", NULL, -ENOENT, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/g:embedContent", NULL, -ENOENT, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/g", NULL, -ENOENT, 0, NULL, false},
        {"gemini", "POST", "/v1beta/models/x/y:generateContent", NULL, -ENOENT, 0, NULL, false},
        {"gemini", "POST", "/v1/models/g:generateContent", NULL, -ENOENT, 0, NULL, false},
        {"gemini", "POST", "/v1beta/tunedModels/g:generateContent", NULL, -ENOENT, 0, NULL,
         false},
        {"gemini", "POST", "/v1beta/models/g:generateContent/", NULL, -ENOENT, 0, NULL, false},
        /* bedrock */
        {"bedrock", "POST", "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse", NULL, 0,
         AG_OP_CONVERSE, "anthropic.claude-3-5-haiku-20241022-v1:0", false},
        {"bedrock", "POST", "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse-stream",
         NULL, 0, AG_OP_CONVERSE_STREAM, "anthropic.claude-3-5-haiku-20241022-v1:0", false},
        {"bedrock", "POST", "/model/m%3a0/invoke", NULL, 0, AG_OP_INVOKE, "m:0", false},
        {"bedrock", "POST",
         "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.m-v1%3A0/"
         "invoke-with-response-stream", NULL, 0, AG_OP_INVOKE_STREAM,
         "arn:aws:bedrock:us-east-1:1:inference-profile/us.m-v1:0", false},
        {"bedrock", "GET", "/model/m/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m%3/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m%/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m%zz/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m%00x/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m%0Ax/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m%20x/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m%C3%A9/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/m x/invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model//invoke", NULL, -EINVAL, 0, NULL, false},
        {"bedrock", "POST", "/model/a/b/invoke", NULL, -ENOENT, 0, NULL, false},
        {"bedrock", "POST", "/model/m/invoke/", NULL, -ENOENT, 0, NULL, false},
        {"bedrock", "POST", "/model/m/apply-guardrail", NULL, -ENOENT, 0, NULL, false},
        {"bedrock", "POST", "/model/m", NULL, -ENOENT, 0, NULL, false},
        {"bedrock", "POST", "/guardrail/g/version/1/apply", NULL, -ENOENT, 0, NULL, false},
        {"bedrock", "POST", "/async-invoke", NULL, -ENOENT, 0, NULL, false},
        /* formats */
        {"vertex", "POST", "/v1beta/models/g:generateContent", NULL, -ENOTSUP, 0, NULL, false},
        {"", "POST", "/v1/chat/completions", NULL, -ENOTSUP, 0, NULL, false},
        {"OpenAI", "POST", "/v1/chat/completions", NULL, -ENOTSUP, 0, NULL, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ag_path_t p;
        int rc = s_path(cases[i].fmt, cases[i].method, cases[i].path, cases[i].query, &p);
        if (rc != cases[i].rc)
            fail_msg("%s %s %s: rc %d, want %d", cases[i].fmt, cases[i].method, cases[i].path,
                     rc, cases[i].rc);
        if (rc != 0)
            continue;
        if (p.op != cases[i].op || p.sse != cases[i].sse ||
            p.format != ag_format_from_name(cases[i].fmt, strlen(cases[i].fmt)))
            fail_msg("%s %s: op %d sse %d format %u", cases[i].fmt, cases[i].path, (int)p.op,
                     (int)p.sse, p.format);
        if (!cases[i].model) {
            assert_null(p.path_model);
            assert_int_equal(p.path_model_len, 0);
            continue;
        }
        if (p.path_model_len != strlen(cases[i].model) ||
            memcmp(p.path_model, cases[i].model, p.path_model_len) != 0)
            fail_msg("%s: model \"%.*s\", want \"%s\"", cases[i].path, (int)p.path_model_len,
                     p.path_model ? p.path_model : "", cases[i].model);
        assert_ptr_equal(p.path_model, p.model_buf); /* never borrowed from the request */
    }
    /* No path at all; a NUL inside. */
    ag_path_t p;
    assert_int_equal(ag_path_parse("openai", 6, "POST", 4, NULL, 0, NULL, 0, &p), -ENOENT);
    assert_int_equal(ag_path_parse("openai", 6, "POST", 4, "/v1/embeddings\0x", 16, NULL, 0, &p),
                     -ENOENT);
    /* Model ids up to AG_MODEL_MAX bytes, decoded. */
    char path[4 * AG_MODEL_MAX];
    int n = snprintf(path, sizeof path, "/model/");
    for (int i = 0; i < AG_MODEL_MAX; i++)
        n += snprintf(path + n, sizeof path - (size_t)n, "%%41");
    snprintf(path + n, sizeof path - (size_t)n, "/invoke");
    assert_int_equal(s_path("bedrock", "POST", path, NULL, &p), 0);
    assert_int_equal(p.path_model_len, AG_MODEL_MAX);
    n = snprintf(path, sizeof path, "/model/");
    for (int i = 0; i <= AG_MODEL_MAX; i++)
        path[n++] = 'a';
    snprintf(path + n, sizeof path - (size_t)n, "/invoke");
    assert_int_equal(s_path("bedrock", "POST", path, NULL, &p), -EINVAL);
    n = snprintf(path, sizeof path, "/v1beta/models/");
    for (int i = 0; i <= AG_MODEL_MAX; i++)
        path[n++] = 'a';
    snprintf(path + n, sizeof path - (size_t)n, ":generateContent");
    assert_int_equal(s_path("gemini", "POST", path, NULL, &p), -EINVAL);
}

static void test_request_model(void **state)
{
    (void)state;
    ag_path_t p;
    const char *m;
    assert_int_equal(s_path("azure", "POST", "/openai/deployments/dep/embeddings", NULL, &p), 0);
    assert_int_equal(ag_request_model(&p, NULL, 0, &m), 3);
    assert_memory_equal(m, "dep", 3);
    assert_int_equal(ag_request_model(&p, "dep", 3, &m), 3);
    assert_int_equal(ag_request_model(&p, "other", 5, &m), -EINVAL);
    assert_int_equal(s_path("openai", "POST", "/v1/chat/completions", NULL, &p), 0);
    assert_int_equal(ag_request_model(&p, "gpt", 3, &m), 3);
    assert_int_equal(ag_request_model(&p, NULL, 0, &m), 0);
    assert_null(m);
    /* A Bedrock id decoded, then the struct copied and the original overwritten: the copy
     * still answers. */
    assert_int_equal(s_path("bedrock", "POST", "/model/a.b-v1%3A0/converse", NULL, &p), 0);
    ag_path_t copy = p;
    memset(&p, 0x55, sizeof p);
    assert_int_equal(ag_request_model(&copy, NULL, 0, &m), 8);
    assert_memory_equal(m, "a.b-v1:0", 8);
    assert_int_equal(ag_request_model(&copy, "a.b-v1:0", 8, &m), 8);
    assert_int_equal(ag_request_model(&copy, "a.b-v1%3A0", 10, &m), -EINVAL);
    assert_int_equal(s_path("gemini", "POST", "/v1beta/models/gm:generateContent", NULL, &p), 0);
    assert_int_equal(ag_request_model(&p, "gm", 2, &m), 2);
    assert_int_equal(ag_request_model(&p, "gx", 2, &m), -EINVAL);
}

/* Test instances, built by hand (no config). */
static ag_model_t s_m = {"pub", "up"};
static ag_instance_t s_oai = {.name = "o", .vendor = AG_VENDOR_OPENAI, .api_key = "sk-x",
                              .models = &s_m, .n_models = 1};
static ag_instance_t s_az = {.name = "a", .vendor = AG_VENDOR_AZURE, .api_key = "k",
                             .resource = "res1", .api_version = "2024-10-21", .models = &s_m,
                             .n_models = 1};
static ag_instance_t s_az1 = {.name = "a1", .vendor = AG_VENDOR_AZURE, .api_key = "k",
                              .resource = "res1", .api_version = "v1", .models = &s_m,
                              .n_models = 1};
static ag_instance_t s_an = {.name = "an", .vendor = AG_VENDOR_ANTHROPIC, .api_key = "sk-ant"};
static ag_instance_t s_an_oc = {.name = "an2", .vendor = AG_VENDOR_ANTHROPIC,
                                .api_key = "sk-ant", .openai_compatible = true};
static ag_instance_t s_gm = {.name = "g", .vendor = AG_VENDOR_GEMINI, .api_key = "AIza"};
static ag_instance_t s_gm_oc = {.name = "g2", .vendor = AG_VENDOR_GEMINI, .api_key = "AIza",
                                .openai_compatible = true};
static ag_instance_t s_vx = {.name = "v", .vendor = AG_VENDOR_VERTEX, .project = "my-proj",
                             .region = "europe-west4", .service_account_file = "/x.json"};
static ag_instance_t s_vx_gl = {.name = "vg", .vendor = AG_VENDOR_VERTEX, .project = "my-proj",
                                .region = "global", .service_account_file = "/x.json"};
static ag_instance_t s_br = {.name = "b", .vendor = AG_VENDOR_BEDROCK, .region = "us-west-2",
                             .access_key_id = "AKIDEXAMPLE",
                             .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                             .max_body_bytes = AG_DEFAULT_BEDROCK_MAX_BODY};

static void test_urls(void **state)
{
    (void)state;
    static const struct {
        const ag_instance_t *inst;
        unsigned format;
        ag_op_t op;
        bool sse;
        const char *upstream;
        int rc;          /* expected */
        const char *url; /* on 0 */
    } cases[] = {
        {&s_oai, AG_FMT_OPENAI, AG_OP_CHAT, false, "up", 0,
         "https://api.openai.com/v1/chat/completions"},
        {&s_oai, AG_FMT_OPENAI, AG_OP_COMPLETIONS, false, "up", 0,
         "https://api.openai.com/v1/completions"},
        {&s_oai, AG_FMT_OPENAI, AG_OP_EMBEDDINGS, false, "up", 0,
         "https://api.openai.com/v1/embeddings"},
        {&s_oai, AG_FMT_OPENAI, AG_OP_RESPONSES, false, "up", 0,
         "https://api.openai.com/v1/responses"},
        {&s_oai, AG_FMT_OPENAI, AG_OP_MODELS, false, NULL, 0, "https://api.openai.com/v1/models"},
        {&s_oai, AG_FMT_AZURE, AG_OP_CHAT, false, "up", -EINVAL, NULL},
        {&s_oai, AG_FMT_ANTHROPIC, AG_OP_MESSAGES, false, "up", -EINVAL, NULL},
        {&s_oai, AG_FMT_OPENAI, AG_OP_NONE, false, "up", -EINVAL, NULL},
        {&s_az, AG_FMT_AZURE, AG_OP_CHAT, false, "dep", 0,
         "https://res1.openai.azure.com/openai/deployments/dep/chat/completions"
         "?api-version=2024-10-21"},
        {&s_az, AG_FMT_OPENAI, AG_OP_CHAT, false, "dep", 0,
         "https://res1.openai.azure.com/openai/deployments/dep/chat/completions"
         "?api-version=2024-10-21"},
        {&s_az, AG_FMT_AZURE, AG_OP_COMPLETIONS, false, "dep", 0,
         "https://res1.openai.azure.com/openai/deployments/dep/completions"
         "?api-version=2024-10-21"},
        {&s_az, AG_FMT_AZURE, AG_OP_EMBEDDINGS, false, "dep", 0,
         "https://res1.openai.azure.com/openai/deployments/dep/embeddings"
         "?api-version=2024-10-21"},
        {&s_az, AG_FMT_AZURE, AG_OP_RESPONSES, false, "dep", 0,
         "https://res1.openai.azure.com/openai/v1/responses"},
        {&s_az, AG_FMT_OPENAI, AG_OP_MODELS, false, NULL, 0,
         "https://res1.openai.azure.com/openai/v1/models"},
        /* api_version = v1: Azure's newer v1 API for every operation */
        {&s_az1, AG_FMT_OPENAI, AG_OP_CHAT, false, "dep", 0,
         "https://res1.openai.azure.com/openai/v1/chat/completions"},
        {&s_az1, AG_FMT_AZURE, AG_OP_EMBEDDINGS, false, "dep", 0,
         "https://res1.openai.azure.com/openai/v1/embeddings"},
        {&s_az1, AG_FMT_OPENAI, AG_OP_MODELS, false, NULL, 0,
         "https://res1.openai.azure.com/openai/v1/models"},
        {&s_az, AG_FMT_AZURE, AG_OP_CHAT, false, "a/b", -EINVAL, NULL},
        {&s_az, AG_FMT_AZURE, AG_OP_CHAT, false, "..", -EINVAL, NULL},
        {&s_az, AG_FMT_AZURE, AG_OP_CHAT, false, NULL, -EINVAL, NULL},
        {&s_az, AG_FMT_GEMINI, AG_OP_GENERATE, false, "dep", -EINVAL, NULL},
        {&s_an, AG_FMT_ANTHROPIC, AG_OP_MESSAGES, false, "claude", 0,
         "https://api.anthropic.com/v1/messages"},
        {&s_an, AG_FMT_ANTHROPIC, AG_OP_COUNT_TOKENS, false, "claude", 0,
         "https://api.anthropic.com/v1/messages/count_tokens"},
        {&s_an, AG_FMT_OPENAI, AG_OP_CHAT, false, "claude", -EINVAL, NULL},
        {&s_an_oc, AG_FMT_OPENAI, AG_OP_CHAT, false, "claude", 0,
         "https://api.anthropic.com/v1/chat/completions"},
        {&s_an_oc, AG_FMT_OPENAI, AG_OP_EMBEDDINGS, false, "claude", -EINVAL, NULL},
        {&s_an_oc, AG_FMT_ANTHROPIC, AG_OP_MESSAGES, false, "claude", 0,
         "https://api.anthropic.com/v1/messages"},
        {&s_gm, AG_FMT_GEMINI, AG_OP_GENERATE, false, "gemini-2.0-flash", 0,
         "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:"
         "generateContent"},
        {&s_gm, AG_FMT_GEMINI, AG_OP_STREAM_GENERATE, true, "gemini-2.0-flash", 0,
         "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:"
         "streamGenerateContent?alt=sse"},
        {&s_gm, AG_FMT_GEMINI, AG_OP_STREAM_GENERATE, false, "gemini-2.0-flash", 0,
         "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:"
         "streamGenerateContent"},
        {&s_gm, AG_FMT_GEMINI, AG_OP_GENERATE, false, "a/../b", -EINVAL, NULL},
        {&s_gm, AG_FMT_GEMINI, AG_OP_GENERATE, false, "a:b", -EINVAL, NULL},
        {&s_gm, AG_FMT_GEMINI, AG_OP_GENERATE, false, NULL, -EINVAL, NULL},
        {&s_gm, AG_FMT_OPENAI, AG_OP_CHAT, false, "gemini-2.0-flash", -EINVAL, NULL},
        {&s_gm_oc, AG_FMT_OPENAI, AG_OP_CHAT, false, "gemini-2.0-flash", 0,
         "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"},
        {&s_gm_oc, AG_FMT_OPENAI, AG_OP_EMBEDDINGS, false, "text-embedding-004", 0,
         "https://generativelanguage.googleapis.com/v1beta/openai/embeddings"},
        {&s_gm_oc, AG_FMT_OPENAI, AG_OP_RESPONSES, false, "g", -EINVAL, NULL},
        {&s_gm_oc, AG_FMT_OPENAI, AG_OP_MODELS, false, NULL, -EINVAL, NULL},
        {&s_vx, AG_FMT_GEMINI, AG_OP_GENERATE, false, "gemini-2.0-flash", 0,
         "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/"
         "europe-west4/publishers/google/models/gemini-2.0-flash:generateContent"},
        {&s_vx, AG_FMT_GEMINI, AG_OP_STREAM_GENERATE, true, "gemini-2.0-flash", 0,
         "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/"
         "europe-west4/publishers/google/models/gemini-2.0-flash:streamGenerateContent?alt=sse"},
        {&s_vx, AG_FMT_GEMINI, AG_OP_STREAM_GENERATE, false, "gemini-2.0-flash", 0,
         "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/"
         "europe-west4/publishers/google/models/gemini-2.0-flash:streamGenerateContent"},
        {&s_vx_gl, AG_FMT_GEMINI, AG_OP_GENERATE, false, "gemini-2.5-pro", 0,
         "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/publishers/"
         "google/models/gemini-2.5-pro:generateContent"},
        {&s_vx, AG_FMT_GEMINI, AG_OP_GENERATE, false, "a/b", -EINVAL, NULL},
        {&s_vx, AG_FMT_OPENAI, AG_OP_CHAT, false, "g", -EINVAL, NULL},
        {&s_br, AG_FMT_BEDROCK, AG_OP_CONVERSE, false, "anthropic.claude-3-5-haiku-20241022-v1:0",
         0, "https://bedrock-runtime.us-west-2.amazonaws.com/model/"
            "anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"},
        {&s_br, AG_FMT_BEDROCK, AG_OP_CONVERSE_STREAM, false, "m:0", 0,
         "https://bedrock-runtime.us-west-2.amazonaws.com/model/m%3A0/converse-stream"},
        {&s_br, AG_FMT_BEDROCK, AG_OP_INVOKE, false, "m:0", 0,
         "https://bedrock-runtime.us-west-2.amazonaws.com/model/m%3A0/invoke"},
        {&s_br, AG_FMT_BEDROCK, AG_OP_INVOKE_STREAM, false,
         "arn:aws:bedrock:us-west-2:1:inference-profile/us.m@x+y~z", 0,
         "https://bedrock-runtime.us-west-2.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-west-2"
         "%3A1%3Ainference-profile%2Fus.m%40x%2By~z/invoke-with-response-stream"},
        {&s_br, AG_FMT_BEDROCK, AG_OP_INVOKE, false, "", -EINVAL, NULL},
        {&s_br, AG_FMT_BEDROCK, AG_OP_INVOKE, false, NULL, -EINVAL, NULL},
        {&s_br, AG_FMT_OPENAI, AG_OP_CHAT, false, "m", -EINVAL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ag_path_t p = {.op = cases[i].op, .format = cases[i].format, .sse = cases[i].sse};
        char url[AG_URL_MAX];
        int rc = ag_url_build(cases[i].inst, &p, cases[i].upstream, url, sizeof url);
        if (rc != cases[i].rc)
            fail_msg("case %zu (%s op %d): rc %d, want %d", i, cases[i].inst->name,
                     (int)cases[i].op, rc, cases[i].rc);
        if (rc == 0 && strcmp(url, cases[i].url) != 0)
            fail_msg("case %zu: %s\n  want %s", i, url, cases[i].url);
    }
    ag_path_t p = {.op = AG_OP_CHAT, .format = AG_FMT_OPENAI};
    char url[AG_URL_MAX];
    assert_int_equal(ag_url_build(&s_oai, &p, "x", url, 10), -ENOSPC);
    char longm[AG_MODEL_MAX + 1];
    memset(longm, ':', AG_MODEL_MAX);
    longm[AG_MODEL_MAX] = '\0';
    p = (ag_path_t){.op = AG_OP_INVOKE_STREAM, .format = AG_FMT_BEDROCK};
    assert_int_equal(ag_url_build(&s_br, &p, longm, url, sizeof url), 0); /* 3 x 256 fits */
    assert_non_null(strstr(url, "%3A%3A"));
}

static void test_serves(void **state)
{
    (void)state;
    static const struct {
        const ag_instance_t *inst;
        unsigned formats;  /* ag_instance_formats */
        const char *names; /* ag_format_names(ag_instance_formats(inst)) */
        uint32_t openai, azure, anthropic, gemini, bedrock; /* ops served per format */
    } cases[] = {
        {&s_oai, AG_FMT_OPENAI, "openai", AG_OPS_OPENAI_ALL, 0, 0, 0, 0},
        {&s_az, AG_FMT_OPENAI | AG_FMT_AZURE, "openai azure", AG_OPS_OPENAI_ALL,
         AG_OPS_OPENAI_ALL, 0, 0, 0},
        {&s_an, AG_FMT_ANTHROPIC, "anthropic", 0, 0,
         AG_OP_BIT(AG_OP_MESSAGES) | AG_OP_BIT(AG_OP_COUNT_TOKENS), 0, 0},
        {&s_an_oc, AG_FMT_OPENAI | AG_FMT_ANTHROPIC, "openai anthropic", AG_OP_BIT(AG_OP_CHAT), 0,
         AG_OP_BIT(AG_OP_MESSAGES) | AG_OP_BIT(AG_OP_COUNT_TOKENS), 0, 0},
        {&s_gm, AG_FMT_GEMINI, "gemini", 0, 0, 0,
         AG_OP_BIT(AG_OP_GENERATE) | AG_OP_BIT(AG_OP_STREAM_GENERATE), 0},
        {&s_gm_oc, AG_FMT_OPENAI | AG_FMT_GEMINI, "openai gemini",
         AG_OP_BIT(AG_OP_CHAT) | AG_OP_BIT(AG_OP_EMBEDDINGS), 0, 0,
         AG_OP_BIT(AG_OP_GENERATE) | AG_OP_BIT(AG_OP_STREAM_GENERATE), 0},
        {&s_vx, AG_FMT_GEMINI, "gemini", 0, 0, 0,
         AG_OP_BIT(AG_OP_GENERATE) | AG_OP_BIT(AG_OP_STREAM_GENERATE), 0},
        {&s_br, AG_FMT_BEDROCK, "bedrock", 0, 0, 0, 0,
         AG_OP_BIT(AG_OP_INVOKE) | AG_OP_BIT(AG_OP_INVOKE_STREAM) | AG_OP_BIT(AG_OP_CONVERSE) |
             AG_OP_BIT(AG_OP_CONVERSE_STREAM)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ag_instance_t *in = cases[i].inst;
        assert_int_equal(ag_instance_formats(in), cases[i].formats);
        char names[64];
        assert_int_equal(ag_format_names(ag_instance_formats(in), names, sizeof names), 0);
        assert_string_equal(names, cases[i].names);
        const struct {
            unsigned fmt;
            uint32_t ops;
        } per[] = {{AG_FMT_OPENAI, cases[i].openai},
                   {AG_FMT_AZURE, cases[i].azure},
                   {AG_FMT_ANTHROPIC, cases[i].anthropic},
                   {AG_FMT_GEMINI, cases[i].gemini},
                   {AG_FMT_BEDROCK, cases[i].bedrock}};
        for (size_t f = 0; f < sizeof per / sizeof per[0]; f++) {
            for (int op = AG_OP_NONE; op <= AG_OP_CONVERSE_STREAM + 1; op++) {
                bool want = op <= AG_OP_CONVERSE_STREAM && (per[f].ops & AG_OP_BIT(op));
                if (ag_instance_serves(in, per[f].fmt, (ag_op_t)op) != want)
                    fail_msg("%s, format %s, op %d: served %d", in->name,
                             ag_format_name(per[f].fmt), op, !want);
            }
        }
    }
    char small[8];
    assert_int_equal(ag_format_names(ag_instance_formats(&s_az), small, sizeof small), -ENOSPC);
    assert_int_equal(ag_format_names(ag_instance_formats(&s_az), small, 0), -ENOSPC);
    char exact[13];
    assert_int_equal(ag_format_names(ag_instance_formats(&s_az), exact, sizeof exact), 0);
    assert_string_equal(exact, "openai azure");
    /* Names of vendors and formats. */
    static const char *const vendors[] = {"openai", "azure", "anthropic",
                                          "gemini", "vertex", "bedrock"};
    for (int v = AG_VENDOR_OPENAI; v <= AG_VENDOR_BEDROCK; v++) {
        assert_string_equal(ag_vendor_name((ag_vendor_kind_t)v), vendors[v - 1]);
        assert_int_equal(ag_vendor_from_name(vendors[v - 1]), v);
    }
    assert_int_equal(ag_vendor_from_name("cohere"), AG_VENDOR_NONE);
    assert_int_equal(ag_vendor_from_name("OpenAI"), AG_VENDOR_NONE);
    assert_int_equal(ag_vendor_from_name(NULL), AG_VENDOR_NONE);
    assert_string_equal(ag_vendor_name(AG_VENDOR_NONE), "?");
    static const char *const formats[] = {"openai", "azure", "anthropic", "gemini", "bedrock"};
    for (unsigned b = 0; b < 5; b++) {
        assert_int_equal(ag_format_from_name(formats[b], strlen(formats[b])), 1u << b);
        assert_string_equal(ag_format_name(1u << b), formats[b]);
    }
    assert_int_equal(ag_format_from_name("vertex", 6), 0);
    assert_int_equal(ag_format_from_name("openai", 5), 0);
    assert_string_equal(ag_format_name(AG_FMT_OPENAI | AG_FMT_AZURE), "?");
}

static void test_auth_and_headers(void **state)
{
    (void)state;
    static const struct {
        const ag_instance_t *inst;
        ag_op_t op;
        int rc;
        const char *line;
    } cases[] = {
        {&s_oai, AG_OP_CHAT, 0, "Authorization: Bearer sk-x"},
        {&s_oai, AG_OP_MODELS, 0, "Authorization: Bearer sk-x"},
        {&s_az, AG_OP_CHAT, 0, "api-key: k"},
        {&s_az, AG_OP_RESPONSES, 0, "api-key: k"},
        {&s_an, AG_OP_MESSAGES, 0, "x-api-key: sk-ant"},
        {&s_an_oc, AG_OP_CHAT, 0, "x-api-key: sk-ant"},
        {&s_gm, AG_OP_GENERATE, 0, "x-goog-api-key: AIza"},
        {&s_gm, AG_OP_STREAM_GENERATE, 0, "x-goog-api-key: AIza"},
        {&s_gm_oc, AG_OP_CHAT, 0, "Authorization: Bearer AIza"},
        {&s_gm_oc, AG_OP_EMBEDDINGS, 0, "Authorization: Bearer AIza"},
        {&s_vx, AG_OP_GENERATE, 1, NULL},
        {&s_br, AG_OP_CONVERSE, 1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char auth[128] = "untouched";
        int rc = ag_auth_header(cases[i].inst, cases[i].op, auth, sizeof auth);
        if (rc != cases[i].rc)
            fail_msg("%s op %d: rc %d", cases[i].inst->name, (int)cases[i].op, rc);
        if (cases[i].line)
            assert_string_equal(auth, cases[i].line);
    }
    char auth[16];
    memset(auth, 'x', sizeof auth);
    assert_int_equal(ag_auth_header(&s_oai, AG_OP_CHAT, auth, sizeof auth), -ENOSPC);
    for (size_t i = 0; i < sizeof auth; i++)
        assert_int_equal(auth[i], 0); /* no partial key left */

    /* Default headers: anthropic-version on Anthropic's own operations only. */
    const char *const *h = ag_default_headers(&s_an, AG_OP_MESSAGES);
    assert_non_null(h);
    assert_string_equal(h[0], "anthropic-version: 2023-06-01");
    assert_null(h[1]);
    h = ag_default_headers(&s_an_oc, AG_OP_COUNT_TOKENS);
    assert_string_equal(h[0], "anthropic-version: " AG_DEFAULT_ANTHROPIC_VERSION);
    const ag_instance_t *none[] = {&s_oai, &s_az, &s_gm, &s_vx, &s_br};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        assert_null(ag_default_headers(none[i], AG_OP_CHAT)[0]);
    assert_null(ag_default_headers(&s_an_oc, AG_OP_CHAT)[0]);

    /* Where the model goes, and who buffers the body. */
    static const struct {
        const ag_instance_t *inst;
        ag_op_t op;
        bool in_body;
    } body[] = {
        {&s_oai, AG_OP_CHAT, true},          {&s_oai, AG_OP_EMBEDDINGS, true},
        {&s_oai, AG_OP_MODELS, false},       {&s_oai, AG_OP_NONE, false},
        {&s_az, AG_OP_CHAT, false},          {&s_az, AG_OP_EMBEDDINGS, false},
        {&s_az, AG_OP_RESPONSES, true},      {&s_az, AG_OP_MODELS, false},
        {&s_az1, AG_OP_CHAT, true},          {&s_az1, AG_OP_EMBEDDINGS, true},
        {&s_az1, AG_OP_MODELS, false},
        {&s_an, AG_OP_MESSAGES, true},       {&s_an, AG_OP_COUNT_TOKENS, true},
        {&s_an_oc, AG_OP_CHAT, true},        {&s_gm, AG_OP_GENERATE, false},
        {&s_gm, AG_OP_STREAM_GENERATE, false}, {&s_gm_oc, AG_OP_CHAT, true},
        {&s_gm_oc, AG_OP_EMBEDDINGS, true},  {&s_vx, AG_OP_GENERATE, false},
        {&s_br, AG_OP_INVOKE, false},        {&s_br, AG_OP_CONVERSE_STREAM, false},
    };
    for (size_t i = 0; i < sizeof body / sizeof body[0]; i++) {
        if (ag_model_in_body(body[i].inst, body[i].op) != body[i].in_body)
            fail_msg("%s op %d: model_in_body %d", body[i].inst->name, (int)body[i].op,
                     !body[i].in_body);
    }
    const ag_instance_t *all[] = {&s_oai, &s_az, &s_an, &s_gm, &s_vx, &s_br};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        assert_int_equal(ag_instance_buffers_body(all[i]), all[i] == &s_br);
    assert_true(ag_op_takes_include_usage(AG_OP_CHAT));
    assert_true(ag_op_takes_include_usage(AG_OP_COMPLETIONS));
    assert_false(ag_op_takes_include_usage(AG_OP_EMBEDDINGS));
    assert_false(ag_op_takes_include_usage(AG_OP_RESPONSES));
    assert_false(ag_op_takes_include_usage(AG_OP_MESSAGES));
    assert_string_equal(ag_op_method(AG_OP_MODELS), "GET");
    assert_string_equal(ag_op_method(AG_OP_CONVERSE), "POST");
}

static void test_usage(void **state)
{
    (void)state;
    static const struct {
        ag_op_t op;
        bool sse;   /* in the parsed path */
        int fmt;    /* expected usage format, -1 not billed */
        bool stream; /* expected */
    } cases[] = {
        {AG_OP_CHAT, false, USAGE_OPENAI_CHAT, false},
        {AG_OP_COMPLETIONS, false, USAGE_OPENAI_COMPLETIONS, false},
        {AG_OP_EMBEDDINGS, false, USAGE_OPENAI_EMBEDDINGS, false},
        {AG_OP_RESPONSES, false, USAGE_OPENAI_RESPONSES, false},
        {AG_OP_MODELS, false, -1, false},
        {AG_OP_MESSAGES, false, USAGE_ANTHROPIC_MESSAGES, false},
        {AG_OP_COUNT_TOKENS, false, -1, false},
        {AG_OP_GENERATE, false, USAGE_GEMINI, false},
        {AG_OP_STREAM_GENERATE, true, USAGE_GEMINI, true},
        {AG_OP_STREAM_GENERATE, false, USAGE_GEMINI, false},
        {AG_OP_INVOKE, false, USAGE_BEDROCK_INVOKE, false},
        {AG_OP_INVOKE_STREAM, false, USAGE_BEDROCK_INVOKE, true},
        {AG_OP_CONVERSE, false, USAGE_BEDROCK_CONVERSE, false},
        {AG_OP_CONVERSE_STREAM, false, USAGE_BEDROCK_CONVERSE, true},
        {AG_OP_NONE, false, -1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ag_path_t p = {.op = cases[i].op, .sse = cases[i].sse};
        bool stream = !cases[i].stream;
        int fmt = ag_op_usage(&p, &stream);
        if (fmt != cases[i].fmt || stream != cases[i].stream)
            fail_msg("op %d sse %d: format %d stream %d", (int)cases[i].op, (int)cases[i].sse,
                     fmt, (int)stream);
    }
    /* The same from parsed paths. */
    ag_path_t p;
    bool stream;
    assert_int_equal(s_path("gemini", "POST", "/v1beta/models/g:streamGenerateContent",
                            "alt=sse", &p), 0);
    assert_int_equal(ag_op_usage(&p, &stream), USAGE_GEMINI);
    assert_true(stream);
    assert_int_equal(s_path("bedrock", "POST", "/model/m/converse-stream", NULL, &p), 0);
    assert_int_equal(ag_op_usage(&p, &stream), USAGE_BEDROCK_CONVERSE);
    assert_true(stream);
}

/* Expected values computed once, independently of lib/sigv4, with Python's hmac and hashlib
 * (SigV4 by the AWS documentation: the canonical URI re-encodes each path segment). */
#define BR_URL                                                                                \
    "https://bedrock-runtime.us-west-2.amazonaws.com/model/"                                  \
    "anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
#define BR_BODY "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]}"
#define BR_NOW ((time_t)1440938160) /* 20150830T123600Z */
#define BR_SCOPE "Credential=AKIDEXAMPLE/20150830/us-west-2/bedrock/aws4_request, "
#define BR_AUTH                                                                               \
    "Authorization: AWS4-HMAC-SHA256 " BR_SCOPE "SignedHeaders=content-type;host;x-amz-date, " \
    "Signature=c7e8bd824f1219b88ddf93c28712b1dd6676f102b920d1e76bee268b814da127"
#define BR_AUTH_TOKEN                                                                         \
    "Authorization: AWS4-HMAC-SHA256 " BR_SCOPE                                               \
    "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "                       \
    "Signature=47b8f9705c35bb5b52ffa8ea354fc2597be6c6e2671d24a7e6e4373055bf8542"
#define BR_CREQ                                                                               \
    "POST\n/model/anthropic.claude-3-5-haiku-20241022-v1%253A0/converse\n\n"                  \
    "content-type:application/json\nhost:bedrock-runtime.us-west-2.amazonaws.com\n"           \
    "x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n"                           \
    "c3335e07d6e89650bf94cb98664be69f8774dbc3198df221f113db0a59ea14f0"
#define BR_ARN_AUTH                                                                           \
    "Authorization: AWS4-HMAC-SHA256 " BR_SCOPE "SignedHeaders=content-type;host;x-amz-date, " \
    "Signature=e1d67c78ba1556b0c4812f100fae812373d1ed0dfd65ea673358d13680decb29"

static void test_bedrock_sign(void **state)
{
    (void)state;
    /* The URL as ag_url_build writes it. */
    ag_path_t p = {.op = AG_OP_CONVERSE, .format = AG_FMT_BEDROCK};
    char url[AG_URL_MAX];
    assert_int_equal(
        ag_url_build(&s_br, &p, "anthropic.claude-3-5-haiku-20241022-v1:0", url, sizeof url), 0);
    assert_string_equal(url, BR_URL);

    ag_sig_lines_t sig;
    assert_int_equal(ag_bedrock_sign(&s_br, url, "application/json", BR_BODY,
                                     strlen(BR_BODY), BR_NOW, &sig), 0);
    assert_int_equal(sig.n, 2);
    assert_string_equal(sig.line[0], "X-Amz-Date: 20150830T123600Z");
    assert_string_equal(sig.line[1], BR_AUTH);
    ag_sig_lines_free(&sig);
    assert_int_equal(sig.n, 0);
    assert_null(sig.line[0]);
    ag_sig_lines_free(&sig); /* twice is fine */
    ag_sig_lines_free(NULL);

    /* The canonical request encodes the encoded path again. */
    sigv4_result_t *r = NULL;
    assert_int_equal(ag_bedrock_sign_result(&s_br, url, "application/json", BR_BODY,
                                            strlen(BR_BODY), BR_NOW, &r), 0);
    assert_string_equal(r->canonical_request, BR_CREQ);
    assert_non_null(strstr(r->canonical_request, "%253A0"));
    sigv4_result_destroy(&r);

    /* Session credentials: the token is signed and sent first. */
    ag_instance_t tok = s_br;
    tok.session_token = "FQoGZXIvYXdzEXAMPLETOKEN/+=";
    assert_int_equal(ag_bedrock_sign(&tok, url, "application/json", BR_BODY, strlen(BR_BODY),
                                     BR_NOW, &sig), 0);
    assert_int_equal(sig.n, 3);
    assert_string_equal(sig.line[0], "X-Amz-Security-Token: FQoGZXIvYXdzEXAMPLETOKEN/+=");
    assert_string_equal(sig.line[1], "X-Amz-Date: 20150830T123600Z");
    assert_string_equal(sig.line[2], BR_AUTH_TOKEN);
    ag_sig_lines_free(&sig);
    tok.session_token = ""; /* an empty token is no token */
    assert_int_equal(ag_bedrock_sign(&tok, url, "application/json", BR_BODY, strlen(BR_BODY),
                                     BR_NOW, &sig), 0);
    assert_int_equal(sig.n, 2);
    assert_string_equal(sig.line[1], BR_AUTH);
    ag_sig_lines_free(&sig);

    /* An inference-profile ARN: ':' and '/' encoded once in the URL, twice when signed. */
    p.op = AG_OP_INVOKE_STREAM;
    assert_int_equal(ag_url_build(&s_br, &p,
                                  "arn:aws:bedrock:us-west-2:123456789012:inference-profile/"
                                  "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                                  url, sizeof url), 0);
    assert_int_equal(ag_bedrock_sign(&s_br, url, "application/json", "{}", 2, BR_NOW, &sig), 0);
    assert_string_equal(sig.line[1], BR_ARN_AUTH);
    ag_sig_lines_free(&sig);
    assert_int_equal(ag_bedrock_sign_result(&s_br, url, "application/json", "{}", 2, BR_NOW, &r),
                     0);
    assert_non_null(strstr(r->canonical_request, "\n/model/arn%253Aaws%253Abedrock%253A"
                                                  "us-west-2%253A123456789012%253A"
                                                  "inference-profile%252Fus."));
    sigv4_result_destroy(&r);

    /* Refusals. */
    assert_int_equal(ag_bedrock_sign(&s_br, url, NULL, "{}", 2, BR_NOW, &sig), -EINVAL);
    assert_int_equal(sig.n, 0);
    assert_int_equal(ag_bedrock_sign(&s_br, url, "", "{}", 2, BR_NOW, &sig), -EINVAL);
    assert_int_equal(ag_bedrock_sign(&s_oai, url, "application/json", "{}", 2, BR_NOW, &sig),
                     -EINVAL);
    assert_int_equal(ag_bedrock_sign(&s_br, "http://x/model/m/invoke", "application/json", "{}",
                                     2, BR_NOW, &sig), -EINVAL);
    assert_int_equal(ag_bedrock_sign(&s_br, "https://host-only", "application/json", "{}", 2,
                                     BR_NOW, &sig), -EINVAL);
    assert_int_equal(ag_bedrock_sign(&s_br, BR_URL, "application/json", NULL, 2, BR_NOW, &sig),
                     -EINVAL);
    assert_int_equal(ag_bedrock_sign(&s_br, BR_URL, "application/json", NULL, 0, BR_NOW, &sig),
                     0);
    ag_sig_lines_free(&sig);
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
        "X-Amz-Date", "x-amz-security-token", "X-Amz-Content-Sha256", "x-amz-target",
        "X-Amzn-Bedrock-GuardrailIdentifier", "x-amzn-trace-id", "X-Goog-User-Project",
        "bad name", "bad:name", "",
    };
    for (size_t i = 0; i < sizeof dropped / sizeof dropped[0]; i++) {
        if (s_to(dropped[i], "v"))
            fail_msg("%s forwarded to the vendor", dropped[i]);
    }
    static const char *const kept[] = {
        "Content-Type", "accept", "user-agent", "OpenAI-Beta", "x-stainless-lang",
        "idempotency-key", "x-custom", "anthropic-version", "anthropic-beta",
        "x-goog-api-client", "x-amzfoo"};
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
    static const char *const back_kept[] = {
        "content-type", "x-request-id", "retry-after", "x-ratelimit-remaining-tokens",
        "openai-processing-ms", "content-encoding", "request-id", "x-amzn-requestid",
        "x-amzn-bedrock-input-token-count", "x-amzn-errortype"};
    for (size_t i = 0; i < sizeof back_kept / sizeof back_kept[0]; i++) {
        if (!ag_hdr_from_vendor(back_kept[i], strlen(back_kept[i])))
            fail_msg("%s not relayed", back_kept[i]);
    }
}

/* The [agent] retry keys: defaults, overrides and bounds. */
static void test_retry_config(void **state)
{
    (void)state;
    ag_config_t cfg;
    ag_instances_t set;
    char err[512];
    assert_int_equal(s_build("", &cfg, &set, err, sizeof err), 0);
    assert_int_equal(cfg.vendor_retries, 2);
    assert_int_equal(cfg.vendor_retry_max_ms, 30000);
    assert_int_equal(cfg.vendor_retry_body_bytes, 1024 * 1024);
    assert_int_equal(set.n, 0);
    ag_instances_free(&set);
    ag_config_free(&cfg);
    assert_int_equal(s_build("[agent]\nvendor_retries = 0\nvendor_retry_max = 2m\n"
                             "vendor_retry_body_bytes = 0\n", &cfg, &set, err, sizeof err), 0);
    assert_int_equal(cfg.vendor_retries, 0);
    assert_int_equal(cfg.vendor_retry_max_ms, 120000);
    assert_int_equal(cfg.vendor_retry_body_bytes, 0);
    ag_instances_free(&set);
    ag_config_free(&cfg);
    static const char *const bad[] = {
        "[agent]\nvendor_retries = 11\n", "[agent]\nvendor_retries = -1\n",
        "[agent]\nvendor_retry_max = 11m\n", "[agent]\nvendor_retry_body_bytes = 65MiB\n",
        "[agent]\nvendor_retry_max_ms = 1000\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (s_build(bad[i], &cfg, &set, err, sizeof err) != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(strstr(err, "agent.vendor_retr"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instances),        cmocka_unit_test(test_vertex_relative_config),
        cmocka_unit_test(test_instance_errors),  cmocka_unit_test(test_models_parse),
        cmocka_unit_test(test_path_parse),       cmocka_unit_test(test_request_model),
        cmocka_unit_test(test_urls),             cmocka_unit_test(test_serves),
        cmocka_unit_test(test_auth_and_headers), cmocka_unit_test(test_usage),
        cmocka_unit_test(test_bedrock_sign),     cmocka_unit_test(test_header_filters),
        cmocka_unit_test(test_retry_config),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
