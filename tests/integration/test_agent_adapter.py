"""agent run + agent-adapter against a fake OpenAI/Azure vendor, driven from the hub side.

The hub side is a real hub-tunnel with a hand-driven gateway (a ZeroMQ DEALER on the tunnel's
ROUTER, as in test_relay.py), so every envelope can be checked. The vendor is a small HTTPS
server in this file speaking OpenAI's wire format (SSE streams, chunked HTTP/1.1), with a
certificate for api.openai.com and myres.openai.azure.com signed by a throwaway CA; the agent
reaches it through its test-only upstream.connect_to and trusts the CA through
upstream.ca_file, so the URL, Host and SNI stay the official ones."""

import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import sys

import zmq

from harness import Agent, Hub, envelope, run, run_tests, tmpdir, unpack, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_vendor"))
try:
    import fakevendor   # tests/fake_vendor: the C fake-vendor and its control API
except ImportError:
    fakevendor = None

PROVIDER_KEY = "sk-provider-test-000"
AZURE_KEY = "az-key-000"
BIG_BYTES = 1024 * 1024
WINDOW = 256 * 1024


# ---- the fake vendor ------------------------------------------------------------------------

class Vendor:
    """Records every request; behaviour is chosen by the model name."""

    def __init__(self, certdir):
        self.lock = threading.Lock()
        self.requests = []
        self.sni = []
        self.dropped = 0
        self.big_sent = b""
        self.stream_sent = {}
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(certdir, "srv.pem"), os.path.join(certdir, "srv.key"))

        def on_sni(sslobj, name, _ctx):
            with self.lock:
                self.sni.append(name)
        ctx.sni_callback = on_sni
        vendor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                vendor.handle(self, None)

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                vendor.handle(self, self.rfile.read(n))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.requests)

    def last(self):
        with self.lock:
            return self.requests[-1]

    # The answer to one request.
    def handle(self, h, body):
        hdrs = {k.lower(): v for k, v in h.headers.items()}
        rec = {"method": h.command, "path": h.path, "headers": hdrs, "body": body}
        with self.lock:
            self.requests.append(rec)
        azure = h.path.startswith("/openai/")
        if azure and hdrs.get("api-key") != AZURE_KEY:
            return self.json(h, 401, {"error": {"code": "401", "message": "Access denied"}})
        if not azure and hdrs.get("authorization") != "Bearer " + PROVIDER_KEY:
            return self.json(h, 401, {"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error", "param": None,
                                                "code": "invalid_api_key"}})
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            return self.json(h, 400, {"error": {"message": "bad json", "type": "x",
                                                "param": None, "code": None}})
        rec["json"] = req
        model = req.get("model") or h.path.split("/")[3] if azure else req.get("model")
        if req.get("stream"):
            return self.stream(h, model, req)
        return self.json(h, 200, {"id": "chatcmpl-1", "object": "chat.completion",
                                  "model": model, "choices": [{"index": 0, "message": {
                                      "role": "assistant", "content": "hello"},
                                      "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 11, "completion_tokens": 7,
                                            "total_tokens": 18}})

    def json(self, h, status, obj):
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.send_header("x-request-id", "req_vendor_1")
        h.send_header("set-cookie", "__cf_bm=secret; path=/")
        h.send_header("openai-organization", "org-provider-secret")
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    def stream(self, h, model, req):
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.send_header("set-cookie", "__cf_bm=secret; path=/")
        h.end_headers()
        sent = bytearray()

        def chunk(data):
            sent.extend(data)
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        def event(obj):
            chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")
        usage = (req.get("stream_options") or {}).get("include_usage")
        base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": model}
        try:
            if model.startswith("gpt-slow"):
                for i in range(400):
                    event(dict(base, choices=[{"index": 0, "delta": {"content": "t%d " % i}}]))
                    time.sleep(0.05)
            elif model == "gpt-big":
                pad = "x" * 4000
                while len(sent) < BIG_BYTES:
                    event(dict(base, choices=[{"index": 0, "delta": {"content": pad}}]))
                with self.lock:
                    self.big_sent = bytes(sent)
            else:
                for word in ("Hel", "lo", "!"):
                    c = dict(base, choices=[{"index": 0, "delta": {"content": word}}])
                    if usage:
                        c["usage"] = None
                    event(c)
                if usage:
                    event(dict(base, choices=[], usage={"prompt_tokens": 9,
                                                        "completion_tokens": 3,
                                                        "total_tokens": 12}))
            chunk(b"data: [DONE]\n\n")
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
            with self.lock:
                self.stream_sent[model] = bytes(sent)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            with self.lock:
                self.dropped += 1
            h.close_connection = True


def make_certs(d):
    """A throwaway CA and a server certificate for the official hosts."""
    def ossl(*a):
        run(["openssl"] + list(a))
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-subj", "/CN=relayhub test CA",
         "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", d + "/srv.key", "-out", d + "/srv.csr", "-subj", "/CN=api.openai.com")
    with open(d + "/ext.cnf", "w") as f:
        f.write("subjectAltName=DNS:api.openai.com,DNS:myres.openai.azure.com\n"
                "extendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", d + "/srv.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key",
         "-CAcreateserial", "-out", d + "/srv.pem", "-days", "2", "-extfile", d + "/ext.cnf")


# ---- setup -----------------------------------------------------------------------------------

root = tmpdir()
certs = os.path.join(root, "certs")
os.makedirs(certs)
make_certs(certs)
vendor = Vendor(certs)
hub = Hub(root).start()
agent = Agent(hub, "adapter-agent", root=root)
with open(os.path.join(agent.dir, "agent.conf"), "a") as f:
    f.write("""
[upstream]
connect_to = api.openai.com:443:127.0.0.1:%(p)d,myres.openai.azure.com:443:127.0.0.1:%(p)d
ca_file = %(ca)s

[instance.oai]
vendor = openai
api_key = %(key)s
models = gpt-4o-mini, gpt-big, gpt-slow, gpt-slow-b, alias=gpt-4o-mini
max_concurrency = 50

[instance.az]
vendor = azure
resource = myres
api_key = %(az)s
models = gpt-4o=my-gpt4o
api_version = 2024-10-21

[instance.limited]
vendor = openai
api_key = %(key)s
models = gpt-slow-one
max_concurrency = 1

[instance.later]
vendor = mistral
models = gemini-pro
""" % {"p": vendor.port, "ca": os.path.join(certs, "ca.pem"), "key": PROVIDER_KEY,
       "az": AZURE_KEY})
hub.wait_registry(1)
ctx = zmq.Context()
presence = ctx.socket(zmq.SUB)
presence.setsockopt(zmq.LINGER, 0)
presence.setsockopt(zmq.SUBSCRIBE, b"")
presence.connect("ipc://" + os.path.join(hub.dir, "presence.ipc"))
time.sleep(0.2)
agent.start()
agent.wait_connected()
gw = ctx.socket(zmq.DEALER)
gw.setsockopt(zmq.LINGER, 0)
gw.setsockopt(zmq.ROUTING_ID, b"gw-adapter-test")
gw.connect("ipc://" + os.path.join(hub.dir, "tunnel.ipc"))
inbox = {}   # req_id -> envelopes received, in order


def adapters():
    """PIDs of the agent's agent-adapter children."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        if ppid == agent.proc.pid and b"agent-adapter" in cmd:
            out.append(int(d))
    return sorted(out)


wait_until(lambda: len(adapters()) == 2, what="two adapters")
wait_until(lambda: "adapter_ready" in open(agent.log).read() and
           open(agent.log).read().count("adapter_ready") >= 2, what="adapters ready")


def pump(timeout=0.2):
    """Moves whatever the tunnel sent into inbox."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not gw.poll(int(left * 1000)):
            return
        e = unpack(gw.recv())
        inbox.setdefault(e.get("req_id"), []).append(e)


def open_stream(model, body=None, path="/v1/chat/completions", headers=None, fmt="openai",
                method="POST", to=None):
    rid = os.urandom(16)
    data = json.dumps(body).encode() if body is not None else b""
    hdrs = [["content-type", "application/json"]] + [list(h) for h in (headers or [])]
    gw.send(envelope("req.open", {"agent_id": (to or agent).id, "attempt": 1, "format": fmt,
                                  "model": model, "method": method, "path": path,
                                  "headers": hdrs, "body_size": len(data)}, req_id=rid))
    # the body in two pieces, as a gateway streams it
    if data:
        gw.send(envelope("req.body", {"data": data[:7]}, req_id=rid))
        gw.send(envelope("req.body", {"data": data[7:]}, req_id=rid))
    inbox[rid] = []
    return rid


def until_end(rid, timeout=10):
    wait_until(lambda: pump(0.05) or any(e["type"] == "resp.end" for e in inbox[rid]),
               timeout=timeout, what="resp.end")
    return inbox[rid]


def parts(envs):
    head = [e for e in envs if e["type"] == "resp.head"]
    body = b"".join(e["payload"]["data"] for e in envs if e["type"] == "resp.chunk")
    end = [e for e in envs if e["type"] == "resp.end"]
    return (head[0]["payload"] if head else None), body, (end[0]["payload"] if end else None)


def received(rid):
    return sum(len(e["payload"]["data"]) for e in inbox[rid] if e["type"] == "resp.chunk")


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
USER_CREDS = [["authorization", "Bearer sk-user-must-not-leak"], ["x-api-key", "sk-user-2"],
              ["cookie", "session=user"], ["connection", "keep-alive"],
              ["x-goog-api-key", "g-user"], ["api-key", "az-user"], ["user-agent", "OpenAI/JS 6"]]


# ---- tests -----------------------------------------------------------------------------------

def test_presence_announces_the_models():
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline, "no presence with models"
        if not presence.poll(500):
            continue
        e = unpack(presence.recv())
        p = e["payload"]
        if e["type"] == "presence" and p.get("agent_id") == agent.id and p.get("models"):
            break
    assert sorted(p["models"]) == sorted(["gpt-4o-mini", "gpt-big", "gpt-slow", "gpt-slow-b",
                                          "alias", "gpt-4o", "gpt-slow-one"]), p
    assert p["capacity"] == 50 + 64 + 1, p
    presence.close()


def test_non_streamed_chat():
    n = vendor.count()
    rid = open_stream("gpt-4o-mini", CHAT, headers=USER_CREDS)
    head, body, end = parts(until_end(rid))
    assert head["status"] == 200, head
    hk = {k for k, v in head["headers"]}
    assert "set-cookie" not in hk and "openai-organization" not in hk, head
    assert "content-type" in hk and "x-request-id" in hk, head
    assert json.loads(body)["choices"][0]["message"]["content"] == "hello"
    assert end.get("error", "") == "", end
    assert end["input_tokens"] == 11 and end["output_tokens"] == 7, end
    assert vendor.count() == n + 1
    r = vendor.last()
    h = r["headers"]
    assert r["path"] == "/v1/chat/completions", r["path"]
    assert h["authorization"] == "Bearer " + PROVIDER_KEY
    for leak in ("x-api-key", "cookie", "x-goog-api-key", "api-key"):
        assert leak not in h, (leak, h)
    assert "sk-user" not in json.dumps(h) and "az-user" not in json.dumps(h)
    assert h["accept-encoding"] == "identity", h
    assert h["host"] == "api.openai.com", h
    assert h["user-agent"] == "OpenAI/JS 6", h
    assert r["json"] == CHAT, r["json"]
    assert vendor.sni[-1] == "api.openai.com", vendor.sni


def test_streamed_chat_gets_include_usage():
    body = dict(CHAT, stream=True)
    rid = open_stream("gpt-4o-mini", body, headers=[["x-relayhub-add-include-usage", "1"],
                                                   ["x-relayhub-stream", "1"]])
    envs = until_end(rid)
    # credit for the uploaded body may come first: it belongs to the upload, not the answer
    types = [e["type"] for e in envs if e["type"] != "credit"]
    assert types[0] == "resp.head" and types[-1] == "resp.end", types
    assert all(t == "resp.chunk" for t in types[1:-1]) and len(types) >= 3, types
    head, data, end = parts(envs)
    assert ["content-type", "text/event-stream"] in head["headers"], head
    assert data == vendor.stream_sent["gpt-4o-mini"], (data, vendor.stream_sent)
    assert b'"usage": {"prompt_tokens": 9' in data
    assert end["input_tokens"] == 9 and end["output_tokens"] == 3, end
    r = vendor.last()
    assert r["json"]["stream_options"] == {"include_usage": True}, r["json"]
    assert r["json"]["messages"] == CHAT["messages"]
    assert "x-relayhub-add-include-usage" not in r["headers"]
    assert "x-relayhub-stream" not in r["headers"]


def test_user_asked_usage_is_left_alone():
    body = dict(CHAT, stream=True, stream_options={"include_usage": True})
    rid = open_stream("gpt-4o-mini", body, headers=[["x-relayhub-add-include-usage", "0"]])
    head, data, end = parts(until_end(rid))
    assert vendor.last()["json"] == body
    assert end["output_tokens"] == 3


def test_azure_deployment():
    rid = open_stream("gpt-4o", dict(CHAT, model="gpt-4o"), headers=USER_CREDS)
    head, body, end = parts(until_end(rid))
    assert head["status"] == 200, (head, body)
    r = vendor.last()
    assert r["path"] == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21", r
    assert r["headers"]["api-key"] == AZURE_KEY
    assert "authorization" not in r["headers"], r["headers"]
    assert r["headers"]["host"] == "myres.openai.azure.com"
    assert vendor.sni[-1] == "myres.openai.azure.com"


def test_renamed_model_is_rewritten_in_the_body():
    body = {"messages": [{"role": "user", "content": "x", "model": "nested-stays"}],
            "model": "alias", "stream": True}
    rid = open_stream("alias", body, headers=[["x-relayhub-add-include-usage", "1"]])
    head, data, end = parts(until_end(rid))
    assert head["status"] == 200
    got = vendor.last()["json"]
    assert got["model"] == "gpt-4o-mini", got
    assert got["messages"][0]["model"] == "nested-stays"
    assert got["stream_options"] == {"include_usage": True}


def test_wrong_path_and_unknown_model_are_refused_without_a_vendor_call():
    n = vendor.count()
    for path, model, status, code in (("/v1/files", "gpt-4o-mini", 404, "unknown_url"),
                                      ("/v1/chat/completions/../../x", "gpt-4o-mini", 404,
                                       "unknown_url"),
                                      ("/v1/chat/completions", "gpt-5-nope", 404,
                                       "model_not_found"),
                                      ("/v1/chat/completions", "gemini-pro", 404,
                                       "model_not_found")):
        rid = open_stream(model, dict(CHAT, model=model), path=path)
        head, body, end = parts(until_end(rid))
        assert head["status"] == status, (path, head)
        err = json.loads(body)["error"]
        assert err["code"] == code and set(err) == {"message", "type", "param", "code"}, err
        assert end["error"], end
    rid = open_stream("gpt-4o-mini", CHAT, fmt="anthropic", path="/v1/messages")
    head, body, end = parts(until_end(rid))
    assert head["status"] == 404 and end["error"]
    assert vendor.count() == n, "the vendor was called"


def test_cancel_reaches_the_vendor():
    before = vendor.dropped
    rid = open_stream("gpt-slow", dict(CHAT, model="gpt-slow", stream=True))
    wait_until(lambda: pump(0.05) or received(rid) > 0, what="first chunk")
    t0 = time.monotonic()
    gw.send(envelope("req.cancel", {"reason": "user went away"}, req_id=rid))
    wait_until(lambda: vendor.dropped > before, timeout=5, interval=0.005,
               what="the vendor sees the drop")
    took = time.monotonic() - t0
    # The fake only notices on its next write (every 50 ms): allow for that and scheduling.
    assert took < 1.0, took
    print("cancel reached the vendor after %.0f ms" % (took * 1000))
    pump(0.3)
    assert not any(e["type"] == "resp.end" for e in inbox[rid])


def test_no_credit_pauses_at_the_window_and_credit_resumes():
    rid = open_stream("gpt-big", dict(CHAT, model="gpt-big", stream=True))
    wait_until(lambda: pump(0.05) or received(rid) > 0, what="first chunk")
    time.sleep(1.0)
    pump(0.2)
    got = received(rid)
    assert WINDOW - 20000 <= got <= WINDOW, got
    assert not any(e["type"] == "resp.end" for e in inbox[rid])
    time.sleep(0.5)
    pump(0.1)
    assert received(rid) == got, "bytes past the window without credit"
    gw.send(envelope("credit", {"bytes": 4 * BIG_BYTES}, req_id=rid))
    head, data, end = parts(until_end(rid, timeout=20))
    assert end.get("error", "") == "", end
    assert data == vendor.big_sent + b"data: [DONE]\n\n"


def test_max_concurrency_refuses_with_429():
    rid1 = open_stream("gpt-slow-one", dict(CHAT, model="gpt-slow-one", stream=True))
    wait_until(lambda: pump(0.05) or received(rid1) > 0, what="first stream running")
    rid2 = open_stream("gpt-slow-one", dict(CHAT, model="gpt-slow-one", stream=True))
    head, body, end = parts(until_end(rid2))
    assert head["status"] == 429, head
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    gw.send(envelope("req.cancel", {"reason": "done"}, req_id=rid1))
    time.sleep(0.2)
    rid3 = open_stream("gpt-slow-one", dict(CHAT, model="gpt-slow-one", stream=True))
    wait_until(lambda: pump(0.05) or received(rid3) > 0, what="a slot is free again")
    gw.send(envelope("req.cancel", {"reason": "done"}, req_id=rid3))


def test_killed_adapter_is_restarted_and_its_streams_end_with_an_error():
    before = adapters()
    assert len(before) == 2, before
    rids = [open_stream(m, dict(CHAT, model=m, stream=True)) for m in ("gpt-slow", "gpt-slow-b")]
    for r in rids:
        wait_until(lambda: pump(0.05) or received(r) > 0, what="streams running")
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: pump(0.05) or any(e["type"] == "resp.end" for r in rids
                                          for e in inbox[r]), what="a stream ends")
    ended = [r for r in rids if any(e["type"] == "resp.end" for e in inbox[r])]
    assert len(ended) == 1, "one stream per adapter (least loaded)"
    end = [e for e in inbox[ended[0]] if e["type"] == "resp.end"][0]["payload"]
    assert "adapter" in end["error"], end
    other = [r for r in rids if r not in ended][0]
    n = received(other)
    wait_until(lambda: pump(0.05) or received(other) > n, what="the other stream goes on")
    wait_until(lambda: len(adapters()) == 2 and adapters() != before, timeout=15,
               what="adapter restarted")
    gw.send(envelope("req.cancel", {"reason": "done"}, req_id=other))
    time.sleep(0.5)
    # a fresh request works (whichever adapter gets it)
    for _ in range(2):
        rid = open_stream("gpt-4o-mini", CHAT)
        head, body, end = parts(until_end(rid))
        assert head["status"] == 200 and end.get("error", "") == "", (head, end)


# ---- the same agent code against tests/fake_vendor's fake-vendor (when it is built) ----------

FV = None
fv_agent = None


def fv_setup():
    """A second agent whose instances point at fake-vendor; None when it is not built."""
    global FV, fv_agent
    if FV or not fakevendor or not os.path.exists(fakevendor.binary()):
        return FV
    FV = fakevendor.FakeVendor(root=root).start()
    fv_agent = Agent(hub, "fv-agent", root=root)
    with open(os.path.join(fv_agent.dir, "agent.conf"), "a") as f:
        f.write("""
[upstream]
connect_to = %(oai)s,%(az)s
ca_file = %(ca)s
http2 = false

[instance.fv-oai]
vendor = openai
api_key = %(okey)s
models = gpt-4o-mini, text-embedding-3-small

[instance.fv-az]
vendor = azure
resource = fvres
api_key = %(akey)s
models = gpt-4o=dep-4o
""" % {"oai": FV.connect_to("api.openai.com"), "az": FV.connect_to("fvres.openai.azure.com"),
       "ca": FV.ca, "okey": FV.openai_key, "akey": FV.azure_key})
    hub.wait_registry(2)
    fv_agent.start()
    fv_agent.wait_connected()
    wait_until(lambda: open(fv_agent.log).read().count("adapter_ready") >= 2,
               what="fv adapters ready")
    return FV


def sse_events(data):
    return [json.loads(line[6:]) for line in data.decode().split("\n")
            if line.startswith("data: {")]


def test_fake_vendor_openai_stream_with_usage():
    if not fv_setup():
        print("skip: fake-vendor not built")
        return
    body = dict(CHAT, stream=True)
    rid = open_stream("gpt-4o-mini", body, to=fv_agent,
                      headers=USER_CREDS + [["x-relayhub-add-include-usage", "1"],
                                            ["x-fake-chunks", "20"]])
    envs = until_end(rid)
    head, data, end = parts(envs)
    assert head["status"] == 200, head
    hk = [k for k, v in head["headers"]]
    assert "set-cookie" not in hk and "openai-organization" not in hk, hk
    evs = sse_events(data)
    usage = [e for e in evs if e.get("usage")][-1]["usage"]
    assert end.get("error", "") == "", end
    assert end["output_tokens"] == 20 == usage["completion_tokens"], (end, usage)
    assert end["input_tokens"] == usage["prompt_tokens"] > 0, (end, usage)
    assert data.endswith(b"data: [DONE]\n\n")
    last = FV.last()
    hm = last["header_map"]
    assert hm["authorization"] == "Bearer " + FV.openai_key
    assert hm["accept-encoding"] == "identity" and hm["host"] == "api.openai.com", hm
    for leak in ("x-api-key", "cookie", "x-goog-api-key", "api-key",
                 "x-relayhub-add-include-usage"):
        assert leak not in hm, (leak, hm)
    assert last["tls"] and last["outcome"] == "completed", last
    assert json.loads(last["body"])["stream_options"] == {"include_usage": True}


def test_fake_vendor_azure_stream_embeddings_and_responses():
    if not fv_setup():
        print("skip: fake-vendor not built")
        return
    rid = open_stream("gpt-4o", dict(CHAT, model="gpt-4o", stream=True), to=fv_agent,
                      headers=[["x-relayhub-add-include-usage", "1"]])
    head, data, end = parts(until_end(rid))
    assert head["status"] == 200, (head, data)
    evs = sse_events(data)
    assert evs[0]["choices"] == [] and "prompt_filter_results" in evs[0], evs[0]
    assert end["output_tokens"] == 5 and end["input_tokens"] > 0, end
    last = FV.last()
    assert last["path"] == "/openai/deployments/dep-4o/chat/completions", last["path"]
    assert "api-version=2024-10-21" in last["query"], last["query"]
    assert last["header_map"]["api-key"] == FV.azure_key
    assert "authorization" not in last["header_map"]
    assert last["header_map"]["host"] == "fvres.openai.azure.com"
    rid = open_stream("text-embedding-3-small", {"model": "text-embedding-3-small",
                                                 "input": "hello there"},
                      path="/v1/embeddings", to=fv_agent)
    head, data, end = parts(until_end(rid))
    assert head["status"] == 200 and json.loads(data)["object"] == "list"
    assert end["input_tokens"] > 0 and end.get("output_tokens", 0) == 0, end
    rid = open_stream("gpt-4o-mini", {"model": "gpt-4o-mini", "input": "hi", "stream": True},
                      path="/v1/responses", to=fv_agent)
    head, data, end = parts(until_end(rid))
    assert head["status"] == 200 and b"response.completed" in data
    assert end["output_tokens"] == 5 and end["input_tokens"] > 0, end


def test_fake_vendor_errors_pass_through_or_end_the_stream():
    if not fv_setup():
        print("skip: fake-vendor not built")
        return
    rid = open_stream("gpt-4o-mini", CHAT, to=fv_agent,
                      headers=[["x-fake-status", "429"], ["x-fake-retry-after", "3"]])
    head, data, end = parts(until_end(rid))
    assert head["status"] == 429, head
    assert ["retry-after", "3"] in head["headers"], head
    assert json.loads(data)["error"]["code"], data
    assert end.get("error", "") == "", end
    rid = open_stream("gpt-4o-mini", dict(CHAT, stream=True), to=fv_agent,
                      headers=[["x-fake-chunks", "10"], ["x-fake-drop-after", "2"]])
    head, data, end = parts(until_end(rid))
    assert head["status"] == 200 and data, head
    assert end["error"], end   # the vendor cut the stream: an error in resp.end


def test_fake_vendor_sees_the_cancel():
    if not fv_setup():
        print("skip: fake-vendor not built")
        return
    before = FV.stats()["streams_cancelled"]
    rid = open_stream("gpt-4o-mini", dict(CHAT, stream=True), to=fv_agent,
                      headers=[["x-fake-chunks", "1000"], ["x-fake-delay-ms", "20"]])
    wait_until(lambda: pump(0.05) or received(rid) > 0, what="first chunk")
    t0 = time.time()
    gw.send(envelope("req.cancel", {"reason": "user went away"}, req_id=rid))
    st = wait_until(lambda: FV.stats()["streams_cancelled"] > before and FV.stats(),
                    timeout=5, interval=0.01, what="fake-vendor counts the cancel")
    took = st["last_cancel_ms"] / 1000.0 - t0
    print("fake-vendor saw the cancel after %.0f ms" % (took * 1000))
    assert took < 0.5, took


def test_fake_vendor_unreachable_gives_502():
    if not fv_setup():
        print("skip: fake-vendor not built")
        return
    assert FV.stop() == 0
    rid = open_stream("gpt-4o-mini", CHAT, to=fv_agent)
    head, data, end = parts(until_end(rid))
    assert head["status"] == 502, head
    assert json.loads(data)["error"]["code"] == "upstream_error"
    assert "vendor call failed" in end["error"], end
    text = open(fv_agent.log).read()
    assert FV.openai_key not in text and FV.azure_key not in text
    assert fv_agent.stop() == 0


def test_skipped_vendor_warning_and_no_key_in_logs():
    text = open(agent.log).read()
    assert "[instance.later]" in text and "mistral" in text
    assert PROVIDER_KEY not in text and AZURE_KEY not in text
    assert "sk-user-must-not-leak" not in text


def test_agent_stops_its_adapters():
    kids = adapters()
    assert agent.stop() == 0
    wait_until(lambda: not any(os.path.exists("/proc/%d" % p) and
                               open("/proc/%d/stat" % p).read().split()[2] != "Z"
                               for p in kids), timeout=5, what="adapters gone")


try:
    run_tests(globals())
finally:
    gw.close()
    ctx.term()
