"""Integration-test harness: real hub and agent processes on loopback, in a temporary folder.

Each test file is a plain script whose test_* functions run in order; run_tests() prints one
line per test and exits non-zero when any failed. Processes started through the harness are
killed when the script ends, whatever happens.
"""

import asyncio
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request

BUILD = os.environ.get("RELAYHUB_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
BIN = {
    "hub-gateway": os.path.join(BUILD, "services", "gateway", "hub-gateway"),
    "hubctl": os.path.join(BUILD, "services", "hubctl", "hubctl"),
    "hub-tunnel": os.path.join(BUILD, "services", "tunnel", "hub-tunnel"),
    "hub-billing": os.path.join(BUILD, "services", "billing", "hub-billing"),
    "ledger-diff": os.path.join(BUILD, "services", "hubctl", "ledger-diff"),
    "agent": os.path.join(BUILD, "agent", "agent"),
    "bus-tap": os.path.join(BUILD, "bus", "bus-tap"),
}

_procs = []
_tmpdirs = []


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass
    if not os.environ.get("RELAYHUB_KEEP_TMP"):
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def tmpdir(prefix="relayhub-it-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


_given_ports = set()


def free_port():
    """A loopback port nobody listens on. Random, below the kernel's ephemeral range, so that
    tests running side by side (and their outgoing connections) do not pick the same one."""
    import random
    while True:
        port = random.randint(20000, 32000)
        if port in _given_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port


def run(args, check=True, **kw):
    """Runs a command to completion; returns CompletedProcess with text output."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r


def wait_until(fn, timeout=10.0, interval=0.05, what="condition"):
    """Polls fn until it returns a truthy value; returns it or raises AssertionError."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # a server not up yet counts as "not yet"
            last = e
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


def spawn(args, log_path, env=None):
    """Starts a long-running process with stdout+stderr to log_path."""
    f = open(log_path, "ab")
    p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    f.close()
    _procs.append(p)
    return p


def log_events(path):
    """Parses a JSON-lines log; every line must be one JSON object."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise AssertionError("log line is not JSON in %s: %r" % (path, line))
            assert isinstance(obj, dict), line
            for k in ("time", "level", "process", "event"):
                assert k in obj, "log line without %s: %r" % (k, line)
            out.append(obj)
    return out


def find_events(path, event, **fields):
    """Every log line of path with this event whose fields match."""
    return [e for e in log_events(path)
            if e["event"] == event and all(str(e.get(k)) == str(v) for k, v in fields.items())]


def has_event(path, event, **fields):
    """The first matching log line, or None."""
    found = find_events(path, event, **fields)
    return found[0] if found else None


def has_event_with(path, event, text):
    """A matching log line whose msg contains text, or None."""
    for e in find_events(path, event):
        if text in e.get("msg", ""):
            return e
    return None


class Hub:
    """A hub directory made by `hubctl init`, and its hub-tunnel process."""

    def __init__(self, root=None, store="sqlite", mysql_url=None, sets=()):
        self.dir = os.path.join(root or tmpdir(), "hub")
        self.tunnel_port = free_port()
        self.admin_port = free_port()
        self.metrics_port = free_port()
        self.gateway_port = free_port()
        self.gateway_metrics_port = free_port()
        self.billing_metrics_port = free_port()
        args = [BIN["hubctl"], "init", "--dir", self.dir,
                "--set", "billing.metrics_listen=127.0.0.1:%d" % self.billing_metrics_port,
                # Tests that are not about prices serve unpriced models for free; billing
                # tests set prices and billing.unpriced=refuse.
                "--set", "billing.unpriced=free",
                "--set", "gateway.listen=127.0.0.1:%d" % self.gateway_port,
                "--set", "gateway.metrics_listen=127.0.0.1:%d" % self.gateway_metrics_port,
                "--set", "tunnel.listen=127.0.0.1:%d" % self.tunnel_port,
                "--set", "tunnel.admin_listen=127.0.0.1:%d" % self.admin_port,
                "--set", "tunnel.metrics_listen=127.0.0.1:%d" % self.metrics_port]
        if store == "mysql":
            args += ["--store", "mysql", "--mysql-url", mysql_url]
        for s in sets:
            args += ["--set", s]
        out = run(args).stdout
        self.pin = re.search(r"^pin: (\S+)$", out, re.M).group(1)
        self.token = re.search(r"^admin_token: (\S+)$", out, re.M).group(1)
        self.conf = os.path.join(self.dir, "hub.conf")
        self.url = "wss://127.0.0.1:%d/tunnel/connect" % self.tunnel_port
        self.log = os.path.join(self.dir, "tunnel.log")
        self.proc = None
        self.billing = None
        self.billing_log = os.path.join(self.dir, "billing.log")

    def hubctl(self, *args, check=True):
        return run([BIN["hubctl"], "--config", self.conf] + list(args), check=check)

    def start(self, extra=()):
        self.proc = spawn([BIN["hub-tunnel"], "--config", self.conf] + list(extra), self.log)
        wait_until(lambda: self.admin("GET", "/admin/agents")[0] == 200, what="hub-tunnel up")
        return self

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=timeout)
        return None

    def start_billing(self, extra=()):
        """Starts hub-billing on this hub's config; waits for its metrics listener."""
        self.billing = spawn([BIN["hub-billing"], "--config", self.conf] + list(extra),
                             self.billing_log)
        wait_until(lambda: self.metrics_billing() is not None, what="hub-billing up")
        return self.billing

    def stop_billing(self, sig=signal.SIGTERM, timeout=10):
        if self.billing and self.billing.poll() is None:
            self.billing.send_signal(sig)
            return self.billing.wait(timeout=timeout)
        return None

    def metrics_billing(self):
        """hub-billing's metrics text, or None while it does not answer."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.billing_metrics_port,
                                        timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def metric_billing(self, name, labels=""):
        """A sample from hub-billing's metrics (0 when absent)."""
        text = self.metrics_billing() or ""
        want = name + ("{%s}" % labels if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def start_gateway(self, extra=(), billing=True):
        """Starts hub-gateway on this hub's config (and hub-billing unless it runs or billing
        is False); waits for /healthz."""
        if billing and (self.billing is None or self.billing.poll() is not None):
            self.start_billing()
        self.gateway_log = os.path.join(self.dir, "gateway.log")
        self.gateway = spawn([BIN["hub-gateway"], "--config", self.conf] + list(extra),
                             self.gateway_log)
        wait_until(lambda: self.gw("GET", "/healthz")[0] == 200, what="hub-gateway up")
        return self.gateway

    def user_key(self, user):
        """Creates a user and a key; returns the key."""
        self.hubctl("user", "add", user)
        out = self.hubctl("key", "create", user).stdout
        return re.search(r"^(sk-\S+)$", out, re.M).group(1)

    def gw(self, method, path, body=None, key=None, headers=None, timeout=30, raw=False):
        """Calls the gateway; returns (status, parsed JSON or text, headers)."""
        c = http.client.HTTPConnection("127.0.0.1", self.gateway_port, timeout=timeout)
        h = dict(headers or {})
        if key:
            h["Authorization"] = "Bearer " + key
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        c.close()
        if raw:
            return r.status, out, dict(r.getheaders())
        try:
            parsed = json.loads(out)
        except ValueError:
            parsed = out.decode("utf-8", "replace")
        return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}

    def admin(self, method, path, body=None, token=None, timeout=15):
        """Calls the admin API; returns (status, parsed JSON or raw text, headers)."""
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        headers = {}
        tok = self.token if token is None else token
        if tok:
            headers["Authorization"] = "Bearer " + tok
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return r.status, parsed, dict(r.getheaders())

    def agents(self):
        st, body, _ = self.admin("GET", "/admin/agents")
        assert st == 200, (st, body)
        return {a["id"]: a for a in body["agents"]}

    def echo(self, agent_id, text, timeout=15):
        return self.admin("POST", "/admin/agents/%s/messages" % agent_id, {"text": text},
                          timeout=timeout)

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        assert r.status == 200
        return text

    def metric_gw(self, name, labels=""):
        """A sample from hub-gateway's metrics."""
        c = http.client.HTTPConnection("127.0.0.1", self.gateway_metrics_port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        for line in text.splitlines():
            if line.startswith(name + "{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    def wait_registry(self, count, timeout=5):
        """Waits until hub-tunnel's cached registry holds at least count agents."""
        wait_until(lambda: (self.metric("relayhub_tunnel_registry_agents") or 0) >= count,
                   timeout=timeout, what="registry with %d agents" % count)

    def metric(self, name, labels=""):
        """Value of one sample, e.g. metric('relayhub_tunnel_handshake_failures_total',
        'reason="bad_signature"')."""
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return None


class Agent:
    """An agent directory made by `agent init`, registered with the hub, and its process."""

    def __init__(self, hub, name=None, root=None, register=True, pin=None, url=None):
        self.hub = hub
        self.dir = os.path.join(root or tmpdir(), name or "agent")
        out = run([BIN["agent"], "init", "--dir", self.dir, "--hub", url or hub.url,
                   "--pin", pin or hub.pin]).stdout
        self.pubkey = re.search(r"^pubkey: (\S+)$", out, re.M).group(1)
        self.id = re.search(r"^agent_id: (\S+)$", out, re.M).group(1)
        self.name = name or ("agent-" + self.id[:8])
        self.log = os.path.join(self.dir, "agent.log")
        self.proc = None
        if register:
            got = hub.hubctl("agent", "add", self.name, "--pubkey", self.pubkey).stdout.strip()
            assert got == self.id, (got, self.id)

    def start(self, sets=(), env=None):
        args = [BIN["agent"], "run", "--dir", self.dir]
        for s in sets:
            args += ["--set", s]
        self.proc = spawn(args, self.log, env=env)
        return self

    def wait_connected(self, timeout=10):
        wait_until(lambda: self.id in self.hub.agents(), timeout=timeout,
                   what="agent %s connected" % self.id)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=timeout)
        return None


# ---- a hand-driven tunnel client, for what a real agent never does -------------------------

def envelope(type_, payload=None, req_id=None, v=1):
    import msgpack
    env = {"v": v, "type": type_, "payload": payload or {}}
    if req_id is not None:
        env["req_id"] = req_id
    return msgpack.packb(env, use_bin_type=True)


def unpack(data):
    import msgpack
    return msgpack.unpackb(data, raw=False)


def auth_message(nonce, agent_id, pin, version=1):
    tag = b"relayhub/tunnel-auth/v1\x00"
    return (tag + version.to_bytes(4, "big") + nonce + bytes([len(agent_id)]) +
            agent_id.encode() + bytes([len(pin)]) + pin.encode())


def load_agent_key(agent_dir):
    """The agent's signing key from its agent.key (seed in base64)."""
    import base64
    import nacl.signing
    with open(os.path.join(agent_dir, "agent.key")) as f:
        lines = f.read().split("\n")
    assert lines[0] == "relayhub-agent-key-v1"
    return nacl.signing.SigningKey(base64.b64decode(lines[1]))


class RawClient:
    """Speaks the tunnel protocol step by step; records the close code the hub sends."""

    def __init__(self, hub):
        self.hub = hub
        self.ws = None

    async def connect(self, path="/tunnel/connect"):
        import websockets
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ws = await websockets.connect(
            "wss://127.0.0.1:%d%s" % (self.hub.tunnel_port, path), ssl=ctx,
            subprotocols=["relayhub-tunnel"], max_size=None, ping_interval=None)
        return self

    async def send(self, data):
        await self.ws.send(data)

    async def recv(self, timeout=5):
        return unpack(await asyncio.wait_for(self.ws.recv(), timeout))

    async def close_code(self, timeout=5):
        """Waits for the hub to close the connection; returns its close code."""
        import websockets
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as e:
            return e.code
        except asyncio.TimeoutError:
            return None

    async def handshake(self, agent_id, key, pin=None, keep_auth=None):
        """hello → challenge → auth; returns the hub's answer (welcome) or raises."""
        await self.send(envelope("hello", {"proto_version": 1, "agent_version": "raw/1"}))
        ch = await self.recv()
        assert ch["type"] == "challenge", ch
        nonce = ch["payload"]["nonce"]
        sig = key.sign(auth_message(nonce, agent_id, pin or self.hub.pin)).signature
        auth = envelope("auth", {"agent_id": agent_id, "nonce": nonce, "signature": sig,
                                 "agent_version": "raw/1"})
        if keep_auth is not None:
            keep_auth.append(auth)
        await self.send(auth)
        import websockets
        try:
            return await self.recv()
        except websockets.ConnectionClosed as e:
            return {"type": "closed", "code": e.code}

    async def close(self):
        if self.ws:
            await self.ws.close()


_loop = asyncio.new_event_loop()


def arun(coro):
    """Runs a coroutine on the harness's one event loop (clients outlive a single call)."""
    return _loop.run_until_complete(coro)


def run_tests(namespace):
    """Runs every test_* function of a module in definition order; exits 1 on any failure."""
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    only = os.environ.get("RELAYHUB_ONLY")
    failed = 0
    for name, fn in tests:
        if only and only not in name:
            continue
        t0 = time.monotonic()
        try:
            fn()
            print("ok   %-50s %6.2fs" % (name, time.monotonic() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %-50s %6.2fs" % (name, time.monotonic() - t0), flush=True)
            traceback.print_exc()
    ran = len(tests)
    print("%d passed, %d failed" % (ran - failed, failed))
    _cleanup()
    sys.exit(1 if failed else 0)
