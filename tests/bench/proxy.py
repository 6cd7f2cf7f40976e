"""Proxy benchmark: the same fake upstream called three ways in one run, with the budget of
DESIGN.md §6 printed next to the hub's figures. Prints figures; asserts nothing about speed.

    direct  client → fake-vendor
    nginx   client → nginx (one reverse-proxy hop, keep-alive upstream) → fake-vendor
    hub     client → hub-gateway → hub-tunnel → agent → agent-adapter → fake-vendor

One fake-vendor process serves TLS only (ALPN http/1.1), so every path reaches it over TLS
(the agent requires https; nginx and the direct client do the same). The client's own leg to
nginx and to hub-gateway is plain HTTP on loopback, unless --client-tls (then both serve TLS
with the fake's certificate and all three client legs are TLS).

  1. memory (first, on fresh processes): RSS of hub-gateway, hub-tunnel, agent and its
     agent-adapters before and after opening --idle (1,000) streams through the hub whose
     vendor stalls after the first content event (server-wide fake switches), per stream;
  2. streams (fake: 50 chunks 10 ms apart, server-wide), interleaved over the three paths:
     time from the request to the first SSE event, and each chunk's relay delay: when the
     client had the event minus when the fake's TCP segment left on lo (kernel timestamp from
     an AF_PACKET sniffer subprocess; root only, else only the gaps between events);
  3. non-streamed POST /v1/chat/completions with wrk (Lua script: method, body,
     Authorization) at 1, 16, 64 and 256 connections: req/s, p50/p90/p99, errors, and the
     server-side CPU per request (utime+stime from /proc: proxy processes, and the fake);
  4. with --profile SECONDS: perf record (-g) of each hub process under wrk at 64 connections,
     then its CPU by library and its top functions.

usage: /usr/bin/python3 tests/bench/proxy.py [--quick] [--build DIR] [--client-tls]
           [--seconds S] [--conns 1,16,64,256] [--streams N] [--idle N] [--skip PHASES]
           [--fake EXE] [--profile SECONDS] [--perf-dir DIR]
Needs wrk and nginx (ops/install-deps) and a release build (default ./build, or
RELAYHUB_BUILD_DIR, or --build): meson setup build-rel -Dbuildtype=release.
"""

import argparse
import atexit
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUDGET = {"p50_us": 250, "p99_us": 1000, "rps64": 10000, "ttfb_us": 500, "chunk_us": 100,
          "idle_kib": 32}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}
STREAM_CHUNKS, STREAM_DELAY_MS = 50, 10
SO_TIMESTAMPNS = 35          # Linux asm-generic/socket.h (SO_TIMESTAMPNS_OLD)
PACKET_OUTGOING = 4


# ---- the sniffer subprocess: kernel timestamps of the fake's outgoing data segments --------

def sniff_main(port):
    """`proxy.py --sniff PORT`: prints "ready", records the time of every TCP segment with data
    leaving 127.0.0.1:PORT on lo until stdin closes, then prints them as a JSON list (ns)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("lo", 0))
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ, "pkt")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    out = []
    done = False
    while not done:
        for key, _ in sel.select():
            if key.data == "stdin":
                done = not sys.stdin.readline()
                continue
            data, anc, _, addr = s.recvmsg(128, 256)
            if addr[2] != PACKET_OUTGOING or len(data) < 54 or data[12:14] != b"\x08\x00":
                continue
            if data[23] != 6:   # TCP
                continue
            ihl = (data[14] & 15) * 4
            total = struct.unpack_from("!H", data, 16)[0]
            t = 14 + ihl
            sport = struct.unpack_from("!H", data, t)[0]
            thl = (data[t + 12] >> 4) * 4
            if sport != port or total - ihl - thl <= 0:
                continue
            for lvl, typ, val in anc:
                if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", val[:16])
                    out.append(sec * 1000000000 + nsec)
    print(json.dumps(out), flush=True)


if len(sys.argv) == 3 and sys.argv[1] == "--sniff":
    sniff_main(int(sys.argv[2]))
    sys.exit(0)


# ---- arguments, build, harness ---------------------------------------------------------------

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--quick", action="store_true", help="2 s per wrk cell, 4 streams per path")
ap.add_argument("--build", help="build directory (default RELAYHUB_BUILD_DIR or ./build)")
ap.add_argument("--fake", help="fake-vendor executable (default: the build's)")
ap.add_argument("--seconds", type=int, help="wrk duration per cell (default 5, --quick 2)")
ap.add_argument("--conns", default="1,16,64,256", help="wrk connection counts")
ap.add_argument("--streams", type=int, help="streams per path (default 12, --quick 4)")
ap.add_argument("--idle", type=int, default=1000, help="idle streams for the memory figure")
ap.add_argument("--skip", default="", help="phases to skip: memory,streams,wrk")
ap.add_argument("--client-tls", action="store_true",
                help="TLS on the client legs of nginx and hub-gateway too")
ap.add_argument("--profile", type=int, default=0,
                help="then perf-record the hub's processes for this many seconds under wrk "
                     "at 64 connections and print their top functions")
ap.add_argument("--perf-dir", help="keep the perf data files here (default: the temp dir)")
args = ap.parse_args()
if args.build:
    os.environ["RELAYHUB_BUILD_DIR"] = os.path.abspath(args.build)
SECONDS = args.seconds or (2 if args.quick else 5)
NSTREAMS = args.streams or (4 if args.quick else 12)
CONNS = [int(c) for c in args.conns.split(",")]
SKIP = set(x for x in args.skip.split(",") if x)

sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "fake_vendor"))
import fakevendor  # noqa: E402
import harness  # noqa: E402
from harness import Agent, Hub, free_port, spawn, tmpdir, wait_until  # noqa: E402

WRK = shutil.which("wrk")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                  else None)
if not WRK or not NGINX:
    sys.exit("proxy: needs wrk and nginx (Debian packages; ops/install-deps installs them)")
FAKE = os.path.abspath(args.fake) if args.fake else fakevendor.binary()
for exe in list(harness.BIN.values()) + [FAKE]:
    if not os.path.exists(exe):
        sys.exit("proxy: %s is missing; build first (or --build DIR)" % exe)
TCK = os.sysconf("SC_CLK_TCK")


def build_option(name):
    try:
        with open(os.path.join(harness.BUILD, "meson-info", "intro-buildoptions.json")) as f:
            return next((o["value"] for o in json.load(f) if o["name"] == name), None)
    except (OSError, ValueError):
        return None


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        f = st[st.rindex(")") + 2:].split()
        return (int(f[11]) + int(f[12])) / TCK
    except (OSError, ValueError):
        return 0.0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError):
                pass
    return sorted(out)


def log(msg):
    sys.stderr.write("proxy: %s\n" % msg)
    sys.stderr.flush()


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


# ---- the three paths --------------------------------------------------------------------------

root = tmpdir("relayhub-bench-")
extra_procs = []   # (Popen, stop signal), stopped before the harness's own cleanup
load_start = loadavg()


def cleanup():
    for p, sig in reversed(extra_procs):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=10)
            except Exception:
                pass
        if p.poll() is None or sig == signal.SIGQUIT:
            try:   # nginx workers outlive a killed master: end the group we started
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass


class Fake(fakevendor.FakeVendor):
    def args(self):
        return [FAKE] + super().args()[1:]


log("starting fake-vendor, hub-tunnel, hub-billing, hub-gateway, agent, nginx (build %s)"
    % harness.BUILD)
fv = Fake(root, log_level="warn").start()
extra_procs.append((fv.proc, signal.SIGTERM))
atexit.register(cleanup)    # runs before the harness's (registered earlier): LIFO
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
hub = Hub(root, sets=["log.level=warn", "billing.unpriced=refuse"]).start()
extra_procs.append((hub.proc, signal.SIGTERM))
# Every hub process runs (DESIGN §6): holds and settlement are part of what is measured.
hub.start_billing()
extra_procs.append((hub.billing, signal.SIGTERM))
hub.hubctl("price", "set", "gpt-4o-mini", "--input", "0.15", "--output", "0.60")
gw_extra = []
if args.client_tls:
    gw_extra = ["--set", "gateway.cert=" + fv.certs["cert"],
                "--set", "gateway.key=" + fv.certs["key"]]
hub.gateway_log = os.path.join(hub.dir, "gateway.log")
hub.gateway = spawn([harness.BIN["hub-gateway"], "--config", hub.conf] + gw_extra,
                    hub.gateway_log)
extra_procs.append((hub.gateway, signal.SIGTERM))
KEY = hub.user_key("bench-user")
hub.hubctl("user", "topup", "bench-user", "1000000")
agent = Agent(hub, "bench-agent", root=root)
with open(os.path.join(agent.dir, "agent.conf"), "a") as f:
    f.write("\n[upstream]\nconnect_to = %s\nca_file = %s\n\n[instance.main]\nvendor = openai\n"
            "api_key = %s\nmodels = gpt-4o-mini\nmax_concurrency = 100000\n"
            % (fv.connect_to("api.openai.com"), fv.ca, fakevendor.OPENAI_KEY))
hub.wait_registry(1)
agent.start(sets=["log.level=warn"])
extra_procs.append((agent.proc, signal.SIGTERM))
agent.wait_connected(timeout=30)

ndir = os.path.join(root, "nginx")
os.makedirs(os.path.join(ndir, "tmp"))
nginx_port = free_port()
with open(os.path.join(ndir, "nginx.conf"), "w") as f:
    f.write("""%(user)sworker_processes auto;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    upstream fake { server 127.0.0.1:%(fv)d; keepalive 512; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:%(port)d%(ssl)s;
        %(certs)s
        keepalive_requests 1000000;
        location / {
            proxy_pass https://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host api.openai.com;
            proxy_ssl_server_name on;
            proxy_ssl_name api.openai.com;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
        }
    }
}
""" % {"d": ndir, "fv": fv.port, "port": nginx_port,
       "user": "user root;\n" if os.geteuid() == 0 else "",
       "ssl": " ssl" if args.client_tls else "",
       "certs": ("ssl_certificate %s; ssl_certificate_key %s;"
                 % (fv.certs["cert"], fv.certs["key"])) if args.client_tls else ""})
nginx = spawn([NGINX, "-p", ndir, "-e", os.path.join(ndir, "error.log"),
               "-c", os.path.join(ndir, "nginx.conf")], os.path.join(ndir, "stderr.log"))
extra_procs.append((nginx, signal.SIGQUIT))

ctls = "https" if args.client_tls else "http"
PATHS = {
    "direct": {"scheme": "https", "port": fv.port, "key": fakevendor.OPENAI_KEY},
    "nginx": {"scheme": ctls, "port": nginx_port, "key": fakevendor.OPENAI_KEY},
    "hub": {"scheme": ctls, "port": hub.gateway_port, "key": KEY},
}
ORDER = ["direct", "nginx", "hub"]
CTX = ssl.create_default_context(cafile=fv.ca)
CTX.set_alpn_protocols(["http/1.1"])


def connect(path, timeout=30):
    p = PATHS[path]
    s = socket.create_connection(("127.0.0.1", p["port"]), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if p["scheme"] == "https":
        s = CTX.wrap_socket(s, server_hostname="api.openai.com")
    return s


def request_bytes(path, body):
    data = json.dumps(body, separators=(",", ":")).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"Authorization: Bearer " + PATHS[path]["key"].encode() +
            b"\r\nContent-Type: application/json\r\nContent-Length: " +
            str(len(data)).encode() + b"\r\n\r\n" + data)


def read_response(s, keep_times=False):
    """Reads one HTTP/1.1 response: (status, head, body, marks, segs). marks: (arrival ns,
    raw bytes so far) per recv; segs: (body offset, raw offset, length) per body piece."""
    raw = b""
    marks = []

    def more():
        nonlocal raw
        d = s.recv(65536)
        if not d:
            raise ConnectionError("closed after %d bytes: %r" % (len(raw), raw[-200:]))
        raw += d
        if keep_times:
            marks.append((time.time_ns(), len(raw)))

    while raw.find(b"\r\n\r\n") < 0:
        more()
    head_end = raw.find(b"\r\n\r\n")
    head = raw[:head_end].decode("latin-1")
    status = int(head.split(" ", 2)[1])
    hl = head.lower()
    pos = head_end + 4
    body = bytearray()
    segs = []
    m = re.search(r"\ncontent-length:\s*(\d+)", hl)
    if "transfer-encoding: chunked" in hl:
        while True:
            while raw.find(b"\r\n", pos) < 0:
                more()
            eol = raw.find(b"\r\n", pos)
            size = int(raw[pos:eol].split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                while raw.find(b"\r\n", pos) < 0:
                    more()
                break
            while len(raw) < pos + size + 2:
                more()
            segs.append((len(body), pos, size))
            body += raw[pos:pos + size]
            pos += size + 2
    elif m:
        while len(raw) < pos + int(m.group(1)):
            more()
        segs.append((0, pos, int(m.group(1))))
        body += raw[pos:pos + int(m.group(1))]
    else:
        try:
            while True:
                more()
        except ConnectionError:
            pass
        segs.append((0, pos, len(raw) - pos))
        body += raw[pos:]
    return status, head, bytes(body), marks, segs


def post(path, body):
    s = connect(path)
    try:
        s.sendall(request_bytes(path, body))
        st, _, data, _, _ = read_response(s)
    finally:
        s.close()
    return st, data


wait_until(lambda: post("hub", CHAT)[0] == 200, timeout=30, what="model routable at the gateway")
wait_until(lambda: post("nginx", CHAT)[0] == 200, timeout=10, what="nginx up")
for _path in ORDER:
    for _stream in (False, True):
        _st, _data = post(_path, dict(CHAT, stream=True) if _stream else CHAT)
        if _st != 200:
            sys.exit("proxy: %s answered %d: %r" % (_path, _st, _data[:300]))


def hub_pids():
    out = {"hub-gateway": hub.gateway.pid, "hub-tunnel": hub.proc.pid,
           "hub-billing": hub.billing.pid, "agent": agent.proc.pid}
    for i, k in enumerate(children(agent.proc.pid)):
        out["agent-child-%d" % i] = k  # agent-adapters and agent-ledger
    return out


def path_pids(path):
    """The processes serving a path, the fake apart."""
    if path == "hub":
        return hub_pids()
    if path == "nginx":
        return {"nginx-%d" % i: k for i, k in enumerate([nginx.pid] + children(nginx.pid))}
    return {}


# A keep-alive TLS connection to the fake, used again once more than 5 s have passed: a
# fake-vendor on lws 4.1 whose raw TLS sockets keep lws's accept timeout armed closes every TLS
# connection 5 s after accepting it, which cuts pooled connections and long streams.
probe = connect("direct")
probe.sendall(request_bytes("direct", CHAT))
read_response(probe)
probe_t = time.monotonic()


def probe_check():
    time.sleep(max(0.0, 6.0 - (time.monotonic() - probe_t)))
    try:
        probe.sendall(request_bytes("direct", CHAT))
        return read_response(probe)[0] != 200
    except OSError:
        return True
    finally:
        probe.close()


# ---- 1. memory per idle stream (first, on fresh processes) -----------------------------------

def idle_streams(n):
    """Opens n streams through the hub whose vendor stalls after its first content event."""
    fv.config(stall_after=1, stall_ms=600000, chunks=5)
    warm = []   # the first streams and their vendor connections, then let them end
    for _ in range(8):
        s = connect("hub")
        s.sendall(request_bytes("hub", dict(CHAT, stream=True)))
        warm.append(s)
    time.sleep(1.0)
    for s in warm:
        s.close()
    wait_until(lambda: fv.stats()["active_streams"] == 0, timeout=20, what="warm-up ended")
    time.sleep(1.0)
    pids = hub_pids()
    before = {k: rss_kib(p) for k, p in pids.items()}
    sel = selectors.DefaultSelector()
    socks, got = [], {}
    t0 = time.monotonic()
    req = request_bytes("hub", dict(CHAT, stream=True))
    for i in range(n):
        try:
            s = connect("hub")
            s.sendall(req)
            s.setblocking(False)
        except OSError as e:
            log("idle stream %d: %s" % (i, e))
            break
        socks.append(s)
        got[s] = b""
        sel.register(s, selectors.EVENT_READ)
    opened = failed = 0
    pending = set(socks)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            try:
                d = s.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
            except OSError:
                d = b""
            if not d:
                failed += s in pending
                pending.discard(s)
                sel.unregister(s)
                continue
            got[s] += d
            if b"data: " in got[s] and s in pending:
                if got[s].startswith(b"HTTP/1.1 200"):
                    opened += 1
                else:
                    failed += 1
                pending.discard(s)
    open_s = time.monotonic() - t0
    try:
        wait_until(lambda: fv.stats()["active_streams"] >= opened, timeout=30,
                   what="the fake holding the streams")
    except AssertionError:
        pass
    time.sleep(2.0)
    after = {k: rss_kib(p) for k, p in pids.items()}
    fake_active = fv.stats()["active_streams"]
    still = 0
    for s in socks:   # are the client connections still open (no EOF)?
        try:
            still += s.recv(1, socket.MSG_PEEK) != b""
        except (BlockingIOError, ssl.SSLWantReadError, ValueError):
            still += 1   # no data yet (ValueError: a TLS socket cannot peek; assume open)
        except OSError:
            pass
    for s in socks:
        s.close()
    fv.config()
    try:
        wait_until(lambda: fv.stats()["active_streams"] == 0, timeout=30,
                   what="idle streams cancelled at the fake")
        cancelled = True
    except AssertionError:
        cancelled = False
    return {"n": n, "opened": opened, "failed": failed + len(pending), "open_s": open_s,
            "before": before, "after": after, "fake_active": fake_active, "still": still,
            "all_cancelled": cancelled}


mem = None
if "memory" not in SKIP:
    log("memory: %d idle streams through the hub" % args.idle)
    mem = idle_streams(args.idle)
fake_cuts_tls = probe_check()


# ---- 2. streams: time to first event, per-chunk relay delay ---------------------------------

def start_sniffer():
    if os.geteuid() != 0:
        return None
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sniff", str(fv.port)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    extra_procs.append((p, signal.SIGTERM))
    line = p.stdout.readline()
    if line.strip() != "ready":
        log("no sniffer: %s" % (p.stderr.read()[-300:].strip() or line))
        p.wait()
        return None
    return p


def stop_sniffer(p):
    if not p:
        return []
    p.stdin.close()
    out = p.stdout.read()
    p.wait(timeout=10)
    return sorted(json.loads(out)) if out.strip() else []


def one_stream(path):
    s = connect(path)
    try:
        t_send = time.time_ns()
        s.sendall(request_bytes(path, dict(CHAT, stream=True)))
        st, _, body, marks, segs = read_response(s, keep_times=True)
    finally:
        s.close()
    if st != 200:
        raise ConnectionError("%s stream: %d %r" % (path, st, body[:200]))
    events = []    # arrival ns of each SSE event (when its blank line arrived)
    for m in re.finditer(rb"\n\n", body):
        end = m.end() - 1
        for dstart, rstart, ln in segs:
            if dstart <= end < dstart + ln:
                off = rstart + end - dstart
                events.append(next((t for t, e in marks if off < e), marks[-1][0]))
                break
    return {"t_send": t_send, "events": events}


def pct(vals, p):
    if not vals:
        return float("nan")
    v = sorted(vals)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def stream_phase():
    fv.config(chunks=STREAM_CHUNKS, delay_ms=STREAM_DELAY_MS)
    for path in ORDER:
        one_stream(path)   # warm-up
    out = {p: {"ttfb": [], "gaps": [], "delay": [], "events": [], "failed": 0} for p in ORDER}
    for _ in range(NSTREAMS):
        for path in ORDER:   # interleaved, so drift hits all three alike
            o = out[path]
            for _attempt in range(3):
                sn = start_sniffer()
                try:
                    r = one_stream(path)
                except (OSError, ConnectionError) as e:
                    stop_sniffer(sn)
                    o["failed"] += 1
                    log("%s stream failed: %s" % (path, str(e)[:200]))
                    continue
                pk = stop_sniffer(sn)
                break
            else:
                continue
            ev = r["events"]
            o["events"].append(len(ev))
            o["ttfb"].append((ev[0] - r["t_send"]) / 1000.0)
            # event 0 is the role chunk; content events are 1..STREAM_CHUNKS
            last = min(len(ev), STREAM_CHUNKS + 1)
            for k in range(2, last):
                o["gaps"].append((ev[k] - ev[k - 1]) / 1000.0 - STREAM_DELAY_MS * 1000.0)
            j = 0
            for k in range(1, last if pk else 0):
                while j + 1 < len(pk) and pk[j + 1] <= ev[k]:
                    j += 1
                if pk[j] <= ev[k]:
                    o["delay"].append((ev[k] - pk[j]) / 1000.0)
    fv.config()
    return out


streams = None
if "streams" not in SKIP:
    log("streams: %d per path, %d chunks %d ms apart" % (NSTREAMS, STREAM_CHUNKS,
                                                         STREAM_DELAY_MS))
    streams = stream_phase()


# ---- 3. wrk: non-streamed requests ------------------------------------------------------------

LUA = """wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
wrk.headers["Host"] = "api.openai.com"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"max":%%d,' ..
    '"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_for(path):
    fn = os.path.join(root, "wrk-%s.lua" % path)
    with open(fn, "w") as f:
        f.write(LUA % {"body": json.dumps(CHAT, separators=(",", ":")),
                       "key": PATHS[path]["key"]})
    return fn


def sys_busy_s():
    """CPU seconds the whole machine spent busy (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TCK


def all_ours():
    return dict(hub_pids(), fake=fv.proc.pid, **path_pids("nginx"))


def wrk(path, conns, seconds):
    p = PATHS[path]
    pids = dict(path_pids(path), fake=fv.proc.pid)
    c0 = {k: cpu_s(v) for k, v in pids.items()}
    ours0 = sum(cpu_s(v) for v in all_ours().values())
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = sys_busy_s()
    cmd = [WRK, "-t%d" % min(2, conns), "-c%d" % conns, "-d%ds" % max(1, seconds),
           "--timeout", "5s", "-s", lua_for(path),
           "%s://127.0.0.1:%d/v1/chat/completions" % (p["scheme"], p["port"])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    c1 = {k: cpu_s(v) for k, v in pids.items()}
    busy1 = sys_busy_s()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours1 = sum(cpu_s(v) for v in all_ours().values())
    wrk_s = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    m = re.search(r"^RESULT (\{.*\})$", r.stdout, re.M)
    if not m:
        raise AssertionError("wrk failed: %s\n%s" % (r.stdout, r.stderr))
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = sum(res[k] for k in ("connect", "read", "write", "status", "timeout"))
    n = max(res["requests"], 1)
    res["cpu"] = {k: (c1[k] - c0[k]) * 1e6 / n for k in pids}
    res["cpu_proxy"] = sum(v for k, v in res["cpu"].items() if k != "fake")
    # CPU the rest of the machine used meanwhile (other jobs disturb the figures)
    res["other_pct"] = max(0.0, (busy1 - busy0) - (ours1 - ours0) - wrk_s) * 100.0 / seconds
    return res


table = {}
if "wrk" not in SKIP:
    log("wrk: %s connections, %d s each, paths %s" % (args.conns, SECONDS, ", ".join(ORDER)))
    for path in ORDER:   # warm-up: connections, pools, caches
        wrk(path, max(CONNS), 1)
    for c in CONNS:
        for path in ORDER:
            table[(path, c)] = wrk(path, c, SECONDS)


# ---- 4. optional: perf profile of the hub under load ------------------------------------------

def profile(seconds):
    perf = shutil.which("perf")
    if not perf:
        return ["perf not found (Debian: linux-perf): no profile"]
    pids = hub_pids()
    pdir = args.perf_dir or os.path.join(root, "perf")
    os.makedirs(pdir, exist_ok=True)
    recs = []
    for name, pid in pids.items():
        fn = os.path.join(pdir, "%s.data" % name)
        rp = subprocess.Popen([perf, "record", "-q", "-g", "-F", "999", "-p", str(pid), "-o",
                               fn], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
        extra_procs.append((rp, signal.SIGINT))
        recs.append((name, fn, rp))
    time.sleep(0.5)
    w = wrk("hub", 64, seconds)
    for _, _, rp in recs:
        rp.send_signal(signal.SIGINT)
    for _, _, rp in recs:
        rp.wait(timeout=120)
    lines = ["perf record -g -F 999 of each hub process under wrk at 64 connections: %.0f req/s"
             " (data: %s)" % (w["rps"], pdir)]
    for name, fn, _ in recs:
        rep = {}
        for sort in ("dso", "dso,sym"):
            rep[sort] = subprocess.run(
                [perf, "report", "-i", fn, "--no-children", "--stdio", "-g", "none",
                 "--percent-limit", "1", "--sort", sort], capture_output=True, text=True,
                timeout=600).stdout
        rows = [re.sub(r"\s+", " ", ln.strip()) for ln in rep["dso"].splitlines()
                if ln.strip() and not ln.startswith("#")]
        lines.append("  %s: %.0f us CPU/request; by library: %s"
                     % (name, w["cpu"].get(name, 0), ", ".join(rows[:6])))
        n = 0
        for ln in rep["dso,sym"].splitlines():
            if ln.strip() and not ln.startswith("#") and n < 12:
                lines.append("      " + re.sub(r"\s+", " ", ln.strip()))
                n += 1
    return lines


prof = profile(args.profile) if args.profile > 0 else None


# ---- report -----------------------------------------------------------------------------------

def us(v):
    return "%.0f" % v if v == v else "-"


def verdict(ok):
    return "meets" if ok else "MISSES"


out = []
w = out.append
cpu_model = ""
try:
    with open("/proc/cpuinfo") as f:
        cpu_model = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
except (OSError, AttributeError):
    pass
wver = subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.split(" [")[0]
nver = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
w("relayhub proxy benchmark: %d CPUs (%s), %s, %s, build %s (buildtype %s%s), load %s at the"
  " start, %s at the end" % (os.cpu_count(), cpu_model, wver, nver.replace("nginx version: ", ""),
                             harness.BUILD, build_option("buildtype"),
                             "" if build_option("sanitize") in (None, "none")
                             else ", SANITIZED: figures mean little", load_start, loadavg()))
w("upstream: one fake-vendor (TLS, ALPN http/1.1) on loopback, reached over TLS by every path;"
  " client legs: direct TLS, nginx %s, hub %s%s"
  % (ctls.upper(), ctls.upper(), "" if args.client_tls else
     " (direct's client pays the TLS that the proxies pay on their upstream leg)"))
w("nginx: worker_processes auto (%d), upstream keepalive 512, proxy_http_version 1.1,"
  " proxy_buffering off; hub: hub-gateway, hub-tunnel, agent with %d agent-adapters (HTTP/1.1"
  " to the fake: it offers no h2), log.level warn"
  % (len(children(nginx.pid)), len(hub_pids()) - 3))
if fake_cuts_tls:
    w("WARNING: this fake-vendor closed a keep-alive TLS connection within 6 s: its TLS"
      " connections live ~5 s (lws 4.1 TLS-accept timeout left armed on raw sockets), so"
      " pooled upstream connections and long streams get cut; expect reconnects and errors")
w("")
if table:
    w("Non-streamed POST /v1/chat/completions (%d-byte body, 5-token answer of ~1.6 KB), wrk"
      " %d s per cell, 1 thread at 1 connection, else 2" % (
          len(json.dumps(CHAT, separators=(",", ":"))), SECONDS))
    w("  CPU us/req: utime+stime per request of the path's own processes (nginx workers; the"
      " hub's five) and of the fake")
    w("%-7s %6s %9s %8s %8s %8s %7s %10s %9s" % ("path", "conns", "req/s", "p50 us", "p90 us",
                                                 "p99 us", "errors", "proxy CPU", "fake CPU"))
    for c in CONNS:
        for path in ORDER:
            r = table[(path, c)]
            w("%-7s %6d %9.0f %8d %8d %8d %7d %10s %9.0f"
              % (path, c, r["rps"], r["p50"], r["p90"], r["p99"], r["errors"],
                 "-" if path == "direct" else "%.0f" % r["cpu_proxy"], r["cpu"]["fake"]))
    busy = ["%s@%d %.0f%%" % (p, c, table[(p, c)]["other_pct"]) for c in CONNS for p in ORDER
            if table[(p, c)]["other_pct"] >= 10]
    if busy:
        w("  NOTE: other processes on this machine used CPU during some cells (%% of one CPU):"
          " %s; those figures are disturbed" % ", ".join(busy))
    for c in CONNS:
        r = table[("hub", c)]
        w("  hub CPU us/req at %3d conns: %s" % (c, ", ".join(
            "%s %.0f" % (k, v) for k, v in r["cpu"].items() if k != "fake")))
    w("")
if streams:
    w("Streams: %d per path, %d chunks %d ms apart (fake switches, server-wide), interleaved"
      % (NSTREAMS, STREAM_CHUNKS, STREAM_DELAY_MS))
    w("  TTFB: request sent -> first SSE event at the client. chunk: the fake's segment leaving"
      " on lo (kernel timestamp) -> the event at the client.")
    w("  gap: time between consecutive content events minus the fake's %d ms pacing."
      % STREAM_DELAY_MS)
    w("%-7s %7s %9s %9s %10s %10s %9s %9s %8s %7s"
      % ("path", "events", "TTFB p50", "TTFB p99", "chunk p50", "chunk p99", "gap p50",
         "gap p99", "samples", "failed"))
    for path in ORDER:
        s = streams[path]
        w("%-7s %7s %9s %9s %10s %10s %9s %9s %8d %7d"
          % (path, "%d" % statistics.median(s["events"]) if s["events"] else "-",
             us(pct(s["ttfb"], 50)), us(pct(s["ttfb"], 99)), us(pct(s["delay"], 50)),
             us(pct(s["delay"], 99)), us(pct(s["gaps"], 50)), us(pct(s["gaps"], 99)),
             len(s["delay"]), s["failed"]))
    if not streams["hub"]["delay"]:
        w("  (no chunk delays: the lo sniffer needs root and AF_PACKET; see the gap columns)")
    w("")
per_stream = None
if mem:
    w("Memory: %d idle streams through the hub (the fake stalls after the first content event):"
      " %d opened, %d failed, in %.1f s; at the measurement the fake held %d and %d client"
      " connections were open" % (mem["n"], mem["opened"], mem["failed"], mem["open_s"],
                                  mem["fake_active"], mem["still"]))
    w("%-22s %12s %12s %11s" % ("process", "RSS before", "RSS after", "KiB/stream"))
    n = max(mem["opened"], 1)
    sums = {}
    for k in mem["before"]:
        b, a = mem["before"][k], mem["after"][k]
        side = "hub" if k.startswith("hub-") else "agent"
        sb, sa = sums.get(side, (0, 0))
        sums[side] = (sb + b, sa + a)
        w("%-22s %8d KiB %8d KiB %11.1f" % (k, b, a, (a - b) / n))
    for side, label in (("hub", "hub host (gw+tun+bill)"), ("agent", "agent host (agent+kids)")):
        b, a = sums[side]
        w("%-22s %8d KiB %8d KiB %11.1f" % (label, b, a, (a - b) / n))
    per_stream = (sums["hub"][1] - sums["hub"][0]) / n
    per_stream_all = per_stream + (sums["agent"][1] - sums["agent"][0]) / n
    w("  (DESIGN §6 sizes memory per stream on the hub host; the agent runs on the provider's"
      " machine. The fake offers only HTTP/1.1, so each stream also holds its own TLS"
      " connection in an agent-adapter; a vendor speaking h2 shares connections)")
    if not mem["all_cancelled"]:
        w("  (after the clients closed them, the fake still had streams open 30 s later)")
    w("")

w("DESIGN.md §6 budget vs the hub (overhead = path minus direct, same run)")
w("%-32s %10s %10s %12s %8s" % ("figure", "nginx", "hub", "hub budget", "hub"))


def row(name, n, h, budget, ok, fmt="%10.0f"):
    w("%-32s %s %s %12s %8s" % (name, fmt % n if n is not None else "%10s" % "-", fmt % h,
                                budget, verdict(ok)))


if (("direct", 1)) in table:
    d, n, h = (table[(p, 1)] for p in ORDER)
    row("added p50 @1 conn (us)", n["p50"] - d["p50"], h["p50"] - d["p50"],
        "<= %d" % BUDGET["p50_us"], h["p50"] - d["p50"] <= BUDGET["p50_us"])
    row("added p99 @1 conn (us)", n["p99"] - d["p99"], h["p99"] - d["p99"],
        "<= %d" % BUDGET["p99_us"], h["p99"] - d["p99"] <= BUDGET["p99_us"])
if ("hub", 64) in table:
    rh = table[("hub", 64)]["rps"]
    row("req/s @64 conns", table[("nginx", 64)]["rps"], rh, ">= %d" % BUDGET["rps64"],
        rh >= BUDGET["rps64"])
if streams and streams["hub"]["ttfb"] and streams["direct"]["ttfb"]:
    t = {p: pct(streams[p]["ttfb"], 50) for p in ORDER}
    row("added TTFB p50 (us)", t["nginx"] - t["direct"], t["hub"] - t["direct"],
        "<= %d" % BUDGET["ttfb_us"], t["hub"] - t["direct"] <= BUDGET["ttfb_us"])
    kind = "delay" if streams["hub"]["delay"] and streams["direct"]["delay"] else "gaps"
    for q in (50, 99):
        d = {p: pct(streams[p][kind], q) for p in ORDER}
        row("added chunk %s p%d (us)" % ("delay" if kind == "delay" else "gap", q),
            d["nginx"] - d["direct"], d["hub"] - d["direct"], "<= %d" % BUDGET["chunk_us"],
            d["hub"] - d["direct"] <= BUDGET["chunk_us"])
if per_stream is not None:
    row("RSS/idle stream, hub host (KiB)", None, per_stream, "<= %d" % BUDGET["idle_kib"],
        per_stream <= BUDGET["idle_kib"], fmt="%10.1f")
    row("  with agent+adapters (KiB)", None, per_stream_all, "<= %d" % BUDGET["idle_kib"],
        per_stream_all <= BUDGET["idle_kib"], fmt="%10.1f")
if prof:
    w("")
    out.extend(prof)
print("\n".join(out), flush=True)
