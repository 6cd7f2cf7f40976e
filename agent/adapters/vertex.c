/* adapters/vertex: Vertex AI (REGION-aiplatform.googleapis.com), Gemini's methods under a
 * project and region; no static auth header (an OAuth access token from the service account). */
#include "adapters.h"
#include "bus_plat.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const s_keys[] = {"project", "region", "service_account_file", NULL};

static const ag_serve_t s_serves[] = {
    {AG_FMT_GEMINI, AG_OP_BIT(AG_OP_GENERATE) | AG_OP_BIT(AG_OP_STREAM_GENERATE), false},
    {0, 0, false},
};

/* True for a GCP project id: [a-z][a-z0-9-]{4,28}[a-z0-9]. */
static bool s_project_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 6 || n > 30 || !(s[0] >= 'a' && s[0] <= 'z') || s[n - 1] == '-')
        return false;
    return ag_is_label(s, 30);
}

/* Drops leading "./" segments of a relative path. */
static const char *s_skip_dot(const char *p)
{
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    return p;
}

/* An absolute form of path (relative to dir, then to the working directory), malloc'd or NULL.
 * Symbolic links are left alone: a mounted secret that is swapped by a link stays followed. */
static char *s_absolute(const char *dir, const char *path)
{
    if (plat_path_is_absolute(path))
        return strdup(path);
    path = s_skip_dot(path);
    if (dir && plat_path_is_absolute(dir))
        return plat_path_join(dir, path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    const char *rel = dir ? s_skip_dot(dir) : "";
    if (!rel[0] || strcmp(rel, ".") == 0)
        return plat_path_join(cwd, path);
    char *base = plat_path_join(cwd, rel);
    char *abs = base ? plat_path_join(base, path) : NULL;
    free(base);
    return abs;
}

/* project, region (required), service_account_file (required; relative to the agent's
 * directory; checked here to be a readable file, so that a typo fails at start). */
static int s_build(ag_instance_t *in, const ag_instance_kv_t *kv, const char *dir, char *err,
                   size_t errlen)
{
    const char *project = ag_kv_get(kv, "project");
    if (!s_project_ok(project)) {
        snprintf(err, errlen,
                 "project: required, a Google Cloud project id "
                 "([a-z][a-z0-9-]{4,28}[a-z0-9])");
        return -EINVAL;
    }
    const char *region = ag_kv_get(kv, "region");
    if (!ag_is_label(region, 40)) {
        snprintf(err, errlen,
                 "region: required, a Vertex AI location such as us-central1 or "
                 "global ([a-z0-9-])");
        return -EINVAL;
    }
    const char *file = ag_kv_get(kv, "service_account_file");
    if (!file || !file[0]) {
        snprintf(err, errlen,
                 "service_account_file: required (the service account's JSON key "
                 "file)");
        return -EINVAL;
    }
    int rc = ag_dup(&in->project, project, err, errlen);
    if (rc == 0)
        rc = ag_dup(&in->region, region, err, errlen);
    if (rc != 0)
        return rc;
    errno = 0;
    in->service_account_file = s_absolute(dir, file);
    if (!in->service_account_file) {
        snprintf(err, errlen, "service_account_file: cannot make the path absolute (%s)",
                 strerror(errno ? errno : ENOMEM));
        return -ENOMEM;
    }
    struct stat st;
    const char *why = NULL;
    if (stat(in->service_account_file, &st) != 0 || access(in->service_account_file, R_OK) != 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    if (why) {
        snprintf(err, errlen, "service_account_file: %.300s: %s", in->service_account_file, why);
        return -EINVAL;
    }
    return 0;
}

/* https://REGION-aiplatform.googleapis.com/v1/projects/PROJECT/locations/REGION/publishers/
 * google/models/MODEL:{generateContent,streamGenerateContent[?alt=sse]}; the "global"
 * location is served by aiplatform.googleapis.com itself. */
static int s_url(const ag_instance_t *in, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen)
{
    if (!upstream || !ag_is_url_name(upstream, strlen(upstream)))
        return -EINVAL;
    const char *method;
    if (p->op == AG_OP_GENERATE)
        method = "generateContent";
    else if (p->op == AG_OP_STREAM_GENERATE)
        method = p->sse ? "streamGenerateContent?alt=sse" : "streamGenerateContent";
    else
        return -EINVAL;
    bool global = strcmp(in->region, "global") == 0;
    return ag_fmt(out, outlen,
                  "https://%s%saiplatform.googleapis.com/v1/projects/%s/locations/%s/publishers/"
                  "google/models/%s:%s",
                  global ? "" : in->region, global ? "" : "-", in->project, in->region, upstream,
                  method);
}

/* The model is in the URL. */
static bool s_model_in_body(const ag_instance_t *in, ag_op_t op)
{
    (void)in;
    (void)op;
    return false;
}

const ag_vendor_ops_t ag_vertex_ops = {
    .name = "vertex",
    .kind = AG_VENDOR_VERTEX,
    .keys = s_keys,
    .url_models = true,
    .serves = s_serves,
    .build = s_build,
    .url = s_url,
    .auth = NULL, /* Authorization: Bearer <access token>, fetched and refreshed at run time */
    .default_headers = NULL,
    .model_in_body = s_model_in_body,
    .buffers_body = false,
};
