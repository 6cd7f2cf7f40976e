"""hub-billing alone, measured: holds (latency one at a time, throughput pipelined), usage
reports acknowledged, and settlement into the hash chain with row delivery, on SQLite and (under
tests/with-servers, which provides a MariaDB) on MySQL. Python plays the gateways (a DEALER on
billing_router) and hub-tunnel with one agent (a ROUTER at tunnel_router that acknowledges every
ledger.tx the way agent-ledger does, a PUB announcing the agent).

  ninja -C build && tests/with-servers /usr/bin/python3 tests/bench/billing.py [N]

Prints one block per backend. N (default 5000) is the number of requests pipelined."""

import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import Hub, envelope, spawn, unpack, wait_until  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
WINDOW = 256
AGENT = "benchagent" + secrets.token_hex(4)
MODEL = "gpt-bench"


def mysql_url():
    url = os.environ.get("RELAYHUB_TEST_MYSQL_URL")
    if not url:
        return None
    u = urllib.parse.urlparse(url)
    db = "relayhub_bench_%d" % os.getpid()
    subprocess.run(["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port),
                    "-u", urllib.parse.unquote(u.username),
                    "-p" + urllib.parse.unquote(u.password or ""), "-e",
                    "CREATE DATABASE %s" % db], check=True, capture_output=True)
    return "mysql://%s:%s@%s:%d/%s" % (u.username, u.password or "", u.hostname, u.port, db)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else 0


def run(store, url=None):
    hub = Hub(store=store, mysql_url=url, sets=["log.level=warn", "billing.unpriced=refuse"])
    ctx = zmq.Context()
    tunnel = ctx.socket(zmq.ROUTER)
    tunnel.setsockopt(zmq.ROUTER_HANDOVER, 1)
    tunnel.bind("ipc://" + os.path.join(hub.dir, "tunnel.ipc"))
    pub = ctx.socket(zmq.PUB)
    pub.bind("ipc://" + os.path.join(hub.dir, "presence.ipc"))
    hub.start_billing()
    hub.hubctl("price", "set", MODEL, "--input", "2.5", "--output", "10")
    hub.hubctl("user", "add", "bench")
    uid = int([l for l in hub.hubctl("user", "list").stdout.splitlines()
               if l.endswith(" bench")][0].split()[0])
    hub.hubctl("user", "topup", "bench", "1000000")
    stop = threading.Event()

    def presence():
        while not stop.wait(0.2):
            pub.send(envelope("presence", {"agent_id": AGENT, "state": "up", "tunnel": "t"}))
    threads = [threading.Thread(target=presence, daemon=True)]
    threads[0].start()

    rows = {"n": 0, "first": None, "last": None}

    def agent():
        """Acknowledges every ledger.tx, as agent-ledger would after its write."""
        poller = zmq.Poller()
        poller.register(tunnel, zmq.POLLIN)
        while not stop.is_set():
            if not poller.poll(100):
                continue
            ident, data = tunnel.recv_multipart()
            env = unpack(data)
            if env["type"] == "ledger.tx":
                p = env["payload"]
                rows["n"] = max(rows["n"], p["seq"])
                now = time.monotonic()
                rows["first"] = rows["first"] or now
                rows["last"] = now
                tunnel.send_multipart([ident, envelope("ledger.ack", {"agent_id": AGENT,
                                                                      "seq": p["seq"],
                                                                      "verdict": "verified"})])
    threads.append(threading.Thread(target=agent, daemon=True))
    threads[-1].start()
    time.sleep(0.5)  # presence reaches billing

    gw = ctx.socket(zmq.DEALER)
    gw.setsockopt(zmq.IDENTITY, b"bench-gw")
    gw.setsockopt(zmq.RCVTIMEO, 10000)
    gw.connect("ipc://" + os.path.join(hub.dir, "billing.ipc"))

    def hold(rid):
        return envelope("hold.req", {"user_id": uid, "model": MODEL, "body_bytes": 600,
                                     "max_tokens": 256}, req_id=rid)

    # 1. one hold at a time
    lat = []
    for _ in range(500):
        rid = secrets.token_bytes(16)
        t0 = time.perf_counter()
        gw.send(hold(rid))
        r = unpack(gw.recv())
        lat.append(time.perf_counter() - t0)
        assert r["type"] == "hold.reply" and r["payload"].get("ok"), r
    # 2. holds pipelined (WINDOW in flight)
    ids = [secrets.token_bytes(16) for _ in range(N)]
    t0 = time.perf_counter()
    sent = got = 0
    while got < N:
        while sent < N and sent - got < WINDOW:
            gw.send(hold(ids[sent]))
            sent += 1
        r = unpack(gw.recv())
        assert r["payload"].get("ok"), r
        got += 1
    hold_s = time.perf_counter() - t0
    # 3. usage reports pipelined, acknowledged after their commit; then settled and delivered
    t0 = time.perf_counter()
    sent = got = 0
    while got < N:
        while sent < N and sent - got < WINDOW:
            gw.send(envelope("usage.report", {
                "source": "gateway", "attempt": 1, "agent_id": AGENT, "user_id": uid,
                "model": MODEL, "status": 200, "delivered": True, "complete": True,
                "input_tokens": 150, "output_tokens": 256}, req_id=ids[sent]))
            sent += 1
        r = unpack(gw.recv())
        if r["type"] == "usage.ack":
            got += 1
    ack_s = time.perf_counter() - t0
    wait_until(lambda: rows["n"] >= N, timeout=600, interval=0.05, what="every row delivered")
    total_s = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    hub.stop_billing()
    print("hub-billing on %s, %d requests:" % (store, N))
    print("  hold, one at a time:   p50 %.0f us, p99 %.0f us" % (
        statistics.median(lat) * 1e6, pct(lat, 99) * 1e6))
    print("  holds, %d in flight:  %.0f /s" % (WINDOW, N / hold_s))
    print("  usage reports acked:   %.0f /s" % (N / ack_s))
    print("  settled + rows delivered and acked (from the first report): %.0f /s (%.1f s)" % (
        N / total_s, total_s))
    ctx.destroy(linger=0)


run("sqlite")
url = mysql_url()
if url:
    run("mysql", url)
else:
    print("(no RELAYHUB_TEST_MYSQL_URL: MySQL skipped; run under tests/with-servers)")
harness._cleanup()
