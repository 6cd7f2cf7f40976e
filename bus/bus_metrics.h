/* bus_metrics: Prometheus text-format counters and gauges, served over HTTP.
 *
 * A process registers its metrics once at start; updates are plain integer stores on the
 * loop's thread, so they cost nothing measurable. The text is rendered only when scraped.
 */
#ifndef BUS_METRICS_H
#define BUS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "bus_loop.h"

typedef struct bus_metrics bus_metrics_t;
typedef struct bus_metric bus_metric_t;

typedef enum { BUS_COUNTER, BUS_GAUGE } bus_metric_kind_t;

bus_metrics_t *bus_metrics_new(const char *process);
void bus_metrics_destroy(bus_metrics_t **m);

/* Registers a metric. family is the Prometheus name ("relayhub_tunnel_connections"); labels is
 * NULL or a label set without braces ("reason=\"bad_signature\""). Metrics of one family share
 * help and kind. Returns a handle owned by m, or NULL on allocation failure (updates on a NULL
 * handle are ignored, so callers need not check). */
bus_metric_t *bus_metrics_add(bus_metrics_t *m, bus_metric_kind_t kind, const char *family,
                              const char *labels, const char *help);

void bus_metric_inc(bus_metric_t *x);
void bus_metric_add(bus_metric_t *x, int64_t v);
void bus_metric_set(bus_metric_t *x, int64_t v);
int64_t bus_metric_get(const bus_metric_t *x);

/* Renders every metric in the text exposition format (version 0.0.4). malloc'd. */
char *bus_metrics_render(bus_metrics_t *m, size_t *len);

/* Serves GET /metrics on listen ("HOST:PORT"); "" means off. 0 or a negative errno. */
int bus_metrics_serve(bus_metrics_t *m, bus_loop_t *loop, const char *listen);

#endif
