"""End to end, the whole chain on loopback: the official `openai` npm SDK → hub-gateway →
hub-tunnel → agent → agent-adapter → fake OpenAI over HTTPS (reached through the agent's
test-only connect_to, so URL, Host and SNI stay api.openai.com)."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_vendor"))
import fakevendor  # noqa: E402
from harness import Agent, Hub, run_tests, tmpdir, wait_until  # noqa: E402

E2E = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e")
root = tmpdir()
fv = fakevendor.FakeVendor(root).start()
hub = Hub(root).start()
hub.start_gateway()
KEY = hub.user_key("sdk-user")
agent = Agent(hub, "e2e-agent", root=root)
with open(os.path.join(agent.dir, "agent.conf"), "a") as f:
    f.write("\n[upstream]\nconnect_to = %s\nca_file = %s\n\n[instance.main]\nvendor = openai\n"
            "api_key = %s\nmodels = gpt-4o-mini\nmax_concurrency = 16\n"
            % (fv.connect_to("api.openai.com"), fv.ca, fakevendor.OPENAI_KEY))
hub.wait_registry(1)
agent.start()
agent.wait_connected()
wait_until(lambda: "gpt-4o-mini" in json.dumps(hub.gw("GET", "/v1/models", key=KEY)[1]),
           timeout=15, what="model routable at the gateway")


def sdk(*checks, key=KEY):
    env = dict(os.environ, RELAYHUB_BASE_URL="http://127.0.0.1:%d/v1" % hub.gateway_port,
               RELAYHUB_API_KEY=key, RELAYHUB_MODEL="gpt-4o-mini")
    r = subprocess.run(["node", os.path.join(E2E, "openai_sdk.mjs")] + list(checks),
                       capture_output=True, text=True, timeout=120, env=env, cwd=E2E)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_models_listing():
    out = sdk("models")["models"]
    assert out["ids"] == ["gpt-4o-mini"], out


def test_non_streamed_chat():
    fv.reset()
    out = sdk("chat")["chat"]
    assert "error" not in out, out
    assert out["content"] and out["usage"]["completion_tokens"] > 0
    last = fv.last()
    hm = last["header_map"]
    # the vendor saw the provider's key, never the user's, and asked for identity encoding
    assert hm["authorization"] == "Bearer " + fakevendor.OPENAI_KEY
    assert KEY not in json.dumps(last)
    assert hm.get("accept-encoding") == "identity"
    assert hm["host"] == "api.openai.com"


def test_streamed_text_equals_what_the_vendor_sent():
    fv.reset()
    fv.config(chunks=20)
    out = sdk("chat", "stream")
    chat, stream = out["chat"], out["stream"]
    assert "error" not in stream, stream
    assert stream["text"] == chat["content"], (stream["text"], chat["content"])
    assert stream["chunks"] >= 20
    # the usage chunk the agent asked for on the user's behalf never reaches this user...
    assert stream["usageChunks"] == 0, stream
    body = fv.last()["body"]
    assert '"include_usage":true' in body.replace(" ", "")
    # ...while the gateway read it from the bytes it relayed (DESIGN §4: the gateway's figure)
    from harness import find_events
    done = [e for e in find_events(hub.gateway_log, "request_done")
            if "/v1/chat/completions 200" in e["msg"]]
    assert "usage reported: in" in done[-1]["msg"] and "out 20" in done[-1]["msg"], done[-1]


def test_stream_with_usage_when_asked():
    out = sdk("stream_with_usage")["stream_with_usage"]
    assert out["usage"] and out["usage"]["completion_tokens"] > 0, out


def test_abort_reaches_the_vendor():
    fv.reset()
    fv.config(chunks=400, **{"delay-ms": 30})
    out = sdk("abort")["abort"]
    assert out["aborted"] and out["after"] >= 3, out
    wait_until(lambda: fv.stats()["streams_cancelled"] >= 1, timeout=5,
               what="the vendor saw the transfer cancelled")
    fv.config(chunks=5, **{"delay-ms": 0})


def test_wrong_key_is_an_authentication_error():
    out = sdk("bad_key")["bad_key"]
    assert out["rejected"] and out["isAuth"] and out["status"] == 401, out
    assert out["code"] == "invalid_api_key"


def test_unknown_model_is_not_found():
    out = sdk("unknown_model")["unknown_model"]
    assert out["rejected"] and out["isNotFound"] and out["code"] == "model_not_found", out


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def _procs():
    """The chain's processes: name → pid."""
    out = {"hub-gateway": hub.gateway.pid, "hub-tunnel": hub.proc.pid, "agent": agent.proc.pid}
    kids = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True,
                          text=True).stdout.split()
    for i, k in enumerate(kids):
        out["agent-adapter-%d" % i] = int(k)
    return out


def _post(body, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", hub.gateway_port, timeout=timeout)
    c.request("POST", "/v1/chat/completions", body=body,
              headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def test_20_mib_body_passes_and_40_mib_is_413():
    fv.reset()
    big = json.dumps({"model": "gpt-4o-mini", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "y" * (20 << 20)}]}).encode()
    st, data = _post(big)
    assert st == 200, (st, data[:300])
    assert fv.last()["body_len"] == len(big)
    # 40 MiB: refused from the headers, before the body is read
    c = socket.create_connection(("127.0.0.1", hub.gateway_port), timeout=30)
    c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d"
              b"\r\n\r\n{\"model\":\"gpt-4o-mini\"," % (40 << 20))
    resp = b""
    while b"request_too_large" not in resp:
        piece = c.recv(65536)   # the answer comes, then the connection closes
        if not piece:
            break
        resp += piece
    c.close()
    assert resp.startswith(b"HTTP/1.1 413") and b"request_too_large" in resp, resp[:300]


def test_reader_pausing_10s_keeps_memory_bounded_and_gets_everything():
    fv.reset()
    fv.config(chunks=20000)
    s = socket.create_connection(("127.0.0.1", hub.gateway_port), timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}).encode()
    before = {n: _rss_kib(p) for n, p in _procs().items()}
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d"
              b"\r\n\r\n" % len(body) + body)
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    time.sleep(10)  # the user stops reading; the vendor keeps producing
    during = {n: _rss_kib(p) for n, p in _procs().items()}
    growth = {n: during[n] - before.get(n, during[n]) for n in during}
    print("    RSS growth while the reader paused (KiB): %s" % growth)
    if not fakevendor.sanitized():   # ASan's quarantine keeps freed memory: RSS means little
        for name, kib in growth.items():
            assert kib < 16 * 1024, (name, kib)   # bounded by windows and buffers, not the stream
    buf = first
    s.settimeout(30)
    while not buf.endswith(b"\r\n0\r\n\r\n"):
        piece = s.recv(1 << 20)
        if not piece:
            break
        buf += piece
    s.close()
    text = buf.split(b"\r\n\r\n", 1)[1].decode("latin-1")
    words = [w for w in text.split('"content":"')[1:]]
    assert len(words) >= 20000, len(words)
    assert '"content":" tok19999"' in text and "data: [DONE]" in text
    fv.config(chunks=5)


def test_50_chunks_20ms_apart_arrive_as_50_reads():
    fv.reset()
    fv.config(chunks=50, **{"delay-ms": 20})
    c = http.client.HTTPConnection("127.0.0.1", hub.gateway_port, timeout=30)
    c.request("POST", "/v1/chat/completions",
              json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}),
              {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200
    arrivals, buf = [], b""
    while True:
        piece = r.read1(65536)
        if not piece:
            break
        buf += piece
        n = buf.count(b'"content":" tok') + buf.count(b'"content":"tok')
        while len(arrivals) < n:
            arrivals.append(time.monotonic())
    c.close()
    fv.config(chunks=5, **{"delay-ms": 0})
    assert len(arrivals) == 50, len(arrivals)
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    # no batching: the chunks keep the vendor's pacing (a batch would show ~0 gaps)
    assert gaps[len(gaps) // 2] > 0.010, gaps
    print("    median gap between chunks at the client: %.1f ms" % (1000 * gaps[len(gaps) // 2]))


def test_tls_gateway_speaks_http2_and_http11():
    """A second gateway with TLS (the hub's own certificate), sharing the tunnel: HTTP/2 where
    the client offers it, HTTP/1.1 otherwise, streaming both ways."""
    from harness import BIN, free_port, spawn
    port = free_port()
    crt, key = os.path.join(hub.dir, "hub.crt"), os.path.join(hub.dir, "hub.key")
    gw2 = spawn([BIN["hub-gateway"], "--config", hub.conf,
                 "--set", "gateway.listen=127.0.0.1:%d" % port,
                 "--set", "gateway.cert=" + crt, "--set", "gateway.key=" + key,
                 "--set", "gateway.metrics_listen=", "--set", "bus.gateway_tap=",
                 "--set", "gateway.name=gateway-tls"], os.path.join(root, "gateway-tls.log"))
    url = "https://127.0.0.1:%d/v1/chat/completions" % port
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []})
    wait_until(lambda: subprocess.run(["curl", "-sk", "https://127.0.0.1:%d/healthz" % port],
                                      capture_output=True).returncode == 0, what="TLS gateway")
    wait_until(lambda: "gpt-4o-mini" in subprocess.run(
        ["curl", "-sk", "-H", "Authorization: Bearer " + KEY,
         "https://127.0.0.1:%d/v1/models" % port], capture_output=True, text=True).stdout,
        timeout=10, what="routing table of the second gateway")
    for flag, proto in (("--http2", "HTTP/2"), ("--http1.1", "HTTP/1.1")):
        r = subprocess.run(["curl", "-skN", flag, "-D", "-", url,
                            "-H", "Authorization: Bearer " + KEY,
                            "-H", "Content-Type: application/json", "-d", body],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(proto), r.stdout[:100]
        assert "x-request-id:" in r.stdout.lower()
        assert "data: [DONE]" in r.stdout and '"content":" tok4"' in r.stdout, r.stdout[-500:]
    gw2.terminate()
    assert gw2.wait(timeout=10) == 0


run_tests(globals())
