/* ledger-diff: proves that the hub's ledger of an agent and the agent's own SQLite copy are the
 * same, row for row and field for field (DESIGN §4 acceptance), and that each is a valid chain.
 *
 *   ledger-diff --hub DIR/hub.conf --agent PATH/agent-ledger.db
 *
 * The agent is the one the agent database belongs to: meta.agent_id, or else the agent_id of
 * its lowest ledger row. The hub's rows are read through lib/store (SQLite or MySQL, as hub.conf
 * says), the agent's from its table `ledger`, opened read-only (agent-ledger may be running).
 * Both sides are read in seq order and merged a page at a time, so memory stays bounded
 * whatever the chain's length. Each difference is one line on stdout:
 *
 *   seq N: FIELD hub=VALUE agent=VALUE     a field of ledger_row_t differs
 *   seq N: missing on agent | missing on hub
 *   seq N: hub chain FAULT | agent chain FAULT   a row where that side's chain breaks
 *   seq N: FIELD unreadable on agent (WHY)      a value of the wrong type or size
 *
 * and the last line is `ledger-diff: N rows, M differences` (N: seqs present on either side).
 * Exit 0 when M is 0, 1 when not, 2 on a usage, configuration or I/O error.
 */
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_config.h"
#include "bus_log.h"
#include "hub_config.h"
#include "ledger.h"
#include "money.h"
#include "store/store.h"

/* Hub rows fetched from the store at a time. */
#define S_PAGE 1024

/* How a field of ledger_row_t is compared and shown. */
typedef enum { F_STR, F_U64, F_U32, F_I64, F_MONEY, F_BOOL, F_BYTES } s_kind_t;

/* One field of ledger_row_t: every one is compared, in declaration order. */
typedef struct {
    const char *name; /* as in ledger_row_t and the agent's table */
    s_kind_t kind;    /* how to compare and print it */
    size_t off;       /* offsetof in ledger_row_t */
    size_t len;       /* bytes (F_STR: array size; F_BYTES: length) */
} s_field_t;

#define S_F(name, kind)                                                                     \
    {#name, kind, offsetof(ledger_row_t, name), sizeof(((ledger_row_t *)0)->name)}
static const s_field_t s_fields[] = {
    S_F(agent_id, F_STR),        S_F(seq, F_U64),           S_F(req_id, F_BYTES),
    S_F(attempt, F_U32),         S_F(user_id, F_I64),       S_F(model, F_STR),
    S_F(input_tokens, F_I64),    S_F(cached_tokens, F_I64), S_F(output_tokens, F_I64),
    S_F(estimated, F_BOOL),      S_F(cost, F_MONEY),        S_F(fee, F_MONEY),
    S_F(credit, F_MONEY),        S_F(hold, F_MONEY),        S_F(price_from, F_I64),
    S_F(fee_ppm, F_I64),         S_F(created_ms, F_I64),    S_F(prev_hash, F_BYTES),
    S_F(hash, F_BYTES),
};
#undef S_F
#define S_NFIELDS (sizeof s_fields / sizeof s_fields[0])

/* The agent's table, columns in the order of s_fields. */
static const char s_agent_sql[] =
    "SELECT agent_id, seq, req_id, attempt, user_id, model, input_tokens, cached_tokens, "
    "output_tokens, estimated, cost, fee, credit, \"hold\", price_from, fee_ppm, created_ms, "
    "prev_hash, hash FROM ledger ORDER BY seq";

/* The whole run: both sides, their chain checks, the counts. */
typedef struct {
    store_t *store;            /* the hub's store */
    sqlite3 *adb;              /* the agent's database, read-only */
    sqlite3_stmt *astmt;       /* its ledger rows in seq order */
    char agent_id[LEDGER_AGENT_ID_MAX + 1]; /* the agent both chains belong to */
    ledger_row_t *hub_rows;    /* current page of hub rows */
    size_t hub_n, hub_i;       /* its count and the next row in it */
    uint64_t hub_from;         /* seq the next page starts at */
    bool hub_end;              /* no more hub rows */
    ledger_row_t arow;         /* current agent row */
    bool arow_ok;              /* arow holds a row */
    ledger_walk_t hub_walk, agent_walk; /* each side's chain check */
    uint64_t rows;             /* seqs seen on either side */
    uint64_t diffs;            /* difference lines printed */
} s_diff_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: ledger-diff --hub DIR/hub.conf --agent PATH/agent-ledger.db "
            "[--set section.key=value]...\n"
            "  Compares the hub's ledger of the agent that owns the agent database with that\n"
            "  database's copy, row by row and field by field, and checks both hash chains.\n"
            "  Prints one line per difference, then \"ledger-diff: N rows, M differences\".\n"
            "  --config FILE is the same as --hub FILE; --set overrides a hub.conf key.\n"
            "Exit status: 0 identical, 1 differences, 2 bad usage or an I/O error.\n");
}

/* Prints a string of an agent or the hub quoted, with control bytes, quotes and backslashes
 * escaped: the agent's database is not trusted to hold printable text. */
static void s_print_str(const char *s, size_t cap)
{
    putchar('"');
    for (size_t i = 0; i < cap && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* Prints the value of field f of row r. */
static void s_print_value(const s_field_t *f, const ledger_row_t *r)
{
    const uint8_t *p = (const uint8_t *)r + f->off;
    char buf[MONEY_TEXT_MAX];
    int64_t i64;
    uint64_t u64;
    uint32_t u32;
    switch (f->kind) {
    case F_STR:
        s_print_str((const char *)p, f->len);
        break;
    case F_U64:
        memcpy(&u64, p, sizeof u64);
        printf("%" PRIu64, u64);
        break;
    case F_U32:
        memcpy(&u32, p, sizeof u32);
        printf("%" PRIu32, u32);
        break;
    case F_I64:
        memcpy(&i64, p, sizeof i64);
        printf("%" PRId64, i64);
        break;
    case F_MONEY:
        memcpy(&i64, p, sizeof i64);
        money_format(i64, buf);
        printf("%s", buf);
        break;
    case F_BOOL:
        printf("%d", *(const bool *)(const void *)p ? 1 : 0);
        break;
    case F_BYTES:
        for (size_t i = 0; i < f->len; i++)
            printf("%02x", p[i]);
        break;
    }
}

/* Whether field f is the same in both rows (strings up to their NUL, nothing after it). */
static bool s_same(const s_field_t *f, const ledger_row_t *a, const ledger_row_t *b)
{
    const uint8_t *pa = (const uint8_t *)a + f->off, *pb = (const uint8_t *)b + f->off;
    if (f->kind == F_STR)
        return strncmp((const char *)pa, (const char *)pb, f->len) == 0;
    if (f->kind == F_BOOL)
        return *(const bool *)(const void *)pa == *(const bool *)(const void *)pb;
    return memcmp(pa, pb, f->len) == 0;
}

/* Compares two rows of the same seq, one line per differing field. */
static void s_compare(s_diff_t *d, const ledger_row_t *hub, const ledger_row_t *agent)
{
    for (size_t i = 0; i < S_NFIELDS; i++) {
        const s_field_t *f = &s_fields[i];
        if (s_same(f, hub, agent))
            continue;
        printf("seq %" PRIu64 ": %s hub=", hub->seq, f->name);
        s_print_value(f, hub);
        printf(" agent=");
        s_print_value(f, agent);
        printf("\n");
        d->diffs++;
    }
}

/* Feeds a row to one side's chain check and reports a fault. The walk then goes on from the
 * faulty row as it stands, so each break is reported once (a dropped row: one bad_seq, not one
 * line per later row) and a later, separate break is still seen. */
static void s_walk(s_diff_t *d, bool hub_side, const ledger_row_t *r)
{
    ledger_walk_t *w = hub_side ? &d->hub_walk : &d->agent_walk;
    ledger_fault_t f = ledger_walk_next(w, r);
    if (f == LEDGER_OK)
        return;
    printf("seq %" PRIu64 ": %s chain %s\n", r->seq, hub_side ? "hub" : "agent",
           ledger_fault_name(f));
    d->diffs++;
    ledger_walk_init(w, d->agent_id, r->seq, r->hash);
}

/* Reports a value of the agent's row that has the wrong type or size (counted as a
 * difference: the row cannot equal the hub's). */
static void s_unreadable(s_diff_t *d, int64_t seq, const char *field, const char *why)
{
    printf("seq %" PRId64 ": %s unreadable on agent (%s)\n", seq, field, why);
    d->diffs++;
}

/* Reads column i of the agent's current row into field f of r; a bad value is reported and
 * left zero. */
static void s_agent_col(s_diff_t *d, int i, const s_field_t *f, ledger_row_t *r, int64_t seq)
{
    sqlite3_stmt *st = d->astmt;
    uint8_t *p = (uint8_t *)r + f->off;
    int type = sqlite3_column_type(st, i);
    if (f->kind == F_STR) {
        const unsigned char *t = sqlite3_column_text(st, i);
        int n = sqlite3_column_bytes(st, i);
        if (type != SQLITE_TEXT || !t)
            s_unreadable(d, seq, f->name, "not text");
        else if ((size_t)n >= f->len || memchr(t, '\0', (size_t)n))
            s_unreadable(d, seq, f->name, "too long or holds a NUL");
        else
            memcpy(p, t, (size_t)n + 1);
        return;
    }
    if (f->kind == F_BYTES) {
        const void *b = sqlite3_column_blob(st, i);
        int n = sqlite3_column_bytes(st, i);
        if (type != SQLITE_BLOB || (size_t)n != f->len) {
            char why[48];
            snprintf(why, sizeof why, "not a blob of %zu bytes", f->len);
            s_unreadable(d, seq, f->name, why);
        } else {
            memcpy(p, b, f->len);
        }
        return;
    }
    if (type != SQLITE_INTEGER) {
        s_unreadable(d, seq, f->name, "not an integer");
        return;
    }
    int64_t v = sqlite3_column_int64(st, i);
    if (f->kind == F_U64) {
        uint64_t u = (uint64_t)v;
        memcpy(p, &u, sizeof u);
    } else if (f->kind == F_U32) {
        if (v < 0 || v > UINT32_MAX) {
            s_unreadable(d, seq, f->name, "out of range");
            return;
        }
        uint32_t u = (uint32_t)v;
        memcpy(p, &u, sizeof u);
    } else if (f->kind == F_BOOL) {
        if (v != 0 && v != 1) {
            s_unreadable(d, seq, f->name, "not 0 or 1");
            return;
        }
        *(bool *)(void *)p = v == 1;
    } else {
        memcpy(p, &v, sizeof v);
    }
}

/* Steps to the agent's next row (arow_ok false at the end). 0, or -EIO with a message. */
static int s_agent_next(s_diff_t *d)
{
    int rc = sqlite3_step(d->astmt);
    d->arow_ok = false;
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW) {
        fprintf(stderr, "ledger-diff: agent database: %s\n", sqlite3_errmsg(d->adb));
        return -EIO;
    }
    memset(&d->arow, 0, sizeof d->arow);
    int64_t seq = sqlite3_column_int64(d->astmt, 1); /* the primary key: always an integer */
    for (size_t i = 0; i < S_NFIELDS; i++)
        s_agent_col(d, (int)i, &s_fields[i], &d->arow, seq);
    d->arow_ok = true;
    return 0;
}

/* The hub's next row, fetching a page when needed; NULL at the end. *err set on a store error. */
static const ledger_row_t *s_hub_peek(s_diff_t *d, int *err)
{
    *err = 0;
    if (d->hub_i < d->hub_n)
        return &d->hub_rows[d->hub_i];
    if (d->hub_end)
        return NULL;
    free(d->hub_rows);
    d->hub_rows = NULL;
    d->hub_n = d->hub_i = 0;
    if (store_ledger_range(d->store, d->agent_id, d->hub_from, S_PAGE, &d->hub_rows,
                           &d->hub_n) != 0) {
        fprintf(stderr, "ledger-diff: hub store: %s\n", store_last_error(d->store));
        *err = -EIO;
        return NULL;
    }
    if (d->hub_n < S_PAGE)
        d->hub_end = true;
    if (d->hub_n == 0)
        return NULL;
    d->hub_from = d->hub_rows[d->hub_n - 1].seq + 1;
    return &d->hub_rows[0];
}

/* Finds the agent the database belongs to: meta.agent_id, else its lowest row's agent_id.
 * 0, or -ENOENT / -EIO with a message. */
static int s_agent_id(s_diff_t *d)
{
    static const char *const queries[] = {
        "SELECT value FROM meta WHERE key = 'agent_id'",
        "SELECT agent_id FROM ledger ORDER BY seq LIMIT 1",
    };
    for (size_t q = 0; q < 2; q++) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(d->adb, queries[q], -1, &st, NULL);
        if (rc != SQLITE_OK) {
            const char *msg = sqlite3_errmsg(d->adb);
            if (q == 0 && strstr(msg, "no such table"))
                continue; /* an agent database without meta: its rows tell */
            fprintf(stderr, "ledger-diff: agent database: %s\n", msg);
            return -EIO;
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_TEXT) {
            const char *t = (const char *)sqlite3_column_text(st, 0);
            size_t n = (size_t)sqlite3_column_bytes(st, 0);
            if (n == 0 || n > LEDGER_AGENT_ID_MAX || strlen(t) != n) {
                fprintf(stderr, "ledger-diff: agent database: the agent id is not 1-%d "
                                "characters\n", LEDGER_AGENT_ID_MAX);
                sqlite3_finalize(st);
                return -EIO;
            }
            memcpy(d->agent_id, t, n + 1);
            sqlite3_finalize(st);
            return 0;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            fprintf(stderr, "ledger-diff: agent database: %s\n", sqlite3_errmsg(d->adb));
            sqlite3_finalize(st);
            return -EIO;
        }
        sqlite3_finalize(st);
    }
    fprintf(stderr, "ledger-diff: agent database: no meta agent_id and no ledger rows: cannot "
                    "tell whose it is\n");
    return -ENOENT;
}

/* Opens the agent's database read-only and prepares its row query. 0 or -EIO. */
static int s_open_agent(s_diff_t *d, const char *path)
{
    if (sqlite3_open_v2(path, &d->adb, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "ledger-diff: cannot open %s: %s\n", path,
                d->adb ? sqlite3_errmsg(d->adb) : "out of memory");
        return -EIO;
    }
    sqlite3_busy_timeout(d->adb, 5000); /* agent-ledger may be committing */
    int rc = s_agent_id(d);
    if (rc != 0)
        return rc;
    if (sqlite3_prepare_v2(d->adb, s_agent_sql, -1, &d->astmt, NULL) != SQLITE_OK) {
        fprintf(stderr, "ledger-diff: %s: %s\n", path, sqlite3_errmsg(d->adb));
        return -EIO;
    }
    return 0;
}

/* Merges both sides by seq, comparing rows and walking both chains. 0 or -EIO. */
static int s_run(s_diff_t *d)
{
    ledger_walk_init(&d->hub_walk, d->agent_id, 0, NULL);
    ledger_walk_init(&d->agent_walk, d->agent_id, 0, NULL);
    d->hub_from = 1;
    int rc = s_agent_next(d);
    for (;;) {
        if (rc != 0)
            return rc;
        const ledger_row_t *h = s_hub_peek(d, &rc);
        if (rc != 0)
            return rc;
        const ledger_row_t *a = d->arow_ok ? &d->arow : NULL;
        if (!h && !a)
            return 0;
        d->rows++;
        if (h && (!a || h->seq < a->seq)) {
            printf("seq %" PRIu64 ": missing on agent\n", h->seq);
            d->diffs++;
            s_walk(d, true, h);
            d->hub_i++;
        } else if (!h || a->seq < h->seq) {
            printf("seq %" PRIu64 ": missing on hub\n", a->seq);
            d->diffs++;
            s_walk(d, false, a);
            rc = s_agent_next(d);
        } else {
            s_compare(d, h, a);
            s_walk(d, true, h);
            s_walk(d, false, a);
            d->hub_i++;
            rc = s_agent_next(d);
        }
    }
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--hub", "--agent", NULL};
    cfg_cli_t cli;
    char err[512];
    bus_log_set_process("ledger-diff");
    bus_log_level = LOG_LVL_WARN;
    if (cfg_cli_parse(&cli, argc, argv, 1, extra, err, sizeof err) != 0) {
        fprintf(stderr, "ledger-diff: %s\n", err);
        return 2;
    }
    if (cli.help || cli.version) {
        if (cli.help)
            s_usage(stdout);
        else
            printf("ledger-diff %s\n", RELAYHUB_VERSION);
        cfg_cli_free(&cli);
        return 0;
    }
    const char *hub = cfg_cli_opt(&cli, "--hub");
    const char *agent = cfg_cli_opt(&cli, "--agent");
    if (!hub)
        hub = cli.config;
    size_t words = 0;
    for (size_t i = 0; i < cli.n_args; i++) {
        if (strncmp(cli.args[i], "--", 2) == 0 && i + 1 < cli.n_args)
            i++;
        else
            words++;
    }
    if (!hub || !agent || words) {
        s_usage(stderr);
        cfg_cli_free(&cli);
        return 2;
    }
    int ret = 2;
    s_diff_t d;
    memset(&d, 0, sizeof d);
    hub_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    store_params_t sp;
    if (hub_config_load(&cfg, hub, cli.sets, cli.n_sets, err, sizeof err) != 0) {
        fprintf(stderr, "ledger-diff: %s\n", err);
        goto out;
    }
    if (hub_config_store_params(&cfg, &sp, err, sizeof err) != 0 ||
        store_open(&sp, &d.store, err, sizeof err) != 0) {
        fprintf(stderr, "ledger-diff: hub store: %s\n", err);
        goto out;
    }
    if (s_open_agent(&d, agent) != 0 || s_run(&d) != 0)
        goto out;
    printf("ledger-diff: %" PRIu64 " rows, %" PRIu64 " differences\n", d.rows, d.diffs);
    ret = d.diffs == 0 ? 0 : 1;
out:
    if (fflush(stdout) != 0 && ret != 2) {
        fprintf(stderr, "ledger-diff: cannot write the report\n");
        ret = 2;
    }
    free(d.hub_rows);
    sqlite3_finalize(d.astmt);
    sqlite3_close(d.adb);
    store_destroy(&d.store);
    hub_config_free(&cfg);
    cfg_cli_free(&cli);
    return ret;
}
