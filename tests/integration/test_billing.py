"""hub-billing alone, on a hub directory made by `hubctl init`: Python plays the gateway (a
DEALER on billing_router) and hub-tunnel (a ROUTER bound at tunnel_router, a PUB at
tunnel_presence announcing a fake agent). Holds, usage reports, settlement, the hash chain of
ledger rows and their delivery (sync, resend, nack), kill -9 and restart. On SQLite, and on
MariaDB when tests/with-servers provides one."""

import hashlib
import http.client
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.parse

import zmq

import harness
from harness import Hub, envelope, free_port, run_tests, spawn, unpack, wait_until

BILLING = os.path.join(harness.BUILD, "services", "billing", "hub-billing")
AGENT = "agent-b1" + secrets.token_hex(4)  # the fake agent's id ([A-Za-z0-9_-])
MODEL = "gpt-bill"
ZERO = bytes(32)

# ---- the hash chain, as lib/ledger.c computes it ---------------------------------------------


def _i64(v):
    return (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


def canonical(tx, req_id):
    """canonical(row) of lib/ledger.c from a ledger.tx payload and its envelope's req_id."""
    aid = tx["agent_id"].encode()
    model = tx["model"].encode()
    b = b"relayhub/ledger/v1\x00"
    b += len(aid).to_bytes(2, "big") + aid
    b += tx["seq"].to_bytes(8, "big") + req_id + tx["attempt"].to_bytes(4, "big")
    b += _i64(tx.get("user_id", 0))
    b += len(model).to_bytes(2, "big") + model
    for k in ("input_tokens", "cached_tokens", "output_tokens"):
        b += _i64(tx.get(k, 0))
    b += bytes([1 if tx.get("estimated") else 0])
    for k in ("cost", "fee", "credit", "hold", "price_from", "fee_ppm", "created_ms"):
        b += _i64(tx.get(k, 0))
    return b


def row_hash(tx, req_id):
    return hashlib.sha256(tx["prev_hash"] + canonical(tx, req_id)).digest()


# ---- the process and its fake peers ----------------------------------------------------------


class Billing:
    """A hub directory, hub-billing on it, a fake gateway and a fake tunnel."""

    def __init__(self, store="sqlite", mysql_url=None, extra=()):
        self.metrics_port = free_port()
        self.hub = Hub(store=store, mysql_url=mysql_url,
                       sets=["billing.metrics_listen=127.0.0.1:%d" % self.metrics_port,
                             "billing.unpriced=refuse"])
        self.dir = self.hub.dir
        self.log = os.path.join(self.dir, "billing.log")
        self.extra = list(extra)
        self.proc = None
        self.ctx = zmq.Context()
        self.tunnel = self.ctx.socket(zmq.ROUTER)
        self.tunnel.setsockopt(zmq.LINGER, 0)
        # as hub-tunnel: a restarted hub-billing (same routing id) takes over at once
        self.tunnel.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.tunnel.bind("ipc://" + os.path.join(self.dir, "tunnel.ipc"))
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind("ipc://" + os.path.join(self.dir, "presence.ipc"))
        self.gw = self.gateway("gw-test-1")
        self.from_billing = []  # envelopes billing sent to the tunnel, in order
        self.up = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._presence = threading.Thread(target=self._publish, daemon=True)
        self._presence.start()

    def gateway(self, ident):
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, ident.encode())
        s.connect("ipc://" + os.path.join(self.dir, "billing.ipc"))
        return s

    def _publish(self):
        """Presence "up" for every agent in self.up, every 200 ms (hub-tunnel does every 2 s)."""
        while not self._stop.wait(0.2):
            with self._lock:
                ids = list(self.up)
            for a in ids:
                self.pub.send(envelope("presence", {"agent_id": a, "state": "up",
                                                    "tunnel": "fake-tunnel"}))

    def start(self, extra=()):
        self.proc = spawn([BILLING, "--config", self.hub.conf, "--set", "log.level=debug"] +
                          self.extra + list(extra), self.log)
        wait_until(lambda: self.metrics() is not None, what="hub-billing metrics")
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=10)
        return None

    def close(self):
        self._stop.set()
        self._presence.join()
        self.kill(signal.SIGTERM)
        self.ctx.destroy(linger=0)

    def hubctl(self, *args, check=True):
        return self.hub.hubctl(*args, check=check)

    def metrics(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
            c.close()
            return text
        except OSError:
            return None

    def metric(self, name, labels=""):
        for line in (self.metrics() or "").splitlines():
            if line.startswith(name + "{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    # -- gateway side --

    def hold(self, req_id, user_id, body_bytes=100, max_tokens=100, model=MODEL, sock=None):
        (sock or self.gw).send(envelope("hold.req", {
            "user_id": user_id, "model": model, "body_bytes": body_bytes,
            "max_tokens": max_tokens}, req_id=req_id))

    def gw_recv(self, sock=None, timeout=5.0, want=None):
        """The next envelope a gateway socket gets (of type want, skipping others)."""
        sock = sock or self.gw
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise AssertionError("no %s from hub-billing within %.1fs" % (want, timeout))
            env = unpack(sock.recv())
            if want is None or env["type"] == want:
                return env

    def hold_reply(self, req_id, user_id, **kw):
        self.hold(req_id, user_id, **kw)
        env = self.gw_recv(want="hold.reply")
        assert env["req_id"] == req_id, env
        return env["payload"]

    def gw_report(self, req_id, user_id, attempt=1, delivered=True, input_tokens=0,
                  output_tokens=0, cached_tokens=0, agent_id=None, model=MODEL):
        self.gw.send(envelope("usage.report", {
            "source": "gateway", "attempt": attempt, "agent_id": agent_id or AGENT,
            "user_id": user_id, "model": model, "status": 200, "delivered": delivered,
            "complete": True, "input_tokens": input_tokens, "cached_tokens": cached_tokens,
            "output_tokens": output_tokens}, req_id=req_id))

    # -- tunnel side --

    def set_up(self, agent=AGENT):
        with self._lock:
            self.up.add(agent)

    def set_down(self, agent=AGENT):
        with self._lock:
            self.up.discard(agent)
        self.pub.send(envelope("presence", {"agent_id": agent, "state": "down"}))

    def to_billing(self, type_, payload, req_id=None):
        """What hub-tunnel forwards from an agent: to the DEALER with routing id "billing"."""
        self.tunnel.send_multipart([b"billing", envelope(type_, payload, req_id=req_id)])

    def pump(self, timeout=0.05):
        """Reads whatever billing sent to the tunnel into from_billing."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0, deadline - time.monotonic())
            if not self.tunnel.poll(int(left * 1000)):
                return
            # "billing", or the renamed pipe of a killed predecessor being drained
            _ident, data = self.tunnel.recv_multipart()
            self.from_billing.append(unpack(data))

    def tunnel_wait(self, pred, timeout=5.0, what="a message from hub-billing"):
        """Waits until pred(list of envelopes received since the call) is true; returns them."""
        start = len(self.from_billing)

        def check():
            self.pump()
            got = self.from_billing[start:]
            return got if pred(got) else None
        return wait_until(check, timeout=timeout, interval=0.01, what=what)


def rid():
    return secrets.token_bytes(16)


def txs(envs, seq=None):
    return [e for e in envs if e["type"] == "ledger.tx" and
            (seq is None or e["payload"]["seq"] == seq)]


def balance(b, name):
    """(balance, held) of a user from hubctl, in micro-units."""
    out = b.hubctl("balance", name).stdout

    def field(name):
        m = re.search(name + r"\D*?(-?\d+)\.(\d{6})", out)
        assert m, out
        v = int(m.group(1)) * 1000000
        return v - int(m.group(2)) if m.group(1).startswith("-") else v + int(m.group(2))
    return field("balance"), field("held")


def user(b, name, topup=None):
    """Adds a user (and a top-up); returns its id."""
    out = b.hubctl("user", "add", name).stdout
    uid = int(re.search(r"user_id: (\d+)", out).group(1))
    if topup:
        out = b.hubctl("user", "topup", name, topup).stdout
        assert "balance" in out, out  # applied by hub-billing, not merely queued
    return uid


# ---- the scenarios (run on each backend) -----------------------------------------------------

def scenario_holds(b):
    """Granted, 402 when short, 503 unpriced; a re-sent hold.req gets the same answer."""
    uid = user(b, "alice", "1")  # 1.000000
    r = rid()
    rep = b.hold_reply(r, uid, body_bytes=1000, max_tokens=500)
    assert rep.get("ok") is True and rep["amount"] == 1000 * 2 + 500 * 8, rep
    again = b.hold_reply(r, uid, body_bytes=1000, max_tokens=500)
    assert again.get("ok") is True, again
    assert balance(b, "alice") == (1000000, 6000)  # held once
    # max_tokens 0: billing.default_max_tokens (4096) bounds the output
    rep = b.hold_reply(rid(), uid, body_bytes=10, max_tokens=0)
    assert rep.get("ok") is True and rep["amount"] == 10 * 2 + 4096 * 8, rep
    short = rid()
    rep = b.hold_reply(short, uid, body_bytes=1000, max_tokens=200000)
    assert not rep.get("ok") and rep["status"] == 402, rep
    assert rep["code"] == "insufficient_quota", rep
    avail = 1000000 - 6000 - (20 + 4096 * 8)
    assert rep["message"] == ("insufficient balance: this request may cost up to 1.602000, "
                              "available %d.%06d" % (avail // 1000000, avail % 1000000)), rep
    assert not b.hold_reply(short, uid, body_bytes=1000, max_tokens=1).get("ok")  # same answer
    rep = b.hold_reply(rid(), uid, model="no-such-model")
    assert not rep.get("ok") and rep["status"] == 503, rep
    assert rep["code"] == "model_not_priced" and "no-such-model" in rep["message"], rep
    assert harness.has_event(b.log, "hold_refused", req_id=short.hex())
    assert b.metric("relayhub_billing_holds_total", 'result="granted"') >= 3
    assert b.metric("relayhub_billing_holds_total", 'result="insufficient"') >= 2
    assert b.metric("relayhub_billing_holds_total", 'result="unpriced"') >= 1


def scenario_concurrent_holds(b):
    """20 holds at once from 20 gateways against a balance for 5: exactly 5 are granted."""
    uid = user(b, "bob", "0.005")  # 5000 micro-units; each hold is 100*2 + 100*8 = 1000
    socks = [b.gateway("gw-race-%d" % i) for i in range(20)]
    time.sleep(0.2)  # let every DEALER connect
    for s in socks:
        b.hold(rid(), uid, sock=s)
    oks = 0
    for s in socks:
        rep = b.gw_recv(sock=s, want="hold.reply")["payload"]
        oks += 1 if rep.get("ok") else 0
        if not rep.get("ok"):
            assert rep["status"] == 402, rep
        s.close()
    assert oks == 5, oks
    assert balance(b, "bob") == (5000, 5000)


def scenario_settle_and_chain(b):
    """A gateway report settles: usage.ack, a ledger.tx after its price.table, a chain that
    hashes as lib/ledger does; a repeated report changes nothing."""
    b.set_up()
    uid = user(b, "carol", "10")
    before = balance(b, "carol")[0]
    rows = []
    for i in range(3):
        r = rid()
        assert b.hold_reply(r, uid, body_bytes=500, max_tokens=300).get("ok")
        b.gw_report(r, uid, input_tokens=120 + i, cached_tokens=20, output_tokens=40)
        ack = b.gw_recv(want="usage.ack")
        assert ack["req_id"] == r and ack["payload"]["source"] == "gateway", ack
        assert ack["payload"]["attempt"] == 1, ack
        got = b.tunnel_wait(lambda e, r=r: any(x.get("req_id") == r for x in txs(e)),
                            what="ledger.tx of request %d" % i)
        tx = [x for x in txs(got) if x["req_id"] == r][0]
        rows.append((r, tx["payload"]))
        if i == 0:
            prices = [x for x in got if x["type"] == "price.table"]
            first_tx = got.index(tx)
            assert any(got.index(p) < first_tx and p["payload"]["model"] == MODEL
                       for p in prices), got
            assert all(p["payload"]["agent_id"] == AGENT for p in prices)
    charged = 0
    seq0 = rows[0][1]["seq"]
    for i, (r, tx) in enumerate(rows):
        assert tx["agent_id"] == AGENT and tx["model"] == MODEL and tx["user_id"] == uid, tx
        # 100+i uncached × 2 + 20 cached × 2 (cached defaults to the input price) + 40 × 8
        assert tx["cost"] == (120 + i) * 2 + 40 * 8, tx
        assert tx.get("fee", 0) + tx["credit"] == tx["cost"] and tx["hold"] == 500 * 2 + 300 * 8, tx
        assert tx["seq"] == seq0 + i, tx
        assert row_hash(tx, r) == tx["hash"], "hash does not match lib/ledger's rule"
        if i:
            assert tx["prev_hash"] == rows[i - 1][1]["hash"]
        elif tx["seq"] == 1:
            assert tx["prev_hash"] == ZERO
        charged += tx["cost"]
    for r, tx in rows:
        b.to_billing("ledger.ack", {"agent_id": AGENT, "seq": tx["seq"], "verdict": "verified"})
    assert balance(b, "carol") == (before - charged, 0)
    assert harness.has_event(b.log, "settled", req_id=rows[0][0].hex())
    # the same report again: acknowledged, nothing settles twice
    settled = b.metric("relayhub_billing_settled_total", 'outcome="billed"')
    r, tx = rows[-1]
    b.gw_report(r, uid, input_tokens=999, output_tokens=999)
    ack = b.gw_recv(want="usage.ack")
    assert ack["req_id"] == r
    time.sleep(0.3)
    b.pump()
    assert balance(b, "carol") == (before - charged, 0)
    assert b.metric("relayhub_billing_settled_total", 'outcome="billed"') == settled
    assert b.hubctl("ledger", "verify", AGENT).returncode == 0
    return rows


def scenario_nothing_delivered(b):
    """No attempt delivered (or no tokens): settled with nothing to charge, no ledger row."""
    uid = user(b, "dave", "1")
    r = rid()
    assert b.hold_reply(r, uid).get("ok")
    b.gw_report(r, uid, delivered=False, input_tokens=5, output_tokens=5)
    b.gw_recv(want="usage.ack")
    wait_until(lambda: harness.has_event(b.log, "settled", req_id=r.hex()), what="settled")
    assert balance(b, "dave") == (1000000, 0)  # the hold is released, nothing charged
    b.pump(0.2)
    assert not [x for x in txs(b.from_billing) if x.get("req_id") == r]


def scenario_kill9_restart(b):
    """kill -9 after a hold is granted: the hold survives, and settlement works after restart,
    continuing the chain."""
    b.set_up()
    uid = user(b, "erin", "1")
    r = rid()
    rep = b.hold_reply(r, uid, body_bytes=100, max_tokens=50)
    assert rep.get("ok"), rep
    held = rep["amount"]
    b.kill(signal.SIGKILL)
    assert balance(b, "erin") == (1000000, held)
    head = [x["payload"] for x in txs(b.from_billing)]
    last = max(head, key=lambda t: t["seq"]) if head else None
    b.start()
    b.gw_report(r, uid, input_tokens=10, output_tokens=10)
    b.gw_recv(want="usage.ack", timeout=10)
    got = b.tunnel_wait(lambda e: any(x.get("req_id") == r for x in txs(e)), timeout=10,
                        what="ledger.tx after the restart")
    tx = [x for x in txs(got) if x["req_id"] == r][0]["payload"]
    assert tx["hold"] == held and tx["cost"] <= held, tx
    if last:
        assert tx["seq"] == last["seq"] + 1 and tx["prev_hash"] == last["hash"], (tx, last)
    assert row_hash(tx, r) == tx["hash"]
    assert balance(b, "erin") == (1000000 - tx["cost"], 0)
    b.to_billing("ledger.ack", {"agent_id": AGENT, "seq": tx["seq"]})


def scenario_store_outage(b, sql):
    """Tables of the store taken away: holds are answered 503 billing_unavailable and reports
    are not acknowledged (nothing was committed); the process lives on, and once the tables
    are back the re-sent messages go through."""
    b.set_up()
    uid = user(b, "judy", "1")
    r = rid()
    assert b.hold_reply(r, uid).get("ok")
    errors = b.metric("relayhub_billing_store_errors_total")
    sql("ALTER TABLE usage_reports RENAME TO usage_reports_away")
    sql("ALTER TABLE holds RENAME TO holds_away")
    try:
        b.gw_report(r, uid, input_tokens=4, output_tokens=4)
        try:
            b.gw_recv(want="usage.ack", timeout=1.0)
            raise AssertionError("a report was acknowledged without its commit")
        except AssertionError as e:
            assert "no usage.ack" in str(e), e
        rep = b.hold_reply(rid(), uid)
        assert not rep.get("ok") and rep["status"] == 503, rep
        assert rep["code"] == "billing_unavailable", rep
        assert b.proc.poll() is None
        assert b.metric("relayhub_billing_store_errors_total") > errors
    finally:
        sql("ALTER TABLE usage_reports_away RENAME TO usage_reports")
        sql("ALTER TABLE holds_away RENAME TO holds")

    def resend_until_acked():
        b.gw_report(r, uid, input_tokens=4, output_tokens=4)
        try:
            return b.gw_recv(want="usage.ack", timeout=0.5)
        except AssertionError:
            return None
    ack = wait_until(resend_until_acked, timeout=10, what="the re-sent report acknowledged")
    assert ack["req_id"] == r
    b.tunnel_wait(lambda e: any(x.get("req_id") == r for x in txs(e)),
                  what="ledger.tx once the store is back")
    wait_until(lambda: b.hold_reply(rid(), uid).get("ok"), timeout=10, what="holds again")


# ---- SQLite -----------------------------------------------------------------------------------

B = None


def _b():
    global B
    if B is None:
        B = Billing(extra=["--set", "billing.agent_grace=1500ms", "--set", "billing.resend=400ms"])
        B.start()
        B.hubctl("price", "set", MODEL, "--input", "2", "--output", "8")
    return B


def test_help_and_version():
    r = harness.run([BILLING, "--help"])
    assert "billing.agent_grace" in r.stdout or "agent_grace" in r.stdout
    assert harness.run([BILLING, "--version"]).stdout.startswith("hub-billing ")
    r = harness.run([BILLING, "--set", "billing.nope=1"], check=False)
    assert r.returncode == 2 and "nope" in r.stderr, r
    r = harness.run([BILLING, "--set", "billing.unpriced=maybe"], check=False)
    assert r.returncode == 2 and "unpriced" in r.stderr, r


def test_holds():
    scenario_holds(_b())


def test_concurrent_holds_exactly_five():
    scenario_concurrent_holds(_b())


def test_gateway_report_settles_and_chains():
    scenario_settle_and_chain(_b())


def test_nothing_delivered_is_not_charged():
    scenario_nothing_delivered(_b())


def test_agent_report_settles_after_grace_capped_by_hold():
    b = _b()
    b.set_up()
    uid = user(b, "frank", "1")
    r = rid()
    rep = b.hold_reply(r, uid, body_bytes=10, max_tokens=10)  # 20 + 80 = 100
    assert rep.get("ok") and rep["amount"] == 100, rep
    # the agent's figure (through the tunnel, agent_id stamped) is far above the hold
    b.to_billing("usage.report", {"source": "agent", "attempt": 1, "agent_id": AGENT,
                                  "model": MODEL, "status": 200, "delivered": True,
                                  "complete": True, "input_tokens": 1000,
                                  "output_tokens": 1000}, req_id=r)
    got = b.tunnel_wait(lambda e: any(x["type"] == "usage.ack" for x in e), what="usage.ack")
    ack = [x for x in got if x["type"] == "usage.ack"][0]
    assert ack["req_id"] == r and ack["payload"]["agent_id"] == AGENT, ack
    assert ack["payload"]["source"] == "agent", ack
    t0 = time.monotonic()
    # within the grace nothing settles (the gateway might still report)
    time.sleep(0.7)
    b.pump()
    assert not [x for x in txs(b.from_billing) if x.get("req_id") == r]
    got = b.tunnel_wait(lambda e: any(x.get("req_id") == r for x in txs(e)), timeout=5,
                        what="the agent-only settlement")
    assert time.monotonic() - t0 >= 1.0
    tx = [x for x in txs(got) if x["req_id"] == r][0]["payload"]
    assert tx["cost"] == 100 and tx["hold"] == 100 and tx["user_id"] == uid, tx
    assert row_hash(tx, r) == tx["hash"]
    assert balance(b, "frank") == (1000000 - 100, 0)
    b.to_billing("ledger.ack", {"agent_id": AGENT, "seq": tx["seq"]})
    # an agent report naming "gateway" through the tunnel is not taken
    r2 = rid()
    b.to_billing("usage.report", {"source": "gateway", "attempt": 1, "agent_id": AGENT,
                                  "user_id": uid, "model": MODEL, "delivered": True,
                                  "input_tokens": 5}, req_id=r2)
    wait_until(lambda: harness.has_event(b.log, "bad_usage_report", req_id=r2.hex()),
               what="forged gateway report refused")


def test_sync_resends_prices_then_every_row():
    b = _b()
    b.set_up()
    b.pump(0.3)
    # a second price version, so that the table has history
    b.hubctl("price", "set", MODEL, "--input", "3", "--output", "9")
    head = max(x["payload"]["seq"] for x in txs(b.from_billing))
    assert head >= 4, head
    b.to_billing("ledger.sync", {"agent_id": AGENT, "last_seq": 0})
    got = b.tunnel_wait(lambda e: len(txs(e)) > 0 and
                        max(x["payload"]["seq"] for x in txs(e)) >= head,
                        what="every row after a sync from 0")
    rows = txs(got)
    seqs = [x["payload"]["seq"] for x in rows]
    assert seqs[:len(set(seqs))] == list(range(1, len(set(seqs)) + 1)), seqs
    first = got.index(rows[0])
    prices = [x["payload"] for x in got[:first] if x["type"] == "price.table"]
    versions = {(p["model"], p["effective_from"]) for p in prices}
    assert len([v for v in versions if v[0] == MODEL]) == 2, prices  # the whole history
    for x in rows:
        assert (MODEL, x["payload"]["price_from"]) in versions
    for i in range(1, len(rows)):
        if rows[i]["payload"]["seq"] == rows[i - 1]["payload"]["seq"] + 1:
            assert rows[i]["payload"]["prev_hash"] == rows[i - 1]["payload"]["hash"]
    for x in rows:
        assert row_hash(x["payload"], x["req_id"]) == x["payload"]["hash"]
    assert b.metric("relayhub_billing_resync_rows_total") >= len(rows)
    last = max(seqs)
    b.to_billing("ledger.ack", {"agent_id": AGENT, "seq": last})


def test_unacked_rows_are_resent_then_stop_when_acked():
    b = _b()
    b.set_up()
    uid = user(b, "grace", "1")
    r = rid()
    assert b.hold_reply(r, uid).get("ok")
    b.gw_report(r, uid, input_tokens=3, output_tokens=3)
    b.gw_recv(want="usage.ack")
    # no ledger.ack: the row comes again on billing.resend (400 ms)
    got = b.tunnel_wait(lambda e: len([x for x in txs(e) if x["req_id"] == r]) >= 3,
                        timeout=5, what="the unacknowledged row sent again")
    sent = [x for x in txs(got) if x["req_id"] == r]
    assert all(x["payload"] == sent[0]["payload"] for x in sent)
    b.to_billing("ledger.ack", {"agent_id": AGENT, "seq": sent[0]["payload"]["seq"],
                                "verdict": "disputed"})
    time.sleep(0.3)
    b.pump()
    n = len(b.from_billing)
    time.sleep(1.2)
    b.pump()
    assert not [x for x in txs(b.from_billing[n:]) if x["req_id"] == r]
    assert b.metric("relayhub_billing_disputes_total") >= 1


def test_nack_rewinds_and_down_agent_gets_rows_when_up():
    b = _b()
    b.set_up()
    uid = user(b, "heidi", "1")
    b.set_down()
    time.sleep(0.3)
    b.pump()
    reqs = []
    for _ in range(2):
        r = rid()
        assert b.hold_reply(r, uid).get("ok")
        b.gw_report(r, uid, input_tokens=2, output_tokens=2)
        b.gw_recv(want="usage.ack")
        reqs.append(r)
    wait_until(lambda: all(harness.has_event(b.log, "settled", req_id=r.hex()) for r in reqs),
               what="both settled")
    b.pump(0.3)
    assert not [x for x in txs(b.from_billing) if x["req_id"] in reqs]  # the agent is away
    b.set_up()
    got = b.tunnel_wait(lambda e: {x["req_id"] for x in txs(e)} >= set(reqs),
                        what="rows delivered once the agent is up")
    seqs = sorted({x["payload"]["seq"] for x in txs(got) if x["req_id"] in reqs})
    # the agent refuses the newest: billing sends again from the one after its last_seq
    b.to_billing("ledger.nack", {"agent_id": AGENT, "seq": seqs[1], "last_seq": seqs[0],
                                 "reason": "test gap"})
    got = b.tunnel_wait(lambda e: any(x["payload"]["seq"] == seqs[1] for x in txs(e)),
                        what="row sent again after a nack")
    b.to_billing("ledger.ack", {"agent_id": AGENT, "seq": seqs[1]})


def test_malformed_input_is_answered_and_survived():
    b = _b()
    b.gw.send(b"\x93\x01\x02")
    env = b.gw_recv(want="error")
    assert env["payload"]["code"] == 400, env
    b.gw.send(envelope("hold.req", {"user_id": 1, "model": MODEL}))  # no req_id
    b.tunnel.send_multipart([b"billing", b"\xc1"])
    b.to_billing("ledger.ack", {"agent_id": AGENT, "seq": 10 ** 9})  # past the head
    uid = user(b, "ivan", "1")
    assert b.hold_reply(rid(), uid).get("ok")  # still serving
    assert b.proc.poll() is None


def test_kill9_and_restart():
    scenario_kill9_restart(_b())


def test_store_outage_acknowledges_nothing():
    b = _b()

    def sql(stmt):
        db = sqlite3.connect(os.path.join(b.dir, "hub.db"), timeout=10)
        try:
            db.execute(stmt)
            db.commit()
        finally:
            db.close()
    scenario_store_outage(b, sql)


def test_sigterm_stops_cleanly():
    b = _b()
    assert b.kill(signal.SIGTERM) == 0
    assert harness.has_event(b.log, "stopped")
    b.start()


# ---- MariaDB ----------------------------------------------------------------------------------

def test_on_mariadb():
    url = os.environ.get("RELAYHUB_TEST_MYSQL_URL")
    if not url:
        print("     (RELAYHUB_TEST_MYSQL_URL not set: MariaDB part skipped)")
        return
    u = urllib.parse.urlparse(url)
    db = "relayhub_bl_%d_%s" % (os.getpid(), secrets.token_hex(3))
    subprocess.run(["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port),
                    "-u", urllib.parse.unquote(u.username),
                    "-p" + urllib.parse.unquote(u.password or ""), "-e",
                    "CREATE DATABASE %s" % db], check=True, capture_output=True, timeout=30)
    db_url = "mysql://%s:%s@%s:%d/%s" % (u.username, u.password or "", u.hostname, u.port, db)
    m = Billing(store="mysql", mysql_url=db_url,
                extra=["--set", "billing.agent_grace=1500ms", "--set", "billing.resend=400ms"])
    try:
        m.start()
        m.hubctl("price", "set", MODEL, "--input", "2", "--output", "8")
        scenario_holds(m)
        scenario_concurrent_holds(m)
        scenario_settle_and_chain(m)
        scenario_nothing_delivered(m)
        scenario_kill9_restart(m)

        def sql(stmt):
            subprocess.run(["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port),
                            "-u", urllib.parse.unquote(u.username),
                            "-p" + urllib.parse.unquote(u.password or ""), db, "-e", stmt],
                           check=True, capture_output=True, timeout=30)
        scenario_store_outage(m, sql)
    finally:
        m.close()


if __name__ == "__main__":
    run_tests(globals())
