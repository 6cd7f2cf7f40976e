/* gw_routes: agents and their models (and formats) from presence; least-loaded choice per
 * model and format. */
#include "gw_routes.h"
#include "bus_plat.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;       /* the model, owned */
    unsigned formats; /* GW_FORMAT_BIT set it is served in */
} s_model_t;

typedef struct {
    char agent_id[GW_AGENT_ID_MAX + 1]; /* key */
    char tunnel[64];                    /* where it is connected */
    s_model_t *models;                  /* served models, owned */
    size_t n_models;                    /* their count */
    uint64_t in_flight;                 /* tunnel's figure */
    int64_t local;                      /* our opens minus our closes since that figure */
    uint64_t capacity;                  /* announced */
    uint64_t seen_us;                   /* last presence */
} s_agent_t;

struct gw_routes {
    s_agent_t *agents; /* unsorted; a few thousand at most per gateway's view */
    size_t n, cap;     /* count and capacity */
};

static const char *const s_format_names[GW_FORMAT_COUNT] = {"openai", "anthropic", "gemini",
                                                            "bedrock"};

const char *gw_format_name(gw_format_t f)
{
    return (unsigned)f < GW_FORMAT_COUNT ? s_format_names[f] : "?";
}

int gw_format_from_name(const char *name, size_t len)
{
    for (int f = 0; f < GW_FORMAT_COUNT; f++) {
        if (strlen(s_format_names[f]) == len && memcmp(s_format_names[f], name, len) == 0)
            return f;
    }
    return -1;
}

unsigned gw_formats_parse(const char *s, size_t len)
{
    unsigned set = 0;
    bool any = false;
    for (size_t i = 0; i < len;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t start = i;
        while (i < len && s[i] != ' ' && s[i] != '\t')
            i++;
        if (i == start)
            continue;
        any = true;
        int f = gw_format_from_name(s + start, i - start);
        if (f >= 0)
            set |= GW_FORMAT_BIT(f);
    }
    /* An empty element says nothing: as for an absent one, the model is served as OpenAI. */
    return any ? set : GW_FORMAT_BIT(GW_FORMAT_OPENAI);
}

gw_routes_t *gw_routes_new(void)
{
    return calloc(1, sizeof(gw_routes_t));
}

static void s_agent_clear(s_agent_t *a)
{
    for (size_t i = 0; i < a->n_models; i++)
        free(a->models[i].name);
    free(a->models);
    a->models = NULL;
    a->n_models = 0;
}

void gw_routes_destroy(gw_routes_t **p)
{
    if (!p || !*p)
        return;
    for (size_t i = 0; i < (*p)->n; i++)
        s_agent_clear(&(*p)->agents[i]);
    free((*p)->agents);
    free(*p);
    *p = NULL;
}

static s_agent_t *s_find(gw_routes_t *r, const char *id, size_t len)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strlen(r->agents[i].agent_id) == len && memcmp(r->agents[i].agent_id, id, len) == 0)
            return &r->agents[i];
    }
    return NULL;
}

static void s_remove(gw_routes_t *r, s_agent_t *a)
{
    s_agent_clear(a);
    *a = r->agents[--r->n];
}

int gw_routes_apply(gw_routes_t *r, const bus_presence_t *p, uint64_t now_us)
{
    if (p->agent_id.len == 0 || p->agent_id.len > GW_AGENT_ID_MAX)
        return -EINVAL;
    s_agent_t *a = s_find(r, p->agent_id.p, p->agent_id.len);
    bool down = p->state.len == 4 && memcmp(p->state.p, "down", 4) == 0;
    if (down) {
        if (a)
            s_remove(r, a);
        return 0;
    }
    if (!a) {
        if (r->n == r->cap) {
            size_t ncap = r->cap ? r->cap * 2 : 16;
            s_agent_t *na = realloc(r->agents, ncap * sizeof *na);
            if (!na)
                return -ENOMEM;
            r->agents = na;
            r->cap = ncap;
        }
        a = &r->agents[r->n++];
        memset(a, 0, sizeof *a);
        memcpy(a->agent_id, p->agent_id.p, p->agent_id.len);
    }
    size_t tl = p->tunnel.len < sizeof a->tunnel ? p->tunnel.len : sizeof a->tunnel - 1;
    if (tl)
        memcpy(a->tunnel, p->tunnel.p, tl);
    a->tunnel[tl] = '\0';
    /* Models: replace the list with the announced one; model_formats walks alongside. */
    s_agent_clear(a);
    bus_list_t it = p->models;
    bus_list_t fit = p->model_formats;
    if (it.count) {
        a->models = calloc(it.count, sizeof *a->models);
        if (!a->models)
            return -ENOMEM;
        bus_str_t m, f;
        while (bus_list_next_str(&it, &m) == 1) {
            bool has_f = fit.count && bus_list_next_str(&fit, &f) == 1;
            if (m.len == 0 || m.len > GW_MODEL_MAX)
                continue;
            char *s = malloc(m.len + 1);
            if (!s)
                return -ENOMEM;
            memcpy(s, m.p, m.len);
            s[m.len] = '\0';
            a->models[a->n_models].name = s;
            a->models[a->n_models].formats =
                has_f ? gw_formats_parse(f.p, f.len) : GW_FORMAT_BIT(GW_FORMAT_OPENAI);
            a->n_models++;
        }
    }
    a->in_flight = p->in_flight;
    a->local = 0; /* the tunnel's figure now includes what we opened */
    a->capacity = p->capacity;
    a->seen_us = now_us;
    return 0;
}

size_t gw_routes_expire(gw_routes_t *r, uint64_t now_us, uint64_t max_age_us)
{
    size_t dropped = 0;
    for (size_t i = 0; i < r->n;) {
        if (now_us - r->agents[i].seen_us > max_age_us) {
            s_remove(r, &r->agents[i]);
            dropped++;
        } else {
            i++;
        }
    }
    return dropped;
}

/* The formats agent a serves model in (the union over repeated entries), 0 if none. */
static unsigned s_formats(const s_agent_t *a, const char *model, size_t len)
{
    unsigned set = 0;
    for (size_t i = 0; i < a->n_models; i++) {
        const char *n = a->models[i].name;
        if (strlen(n) == len && memcmp(n, model, len) == 0)
            set |= a->models[i].formats;
    }
    return set;
}

unsigned gw_routes_formats(const gw_routes_t *r, const char *model, size_t model_len)
{
    unsigned set = 0;
    for (size_t i = 0; i < r->n; i++)
        set |= s_formats(&r->agents[i], model, model_len);
    return set;
}

int gw_routes_pick(gw_routes_t *r, gw_format_t format, const char *model, size_t model_len,
                   const char *const *exclude, size_t n_exclude, gw_pick_t *out)
{
    if (r->n == 0)
        return -ENOTCONN;
    s_agent_t *best = NULL;
    uint64_t best_num = 0, best_den = 1;
    size_t ties = 0;
    bool any = false;
    for (size_t i = 0; i < r->n; i++) {
        s_agent_t *a = &r->agents[i];
        if (!(s_formats(a, model, model_len) & GW_FORMAT_BIT(format)))
            continue;
        any = true;
        bool skip = false;
        for (size_t k = 0; k < n_exclude && !skip; k++)
            skip = strcmp(exclude[k], a->agent_id) == 0;
        if (skip)
            continue;
        int64_t load = (int64_t)a->in_flight + a->local;
        uint64_t num = load > 0 ? (uint64_t)load : 0;
        uint64_t den = a->capacity ? a->capacity : 1;
        /* Compare num/den without division: num * best_den vs best_num * den. */
        if (!best || num * best_den < best_num * den) {
            best = a;
            best_num = num;
            best_den = den;
            ties = 1;
        } else if (num * best_den == best_num * den) {
            /* Reservoir sampling over equally loaded agents: each is equally likely. */
            ties++;
            if (plat_random_below(ties) == 0)
                best = a;
        }
    }
    if (!best)
        return any ? -EAGAIN : -ENOENT;
    memcpy(out->agent_id, best->agent_id, sizeof out->agent_id);
    memcpy(out->tunnel, best->tunnel, sizeof out->tunnel);
    out->in_flight = best_num;
    out->capacity = best->capacity;
    return 0;
}

void gw_routes_add_load(gw_routes_t *r, const char *agent_id, int delta)
{
    s_agent_t *a = s_find(r, agent_id, strlen(agent_id));
    if (a)
        a->local += delta;
}

size_t gw_routes_agents(const gw_routes_t *r)
{
    return r->n;
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void gw_routes_each_model(const gw_routes_t *r, gw_format_t format,
                          void (*fn)(void *arg, const char *model), void *arg)
{
    size_t total = 0;
    for (size_t i = 0; i < r->n; i++)
        total += r->agents[i].n_models;
    if (!total)
        return;
    const char **all = malloc(total * sizeof *all);
    if (!all)
        return;
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        for (size_t j = 0; j < r->agents[i].n_models; j++) {
            if (r->agents[i].models[j].formats & GW_FORMAT_BIT(format))
                all[k++] = r->agents[i].models[j].name;
        }
    }
    total = k;
    qsort(all, total, sizeof *all, s_cmp_str);
    for (size_t i = 0; i < total; i++) {
        if (i == 0 || strcmp(all[i], all[i - 1]) != 0)
            fn(arg, all[i]);
    }
    free(all);
}
