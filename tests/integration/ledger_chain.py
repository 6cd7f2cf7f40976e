"""Ledger rows for the integration tests, hashed here in Python from the layout documented in
lib/ledger.c (not by calling it), so a test that makes the C tools accept these rows checks the
encoding too; and SQL to put them in a hub database (SQLite or MySQL: X'..' literals work in
both) or in an agent's agent-ledger.db.

A row is a dict with the fields of ledger_row_t (hold as "hold").
"""

import hashlib
import sqlite3
import struct

DOMAIN = b"relayhub/ledger/v1\x00"
FIELDS = ("agent_id", "seq", "req_id", "attempt", "user_id", "model", "input_tokens",
          "cached_tokens", "output_tokens", "estimated", "cost", "fee", "credit", "hold",
          "price_from", "fee_ppm", "created_ms", "prev_hash", "hash")


def canonical(r):
    """canonical(row): the domain tag, then every field but prev_hash/hash, big-endian."""
    def s(text):
        b = text.encode()
        return struct.pack(">H", len(b)) + b
    return (DOMAIN + s(r["agent_id"]) + struct.pack(">Q", r["seq"]) + bytes(r["req_id"]) +
            struct.pack(">I", r["attempt"]) + struct.pack(">q", r["user_id"]) + s(r["model"]) +
            struct.pack(">qqq", r["input_tokens"], r["cached_tokens"], r["output_tokens"]) +
            bytes([1 if r["estimated"] else 0]) +
            struct.pack(">qqqqqqq", r["cost"], r["fee"], r["credit"], r["hold"],
                        r["price_from"], r["fee_ppm"], r["created_ms"]))


def seal(r, prev):
    """Sets prev_hash (None: genesis zeros) and hash = SHA-256(prev_hash || canonical)."""
    r["prev_hash"] = bytes(prev) if prev else bytes(32)
    r["hash"] = hashlib.sha256(r["prev_hash"] + canonical(r)).digest()
    return r


def row(agent_id, seq, prev, **over):
    """A plausible sealed row seq of agent_id after prev; keyword arguments override fields
    (then it is sealed with them)."""
    cost = 1000 + 37 * seq
    fee = cost // 10
    r = {"agent_id": agent_id, "seq": seq,
         "req_id": hashlib.sha256(b"req-%s-%d" % (agent_id.encode(), seq)).digest()[:16],
         "attempt": 1 + seq % 2, "user_id": 1 + seq % 3,
         "model": "gpt-4o-mini" if seq % 2 else "gpt-4o",
         "input_tokens": 120 + seq, "cached_tokens": seq % 40, "output_tokens": 30 + seq % 90,
         "estimated": seq % 7 == 0, "cost": cost, "fee": fee, "credit": cost - fee,
         "hold": 50000, "price_from": 1764115200000, "fee_ppm": 100000,
         "created_ms": 1795000000000 + 1000 * seq}
    r.update(over)
    return seal(r, prev)


def chain(agent_id, n, first=1, prev=None):
    """n sealed rows from seq first, chained after prev."""
    out = []
    for seq in range(first, first + n):
        r = row(agent_id, seq, prev)
        out.append(r)
        prev = r["hash"]
    return out


def _lit(v):
    if isinstance(v, (bytes, bytearray)):
        return "X'%s'" % bytes(v).hex()
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return "'%s'" % str(v).replace("'", "''")


def hub_insert_sql(rows):
    """SQL (SQLite and MySQL alike) that puts rows in the hub's ledger table and sets each
    agent's account to its last row, as hub-billing would."""
    cols = [c if c != "hold" else "hold_amount" for c in FIELDS]
    stmts = []
    for r in rows:
        stmts.append("INSERT INTO ledger (%s) VALUES (%s);"
                     % (", ".join(cols), ", ".join(_lit(r[c]) for c in FIELDS)))
    last = {}
    credit = {}
    for r in rows:
        last[r["agent_id"]] = r
        credit[r["agent_id"]] = credit.get(r["agent_id"], 0) + r["credit"]
    for aid, r in last.items():
        stmts.append("DELETE FROM agent_accounts WHERE agent_id = %s;" % _lit(aid))
        stmts.append("INSERT INTO agent_accounts (agent_id, credit, last_seq, last_hash, "
                     "acked_seq) VALUES (%s, %d, %d, %s, 0);"
                     % (_lit(aid), credit[aid], r["seq"], _lit(r["hash"])))
    return "\n".join(stmts)


def hub_sqlite_exec(db_path, sql):
    """Runs SQL on a hub's SQLite database (hub-billing would be the writer in production)."""
    con = sqlite3.connect(db_path, timeout=10)
    try:
        con.executescript("BEGIN;\n" + sql + "\nCOMMIT;")
    finally:
        con.close()


AGENT_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ledger (
    seq INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, req_id BLOB NOT NULL,
    attempt INTEGER NOT NULL, user_id INTEGER NOT NULL, model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL, cost INTEGER NOT NULL,
    fee INTEGER NOT NULL, credit INTEGER NOT NULL, hold INTEGER NOT NULL,
    price_from INTEGER NOT NULL, fee_ppm INTEGER NOT NULL, created_ms INTEGER NOT NULL,
    prev_hash BLOB NOT NULL, hash BLOB NOT NULL, verdict TEXT NOT NULL,
    unbilled INTEGER NOT NULL DEFAULT 0);
"""


def agent_db(path, rows, agent_id=None, meta=True):
    """Creates an agent's agent-ledger.db with these rows (verdict "verified"); meta.agent_id is
    agent_id (default: the first row's) unless meta is False (no meta table at all)."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        schema = AGENT_SCHEMA if meta else AGENT_SCHEMA.split(";", 1)[1]
        con.executescript(schema)
        aid = agent_id or (rows[0]["agent_id"] if rows else None)
        if meta and aid:
            con.execute("INSERT INTO meta (key, value) VALUES ('agent_id', ?)", (aid,))
        for r in rows:
            con.execute("INSERT INTO ledger (%s, verdict) VALUES (%s, 'verified')"
                        % (", ".join(FIELDS), ", ".join("?" * len(FIELDS))),
                        [int(r[c]) if isinstance(r[c], bool) else r[c] for c in FIELDS])
        con.commit()
    finally:
        con.close()
    return path


def agent_exec(path, sql, params=()):
    """Changes an agent database (a test playing a tampering or a lost row)."""
    con = sqlite3.connect(path)
    try:
        con.execute(sql, params)
        con.commit()
    finally:
        con.close()
