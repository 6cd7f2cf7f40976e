"""hub-gateway on its own: auth, request checks, routing by model, streaming relay, credit,
cancel, retry before the first byte. The agents here are scripted tunnel clients (the real
agent's adapters have their own tests), so each behaviour can be forced."""

import asyncio
import http.client
import json
import os
import socket
import threading
import time

from harness import (Agent, Hub, RawClient, envelope, has_event, load_agent_key, run_tests,
                     unpack, wait_until)

# key_poll is long here so that a revocation can only arrive through the bus notice
hub = Hub(sets=["gateway.first_byte_timeout=3s", "gateway.key_poll=60s"]).start()
hub.start_gateway()
KEY = hub.user_key("alice")


class ScriptedAgent(threading.Thread):
    """A tunnel client that serves models by script: model names say what to do."""

    def __init__(self, name, models, fail=None, fail_models=()):
        super().__init__(daemon=True)
        self.fail, self.fail_models = fail, set(fail_models)
        reg = Agent(hub, name)
        self.id = reg.id
        self.key = load_agent_key(reg.dir)
        self.models = models
        self.opens, self.cancels, self.bodies, self.credit = [], [], {}, {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop_flag = False

    def run(self):
        self.loop.run_until_complete(self.main())

    async def main(self):
        c = await RawClient(hub).connect()
        w = await c.handshake(self.id, self.key)
        assert w["type"] == "welcome", w
        await c.send(envelope("presence", {"agent_id": self.id, "state": "up",
                                           "models": self.models, "capacity": 8}))
        self.c = c
        self.ready.set()
        import websockets
        try:
            while not self.stop_flag:
                e = await c.recv(timeout=3600)
                await self.handle(e)
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass

    async def handle(self, e):
        t, rid = e["type"], e.get("req_id")
        if t == "ping":
            await self.c.send(envelope("pong", e["payload"]))
        elif t == "req.open":
            self.opens.append(e["payload"])
            self.bodies[rid] = b""
            if e["payload"].get("body_size", 0) == 0:
                asyncio.ensure_future(self.answer(rid, e["payload"]))
            else:
                self.pending = getattr(self, "pending", {})
                self.pending[rid] = e["payload"]
        elif t == "req.body":
            self.bodies[rid] += e["payload"]["data"]
            p = self.pending.get(rid)
            if p and len(self.bodies[rid]) >= p["body_size"]:
                del self.pending[rid]
                asyncio.ensure_future(self.answer(rid, p))
        elif t == "req.cancel":
            self.cancels.append(rid)
        elif t == "credit":
            self.credit[rid] = self.credit.get(rid, 0) + e["payload"]["bytes"]

    async def answer(self, rid, p):
        model = p["model"]
        send = self.c.send
        if model in self.fail_models and self.fail == "500":
            await send(envelope("resp.head", {"status": 503, "headers": []}, req_id=rid))
            await send(envelope("resp.end", {"error": "vendor 503"}, req_id=rid))
        elif model in self.fail_models and self.fail == "drop":
            await self.c.ws.close()
        elif model.endswith("-500"):
            await send(envelope("resp.head", {"status": 500, "headers": []}, req_id=rid))
            await send(envelope("resp.end", {"error": "vendor 500"}, req_id=rid))
        elif model.endswith("-drop"):
            await self.c.ws.close()
        elif model.endswith("-silent"):
            pass
        elif model.endswith("-big"):
            await send(envelope("resp.head", {"status": 200, "headers": [
                ["content-type", "text/event-stream"]]}, req_id=rid))
            # 16 MiB in 16 KiB chunks; wait whenever the credit window is spent
            sent, window = 0, 256 * 1024
            while sent < 16 * 1024 * 1024:
                if sent + 16384 > window + self.credit.get(rid, 0):
                    if rid in self.cancels:
                        return
                    await asyncio.sleep(0.01)
                    continue
                await send(envelope("resp.chunk", {"data": b"x" * 16384}, req_id=rid))
                sent += 16384
                self.big_sent = sent
            await send(envelope("resp.end", {}, req_id=rid))
        elif model.endswith("-sse"):
            await send(envelope("resp.head", {"status": 200, "headers": [
                ["content-type", "text/event-stream"], ["set-cookie", "no=1"],
                ["openai-processing-ms", "7"]]}, req_id=rid))
            for i in range(50):
                if rid in self.cancels:
                    return
                await send(envelope("resp.chunk", {"data": b"data: {\"n\":%d}\n\n" % i},
                                    req_id=rid))
                await asyncio.sleep(0.02)
            await send(envelope("resp.chunk", {"data": b"data: [DONE]\n\n"}, req_id=rid))
            await send(envelope("resp.end", {"output_tokens": 50}, req_id=rid))
        else:
            body = json.dumps({"id": "x", "object": "chat.completion", "model": model,
                               "agent": self.id, "echo": self.bodies[rid].decode()})
            await send(envelope("resp.head", {"status": 200, "headers": [
                ["content-type", "application/json"]]}, req_id=rid))
            await send(envelope("resp.chunk", {"data": body.encode()}, req_id=rid))
            await send(envelope("resp.end", {"input_tokens": 1}, req_id=rid))


a1 = ScriptedAgent("scripted-1", ["m-json", "m-sse", "m-500", "m-big", "m-silent", "shared",
                                  "flaky"], fail="500", fail_models=["flaky"])
a2 = ScriptedAgent("scripted-2", ["m-json", "shared", "only-2", "flaky", "fragile"])
a3 = ScriptedAgent("scripted-3", ["fragile"], fail="drop", fail_models=["fragile"])
hub.wait_registry(3)
for a in (a1, a2, a3):
    a.start()
    assert a.ready.wait(10)
wait_until(lambda: "m-json" in json.dumps(hub.gw("GET", "/v1/models", key=KEY)[1]),
           what="models routable")


def chat(model, stream=False, key=KEY, **kw):
    return hub.gw("POST", "/v1/chat/completions",
                  {"model": model, "stream": stream, "messages": [{"role": "user",
                                                                    "content": "hi"}]},
                  key=key, **kw)


def test_health_and_models():
    assert hub.gw("GET", "/healthz")[0] == 200
    wait_until(lambda: hub.gw("GET", "/readyz")[0] == 200, what="ready")
    st, body, h = hub.gw("GET", "/v1/models", key=KEY)
    assert st == 200 and body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == sorted(set(ids)) and {"m-json", "m-sse", "only-2", "shared"} <= set(ids)
    assert all(m["object"] == "model" for m in body["data"])
    assert len(h["x-request-id"]) == 32


def test_auth_errors_in_openai_shape():
    for key in (None, "sk-wrong", "not-a-key"):
        st, body, h = chat("m-json", key=key) if key else hub.gw(
            "POST", "/v1/chat/completions", {"model": "m-json"})
        assert st == 401, (key, st, body)
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["code"] == "invalid_api_key" and err["param"] is None
        assert len(h["x-request-id"]) == 32


def test_non_streamed_round_trip():
    st, body, h = chat("m-json")
    assert st == 200, body
    assert body["model"] == "m-json" and body["agent"] in (a1.id, a2.id)
    assert json.loads(body["echo"])["messages"][0]["content"] == "hi"
    opened = (a1.opens + a2.opens)[-1]
    assert opened["path"] == "/v1/chat/completions" and opened["model"] == "m-json"
    hdrs = dict((k, v) for k, v in opened["headers"])
    assert "authorization" not in hdrs and hdrs["x-relayhub-stream"] == "0"


def test_streamed_chunks_arrive_one_by_one():
    c = http.client.HTTPConnection("127.0.0.1", hub.gateway_port, timeout=30)
    c.request("POST", "/v1/chat/completions",
              json.dumps({"model": "m-sse", "stream": True, "messages": []}),
              {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("content-type") == "text/event-stream"
    assert r.getheader("set-cookie") is None and r.getheader("openai-processing-ms") == "7"
    times, events, buf = [], [], b""
    while True:
        piece = r.read1(65536)
        if not piece:
            break
        times.append(time.monotonic())
        buf += piece
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            events.append(ev)
    c.close()
    assert len(events) == 51 and events[-1] == b"data: [DONE]"
    assert [json.loads(e[6:])["n"] for e in events[:50]] == list(range(50))
    # typewriter: the 50 chunks 20 ms apart were not batched into a few reads
    assert len(times) >= 40, len(times)
    opened = [o for o in a1.opens if o["model"] == "m-sse"][-1]
    hdrs = dict((k, v) for k, v in opened["headers"])
    assert hdrs["x-relayhub-stream"] == "1" and hdrs["x-relayhub-add-include-usage"] == "1"


def test_unknown_model_404_and_routing():
    st, body, _ = chat("no-such-model")
    assert st == 404 and body["error"]["code"] == "model_not_found"
    st, body, _ = chat("only-2")
    assert st == 200 and body["agent"] == a2.id


def test_bad_requests():
    for raw, why in ((b"{", "invalid"), (b"[]", "object"), (b'{"model": 5}', "model"),
                     (b'{"model":"m-json","stream":"yes"}', "stream"),
                     (b'{"model":"m-json","model":"m-sse"}', "twice"),
                     (b'{"mod\\u0065l":"m-json","model":"x"}', "twice"),
                     (b'{"messages":[{"model":"m-json"}]}', "model")):
        st, body, _ = hub.gw("POST", "/v1/chat/completions", raw, key=KEY)
        assert st == 400, (raw, st, body)
        assert body["error"]["type"] == "invalid_request_error", body
    st, body, _ = hub.gw("GET", "/v1/chat/completions", key=KEY)
    assert st == 405
    st, body, _ = hub.gw("POST", "/v1/nothing", b"{}", key=KEY)
    assert st == 404


def _raw_http(payload):
    s = socket.create_connection(("127.0.0.1", hub.gateway_port), timeout=10)
    s.sendall(payload)
    out = s.recv(65536)
    s.close()
    return out.decode("latin-1")


def test_framing_errors():
    auth = "Authorization: Bearer %s\r\n" % KEY
    r = _raw_http(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sTransfer-Encoding: "
                   "chunked\r\n\r\n5\r\n{\"a\":\r\n0\r\n\r\n" % auth).encode())
    assert r.startswith("HTTP/1.1 411"), r
    r = _raw_http(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Length: 2\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n{}" % auth).encode())
    assert r.startswith("HTTP/1.1 400"), r
    r = _raw_http(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Length: 2\r\n"
                   "Content-Length: 3\r\n\r\n{}" % auth).encode())
    assert r.startswith("HTTP/1.1 400"), r
    r = _raw_http(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Length: "
                   "40000000\r\n\r\n" % auth).encode())
    assert r.startswith("HTTP/1.1 413"), r


def test_retry_on_vendor_500_uses_another_agent():
    # "m-500" only on a1: the retry finds no other agent and reports the failure
    st, body, _ = chat("m-500")
    assert st in (500, 502), (st, body)
    before = len(a2.opens)
    # "shared" is on both; make a1 fail it by closing... instead check spreading works
    agents = {chat("shared")[1]["agent"] for _ in range(20)}
    assert agents == {a1.id, a2.id}
    assert len(a2.opens) > before


def test_vendor_5xx_is_retried_on_another_agent():
    """a1 answers "flaky" with 503, a2 serves it: every request succeeds, some via a retry."""
    before = len([o for o in a1.opens if o["model"] == "flaky"])
    for _ in range(12):
        st, body, h = chat("flaky")
        assert st == 200 and body["agent"] == a2.id, (st, body)
    tried_a1 = len([o for o in a1.opens if o["model"] == "flaky"]) - before
    assert tried_a1 >= 1, "the least-loaded choice never picked a1 in 12 tries"
    # the retry was the same request, attempt 2, on the other agent
    attempts = [o["attempt"] for o in a2.opens if o["model"] == "flaky"]
    assert 2 in attempts, attempts
    assert hub.metric_gw("relayhub_gateway_retries_total") >= tried_a1


def test_agent_dying_before_the_first_byte_is_retried():
    """a3 drops its tunnel when asked for "fragile"; a2 serves it too."""
    for _ in range(60):   # the choice between equally loaded agents is random
        st, body, _ = chat("fragile")
        assert st == 200 and body["agent"] == a2.id, (st, body)
        if a3.opens:
            break
    assert a3.opens, "a3 was never chosen"


def test_first_byte_timeout_is_504_and_cancels():
    t0 = time.monotonic()
    st, body, _ = chat("m-silent")
    assert st == 504 and 2.5 < time.monotonic() - t0 < 10, (st, body)
    wait_until(lambda: len(a1.cancels) >= 1, what="cancel at the agent")


def test_user_disconnect_cancels_the_stream():
    n = len(a1.cancels)
    s = socket.create_connection(("127.0.0.1", hub.gateway_port), timeout=10)
    body = json.dumps({"model": "m-sse", "stream": True}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s.recv(1024)   # the head and a first chunk
    s.close()
    wait_until(lambda: len(a1.cancels) > n, timeout=5, what="cancel reached the agent")


def test_slow_reader_is_paced_by_credit():
    s = socket.create_connection(("127.0.0.1", hub.gateway_port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    body = json.dumps({"model": "m-big", "stream": True}).encode()
    a1.big_sent = 0
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(2)  # not reading: the agent must stop once the window and the buffers are full
    assert [o for o in a1.opens if o["model"] == "m-big"]
    paused_at = a1.big_sent
    time.sleep(0.5)
    assert a1.big_sent == paused_at, "the agent kept sending to a reader that stopped"
    assert 0 < paused_at < 12 * 1024 * 1024, paused_at
    got, tail = 0, b""
    s.settimeout(10)
    while True:
        piece = s.recv(1 << 20)
        if not piece:
            break
        got += len(piece)
        tail = (tail + piece)[-16:]
        if tail.endswith(b"\r\n0\r\n\r\n"):
            break
    s.close()
    assert got > 16 * 1024 * 1024, got  # everything arrived once the reader resumed


def test_revocation_reaches_the_gateway_over_the_bus():
    hub.hubctl("user", "add", "bob")
    out = hub.hubctl("key", "create", "bob").stdout
    import re
    key = re.search(r"^(sk-\S+)$", out, re.M).group(1)
    key_id = re.search(r"^key_id: (\S+)$", out, re.M).group(1)
    assert chat("m-json", key=key)[0] == 200          # now cached at the gateway
    hub.hubctl("key", "revoke", key_id)
    t0 = time.monotonic()
    wait_until(lambda: chat("m-json", key=key)[0] == 401, timeout=2, interval=0.02,
               what="revoked key refused")
    took = time.monotonic() - t0
    assert took < 1.0, took
    assert has_event(hub.gateway_log, "keys_changed")
    assert chat("m-json")[0] == 200                     # other keys unaffected


def test_sigterm_stops_cleanly():
    import signal
    hub.gateway.send_signal(signal.SIGTERM)
    assert hub.gateway.wait(timeout=15) == 0
    assert has_event(hub.gateway_log, "shutdown")


run_tests(globals())
