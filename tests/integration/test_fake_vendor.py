"""Integration tests for tests/fake_vendor (fake-vendor): every endpoint in OpenAI's and Azure's
wire formats over TLS with the official host names, stream pacing, usage only when asked for,
auth failures, each fault switch, cancel counting, header capture and large uploads.
"""

import base64
import http.client
import json
import os
import re
import socket
import ssl
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_vendor"))
import harness  # noqa: E402
import fakevendor  # noqa: E402

FV = None
OA = "api.openai.com"
AZ = "myres.openai.azure.com"
DEP = "/openai/deployments/my-gpt4o"
AV = "?api-version=2024-10-21"


def fv():
    global FV
    if FV is None:
        FV = fakevendor.FakeVendor().start()
    return FV


def oa_headers(extra=None):
    h = {"Authorization": "Bearer " + fv().openai_key, "Content-Type": "application/json"}
    h.update(extra or {})
    return h


def az_headers(extra=None):
    h = {"api-key": fv().azure_key, "Content-Type": "application/json"}
    h.update(extra or {})
    return h


def call(method, path, body=None, headers=None, host=OA):
    """One request; returns (status, headers as a lowercase dict, raw body bytes)."""
    c = fv().https(host)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse()
    raw = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, raw


def sse(raw):
    """Splits an SSE body into (event name or None, data text) pairs."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        ev, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((ev, "\n".join(data)))
    return out


def chat_events(raw):
    """The JSON chunks of a chat/completions stream; asserts it ends with [DONE]."""
    evs = sse(raw)
    assert evs[-1] == (None, "[DONE]"), evs[-1]
    return [json.loads(d) for _, d in evs[:-1]]


def text_of(chunks):
    out = ""
    for c in chunks:
        for ch in c.get("choices", []):
            out += (ch.get("delta") or {}).get("content") or ch.get("text") or ""
    return out


def words(n):
    return " ".join("tok%d" % i for i in range(n))


# ---- a raw TLS client, to see reads and timing as they happen -------------------------------

class Raw:
    """A TLS socket to the fake; sends one request and records each recv() with its time."""

    def __init__(self, host=OA, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(20)
        s.connect(("127.0.0.1", fv().port))
        self.sock = fv().ssl_context().wrap_socket(s, server_hostname=host)
        self.buf = b""

    def send(self, method, path, headers, body=b"", version="HTTP/1.1", host=OA):
        lines = ["%s %s %s" % (method, path, version), "Host: " + host]
        lines += ["%s: %s" % kv for kv in headers.items()]
        if body:
            lines.append("Content-Length: %d" % len(body))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def recv(self):
        d = self.sock.recv(65536)
        return time.monotonic(), d

    def head(self):
        """Reads the response head; returns (status, lowercase headers); keeps what follows."""
        while b"\r\n\r\n" not in self.buf:
            _, d = self.recv()
            assert d, "connection closed before the head"
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        hdrs = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        return int(lines[0].split()[1]), hdrs

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Chunked:
    """Incremental decoder of a chunked body; returns decoded bytes and whether it ended."""

    def __init__(self):
        self.buf = b""
        self.done = False

    def feed(self, data):
        buf = self.buf + data
        out = []
        pos = 0
        while not self.done:
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            size = int(buf[pos:i].split(b";")[0], 16)
            if len(buf) < i + 2 + size + 2:
                break
            if size == 0:
                self.done = True
                pos = i + 4
                break
            out.append(buf[i + 2:i + 2 + size])
            pos = i + 2 + size + 2
        self.buf = buf[pos:]
        return b"".join(out)


def stream_reads(raw, limit_s=30):
    """Reads a chunked SSE response to its end; returns [(time, [data texts in this read])],
    the decoder, and whether the connection closed before the body ended."""
    dec = Chunked()
    body = dec.feed(raw.buf)
    pending = body
    reads = []
    deadline = time.monotonic() + limit_s
    closed = False
    while not dec.done and time.monotonic() < deadline:
        t, d = raw.recv()
        if not d:
            closed = True
            break
        parts = (pending + dec.feed(d)).split(b"\n\n")
        pending = parts.pop()
        evs = []
        for block in parts:
            for line in block.decode().split("\n"):
                if line.startswith("data: "):
                    evs.append(line[6:])
        if evs:
            reads.append((t, evs))
    return reads, dec, closed


def is_content(data):
    if data == "[DONE]":
        return False
    j = json.loads(data)
    ch = j.get("choices") or []
    return bool(ch and ((ch[0].get("delta") or {}).get("content") or ch[0].get("text")))


# ---- tests ---------------------------------------------------------------------------------

def test_tls_with_official_names():
    for host in (OA, AZ, "127.0.0.1"):
        c = fv().https(host)
        c.connect()
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        c.close()
    # A name outside the certificate fails verification.
    try:
        fv().https("evil.example.com").connect()
        raise AssertionError("TLS accepted a name outside the certificate")
    except ssl.SSLCertVerificationError:
        pass


def test_openai_chat_non_streamed():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    st, h, raw = call("POST", "/v1/chat/completions", body, oa_headers())
    assert st == 200, raw
    assert h["content-type"] == "application/json"
    assert h["x-request-id"].startswith("req_")
    assert "set-cookie" in h and "openai-processing-ms" in h
    j = json.loads(raw)
    assert j["id"].startswith("chatcmpl-") and j["object"] == "chat.completion"
    assert isinstance(j["created"], int) and j["model"] == "gpt-4o"
    ch = j["choices"][0]
    assert ch["message"] == {"role": "assistant", "content": words(5), "refusal": None,
                             "annotations": []}
    assert ch["finish_reason"] == "stop" and ch["index"] == 0
    u = j["usage"]
    assert u["completion_tokens"] == 5
    assert u["prompt_tokens"] == (len(json.dumps(body)) + 3) // 4
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # max_tokens cuts the default answer short, as OpenAI does.
    body["max_tokens"] = 2
    j = json.loads(call("POST", "/v1/chat/completions", body, oa_headers())[2])
    assert j["choices"][0]["message"]["content"] == words(2)
    assert j["choices"][0]["finish_reason"] == "length"


def test_openai_chat_streamed():
    body = {"model": "gpt-4o-mini", "stream": True, "messages": []}
    st, h, raw = call("POST", "/v1/chat/completions", body, oa_headers({"x-fake-chunks": "7"}))
    assert st == 200
    assert h["content-type"].startswith("text/event-stream")
    assert h["transfer-encoding"] == "chunked"
    chunks = chat_events(raw)
    assert len(chunks) == 1 + 7 + 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "",
                                               "refusal": None}
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"]
        assert "usage" not in c, "usage without include_usage"
        assert "obfuscation" in c
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:8]] == \
        ["tok0"] + [" tok%d" % i for i in range(1, 7)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert text_of(chunks) == words(7)
    body["stream_options"] = {"include_obfuscation": False}
    chunks = chat_events(call("POST", "/v1/chat/completions", body, oa_headers())[2])
    assert all("obfuscation" not in c for c in chunks)


def test_usage_chunk_only_with_include_usage():
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}}
    chunks = chat_events(call("POST", "/v1/chat/completions", body,
                              oa_headers({"x-fake-chunks": "4"}))[2])
    assert len(chunks) == 1 + 4 + 1 + 1
    for c in chunks[:-1]:
        assert "usage" in c and c["usage"] is None
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 4
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 4
    body["stream_options"] = {"include_usage": False}
    chunks = chat_events(call("POST", "/v1/chat/completions", body,
                              oa_headers({"x-fake-chunks": "4"}))[2])
    assert all("usage" not in c for c in chunks) and len(chunks) == 6
    # x-fake-prompt-tokens fixes the prompt figure.
    body["stream_options"] = {"include_usage": True}
    chunks = chat_events(call("POST", "/v1/chat/completions", body,
                              oa_headers({"x-fake-prompt-tokens": "1234"}))[2])
    assert chunks[-1]["usage"]["prompt_tokens"] == 1234


def test_stream_pacing_50_chunks_20ms():
    fv().reset()
    r = Raw()
    r.send("POST", "/v1/chat/completions",
           oa_headers({"x-fake-chunks": "50", "x-fake-delay-ms": "20"}),
           json.dumps({"model": "gpt-4o", "stream": True}).encode())
    st, h = r.head()
    assert st == 200
    reads, dec, closed = stream_reads(r)
    r.close()
    assert dec.done and not closed
    content = [(t, evs) for t, evs in reads if any(is_content(e) for e in evs)]
    assert len(content) == 50, "content events came in %d reads, not 50" % len(content)
    assert all(sum(is_content(e) for e in evs) == 1 for _, evs in content)
    gaps = [b[0] - a[0] for a, b in zip(content, content[1:])]
    med = statistics.median(gaps)
    assert 0.017 <= med <= 0.040, "median gap %.1f ms" % (med * 1000)
    assert content[-1][0] - content[0][0] >= 49 * 0.019
    # A loaded machine may deliver a late read next to an early one; batching would do it often.
    close = sum(g < 0.010 for g in gaps)
    assert close <= 4, "%d of 49 gaps under 10 ms: %s" % (close, [round(g * 1000) for g in gaps])
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                   for _, evs in reads for e in evs if e != "[DONE]" and json.loads(e)["choices"])
    assert text == words(50)
    harness.wait_until(lambda: fv().stats()["streams_completed"] == 1, what="stream completed")


def test_completions():
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say"}
    st, _, raw = call("POST", "/v1/completions", body, oa_headers({"x-fake-chunks": "3"}))
    j = json.loads(raw)
    assert st == 200 and j["object"] == "text_completion" and j["id"].startswith("cmpl-")
    assert j["choices"][0]["text"] == words(3) and j["choices"][0]["finish_reason"] == "stop"
    assert set(j["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    body.update(stream=True, stream_options={"include_usage": True})
    chunks = chat_events(call("POST", "/v1/completions", body,
                              oa_headers({"x-fake-chunks": "3"}))[2])
    assert len(chunks) == 3 + 1 + 1
    assert text_of(chunks) == words(3)
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_embeddings():
    body = {"model": "text-embedding-3-small", "input": ["a", "b", "c"], "dimensions": 16,
            "encoding_format": "float"}
    st, _, raw = call("POST", "/v1/embeddings", body, oa_headers())
    j = json.loads(raw)
    assert st == 200 and j["object"] == "list" and j["model"] == body["model"]
    assert [d["index"] for d in j["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 16 for d in j["data"])
    assert abs(sum(x * x for x in j["data"][0]["embedding"]) - 1.0) < 1e-3
    assert j["usage"]["prompt_tokens"] == j["usage"]["total_tokens"] > 0
    body["encoding_format"] = "base64"
    j2 = json.loads(call("POST", "/v1/embeddings", body, oa_headers())[2])
    vec = struct.unpack("<16f", base64.b64decode(j2["data"][0]["embedding"]))
    assert all(abs(a - b) < 1e-6 for a, b in zip(vec, j["data"][0]["embedding"]))
    # A plain string input and the default size.
    j3 = json.loads(call("POST", "/v1/embeddings", {"model": "m", "input": "x"}, oa_headers())[2])
    assert len(j3["data"]) == 1 and len(j3["data"][0]["embedding"]) == 1536


def test_responses():
    body = {"model": "gpt-4o-mini", "input": "hi"}
    st, _, raw = call("POST", "/v1/responses", body, oa_headers({"x-fake-chunks": "3"}))
    j = json.loads(raw)
    assert st == 200 and j["object"] == "response" and j["status"] == "completed"
    assert j["id"].startswith("resp_")
    assert j["output"][0]["content"][0] == {"type": "output_text", "annotations": [],
                                            "logprobs": [], "text": words(3)}
    assert j["usage"]["output_tokens"] == 3
    body["stream"] = True
    st, h, raw = call("POST", "/v1/responses", body, oa_headers({"x-fake-chunks": "3"}))
    evs = sse(raw)
    names = [e for e, _ in evs]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * 3 + \
        ["response.output_text.done", "response.content_part.done",
         "response.output_item.done", "response.completed"], names
    datas = [json.loads(d) for _, d in evs]
    assert [d["type"] for d in datas] == names
    assert [d["sequence_number"] for d in datas] == list(range(len(names)))
    assert "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta") == \
        words(3)
    done = datas[-1]["response"]
    assert done["status"] == "completed" and done["usage"]["output_tokens"] == 3
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + 3
    assert "[DONE]" not in raw.decode()


def test_models():
    st, _, raw = call("GET", "/v1/models", None, oa_headers())
    j = json.loads(raw)
    assert st == 200 and j["object"] == "list"
    assert {"id", "object", "created", "owned_by"} == set(j["data"][0])
    assert "gpt-4o" in [m["id"] for m in j["data"]]
    st, _, raw = call("GET", "/v1/models/gpt-4o", None, oa_headers())
    assert st == 200 and json.loads(raw)["id"] == "gpt-4o"
    st, _, raw = call("GET", "/v1/models/nope", None, oa_headers())
    assert st == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    st, _, raw = call("GET", "/v1/nothing", None, oa_headers())
    assert st == 404 and "Invalid URL" in json.loads(raw)["error"]["message"]
    st, _, _ = call("GET", "/v1/chat/completions", None, oa_headers())
    assert st == 405


def test_openai_auth_failures():
    before = fv().stats()["auth_failures"]
    body = {"model": "gpt-4o"}
    st, h, raw = call("POST", "/v1/chat/completions", body,
                      {"Authorization": "Bearer sk-wrong", "Content-Type": "application/json"})
    e = json.loads(raw)["error"]
    assert st == 401 and e["type"] == "invalid_request_error" and e["code"] == "invalid_api_key"
    assert e["param"] is None and "sk-wrong" not in e["message"]
    assert h["x-request-id"].startswith("req_")
    st, _, raw = call("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    e = json.loads(raw)["error"]
    assert st == 401 and e["code"] is None and "didn't provide an API key" in e["message"]
    # The Azure key is not an OpenAI key, nor is an api-key header enough.
    st, _, _ = call("POST", "/v1/chat/completions", body, {"api-key": fv().openai_key})
    assert st == 401
    st, _, _ = call("POST", "/v1/chat/completions", body,
                    {"Authorization": "Bearer " + fv().azure_key})
    assert st == 401
    assert fv().stats()["auth_failures"] == before + 4
    assert fv().last()["auth"] == "wrong"


def test_azure_deployments():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    st, h, raw = call("POST", DEP + "/chat/completions" + AV, body,
                      az_headers({"x-ms-client-request-id": "abc-123"}), host=AZ)
    assert st == 200, raw
    assert h["x-ms-client-request-id"] == "abc-123" and "apim-request-id" in h
    text = raw.decode()
    j = json.loads(raw)
    assert list(j) == sorted(j), "Azure sorts keys"
    assert j["model"] == "my-gpt4o" and j["object"] == "chat.completion"
    assert j["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert j["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"
    assert j["choices"][0]["message"]["content"] == words(5)
    assert "obfuscation" not in text
    body.update(stream=True, stream_options={"include_usage": True})
    chunks = chat_events(call("POST", DEP + "/chat/completions" + AV, body,
                              az_headers({"x-fake-chunks": "3"}), host=AZ)[2])
    first = chunks[0]
    assert first["choices"] == [] and first["id"] == "" and "prompt_filter_results" in first
    assert chunks[1]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["content_filter_results"] == {}
    assert all("content_filter_results" in c["choices"][0] for c in chunks[1:-1])
    assert text_of(chunks) == words(3)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    # Embeddings and completions on the deployment.
    st, _, raw = call("POST", DEP + "/embeddings" + AV, {"input": ["x", "y"]}, az_headers(),
                      host=AZ)
    assert st == 200 and len(json.loads(raw)["data"]) == 2
    st, _, raw = call("POST", DEP + "/completions" + AV, {"prompt": "x"}, az_headers(), host=AZ)
    assert st == 200 and "content_filter_results" in json.loads(raw)["choices"][0]


def test_azure_errors():
    # No api-version: 404; wrong key: 401 in Azure's shape; Bearer is not for deployments.
    st, _, raw = call("POST", DEP + "/chat/completions", {}, az_headers(), host=AZ)
    assert st == 404 and json.loads(raw) == {"error": {"code": "404",
                                                       "message": "Resource not found"}}
    st, _, raw = call("POST", DEP + "/chat/completions" + AV, {}, {"api-key": "nope"}, host=AZ)
    e = json.loads(raw)["error"]
    assert st == 401 and e["code"] == "401" and "Access denied" in e["message"]
    st, _, _ = call("POST", DEP + "/chat/completions" + AV, {},
                    {"Authorization": "Bearer " + fv().azure_key}, host=AZ)
    assert st == 401
    # Each vendor's paths on the other's host name are unknown there.
    st, _, raw = call("POST", DEP + "/chat/completions" + AV, {}, az_headers(), host=OA)
    assert st == 404
    st, _, raw = call("POST", "/v1/chat/completions", {"model": "m"}, oa_headers(), host=AZ)
    assert st == 404


def test_azure_v1_routes():
    body = {"model": "my-gpt4o", "messages": []}
    for hdrs in (az_headers(), {"Authorization": "Bearer " + fv().azure_key}):
        st, _, raw = call("POST", "/openai/v1/chat/completions", body, hdrs, host=AZ)
        assert st == 200, raw
        assert json.loads(raw)["model"] == "my-gpt4o"
    st, _, raw = call("GET", "/openai/v1/models", None, az_headers(), host=AZ)
    assert st == 200 and json.loads(raw)["object"] == "list"
    st, _, raw = call("POST", "/openai/v1/embeddings", {"model": "e", "input": "x"}, az_headers(),
                      host=AZ)
    assert st == 200


def test_fault_status_429_and_retry_after():
    body = {"model": "gpt-4o"}
    st, h, raw = call("POST", "/v1/chat/completions", body, oa_headers({"x-fake-status": "429"}))
    e = json.loads(raw)["error"]
    assert st == 429 and e["code"] == "rate_limit_exceeded" and e["type"] == "requests"
    assert h["retry-after"] == "1" and h["x-ratelimit-remaining-requests"] == "0"
    st, h, _ = call("POST", "/v1/chat/completions", body,
                    oa_headers({"x-fake-status": "429", "x-fake-retry-after": "3"}))
    assert st == 429 and h["retry-after"] == "3"
    st, h, _ = call("POST", "/v1/chat/completions", body,
                    oa_headers({"x-fake-status": "429", "x-fake-retry-after": "-1"}))
    assert st == 429 and "retry-after" not in h
    st, h, raw = call("POST", DEP + "/chat/completions" + AV, {},
                      az_headers({"x-fake-status": "429", "x-fake-retry-after": "2"}), host=AZ)
    assert st == 429 and h["retry-after"] == "2" and h["retry-after-ms"] == "2000"
    assert json.loads(raw)["error"]["code"] == "429"


def test_fault_status_500_503():
    st, _, raw = call("POST", "/v1/chat/completions", {"model": "m", "stream": True},
                      oa_headers({"x-fake-status": "500"}))
    e = json.loads(raw)["error"]
    assert st == 500 and e["type"] == "server_error" and e["code"] is None
    st, h, raw = call("POST", "/v1/chat/completions", {"model": "m"},
                      oa_headers({"x-fake-status": "503", "x-fake-retry-after": "5"}))
    assert st == 503 and h["retry-after"] == "5"


def test_fault_drop_after():
    fv().reset()
    r = Raw()
    r.send("POST", "/v1/chat/completions", oa_headers({"x-fake-chunks": "50",
                                                       "x-fake-drop-after": "10"}),
           json.dumps({"model": "m", "stream": True}).encode())
    assert r.head()[0] == 200
    reads, dec, closed = stream_reads(r)
    r.close()
    evs = [e for _, es in reads for e in es]
    assert closed and not dec.done, "the connection should close mid-stream"
    assert sum(is_content(e) for e in evs) == 10 and "[DONE]" not in evs
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in evs)
    # http.client sees the broken chunked body as an error.
    c = fv().https()
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}),
              oa_headers({"x-fake-drop-after": "2"}))
    resp = c.getresponse()
    try:
        resp.read()
        raise AssertionError("a dropped stream read as complete")
    except http.client.IncompleteRead:
        pass
    c.close()
    # A non-streamed answer cut after 20 bytes.
    c = fv().https()
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "m"}),
              oa_headers({"x-fake-drop-after": "20"}))
    resp = c.getresponse()
    try:
        resp.read()
        raise AssertionError("a dropped body read as complete")
    except http.client.IncompleteRead as e:
        assert len(e.partial) == 20
    c.close()
    s = fv().stats()
    assert s["streams_dropped"] == 2 and s["streams_cancelled"] == 0, s
    assert s["streams_completed"] == 0


def test_fault_empty():
    for stream in (False, True):
        st, h, raw = call("POST", "/v1/chat/completions", {"model": "m", "stream": stream},
                          oa_headers({"x-fake-empty": "1"}))
        assert st == 200 and raw == b"" and h["content-length"] == "0"
    assert fv().last()["outcome"] == "empty"


def test_fault_stall():
    t0 = time.monotonic()
    st, _, _ = call("POST", "/v1/chat/completions", {"model": "m"},
                    oa_headers({"x-fake-stall-ms": "400"}))
    assert st == 200 and time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    st, _, _ = call("POST", "/v1/chat/completions", {"model": "m"},
                    oa_headers({"x-fake-stall-ms": "300", "x-fake-status": "500"}))
    assert st == 500 and time.monotonic() - t0 >= 0.3
    # A stall in the middle of a stream: after 3 content events, 400 ms of silence.
    r = Raw()
    r.send("POST", "/v1/chat/completions",
           oa_headers({"x-fake-chunks": "6", "x-fake-stall-after": "3", "x-fake-stall-ms": "400"}),
           json.dumps({"model": "m", "stream": True}).encode())
    assert r.head()[0] == 200
    reads, dec, _ = stream_reads(r)
    r.close()
    assert dec.done
    content = [t for t, es in reads for e in es if is_content(e)]
    assert len(content) == 6
    gaps = [b - a for a, b in zip(content, content[1:])]
    assert gaps[2] >= 0.38 and max(gaps[:2] + gaps[3:]) < 0.2, gaps


def test_fault_error_after():
    st, _, raw = call("POST", "/v1/chat/completions", {"model": "m", "stream": True},
                      oa_headers({"x-fake-chunks": "5", "x-fake-error-after": "2"}))
    evs = sse(raw)
    assert st == 200 and evs[-1][1] != "[DONE]"
    last = json.loads(evs[-1][1])
    assert last["error"]["type"] == "server_error"
    assert sum(is_content(d) for _, d in evs[:-1]) == 2
    st, _, raw = call("POST", "/v1/responses", {"model": "m", "stream": True, "input": "x"},
                      oa_headers({"x-fake-chunks": "5", "x-fake-error-after": "1"}))
    evs = sse(raw)
    assert evs[-1][0] == "error" and json.loads(evs[-1][1])["code"] == "server_error"
    assert fv().last()["outcome"] == "error_event"


def test_bad_switches_and_bodies():
    st, _, raw = call("POST", "/v1/chat/completions", {"model": "m"},
                      oa_headers({"x-fake-chunks": "many"}))
    assert st == 400 and "x-fake-chunks" in json.loads(raw)["error"]["message"]
    st, _, raw = call("POST", "/v1/chat/completions", b"{not json", oa_headers())
    assert st == 400 and "could not parse the JSON body" in json.loads(raw)["error"]["message"]
    st, _, raw = call("POST", "/v1/chat/completions", {"messages": []}, oa_headers())
    assert st == 400 and "model" in json.loads(raw)["error"]["message"]
    st, _, raw = call("POST", "/v1/chat/completions", {"model": "m", "stream": "yes"},
                      oa_headers())
    assert st == 400 and json.loads(raw)["error"]["param"] == "stream"
    # Framing the vendor would refuse: Content-Length with Transfer-Encoding.
    r = Raw()
    r.sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
                   b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    st, h = r.head()
    assert st == 400 and h["connection"] == "close"
    r.close()


def test_cancel_counted():
    fv().reset()
    r = Raw()
    r.send("POST", "/v1/chat/completions",
           oa_headers({"x-fake-chunks": "50", "x-fake-delay-ms": "20"}),
           json.dumps({"model": "m", "stream": True}).encode())
    assert r.head()[0] == 200
    seen = 0
    dec = Chunked()
    while seen < 3:
        _, d = r.recv()
        seen += len(re.findall(rb'"content":" ?tok', dec.feed(d)))
    assert fv().stats()["active_streams"] == 1
    t0 = time.monotonic()
    r.close()
    harness.wait_until(lambda: fv().stats()["streams_cancelled"] == 1, timeout=5,
                       interval=0.01, what="cancel counted")
    took = time.monotonic() - t0
    s = fv().stats()
    assert s["active_streams"] == 0 and s["streams_completed"] == 0 and s["streams_started"] == 1
    assert s["requests_cancelled"] == 1
    assert abs(s["last_cancel_ms"] / 1000 - time.time()) < 2
    assert took < 0.5, "cancel seen after %.0f ms" % (took * 1000)
    last = fv().last()
    assert last["outcome"] == "cancelled" and 3 <= last["events"] < 50
    # A client gone during a head stall counts as a cancelled request, not a stream.
    r = Raw()
    r.send("POST", "/v1/chat/completions", oa_headers({"x-fake-stall-ms": "2000"}),
           json.dumps({"model": "m", "stream": True}).encode())
    harness.wait_until(lambda: fv().stats()["requests"] == 2, what="second request")
    r.close()
    harness.wait_until(lambda: fv().stats()["requests_cancelled"] == 2, what="stall cancel")
    assert fv().stats()["streams_cancelled"] == 1


def test_last_captures_headers_and_body():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "h\u00e9llo"}]}
    c = fv().https()
    c.putrequest("POST", "/v1/chat/completions?trace=1&x=%20y", skip_accept_encoding=True)
    for k, v in (("Authorization", "Bearer " + fv().openai_key), ("Accept-Encoding", "identity"),
                 ("X-Custom-Thing", "one"), ("x-custom-thing", "two"),
                 ("OpenAI-Organization", "org-123"), ("Content-Type", "application/json")):
        c.putheader(k, v)
    data = json.dumps(body).encode()
    c.putheader("Content-Length", str(len(data)))
    c.endheaders(data)
    assert c.getresponse().read()
    c.close()
    last = fv().last()
    assert last["method"] == "POST" and last["path"] == "/v1/chat/completions"
    assert last["query"] == "trace=1&x=%20y" and last["vendor"] == "openai"
    names = [n for n, _ in last["headers"]]
    assert names == ["Host", "Authorization", "Accept-Encoding", "X-Custom-Thing",
                     "x-custom-thing", "OpenAI-Organization", "Content-Type", "Content-Length"]
    assert last["header_map"]["x-custom-thing"] == "one, two"
    assert last["header_map"]["accept-encoding"] == "identity"
    assert last["header_map"]["host"] == "api.openai.com"
    assert "cookie" not in last["header_map"]
    assert json.loads(last["body"]) == body and last["body_len"] == len(data)
    assert last["complete"] and last["status"] == 200 and last["tls"]
    reqs = fv().requests()
    assert reqs[-1]["seq"] == last["seq"] and len(reqs) <= 16


def test_upload_20mib_counted():
    fv().reset()
    size = 20 * 1024 * 1024
    filler = "x" * (size - 64)
    body = ('{"model":"gpt-4o","input":"' + filler + '"}').encode()
    st, _, raw = call("POST", "/v1/embeddings", body, oa_headers())
    assert st == 200, raw[:200]
    last = fv().last()
    assert last["body_len"] == len(body) and last["body_kept"] == 65536
    assert last["body_truncated"] and last["body"].startswith('{"model":"gpt-4o"')
    assert fv().stats()["bytes_in"] == len(body)
    # The same, chunked (what a client that does not know the length sends).
    c = fv().https()

    def pieces():
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)]
    c.request("POST", "/v1/embeddings", pieces(),
              {"Authorization": "Bearer " + fv().openai_key, "Transfer-Encoding": "chunked"},
              encode_chunked=True)
    r = c.getresponse()
    assert r.status == 200, r.read()[:200]
    assert json.loads(r.read())["usage"]["prompt_tokens"] == (len(body) + 3) // 4
    c.close()
    last = fv().last()
    assert last["body_len"] == len(body) and last["header_map"]["transfer-encoding"] == "chunked"
    assert fv().stats()["bytes_in"] == 2 * len(body)
    # curl sends Expect: 100-continue for a body this big: the answer must come at once.
    path = os.path.join(fv().dir, "big.json")
    with open(path, "wb") as f:
        f.write(body)
    t0 = time.monotonic()
    out = harness.run(["curl", "-sS", "--connect-to", fv().connect_to(OA), "--cacert", fv().ca,
                       "-H", "Authorization: Bearer " + fv().openai_key,
                       "-H", "Content-Type: application/json", "--data-binary", "@" + path,
                       "-o", "/dev/null", "-w", "%{http_code}",
                       "https://api.openai.com/v1/embeddings"]).stdout
    assert out == "200" and time.monotonic() - t0 < 0.9
    assert fv().stats()["continues"] == 1
    assert fv().last()["header_map"]["expect"] == "100-continue"


def test_slow_reader_bounded():
    """A client that stops reading stops the stream: nothing piles up in the fake."""
    fv().reset()
    n = 40000
    r = Raw(rcvbuf=16384)
    r.send("POST", "/v1/chat/completions", oa_headers({"x-fake-chunks": str(n)}),
           json.dumps({"model": "m", "stream": True}).encode())
    assert r.head()[0] == 200
    rss0 = fv().rss_kb()

    def out():
        return fv().stats()["bytes_out"]
    # The fake writes until the socket buffers are full (a few MiB), then must stop.
    prev = [-1]

    def settled():
        now = out()
        same = now == prev[0]
        prev[0] = now
        return same
    harness.wait_until(settled, timeout=20, interval=0.25, what="writes to stop")
    a = out()
    time.sleep(0.5)
    b = out()
    assert a == b, "still writing to a reader that stopped (%d -> %d)" % (a, b)
    assert a < 16 * 1024 * 1024, a
    s = fv().stats()
    assert s["streams_completed"] == 0 and s["active_streams"] == 1
    assert s["stream_queue_max"] < 4096, s["stream_queue_max"]
    if not fakevendor.sanitized():  # ASan's quarantine keeps freed memory resident
        assert fv().rss_kb() - rss0 < 4096, "RSS grew %d KiB" % (fv().rss_kb() - rss0)
    reads, dec, closed = stream_reads(r, limit_s=60)
    r.close()
    evs = [e for _, es in reads for e in es]
    assert dec.done and evs[-1] == "[DONE]"
    assert sum(is_content(e) for e in evs) == n
    harness.wait_until(lambda: fv().stats()["streams_completed"] == 1, what="completed")


def test_paused_reader_keeps_stream():
    """A reader that pauses longer than lws's 5 s timeout still gets the whole stream, and the
    connection outlives it (lws 4.1.6 used to cut raw TLS connections 5 s after the handshake)."""
    fv().reset()
    n = 20000
    r = Raw(rcvbuf=65536)
    r.send("POST", "/v1/chat/completions", oa_headers({"x-fake-chunks": str(n)}),
           json.dumps({"model": "m", "stream": True}).encode())
    r.buf = r.sock.recv(1000)
    time.sleep(8)  # the fake's writes block meanwhile
    assert fv().stats()["streams_cancelled"] == 0
    st, _ = r.head()
    assert st == 200
    reads, dec, closed = stream_reads(r, limit_s=60)
    evs = [e for _, es in reads for e in es]
    assert not closed and dec.done and evs[-1] == "[DONE]"
    assert sum(is_content(e) for e in evs) == n
    harness.wait_until(lambda: fv().stats()["streams_completed"] == 1, what="completed")
    # The same connection, now over 8 s old, still serves a request.
    r.buf = dec.buf
    r.send("POST", "/v1/chat/completions", oa_headers({"x-fake-chunks": "2"}),
           json.dumps({"model": "m"}).encode())
    st, h = r.head()
    while len(r.buf) < int(h["content-length"]):
        r.buf += r.recv()[1]
    r.close()
    assert st == 200 and json.loads(r.buf)["choices"][0]["message"]["content"] == words(2)
    s = fv().stats()
    assert s["streams_cancelled"] == 0 and s["requests_cancelled"] == 0 and s["connections"] == 1


def test_control_config():
    fv().reset()
    cfg = fv().config(status=503, retry_after=7, count=1)
    assert cfg["switches"] == {"status": 503, "retry-after": 7} and cfg["count"] == 1
    st, h, _ = call("POST", "/v1/chat/completions", {"model": "m"}, oa_headers())
    assert st == 503 and h["retry-after"] == "7"
    st, _, _ = call("POST", "/v1/chat/completions", {"model": "m"}, oa_headers())
    assert st == 200, "count=1 applies to one request only"
    fv().config(chunks=3, **{"delay-ms": 1})
    for _ in range(2):
        chunks = chat_events(call("POST", "/v1/chat/completions", {"model": "m", "stream": True},
                                  oa_headers())[2])
        assert text_of(chunks) == words(3)
    # A request header still wins over the server-wide switch.
    chunks = chat_events(call("POST", "/v1/chat/completions", {"model": "m", "stream": True},
                              oa_headers({"x-fake-chunks": "2"}))[2])
    assert text_of(chunks) == words(2)
    fv().config(models=["only-model"])
    j = json.loads(call("GET", "/v1/models", None, oa_headers())[2])
    assert [m["id"] for m in j["data"]] == ["only-model"]
    st, body = fv().control("POST", "/_fake/config", {"chunks": -5})
    assert st == 400 and "chunks" in body["error"]
    st, body = fv().control("POST", "/_fake/config", {"bogus": 1})
    assert st == 400 and "bogus" in body["error"]
    fv().reset()
    assert fv().control("GET", "/_fake/config")[1]["switches"] == {}
    assert fv().stats()["requests"] == 0
    assert fv().control("GET", "/_fake/last")[0] == 404
    assert fv().control("GET", "/_fake/nothing")[0] == 404


def test_keepalive_pipelining_and_http10():
    c = fv().https()
    for _ in range(3):
        c.request("POST", "/v1/chat/completions", json.dumps({"model": "m"}), oa_headers())
        assert c.getresponse().read()
    c.close()
    # Two requests sent back to back are answered in order on one connection.
    r = Raw()
    body = json.dumps({"model": "m"}).encode()
    one = ("POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: "
           "Bearer %s\r\nx-fake-chunks: %%d\r\nContent-Length: %d\r\n\r\n"
           % (fv().openai_key, len(body)))
    r.sock.sendall((one % 1).encode() + body + (one % 2).encode() + body)
    texts = []
    for _ in range(2):
        st, h = r.head()
        n = int(h["content-length"])
        while len(r.buf) < n:
            r.buf += r.recv()[1]
        texts.append(json.loads(r.buf[:n])["choices"][0]["message"]["content"])
        r.buf = r.buf[n:]
    r.close()
    assert texts == [words(1), words(2)]
    # HTTP/1.0: a stream without chunked framing, ended by closing the connection.
    r = Raw()
    r.send("POST", "/v1/chat/completions", oa_headers({"x-fake-chunks": "2"}),
           json.dumps({"model": "m", "stream": True}).encode(), version="HTTP/1.0")
    st, h = r.head()
    assert st == 200 and "transfer-encoding" not in h and h["connection"] == "close"
    data = r.buf
    while True:
        d = r.recv()[1]
        if not d:
            break
        data += d
    r.close()
    assert text_of(chat_events(data)) == words(2)


def test_log_lines_and_no_secrets():
    events = harness.log_events(fv().log)
    reqs = [e for e in events if e["event"] == "request"]
    assert len(reqs) > 20
    for e in reqs:
        for k in ("method", "path", "status", "outcome", "bytes_in", "ms"):
            assert k in e, e
    with open(fv().log) as f:
        text = f.read()
    assert fv().openai_key not in text and fv().azure_key not in text


def test_sigterm_exits_cleanly():
    assert fv().stop() == 0


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
