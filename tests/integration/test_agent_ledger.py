"""agent-ledger against a hand-driven `agent run`.

The test plays `agent run`: it binds the ZeroMQ ROUTER at the agent directory's
agent.ledger_ipc and starts agent-ledger with --config and --parent (its own pid). It sends
usage reports, price versions and ledger rows (hashed here exactly as lib/ledger.c does: the
"relayhub/ledger/v1\\0" domain, the row's fields in declaration order, big-endian fixed-width
integers, length-prefixed strings, SHA-256 over prev_hash and that) and checks every answer,
and the rows in the SQLite file read with Python's sqlite3: local acks before forwarded reports,
each verdict, nacks for gaps and conflicting re-sends, a row waiting for its usage record,
re-sends of unreported usage on a timer, after kill -9 and on billing.poke, the sync's
last_seq/last_hash, metrics, and a stop when the parent dies."""

import hashlib
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request

import zmq

from harness import (BUILD, envelope, find_events, free_port, run, run_tests, spawn, tmpdir,
                     unpack, wait_until)

LEDGER_EXE = os.path.join(BUILD, "agent", "agent-ledger")
AGENT_EXE = os.path.join(BUILD, "agent", "agent")
PIN = "sha256/" + "A" * 43 + "="
ZERO_HASH = bytes(32)

MODEL = "gpt-4o-mini"
PRICE_FROM = 1764115200000
PRICE = {"input": 2000000, "cached_input": 500000, "output": 8000000}  # micros per 1M tokens
FEE_PPM = 100000

S = {}  # state shared by the tests, which run in order


# ---- the ledger row, as lib/ledger.c hashes it --------------------------------------------

def canonical(r):
    def s16(text):
        b = text.encode()
        return struct.pack(">H", len(b)) + b
    return (b"relayhub/ledger/v1\x00" + s16(r["agent_id"]) + struct.pack(">Q", r["seq"]) +
            r["req_id"] + struct.pack(">I", r["attempt"]) + struct.pack(">q", r["user_id"]) +
            s16(r["model"]) +
            struct.pack(">qqq", r["input_tokens"], r["cached_tokens"], r["output_tokens"]) +
            struct.pack(">B", 1 if r["estimated"] else 0) +
            struct.pack(">qqqqqqq", r["cost"], r["fee"], r["credit"], r["hold"],
                        r["price_from"], r["fee_ppm"], r["created_ms"]))


def seal(r, prev):
    r["prev_hash"] = prev
    r["hash"] = hashlib.sha256(prev + canonical(r)).digest()
    return r


def price_of(inp, cached, out, price=PRICE, fee_ppm=FEE_PPM):
    """lib/money's rule: ceil of the exact sum, fee rounded down, credit the rest."""
    total = (inp - cached) * price["input"] + cached * price["cached_input"] + out * price["output"]
    cost = -(-total // 1000000)
    fee = cost * fee_ppm // 1000000
    return cost, fee, cost - fee


def row(seq, req_id, inp, cached, out, hold=100000, model=MODEL, attempt=1, amounts=None,
        prev=None):
    cost, fee, credit = amounts or price_of(inp, cached, out)
    r = {"agent_id": S["agent_id"], "seq": seq, "req_id": req_id, "attempt": attempt,
         "user_id": 42, "model": model, "input_tokens": inp, "cached_tokens": cached,
         "output_tokens": out, "estimated": False, "cost": cost, "fee": fee, "credit": credit,
         "hold": hold, "price_from": PRICE_FROM, "fee_ppm": FEE_PPM,
         "created_ms": 1795000000000 + seq}
    return seal(r, S["hashes"].get(seq - 1, ZERO_HASH) if prev is None else prev)


def rid(n):
    return bytes([n]) * 16


# ---- playing `agent run` ---------------------------------------------------------------------

class Link:
    """The ROUTER agent-ledger connects to; messages not yet asked for wait in a backlog."""

    def __init__(self, endpoint):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted agent-ledger takes over
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.backlog = []

    def send(self, type_, payload=None, req_id=None):
        self.sock.send_multipart([b"ledger", envelope(type_, payload, req_id)])

    def _recv(self, timeout):
        if not self.sock.poll(int(timeout * 1000)):
            return None
        ident, data = self.sock.recv_multipart()
        assert ident == b"ledger", ident
        return unpack(data)

    def next(self, timeout=5):
        """The next message, in order."""
        if self.backlog:
            return self.backlog.pop(0)
        env = self._recv(timeout)
        assert env is not None, "no message from agent-ledger within %ss" % timeout
        return env

    def expect(self, type_, timeout=5, req_id=None, **fields):
        """The first message of this type (and req_id, and payload fields); others wait."""
        def match(e):
            return (e["type"] == type_ and (req_id is None or e.get("req_id") == req_id) and
                    all(e["payload"].get(k) == v for k, v in fields.items()))
        for i, e in enumerate(self.backlog):
            if match(e):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            e = self._recv(max(left, 0)) if left > 0 else None
            if e is None:
                raise AssertionError("no %s %s %s within %ss; got meanwhile: %r"
                                     % (type_, req_id.hex() if req_id else "", fields, timeout,
                                        [(b["type"], b["payload"]) for b in self.backlog]))
            if match(e):
                return e
            self.backlog.append(e)

    def quiet(self, seconds, type_=None):
        """Messages (of type_) that arrive within seconds, backlog included."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            e = self._recv(left)
            if e is not None:
                self.backlog.append(e)
        got = [e for e in self.backlog if type_ is None or e["type"] == type_]
        self.backlog = [e for e in self.backlog if not (type_ is None or e["type"] == type_)]
        return got


def start_ledger(sets=(), parent=None):
    args = [LEDGER_EXE, "--config", S["conf"], "--parent", str(parent or os.getpid())]
    for s in list(S["sets"]) + list(sets):
        args += ["--set", s]
    S["proc"] = spawn(args, S["log"])
    return S["proc"]


def db_rows(sql, args=()):
    con = sqlite3.connect(S["db"], timeout=5)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def report(req_id, attempt=1, inp=1000, cached=200, out=500, complete=True, estimated=False):
    S["link"].send("usage.report", {
        "source": "agent", "attempt": attempt, "model": MODEL, "status": 200,
        "delivered": True, "complete": complete, "estimated": estimated,
        "input_tokens": inp, "cached_tokens": cached, "output_tokens": out}, req_id)


def send_row(r, in_flight=False):
    p = {k: v for k, v in r.items() if k != "req_id"}
    if in_flight:
        p["in_flight"] = True
    S["link"].send("ledger.tx", p, r["req_id"])


def ack_of(seq, timeout=5):
    """ledger.ack's payload for seq, without its agent_id (checked here: ours)."""
    p = dict(S["link"].expect("ledger.ack", timeout=timeout, seq=seq)["payload"])
    assert p.pop("agent_id", S["agent_id"]) == S["agent_id"], p
    return p


def wrote(r, verdict):
    S["hashes"][r["seq"]] = r["hash"]
    S["verdicts"][r["seq"]] = verdict


# ---- the tests ------------------------------------------------------------------------------

def test_setup_and_start_sync():
    root = tmpdir("relayhub-ledger-")
    d = os.path.join(root, "agent")
    out = run([AGENT_EXE, "init", "--dir", d, "--hub", "wss://127.0.0.1:9/tunnel/connect",
               "--pin", PIN]).stdout
    S["agent_id"] = [l.split(": ")[1] for l in out.splitlines() if l.startswith("agent_id: ")][0]
    S["dir"] = d
    S["conf"] = os.path.join(d, "agent.conf")
    S["db"] = os.path.join(d, "agent-ledger.db")
    S["log"] = os.path.join(d, "agent-ledger.log")
    S["metrics_port"] = free_port()
    S["sets"] = ["agent.ledger_resend=60s", "agent.ledger_wait=1s", "log.level=debug",
                 "agent.ledger_metrics_listen=127.0.0.1:%d" % S["metrics_port"]]
    S["hashes"] = {0: ZERO_HASH}
    S["verdicts"] = {}
    S["link"] = Link("ipc://" + os.path.join(d, "ledger.ipc"))
    start_ledger()
    sync = S["link"].next()
    assert sync["type"] == "ledger.sync", sync
    assert sync["payload"].get("last_seq", 0) == 0, sync
    assert sync["payload"]["last_hash"] == ZERO_HASH, sync
    assert os.stat(S["db"]).st_mode & 0o777 == 0o600
    assert db_rows("SELECT value FROM meta WHERE key = 'agent_id'") == [(S["agent_id"],)]


def test_usage_report_local_ack_then_forward():
    link = S["link"]
    report(rid(1))
    ack = link.next()
    assert ack["type"] == "usage.ack" and ack["req_id"] == rid(1), ack
    assert ack["payload"] == {"source": "ledger", "attempt": 1}, ack
    fwd = link.next()
    assert fwd["type"] == "usage.report" and fwd["req_id"] == rid(1), fwd
    p = fwd["payload"]
    assert p["source"] == "agent" and p["attempt"] == 1 and p["model"] == MODEL, p
    assert (p["input_tokens"], p["cached_tokens"], p["output_tokens"]) == (1000, 200, 500), p
    assert p["complete"] is True and p["delivered"] is True and p.get("status") == 200, p
    rows = db_rows("SELECT attempt, model, complete, estimated, input_tokens, cached_tokens, "
                   "output_tokens, reported FROM usage WHERE req_id = ?", (rid(1),))
    assert rows == [(1, MODEL, 1, 0, 1000, 200, 500, 0)], rows
    # A re-send from agent run: acknowledged again, stored once, the first figures stand.
    report(rid(1), out=999)
    assert link.next()["type"] == "usage.ack"
    again = link.next()
    assert again["type"] == "usage.report" and again["payload"]["output_tokens"] == 500, again
    assert db_rows("SELECT count(*) FROM usage") == [(1,)]


def test_hub_ack_marks_reported():
    link = S["link"]
    link.send("usage.ack", {"source": "agent", "attempt": 1}, rid(1))
    wait_until(lambda: db_rows("SELECT reported FROM usage WHERE req_id = ?", (rid(1),))
               == [(1,)], what="reported = 1")
    # A reported record is acknowledged locally but not sent to the hub again.
    report(rid(1))
    assert link.next()["type"] == "usage.ack"
    assert link.quiet(0.3, "usage.report") == []


def test_ledger_rows_and_verdicts():
    link = S["link"]
    link.send("price.table", dict(model=MODEL, effective_from=PRICE_FROM, **PRICE))
    # 1: the agent's own figures → verified.
    r1 = row(1, rid(1), 1000, 200, 500)
    send_row(r1)
    assert ack_of(1) == {"seq": 1, "verdict": "verified"}
    wrote(r1, "verified")
    # 2: no local record, not in flight, within the hold → hub-attested.
    r2 = row(2, rid(2), 300, 0, 40, hold=50000)
    send_row(r2)
    assert ack_of(2)["verdict"] == "hub-attested"
    wrote(r2, "hub-attested")
    # 3: an interrupted stream the hub saw less of → accepted, the difference unbilled.
    report(rid(3), inp=1000, cached=200, out=700, complete=False)
    link.expect("usage.ack", req_id=rid(3))
    r3 = row(3, rid(3), 1000, 200, 500)
    send_row(r3)
    assert ack_of(3)["verdict"] == "accepted"
    wrote(r3, "accepted")
    # 4: a cost that is not what the price gives → disputed, but written and acknowledged.
    report(rid(4))
    link.expect("usage.ack", req_id=rid(4))
    c, f, cr = price_of(1000, 200, 500)
    r4 = row(4, rid(4), 1000, 200, 500, amounts=(c + 10, f, cr + 10))
    send_row(r4)
    assert ack_of(4)["verdict"] == "disputed"
    wrote(r4, "disputed")
    # 5: a price version the agent was never sent → disputed.
    r5 = row(5, rid(5), 10, 0, 1, hold=50000)
    r5["price_from"] = PRICE_FROM + 1
    seal(r5, S["hashes"][4])
    send_row(r5)
    assert ack_of(5)["verdict"] == "disputed"
    wrote(r5, "disputed")
    rows = db_rows("SELECT seq, agent_id, req_id, attempt, user_id, model, input_tokens, "
                   "cached_tokens, output_tokens, estimated, cost, fee, credit, hold, price_from, "
                   "fee_ppm, created_ms, prev_hash, hash, verdict, unbilled, reason FROM ledger "
                   "ORDER BY seq")
    assert [x[0] for x in rows] == [1, 2, 3, 4, 5], rows
    for x, r in zip(rows, [r1, r2, r3, r4, r5]):
        want = (r["seq"], r["agent_id"], r["req_id"], r["attempt"], r["user_id"], r["model"],
                r["input_tokens"], r["cached_tokens"], r["output_tokens"], 0, r["cost"],
                r["fee"], r["credit"], r["hold"], r["price_from"], r["fee_ppm"],
                r["created_ms"], r["prev_hash"], r["hash"])
        assert tuple(x[:19]) == want, (x, want)
    by_seq = {x[0]: x for x in rows}
    assert by_seq[3][20] == price_of(1000, 200, 700)[0] - r3["cost"] == 1600, by_seq[3]
    assert by_seq[4][21].startswith("bad_amounts: "), by_seq[4]
    assert by_seq[5][21].startswith("unknown_price: "), by_seq[5]
    assert all(by_seq[s][21] == "" and by_seq[s][20] == 0 for s in (1, 2)), rows
    # Disputes are logged at warn with the request id.
    ev = wait_until(lambda: find_events(S["log"], "ledger_disputed"), what="dispute logged")
    assert {e["req_id"] for e in ev} == {rid(4).hex(), rid(5).hex()}, ev
    assert all(e["level"] == "warn" for e in ev), ev


def test_gap_and_resends():
    link = S["link"]
    # A gap: seq 7 while 6 is next.
    r7 = row(7, rid(7), 10, 0, 1, prev=b"\x01" * 32)
    send_row(r7)
    n = link.expect("ledger.nack", seq=7)["payload"]
    assert n["last_seq"] == 5 and "gap" in n["reason"], n
    # A re-send of a stored row: the stored verdict again.
    send_row(row(3, rid(3), 1000, 200, 500, prev=S["hashes"][2]))
    assert ack_of(3) == {"seq": 3, "verdict": "accepted"}
    # A re-send that differs from the stored row: nack, nothing changes.
    other = row(3, rid(3), 1000, 200, 400, prev=S["hashes"][2])
    send_row(other)
    n = link.expect("ledger.nack", seq=3)["payload"]
    assert n["last_seq"] == 5 and "another hash" in n["reason"], n
    assert db_rows("SELECT hash, output_tokens FROM ledger WHERE seq = 3") == [
        (S["hashes"][3], 500)]


def test_row_waits_for_its_usage_record():
    link = S["link"]
    # 6 is in flight in agent run: no record yet, so 6 and 7 behind it wait.
    r6 = row(6, rid(6), 2000, 0, 100)
    send_row(r6, in_flight=True)
    r7 = row(7, rid(7), 20, 0, 2, hold=50000, prev=r6["hash"])
    send_row(r7)
    assert link.quiet(0.4, "ledger.ack") == []
    assert db_rows("SELECT count(*) FROM ledger") == [(5,)]
    # The record arrives: its local ack, its report, then 6 verified and 7 in order.
    link.backlog.clear()  # earlier forwarded reports
    report(rid(6), inp=2000, cached=0, out=100)
    seen = [link.next() for _ in range(4)]
    assert [e["type"] for e in seen] == ["usage.ack", "usage.report", "ledger.ack",
                                         "ledger.ack"], seen
    assert (seen[2]["payload"]["seq"], seen[2]["payload"]["verdict"]) == (6, "verified"), seen
    assert (seen[3]["payload"]["seq"], seen[3]["payload"]["verdict"]) == (7, "hub-attested"), seen
    wrote(r6, "verified")
    wrote(r7, "hub-attested")
    # 8 is in flight and its record never comes: written without it after agent.ledger_wait.
    r8 = row(8, rid(8), 30, 0, 3, hold=50000)
    t0 = time.monotonic()
    send_row(r8, in_flight=True)
    assert ack_of(8, timeout=5)["verdict"] == "hub-attested"
    waited = time.monotonic() - t0
    assert waited >= 0.9, waited
    wrote(r8, "hub-attested")


def test_kill9_restart_resends_and_syncs():
    link = S["link"]
    report(rid(9), out=10, complete=False)
    link.expect("usage.ack", req_id=rid(9))
    link.expect("usage.report", req_id=rid(9))
    S["proc"].send_signal(signal.SIGKILL)
    S["proc"].wait(timeout=5)
    link.quiet(0.2)
    link.backlog.clear()
    # Restarted with a short resend interval: sync first, then every unreported record.
    start_ledger(sets=["agent.ledger_resend=300ms"])
    sync = link.expect("ledger.sync")["payload"]
    assert sync["last_seq"] == 8 and sync["last_hash"] == S["hashes"][8], sync
    unreported = {rid(n) for n in (3, 4, 6, 9)}
    got = set()
    while got != unreported:
        got.add(link.expect("usage.report")["req_id"])
    assert got == unreported
    # Nothing was lost: rows, verdicts and records are all there.
    rows = db_rows("SELECT seq, hash, verdict FROM ledger ORDER BY seq")
    assert [(s, h) for s, h, _ in rows] == [(s, S["hashes"][s]) for s in range(1, 9)], rows
    assert {s: v for s, _, v in rows} == S["verdicts"], rows
    assert db_rows("SELECT count(*), sum(reported = 0) FROM usage") == [(5, 4)]
    # The timer re-sends them again until the hub acknowledges.
    link.backlog.clear()
    again = link.quiet(0.8, "usage.report")
    assert {e["req_id"] for e in again} >= unreported, again
    for n in (3, 4, 6):
        link.send("usage.ack", {"source": "agent", "attempt": 1}, rid(n))
    wait_until(lambda: db_rows("SELECT count(*) FROM usage WHERE reported = 0") == [(1,)],
               what="three records reported")
    link.quiet(0.4)
    link.backlog.clear()
    later = link.quiet(0.8, "usage.report")
    assert later and {e["req_id"] for e in later} == {rid(9)}, later
    # The chain goes on after the restart.
    r9 = row(9, rid(9), 1000, 200, 5)
    send_row(r9)
    assert ack_of(9)["verdict"] == "accepted"
    wrote(r9, "accepted")


def test_poke_online_syncs_and_resends():
    link = S["link"]
    link.quiet(0.3)
    link.backlog.clear()
    link.send("billing.poke", {"what": "online"})
    sync = link.expect("ledger.sync")["payload"]
    assert sync["last_seq"] == 9 and sync["last_hash"] == S["hashes"][9], sync
    link.expect("usage.report", req_id=rid(9), timeout=1)
    # Another poke is not a sync.
    link.quiet(0.3)
    link.backlog.clear()
    link.send("billing.poke", {"what": "topup"})
    assert link.quiet(0.3, "ledger.sync") == []


def test_metrics():
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % S["metrics_port"],
                                  timeout=5).read().decode()
    def val(family, label=""):
        # lines look like: family{process="agent-ledger",verdict="verified"} 2
        for line in body.splitlines():
            if line.startswith(family + "{") and label in line.split("}")[0]:
                return int(line.rsplit(" ", 1)[1])
        raise AssertionError("no %s %s in\n%s" % (family, label, body))
    rows = "relayhub_agent_ledger_rows"
    assert val(rows, 'verdict="verified"') == 2
    assert val(rows, 'verdict="accepted"') == 2
    assert val(rows, 'verdict="hub-attested"') == 3
    assert val(rows, 'verdict="disputed"') == 2
    assert val("relayhub_agent_ledger_unbilled_micros") == db_rows(
        "SELECT sum(unbilled) FROM ledger")[0][0] == 1640
    assert val("relayhub_agent_ledger_usage_records") == 5
    assert val("relayhub_agent_ledger_usage_unreported") == 1
    assert val("relayhub_agent_ledger_syncs_total") >= 2


def test_sigterm_stops_cleanly():
    p = S["proc"]
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    assert find_events(S["log"], "stopped")


def test_dies_with_its_parent():
    # A parent that starts agent-ledger and then sleeps; killing it must take the child along.
    code = ("import subprocess, sys, os, time\n"
            "p = subprocess.Popen(sys.argv[1:] + ['--parent', str(os.getpid())])\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(600)\n")
    args = [LEDGER_EXE, "--config", S["conf"]]
    for s in S["sets"]:
        args += ["--set", s]
    with open(S["log"], "ab") as log:  # the child inherits it
        parent = subprocess.Popen([sys.executable, "-c", code] + args, stdout=subprocess.PIPE,
                                  stderr=log, text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        S["link"].expect("ledger.sync", timeout=10)
        parent.kill()
        parent.wait(timeout=5)

        def gone():
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            # A zombie re-parented to init (or to us) counts as gone.
            with open("/proc/%d/stat" % child) as f:
                return f.read().split(")")[1].split()[0] == "Z"
        wait_until(gone, timeout=10, what="agent-ledger gone with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
    # A --parent that is not the real parent is refused at once.
    r = subprocess.run(args + ["--parent", "1"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "is gone" in r.stderr, r


if __name__ == "__main__":
    run_tests(globals())
