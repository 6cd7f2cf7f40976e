"""hub-gateway's native endpoints for every request format (OpenAI, Anthropic, Gemini, Bedrock):
each request reaches the agent with the right req.open (format, decoded model, path, query
without the key, the forwarded headers and nothing else of the user's), its answer comes back
byte for byte (Bedrock's binary event-stream frames too), errors come in each format's own
shape, a stream broken after its first byte is told in the format's own way, routing follows
presence.model_formats, and count_tokens asks for no hold. The agents are scripted tunnel
clients, so the test needs none of the real agent's adapters."""

import asyncio
import http.client
import json
import os
import re
import subprocess
import threading
import time
import zlib

from harness import (BIN, Agent, Hub, RawClient, envelope, free_port, load_agent_key, run_tests,
                     spawn, wait_until)

hub = Hub(sets=["gateway.first_byte_timeout=3s"]).start()
hub.start_gateway()
KEY = hub.user_key("alice")

BEDROCK_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
BEDROCK_ENC = "anthropic.claude-3-5-haiku-20241022-v1%3A0"
ARN = ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
       "us.anthropic.claude-3-5-sonnet-20241022-v2:0")
ARN_ENC = ("arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
           "us.anthropic.claude-3-5-sonnet-20241022-v2%3A0")


# ---- AWS event-stream frames ------------------------------------------------------------------

def es_frame(headers, payload):
    """One event-stream message with string headers."""
    hb = b""
    for k, v in headers:
        kb, vb = k.encode(), v.encode()
        hb += bytes([len(kb)]) + kb + b"\x07" + len(vb).to_bytes(2, "big") + vb
    total = 12 + len(hb) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(hb).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    msg = prelude + hb + payload
    return msg + zlib.crc32(msg).to_bytes(4, "big")


def es_decode(data):
    """Every message of data, CRCs checked: a list of (headers dict, payload)."""
    out, i = [], 0
    while i < len(data):
        assert len(data) - i >= 16, "a partial frame at the end"
        total = int.from_bytes(data[i:i + 4], "big")
        hlen = int.from_bytes(data[i + 4:i + 8], "big")
        assert zlib.crc32(data[i:i + 8]) == int.from_bytes(data[i + 8:i + 12], "big"), "prelude"
        msg = data[i:i + total]
        assert len(msg) == total, "a partial frame at the end"
        assert zlib.crc32(msg[:-4]) == int.from_bytes(msg[-4:], "big"), "message CRC"
        h, j, hs = {}, 0, msg[12:12 + hlen]
        while j < len(hs):
            nl = hs[j]
            name = hs[j + 1:j + 1 + nl].decode()
            j += 1 + nl
            assert hs[j] == 7, "only string headers here"
            vl = int.from_bytes(hs[j + 1:j + 3], "big")
            h[name] = hs[j + 3:j + 3 + vl].decode()
            j += 3 + vl
        out.append((h, msg[12 + hlen:-4]))
        i += total
    return out


def bedrock_event(event_type, obj):
    return es_frame([(":event-type", event_type), (":content-type", "application/json"),
                     (":message-type", "event")], json.dumps(obj).encode())


# ---- the scripted agent ----------------------------------------------------------------------

class FormatAgent(threading.Thread):
    """A tunnel client announcing models with their formats; answers by a per-model script:
    {"status", "headers", "chunks", "error", "delay"}; unscripted models get a JSON echo."""

    def __init__(self, name, models):
        super().__init__(daemon=True)
        reg = Agent(hub, name)
        self.id = reg.id
        self.key = load_agent_key(reg.dir)
        self.models = models            # [(model, "formats")]
        self.script = {}
        self.opens = {}                 # rid -> req.open payload
        self.order = []                 # rids in arrival order
        self.bodies = {}
        self.cancels = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()

    def run(self):
        self.loop.run_until_complete(self.main())

    async def main(self):
        c = await RawClient(hub).connect()
        w = await c.handshake(self.id, self.key)
        assert w["type"] == "welcome", w
        await c.send(envelope("presence", {
            "agent_id": self.id, "state": "up", "models": [m for m, _ in self.models],
            "model_formats": [f for _, f in self.models], "capacity": 8}))
        self.c = c
        self.ready.set()
        import websockets
        try:
            while True:
                await self.handle(await c.recv(timeout=3600))
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass

    async def handle(self, e):
        t, rid = e["type"], e.get("req_id")
        if t == "ping":
            await self.c.send(envelope("pong", e["payload"]))
        elif t == "req.open":
            self.opens[rid] = e["payload"]
            self.order.append(rid)
            self.bodies[rid] = b""
            if e["payload"].get("body_size", 0) == 0:
                asyncio.ensure_future(self.answer(rid))
        elif t == "req.body":
            self.bodies[rid] += e["payload"]["data"]
            if len(self.bodies[rid]) == self.opens[rid]["body_size"]:
                asyncio.ensure_future(self.answer(rid))
        elif t == "req.cancel":
            self.cancels.append(rid)

    async def answer(self, rid):
        p = self.opens[rid]
        s = self.script.get(p["model"])
        send = self.c.send
        if s is None:
            body = json.dumps({"model": p["model"], "agent": self.id,
                               "echo": self.bodies[rid].decode()}).encode()
            s = {"headers": [["content-type", "application/json"]], "chunks": [body]}
        await send(envelope("resp.head", {"status": s.get("status", 200),
                                          "headers": s.get("headers", [])}, req_id=rid))
        for chunk in s.get("chunks", []):
            if rid in self.cancels:
                return
            await send(envelope("resp.chunk", {"data": chunk}, req_id=rid))
            if s.get("delay"):
                await asyncio.sleep(s["delay"])
        end = {"error": s["error"]} if s.get("error") else {}
        await send(envelope("resp.end", end, req_id=rid))

    def last(self, model):
        """The req.open payload and body of the latest request for model."""
        for rid in reversed(self.order):
            if self.opens[rid]["model"] == model:
                return self.opens[rid], self.bodies[rid]
        raise AssertionError("no request for %s reached %s" % (model, self.id))


A = FormatAgent("formats-a", [
    ("gpt-x", "openai"),
    ("claude-x", "anthropic"),
    ("claude-priced", "anthropic"),
    ("gem-x", "gemini"),
    ("gem-priced", "gemini"),
    (BEDROCK_ID, "bedrock"),
    (ARN, "bedrock"),
    ("bedrock-priced", "bedrock"),
    ("multi", "openai anthropic gemini bedrock"),
])
# B serves claude-x too, but only in the OpenAI format: Anthropic requests never reach it
B = FormatAgent("formats-b", [("claude-x", "openai"), ("old-style", "")])
hub.wait_registry(2)
for ag in (A, B):
    ag.start()
    assert ag.ready.wait(10)


def call(method, path, body=None, headers=None, timeout=30):
    """A request; returns (status, lowercase headers, body bytes, complete)."""
    c = http.client.HTTPConnection("127.0.0.1", hub.gateway_port, timeout=timeout)
    h = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    complete = True
    try:
        out = r.read()
    except http.client.IncompleteRead as e:
        out, complete = e.partial, False
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, out, complete


def anthropic_headers(key=KEY, **extra):
    h = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    h.update(extra)
    return h


MSG_BODY = {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user",
                                                                 "content": "hi"}]}
GEM_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CONVERSE_BODY = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}

wait_until(lambda: "gpt-x" in call("GET", "/v1/models", headers={
    "Authorization": "Bearer " + KEY})[2].decode(), what="models routable")


def billing_metric(name, labels):
    """A sample of hub-billing's metrics (0 when absent); labels come after process=."""
    for line in (hub.metrics_billing() or "").splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def billing_holds():
    return sum(billing_metric("relayhub_billing_holds_total", 'result="%s"' % r)
               for r in ("granted", "insufficient", "unpriced", "error"))


def fwd_headers(p):
    return {k: v for k, v in p["headers"]}


# ---- OpenAI: unchanged ------------------------------------------------------------------------

def test_openai_models_lists_only_openai_models():
    st, h, body, _ = call("GET", "/v1/models", headers={"Authorization": "Bearer " + KEY})
    assert st == 200, body
    ids = [m["id"] for m in json.loads(body)["data"]]
    assert ids == sorted(ids)
    # openai (A), an empty formats element (B: as if absent), claude-x as served by B
    assert {"gpt-x", "multi", "old-style", "claude-x"} <= set(ids), ids
    for m in ("gem-x", BEDROCK_ID, ARN, "claude-priced"):
        assert m not in ids, ids


def test_openai_chat_routes_by_format():
    for _ in range(10):
        st, h, body, _ = call("POST", "/v1/chat/completions",
                              {"model": "claude-x", "messages": []},
                              {"Authorization": "Bearer " + KEY})
        assert st == 200 and json.loads(body)["agent"] == B.id, body
    p, _ = B.last("claude-x")
    assert p["format"] == "openai" and p["path"] == "/v1/chat/completions"
    assert set(fwd_headers(p)) == {"content-type", "x-relayhub-stream",
                                   "x-relayhub-add-include-usage"}


# ---- Anthropic ----------------------------------------------------------------------------------

def test_anthropic_messages_stream_byte_for_byte():
    events = [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"type":"message","role":"assistant","model":"claude-x","content":[],'
        b'"usage":{"input_tokens":12,"output_tokens":1}}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n',
        b'event: ping\ndata: {"type": "ping"}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hello"}}\n\n',
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"end_turn"},"usage":{"output_tokens":7}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    A.script["claude-x"] = {"headers": [["content-type", "text/event-stream; charset=utf-8"],
                                        ["request-id", "req_vendor"]],
                            "chunks": events}
    for key_headers in ({"x-api-key": KEY}, {"Authorization": "Bearer " + KEY}):
        h = dict(key_headers, **{"anthropic-version": "2023-06-01",
                                 "anthropic-beta": "prompt-caching-2024-07-31,tools-2024-04-04",
                                 "x-custom": "not forwarded", "openai-organization": "org-1",
                                 "cookie": "a=b"})
        body = dict(MSG_BODY, stream=True)
        st, rh, got, complete = call("POST", "/v1/messages?beta=true", body, h)
        assert st == 200 and complete, (st, got)
        assert got == b"".join(events)
        assert "usage reported: in 12, out 7" in done_msg(rh["x-request-id"])
        assert rh["content-type"].startswith("text/event-stream")
        assert len(rh["x-request-id"]) == 32
        p, sent = A.last("claude-x")
        assert p["format"] == "anthropic" and p["model"] == "claude-x"
        assert p["method"] == "POST" and p["path"] == "/v1/messages"
        assert p.get("query", "") == "beta=true", p.get("query", "")
        assert p["body_size"] == len(json.dumps(body).encode()) and json.loads(sent) == body
        assert fwd_headers(p) == {
            "content-type": "application/json", "x-relayhub-stream": "1",
            "x-relayhub-add-include-usage": "0", "anthropic-version": "2023-06-01",
            "anthropic-beta": "prompt-caching-2024-07-31,tools-2024-04-04"}, p["headers"]
    del A.script["claude-x"]


def test_anthropic_non_stream_without_version_header():
    st, rh, got, _ = call("POST", "/v1/messages", MSG_BODY, {"x-api-key": KEY})
    assert st == 200 and json.loads(got)["agent"] == A.id
    p, _ = A.last("claude-x")
    assert fwd_headers(p)["x-relayhub-stream"] == "0"
    assert "anthropic-version" not in fwd_headers(p)


def test_anthropic_errors():
    # no key, a wrong key
    for h, want in (({"anthropic-version": "2023-06-01"}, "required"),
                    (anthropic_headers("sk-wrong"), "Incorrect")):
        st, rh, got, _ = call("POST", "/v1/messages", MSG_BODY, h)
        assert st == 401, (st, got)
        e = json.loads(got)
        assert e["type"] == "error" and e["error"]["type"] == "authentication_error", e
        assert want in e["error"]["message"] and set(e["error"]) == {"type", "message"}
        assert rh["request-id"] == rh["x-request-id"] == e["request_id"]
    # an OpenAI-style key header is not an Anthropic one
    st, _, got, _ = call("POST", "/v1/messages", MSG_BODY, {"api-key": KEY})
    assert st == 401
    # unknown model; a model served, but not in this format
    for model in ("no-such", "gpt-x"):
        st, rh, got, _ = call("POST", "/v1/messages", dict(MSG_BODY, model=model),
                              anthropic_headers())
        e = json.loads(got)
        assert st == 404 and e["error"]["type"] == "not_found_error", (st, e)
        assert model in e["error"]["message"]
    # a bad body, a missing model, the wrong method, an unknown path
    st, _, got, _ = call("POST", "/v1/messages", b"{", anthropic_headers())
    assert st == 400 and json.loads(got)["error"]["type"] == "invalid_request_error"
    st, _, got, _ = call("POST", "/v1/messages", {"messages": []}, anthropic_headers())
    assert st == 400 and json.loads(got)["error"]["type"] == "invalid_request_error"
    st, _, got, _ = call("GET", "/v1/messages", headers=anthropic_headers())
    assert st == 405 and json.loads(got)["error"]["type"] == "invalid_request_error"
    st, rh, got, _ = call("POST", "/v1/messages/batches", {}, anthropic_headers())
    assert st == 404 and json.loads(got)["error"]["type"] == "not_found_error"
    assert rh["request-id"] == rh["x-request-id"]
    # a forwarded header with a control character is refused, not passed on
    st, _, got, _ = call("POST", "/v1/messages", MSG_BODY,
                         anthropic_headers(**{"anthropic-beta": "a\x01b"}))
    assert st == 400 and "anthropic-beta" in json.loads(got)["error"]["message"]


def test_vendor_error_relayed_whole_when_no_other_agent_serves():
    """A vendor's 5xx is retried elsewhere only when another agent serves the model in this
    format; here none does, so the user gets the vendor's own answer, complete."""
    err = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    A.script["claude-x"] = {"status": 529, "headers": [["content-type", "application/json"]],
                            "chunks": [err], "error": "vendor answered 529"}
    st, rh, got, complete = call("POST", "/v1/messages", MSG_BODY, anthropic_headers())
    assert st == 529 and complete and got == err, (st, complete, got)
    p, _ = A.last("claude-x")
    assert p["attempt"] == 1
    del A.script["claude-x"]


def test_count_tokens_asks_no_hold():
    A.script["claude-priced"] = {"headers": [["content-type", "application/json"]],
                                 "chunks": [b'{"input_tokens":5}']}
    hub.hubctl("price", "set", "claude-priced", "--input", "1", "--output", "1")
    hub.hubctl("user", "add", "broke")
    broke = re.search(r"^(sk-\S+)$", hub.hubctl("key", "create", "broke").stdout,
                      re.M).group(1)
    body = dict(MSG_BODY, model="claude-priced")
    # a billed request of a user without money: refused in Anthropic's shape
    st, rh, got = wait_until(lambda: (lambda r: r if r[0] == 402 else None)(
        call("POST", "/v1/messages", body, anthropic_headers(broke))), timeout=10,
        what="402 once the price is known")[:3]
    e = json.loads(got)
    assert e["type"] == "error" and e["error"]["type"] == "billing_error", e
    assert rh["request-id"] == rh["x-request-id"]
    holds = billing_holds()
    reports = billing_metric("relayhub_billing_usage_reports_total", 'source="gateway"')
    for _ in range(3):
        st, rh, got, _ = call("POST", "/v1/messages/count_tokens", body,
                              anthropic_headers(broke))
        assert st == 200 and got == b'{"input_tokens":5}', (st, got)
    p, _ = A.last("claude-priced")
    assert p["path"] == "/v1/messages/count_tokens" and p["format"] == "anthropic"
    time.sleep(1.0)
    assert billing_holds() == holds, "count_tokens asked billing for a hold"
    assert billing_metric("relayhub_billing_usage_reports_total", 'source="gateway"') == reports
    assert holds > 0
    # and a billed one does ask (the counter works)
    call("POST", "/v1/messages", body, anthropic_headers(broke))
    wait_until(lambda: billing_holds() > holds, what="a hold for /v1/messages")
    # 402 in the other formats' shapes
    A.script["gem-priced"] = A.script["bedrock-priced"] = A.script["claude-priced"]
    hub.hubctl("price", "set", "gem-priced", "--input", "1", "--output", "1")
    hub.hubctl("price", "set", "bedrock-priced", "--input", "1", "--output", "1")
    r = wait_until(lambda: (lambda r: r if r[0] == 402 else None)(
        call("POST", "/v1beta/models/gem-priced:generateContent", GEM_BODY,
             {"x-goog-api-key": broke})), timeout=10, what="gemini 402")
    e = json.loads(r[2])["error"]
    assert e["code"] == 402 and e["status"] == "FAILED_PRECONDITION", e
    r = wait_until(lambda: (lambda r: r if r[0] == 402 else None)(
        call("POST", "/model/bedrock-priced/converse", CONVERSE_BODY,
             {"Authorization": "Bearer " + broke})), timeout=10, what="bedrock 402")
    assert r[1]["x-amzn-errortype"] == "AccessDeniedException" and "message" in json.loads(r[2])
    for m in ("claude-priced", "gem-priced", "bedrock-priced"):
        del A.script[m]


# ---- Gemini ----------------------------------------------------------------------------------

def test_gemini_sse_with_key_in_query():
    chunks = [
        b'data: {"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}],'
        b'"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1,'
        b'"totalTokenCount":5}}\r\n\r\n',
        b'data: {"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"},'
        b'"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,'
        b'"candidatesTokenCount":2,"totalTokenCount":6}}\r\n\r\n',
    ]
    A.script["gem-x"] = {"headers": [["content-type", "text/event-stream"]], "chunks": chunks}
    path = "/v1beta/models/gem-x:streamGenerateContent?alt=sse&key=%s&$fields=x" % KEY
    st, rh, got, complete = call("POST", path, GEM_BODY, {"x-custom": "no"})
    assert st == 200 and complete and got == b"".join(chunks), (st, got)
    assert "usage reported: in 4, out 2" in done_msg(rh["x-request-id"])
    p, sent = A.last("gem-x")
    assert p["format"] == "gemini" and p["model"] == "gem-x"
    assert p["path"] == "/v1beta/models/gem-x:streamGenerateContent"
    assert p.get("query", "") == "alt=sse", p.get("query", "")
    assert json.loads(sent) == GEM_BODY
    assert fwd_headers(p) == {"content-type": "application/json", "x-relayhub-stream": "1",
                              "x-relayhub-add-include-usage": "0"}
    assert KEY not in json.dumps(p)
    # the key never reaches a log line
    time.sleep(0.3)
    for log in (hub.gateway_log, hub.log, hub.billing_log):
        with open(log, "rb") as f:
            assert KEY.encode() not in f.read(), log
    del A.script["gem-x"]


def test_gemini_json_array_stream_and_header_key():
    chunks = [b'[{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}\r\n',
              b',\r\n{"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"STOP"}],'
              b'"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}]']
    A.script["gem-x"] = {"headers": [["content-type", "application/json; charset=UTF-8"]],
                         "chunks": chunks}
    st, rh, got, complete = call("POST", "/v1beta/models/gem-x:streamGenerateContent",
                                 GEM_BODY, {"x-goog-api-key": KEY})
    assert st == 200 and complete and got == b"".join(chunks)
    p, _ = A.last("gem-x")
    assert p.get("query", "") == "" and fwd_headers(p)["x-relayhub-stream"] == "1"
    # generateContent: not a stream; alt=sse is not passed on
    del A.script["gem-x"]
    st, rh, got, _ = call("POST", "/v1beta/models/gem-x:generateContent?alt=sse", GEM_BODY,
                          {"x-goog-api-key": KEY})
    assert st == 200 and json.loads(got)["model"] == "gem-x"
    p, _ = A.last("gem-x")
    assert p.get("query", "") == "" and fwd_headers(p)["x-relayhub-stream"] == "0"
    assert p["path"] == "/v1beta/models/gem-x:generateContent"


def test_gemini_errors():
    path = "/v1beta/models/gem-x:generateContent"
    # no key: 403 PERMISSION_DENIED (an Authorization header is not a Gemini key)
    st, _, got, _ = call("POST", path, GEM_BODY, {"Authorization": "Bearer " + KEY})
    e = json.loads(got)["error"]
    assert st == 403 and e["code"] == 403 and e["status"] == "PERMISSION_DENIED", (st, e)
    # a wrong key, in the header or the query: 400 API_KEY_INVALID
    for p, h in ((path, {"x-goog-api-key": "sk-wrong"}), (path + "?key=sk-wrong", {})):
        st, _, got, _ = call("POST", p, GEM_BODY, h)
        e = json.loads(got)["error"]
        assert st == 400 and e["status"] == "INVALID_ARGUMENT", (st, e)
        assert e["message"] == "API key not valid. Please pass a valid API key."
        assert e["details"][0]["reason"] == "API_KEY_INVALID"
        assert e["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    # unknown model; served only in another format
    for model in ("nope", "claude-x"):
        st, _, got, _ = call("POST", "/v1beta/models/%s:generateContent" % model, GEM_BODY,
                             {"x-goog-api-key": KEY})
        e = json.loads(got)["error"]
        assert st == 404 and e["code"] == 404 and e["status"] == "NOT_FOUND", (st, e)
    # a bad body; an unknown method; the wrong HTTP method
    st, _, got, _ = call("POST", path, b"[1]", {"x-goog-api-key": KEY})
    e = json.loads(got)["error"]
    assert st == 400 and e["status"] == "INVALID_ARGUMENT", e
    st, _, got, _ = call("POST", "/v1beta/models/gem-x:countTokens", GEM_BODY,
                         {"x-goog-api-key": KEY})
    assert st == 404 and json.loads(got)["error"]["status"] == "NOT_FOUND"
    st, _, got, _ = call("GET", path, headers={"x-goog-api-key": KEY})
    assert st == 405 and json.loads(got)["error"]["code"] == 405


# ---- Bedrock ---------------------------------------------------------------------------------

def converse_stream_frames():
    return [
        bedrock_event("messageStart", {"role": "assistant", "p": "abc"}),
        bedrock_event("contentBlockDelta", {"contentBlockIndex": 0,
                                            "delta": {"text": "Hello"}, "p": "abcd"}),
        bedrock_event("contentBlockStop", {"contentBlockIndex": 0, "p": "ab"}),
        bedrock_event("messageStop", {"stopReason": "end_turn", "p": "a"}),
        bedrock_event("metadata", {"usage": {"inputTokens": 9, "outputTokens": 3,
                                             "totalTokens": 12}, "metrics": {"latencyMs": 5}}),
    ]


def test_bedrock_converse_stream_binary_relay():
    frames = converse_stream_frames()
    A.script[BEDROCK_ID] = {"headers": [["content-type", "application/vnd.amazon.eventstream"],
                                        ["x-amzn-RequestId", "vendor-rid"]],
                            "chunks": [frames[0] + frames[1][:10], frames[1][10:]] + frames[2:],
                            "delay": 0.01}
    for path in ("/model/%s/converse-stream" % BEDROCK_ENC,
                 "/model/%s/converse-stream" % BEDROCK_ID):   # encoded as SDKs send it, or raw
        st, rh, got, complete = call("POST", path, CONVERSE_BODY,
                                     {"Authorization": "Bearer " + KEY})
        assert st == 200 and complete, (st, got)
        assert got == b"".join(frames)
        assert "usage reported: in 9, out 3" in done_msg(rh["x-request-id"])
        assert rh["content-type"] == "application/vnd.amazon.eventstream"
        assert [h[":event-type"] for h, _ in es_decode(got)] == [
            "messageStart", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
        p, sent = A.last(BEDROCK_ID)
        assert p["format"] == "bedrock" and p["model"] == BEDROCK_ID
        assert p["path"] == "/model/%s/converse-stream" % BEDROCK_ENC, p["path"]
        assert p.get("query", "") == "" and json.loads(sent) == CONVERSE_BODY
        assert fwd_headers(p)["x-relayhub-stream"] == "1"
    del A.script[BEDROCK_ID]


def test_bedrock_invoke_and_arn():
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]}
    answer = b'{"id":"msg_1","type":"message","content":[{"type":"text","text":"hey"}]}'
    A.script[BEDROCK_ID] = {"headers": [["content-type", "application/json"],
                                        ["x-amzn-bedrock-input-token-count", "10"],
                                        ["x-amzn-bedrock-output-token-count", "20"]],
                            "chunks": [answer]}
    st, rh, got, _ = call("POST", "/model/%s/invoke" % BEDROCK_ENC, body,
                          {"Authorization": "Bearer " + KEY})
    assert st == 200 and got == answer, (st, got)
    assert rh["x-amzn-bedrock-output-token-count"] == "20"
    p, sent = A.last(BEDROCK_ID)
    assert p["path"] == "/model/%s/invoke" % BEDROCK_ENC and json.loads(sent) == body
    assert fwd_headers(p)["x-relayhub-stream"] == "0"
    # the gateway read the invoke's token counts from the headers (usage_header)
    assert "usage reported: in 10, out 20" in done_msg(rh["x-request-id"])
    del A.script[BEDROCK_ID]
    # an ARN: '/' comes as %2F, decoded for routing, encoded again for the agent
    st, rh, got, _ = call("POST", "/model/%s/converse" % ARN_ENC, CONVERSE_BODY,
                          {"Authorization": "Bearer " + KEY})
    assert st == 200 and json.loads(got)["model"] == ARN, (st, got)
    p, _ = A.last(ARN)
    assert p["model"] == ARN and p["path"] == "/model/%s/converse" % ARN_ENC


def done_msg(rid):
    """The gateway's request_done line for a request (its usage as the gateway read it)."""
    from harness import log_events

    def find():
        for e in log_events(hub.gateway_log):
            if e["event"] == "request_done" and e.get("req_id") == rid:
                return e["msg"]
        return None
    return wait_until(find, what="request_done of %s" % rid)


def test_bedrock_errors():
    path = "/model/%s/converse" % BEDROCK_ENC
    for h in ({}, {"Authorization": "Bearer sk-wrong"}, {"x-api-key": KEY}):
        st, rh, got, _ = call("POST", path, CONVERSE_BODY, h)
        assert st == 401 and rh["x-amzn-errortype"] == "UnrecognizedClientException", (st, rh)
        assert rh["x-amzn-requestid"] == rh["x-request-id"]
        assert set(json.loads(got)) == {"message"}
    for model in ("nope", "gpt-x"):
        st, rh, got, _ = call("POST", "/model/%s/converse" % model, CONVERSE_BODY,
                              {"Authorization": "Bearer " + KEY})
        assert st == 404 and rh["x-amzn-errortype"] == "ResourceNotFoundException", (st, got)
    st, rh, got, _ = call("POST", path, b"not json", {"Authorization": "Bearer " + KEY})
    assert st == 400 and rh["x-amzn-errortype"] == "ValidationException"
    # a model id that decodes to a control character; a '/' outside an ARN
    for bad in ("bad%01id", "a%2Fb"):
        st, rh, got, _ = call("POST", "/model/%s/converse" % bad, CONVERSE_BODY,
                              {"Authorization": "Bearer " + KEY})
        assert st == 400 and rh["x-amzn-errortype"] == "ValidationException", (bad, st, got)
    st, rh, got, _ = call("POST", "/model/%s/generate" % BEDROCK_ENC, CONVERSE_BODY,
                          {"Authorization": "Bearer " + KEY})
    assert st == 404 and rh["x-amzn-errortype"] == "ResourceNotFoundException"
    st, rh, got, _ = call("GET", path, headers={"Authorization": "Bearer " + KEY})
    assert st == 405 and rh["x-amzn-errortype"] == "ValidationException"


def test_unknown_paths_in_the_shape_of_their_prefix():
    st, rh, got, _ = call("POST", "/v2/whatever", {})
    assert st == 404 and json.loads(got)["error"]["code"] == "unknown_url"
    st, rh, got, _ = call("POST", "/v1/messages/x/y", {})
    assert st == 404 and json.loads(got)["type"] == "error"
    st, rh, got, _ = call("POST", "/v1beta/tunedModels/x:generateContent", {})
    assert st == 404 and json.loads(got)["error"]["status"] == "NOT_FOUND"
    st, rh, got, _ = call("POST", "/model/x/y/z/w", {})
    assert st == 404 and rh["x-amzn-errortype"] == "ResourceNotFoundException"


# ---- mid-stream breaks -------------------------------------------------------------------------

def test_mid_stream_break_told_in_each_format():
    why = "vendor dropped"
    # OpenAI SSE
    A.script["multi"] = {"headers": [["content-type", "text/event-stream"]],
                         "chunks": [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'],
                         "error": why}
    st, _, got, complete = call("POST", "/v1/chat/completions",
                                {"model": "multi", "stream": True, "messages": []},
                                {"Authorization": "Bearer " + KEY})
    assert st == 200 and complete
    first, tail = got.split(b"\n\n", 1)
    assert tail.startswith(b"data: ") and tail.endswith(b"\n\n")
    e = json.loads(tail[6:])["error"]
    assert e["code"] == "stream_interrupted" and why in e["message"], e
    # Anthropic SSE
    A.script["multi"]["chunks"] = [b'event: message_start\ndata: {"type":"message_start"}\n\n']
    st, _, got, complete = call("POST", "/v1/messages", dict(MSG_BODY, model="multi",
                                                             stream=True), anthropic_headers())
    assert st == 200 and complete
    tail = got.split(b"\n\n", 1)[1]
    assert tail.startswith(b"event: error\ndata: ") and tail.endswith(b"\n\n"), tail
    e = json.loads(tail[len(b"event: error\ndata: "):])
    assert e["type"] == "error" and e["error"]["type"] == "api_error", e
    assert why in e["error"]["message"]
    # Gemini SSE: an error event ended by \r\n\r\n
    A.script["multi"]["chunks"] = [b'data: {"candidates":[]}\r\n\r\n']
    st, _, got, complete = call("POST", "/v1beta/models/multi:streamGenerateContent?alt=sse",
                                GEM_BODY, {"x-goog-api-key": KEY})
    assert st == 200 and complete
    tail = got.split(b"\r\n\r\n", 1)[1]
    assert tail.startswith(b"data: ") and tail.endswith(b"\r\n\r\n"), tail
    e = json.loads(tail[6:])["error"]
    assert e["code"] == 500 and e["status"] == "INTERNAL" and why in e["message"]
    # Gemini JSON array: the answer just ends short
    A.script["multi"] = {"headers": [["content-type", "application/json"]],
                         "chunks": [b'[{"candidates":[]}'], "error": why}
    st, _, got, complete = call("POST", "/v1beta/models/multi:streamGenerateContent", GEM_BODY,
                                {"x-goog-api-key": KEY})
    assert st == 200 and not complete and got == b'[{"candidates":[]}', (complete, got)
    # Bedrock event stream: one exception frame, CRCs intact
    frames = converse_stream_frames()[:2]
    A.script["multi"] = {"headers": [["content-type", "application/vnd.amazon.eventstream"]],
                         "chunks": frames, "error": why}
    st, _, got, complete = call("POST", "/model/multi/converse-stream", CONVERSE_BODY,
                                {"Authorization": "Bearer " + KEY})
    assert st == 200 and complete
    assert got.startswith(b"".join(frames))
    msgs = es_decode(got)
    assert len(msgs) == 3
    h, payload = msgs[-1]
    assert h == {":message-type": "exception", ":exception-type": "internalServerException",
                 ":content-type": "application/json"}, h
    assert why in json.loads(payload)["message"]
    # Bedrock, not a stream operation: ends short
    A.script["multi"] = {"headers": [["content-type", "application/json"]],
                         "chunks": [b'{"output":'], "error": why}
    st, _, got, complete = call("POST", "/model/multi/converse", CONVERSE_BODY,
                                {"Authorization": "Bearer " + KEY})
    assert st == 200 and not complete and got == b'{"output":'
    del A.script["multi"]


def test_tls_listener_without_http2_keeps_the_vendor_key_headers():
    # Over HTTP/2, libwebsockets 4.1 drops headers it does not know (x-api-key among them):
    # gateway.http2 = false offers HTTP/1.1 alone, and curl's x-api-key then gets through.
    port = free_port()
    gw = spawn([BIN["hub-gateway"], "--config", hub.conf, "--set",
                "gateway.listen=127.0.0.1:%d" % port, "--set",
                "gateway.cert=" + os.path.join(hub.dir, "hub.crt"), "--set",
                "gateway.key=" + os.path.join(hub.dir, "hub.key"), "--set",
                "gateway.metrics_listen=", "--set", "gateway.http2=false"],
               os.path.join(hub.dir, "gateway-h1.log"))
    try:
        def answer():
            r = subprocess.run(["curl", "-sk", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                                "https://127.0.0.1:%d/v1/messages" % port, "-H",
                                "x-api-key: sk-not-a-key", "-H",
                                "content-type: application/json", "-d",
                                '{"model":"claude-x","max_tokens":5,"messages":[]}'],
                               capture_output=True, text=True, timeout=10)
            return r.stdout
        wait_until(lambda: answer().endswith(" 1.1"), timeout=10, what="TLS gateway up")
        out = answer()
        body, status = out.rsplit("\n", 1)
        # the key was read (and refused as a wrong one), not missing
        assert status == "401 1.1", out
        assert "invalid x-api-key" in body or "authentication_error" in body, body
        assert "required" not in body, body
    finally:
        gw.terminate()
        gw.wait(10)


run_tests(globals())
