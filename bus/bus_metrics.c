/* bus_metrics: registry, text rendering and the /metrics endpoint. */
#include "bus_metrics.h"
#include "bus_http.h"
#include "bus_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bus_metric {
    char *family;           /* Prometheus metric name */
    char *labels;           /* label set without braces, or NULL */
    char *help;             /* HELP text */
    bus_metric_kind_t kind; /* counter or gauge */
    int64_t value;          /* current value */
    bus_metric_t *next;     /* registration order */
};

struct bus_metrics {
    char *process;      /* value of the process label on every metric */
    bus_metric_t *head; /* first registered */
    bus_metric_t *tail; /* last registered */
};

bus_metrics_t *bus_metrics_new(const char *process)
{
    bus_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->process = strdup(process);
    if (!m->process) {
        free(m);
        return NULL;
    }
    return m;
}

void bus_metrics_destroy(bus_metrics_t **p)
{
    if (!p || !*p)
        return;
    bus_metric_t *x = (*p)->head;
    while (x) {
        bus_metric_t *n = x->next;
        free(x->family);
        free(x->labels);
        free(x->help);
        free(x);
        x = n;
    }
    free((*p)->process);
    free(*p);
    *p = NULL;
}

bus_metric_t *bus_metrics_add(bus_metrics_t *m, bus_metric_kind_t kind, const char *family,
                              const char *labels, const char *help)
{
    if (!m)
        return NULL;
    bus_metric_t *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->family = strdup(family);
    x->labels = labels ? strdup(labels) : NULL;
    x->help = strdup(help ? help : "");
    x->kind = kind;
    if (!x->family || !x->help || (labels && !x->labels)) {
        free(x->family);
        free(x->labels);
        free(x->help);
        free(x);
        return NULL;
    }
    if (m->tail)
        m->tail->next = x;
    else
        m->head = x;
    m->tail = x;
    return x;
}

void bus_metric_inc(bus_metric_t *x)
{
    if (x)
        x->value++;
}

void bus_metric_add(bus_metric_t *x, int64_t v)
{
    if (x)
        x->value += v;
}

void bus_metric_set(bus_metric_t *x, int64_t v)
{
    if (x)
        x->value = v;
}

int64_t bus_metric_get(const bus_metric_t *x)
{
    return x ? x->value : 0;
}

/* Appends formatted text to a growing buffer; returns 0 or -ENOMEM. */
static int s_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int s_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -EINVAL;
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return 0;
        }
        size_t ncap = *cap * 2 + (size_t)n;
        char *nb = realloc(*buf, ncap);
        if (!nb)
            return -ENOMEM;
        *buf = nb;
        *cap = ncap;
    }
}

char *bus_metrics_render(bus_metrics_t *m, size_t *len)
{
    size_t cap = 4096, l = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    buf[0] = '\0';
    for (bus_metric_t *x = m->head; x; x = x->next) {
        /* HELP/TYPE once per family, at its first member. */
        bool first = true;
        for (bus_metric_t *y = m->head; y != x; y = y->next) {
            if (strcmp(y->family, x->family) == 0) {
                first = false;
                break;
            }
        }
        if (!first)
            continue;
        if (s_appendf(&buf, &l, &cap, "# HELP %s %s\n# TYPE %s %s\n", x->family, x->help,
                      x->family, x->kind == BUS_COUNTER ? "counter" : "gauge"))
            goto fail;
        for (bus_metric_t *y = x; y; y = y->next) {
            if (strcmp(y->family, x->family) != 0)
                continue;
            if (s_appendf(&buf, &l, &cap, "%s{process=\"%s\"%s%s} %" PRId64 "\n", y->family,
                          m->process, y->labels ? "," : "", y->labels ? y->labels : "",
                          y->value))
                goto fail;
        }
    }
    *len = l;
    return buf;
fail:
    free(buf);
    return NULL;
}

typedef struct {
    bus_http_t http; /* must be first */
} s_metrics_pss_t;

/* lws callback of the metrics vhost: GET /metrics, everything else 404. */
static int s_metrics_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    s_metrics_pss_t *pss = user;
    bus_metrics_t *m = lws_vhost_user(lws_get_vhost(wsi));
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        bus_http_begin(&pss->http, wsi, in, 0);
        if (strcmp(pss->http.path, "/metrics") != 0)
            return bus_http_error(&pss->http, wsi, 404, "not_found", "only /metrics is here");
        size_t n = 0;
        char *text = m ? bus_metrics_render(m, &n) : NULL;
        if (!text)
            return bus_http_error(&pss->http, wsi, 500, "server_error", "render failed");
        bus_http_respond(&pss->http, wsi, 200, "text/plain; version=0.0.4", text, n);
        free(text);
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY:
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return bus_http_writeable(&pss->http, wsi);
    case LWS_CALLBACK_CLOSED_HTTP:
        bus_http_reset(&pss->http);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

int bus_metrics_serve(bus_metrics_t *m, bus_loop_t *loop, const char *listen)
{
    if (!listen || !*listen)
        return 0;
    static const struct lws_protocols protos[] = {
        {"bus-metrics", s_metrics_cb, sizeof(s_metrics_pss_t), 0, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0}};
    struct lws_vhost *vh = bus_loop_listen(loop, "metrics", listen, protos, NULL, NULL, NULL, m);
    return vh ? 0 : -EADDRINUSE;
}
