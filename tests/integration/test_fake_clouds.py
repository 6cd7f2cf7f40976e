"""Integration tests for tests/fake_vendor/fake_clouds.py (fake-clouds): Anthropic, Gemini,
Vertex AI with Google's token endpoint, and Bedrock runtime, each in its wire format over TLS
with the official host names; auth failures; the JWT and SigV4 checks (and the Python SigV4
signer against AWS's public test suite); event-stream frames; every fault switch; counters,
records, redaction and the log.
"""

import base64
import hashlib
import http.client
import json
import os
import socket
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_vendor"))
import harness  # noqa: E402
import fakeclouds  # noqa: E402
import fake_clouds  # noqa: E402

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vectors", "aws-sigv4")
AN = "api.anthropic.com"
GE = "generativelanguage.googleapis.com"
OAUTH = "oauth2.googleapis.com"
VX = "us-central1-aiplatform.googleapis.com"
BR = "bedrock-runtime.us-east-1.amazonaws.com"
HAIKU = "anthropic.claude-3-5-haiku-20241022-v1%3A0"
FC = None


def fc():
    global FC
    if FC is None:
        FC = fakeclouds.FakeClouds().start()
    return FC


def words(n):
    return " ".join("tok%d" % i for i in range(n))


def call(host, method, path, body=None, headers=None):
    return fc().call(host, method, path, body, headers)


def jl(raw):
    return json.loads(raw)


# ---- per-vendor request helpers -------------------------------------------------------------

def an_headers(extra=None):
    h = {"x-api-key": fc().anthropic_key, "anthropic-version": "2023-06-01",
         "content-type": "application/json"}
    h.update(extra or {})
    return h


def an_body(**kw):
    b = {"model": "claude-3-5-haiku-20241022", "max_tokens": 100,
         "messages": [{"role": "user", "content": "Hello"}]}
    b.update(kw)
    return b


def an(body=None, extra=None, path="/v1/messages"):
    return call(AN, "POST", path, an_body() if body is None else body, an_headers(extra))


def ge_headers(extra=None):
    h = {"x-goog-api-key": fc().gemini_key, "content-type": "application/json"}
    h.update(extra or {})
    return h


GE_BODY = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


def ge(method="generateContent", query="", extra=None, body=None, headers=None):
    return call(GE, "POST", "/v1beta/models/gemini-2.0-flash:%s%s" % (method, query),
                GE_BODY if body is None else body,
                ge_headers(extra) if headers is None else headers)


def vx_path(method="generateContent", project=None, region="us-central1"):
    return "/v1/projects/%s/locations/%s/publishers/google/models/gemini-2.0-flash:%s" % (
        project or fc().vertex_project, region, method)


def br_body(**kw):
    b = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
         "messages": [{"role": "user", "content": "Hello"}]}
    b.update(kw)
    return b


CONVERSE_BODY = {"messages": [{"role": "user", "content": [{"text": "Hello"}]}]}


def br(op, body=None, region="us-east-1", model=HAIKU, extra=None, sign_kw=None, fake=None):
    """A signed Bedrock request; extra are unsigned headers (x-fake-*), sign_kw go to the
    signer."""
    f = fake or fc()
    path = "/model/%s/%s" % (model, op)
    if body is None:
        body = br_body() if op.startswith("invoke") else CONVERSE_BODY
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hs = f.bedrock_headers("POST", path, data, region=region,
                           headers={"Content-Type": "application/json"}, **(sign_kw or {}))
    hs.update(extra or {})
    return f.call("bedrock-runtime.%s.amazonaws.com" % region, "POST", path, data, hs)


# ---- a raw TLS client: HTTP chunks and their arrival times ----------------------------------

def raw_exchange(host, method, path, headers, body=b""):
    """Sends one request (Connection: close) and reads to EOF. Returns (status, headers,
    [(time, chunk bytes)], complete): one entry per HTTP chunk, complete when the
    terminating chunk came."""
    s = socket.create_connection(("127.0.0.1", fc().port), timeout=20)
    s = fc().ssl_context().wrap_socket(s, server_hostname=host)
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + host, "Connection: close",
             "Content-Length: %d" % len(body)] + ["%s: %s" % kv for kv in headers.items()
                                                  if kv[0].lower() != "host"]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    buf = b""
    head = None
    chunks = []
    complete = False
    while True:
        try:
            d = s.recv(65536)
        except (OSError, ConnectionError):
            d = b""
        t = time.monotonic()
        buf += d
        if head is None and b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
        while head is not None and not complete:
            i = buf.find(b"\r\n")
            if i < 0:
                break
            size = int(buf[:i], 16)
            if len(buf) < i + 2 + size + 2:
                break
            if size == 0:
                complete = True
                break
            chunks.append((t, buf[i + 2:i + 2 + size]))
            buf = buf[i + 2 + size + 2:]
        if not d:
            break
    s.close()
    lines = head.decode().split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, chunks, complete


# =============================================================================================
# TLS and routing
# =============================================================================================

def test_tls_every_host_name():
    for host in fakeclouds.HOSTS:
        st, h, raw = call(host, "POST", "/no/such/path", b"{}", {})
        assert st in (403, 404), (host, st, raw)   # Bedrock checks the signature first
    st, _, raw = call("127.0.0.1", "GET", "/", None, {})
    assert st == 404 and b"unknown host" in raw
    # The certificate does not cover an arbitrary amazonaws.com name.
    try:
        call("bedrock-runtime.ap-south-1.amazonaws.com", "POST", "/", b"", {})
        raise AssertionError("TLS accepted a name the certificate does not carry")
    except Exception as e:
        assert "certificate" in str(e).lower() or "hostname" in str(e).lower(), e


# =============================================================================================
# Anthropic
# =============================================================================================

def test_anthropic_messages():
    fc().reset()
    body = an_body()
    st, h, raw = an(body)
    assert st == 200, raw
    m = jl(raw)
    assert m["type"] == "message" and m["role"] == "assistant" and m["id"].startswith("msg_")
    assert m["content"] == [{"type": "text", "text": words(5)}]
    assert m["stop_reason"] == "end_turn" and m["model"] == body["model"]
    n_in = -(-len(json.dumps(body).encode()) // 4)
    assert m["usage"] == {"input_tokens": n_in, "output_tokens": 5,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}, m
    assert h["request-id"].startswith("req_") and h["content-type"] == "application/json"
    # max_tokens cuts the text unless chunks is explicit.
    m = jl(an(an_body(max_tokens=2))[2])
    assert m["content"][0]["text"] == words(2) and m["stop_reason"] == "max_tokens"
    m = jl(an(an_body(max_tokens=2), {"x-fake-chunks": "7"})[2])
    assert m["content"][0]["text"] == words(7) and m["usage"]["output_tokens"] == 7
    # prompt_tokens and the cache figures.
    m = jl(an(None, {"x-fake-prompt-tokens": "1000", "x-fake-cached-tokens": "800",
                     "x-fake-cache-creation-tokens": "50"})[2])
    assert m["usage"]["input_tokens"] == 1000 and m["usage"]["cache_read_input_tokens"] == 800
    assert m["usage"]["cache_creation_input_tokens"] == 50
    # count_tokens
    st, _, raw = an({"model": "claude", "messages": [{"role": "user", "content": "x"}]},
                    {"x-fake-prompt-tokens": "42"}, "/v1/messages/count_tokens")
    assert st == 200 and jl(raw) == {"input_tokens": 42}, raw
    s = fc().stats()
    assert s["by_endpoint"]["anthropic/messages"] == 4, s
    assert s["by_endpoint"]["anthropic/count_tokens"] == 1, s


def test_anthropic_stream():
    st, h, chunks, complete = raw_exchange(
        AN, "POST", "/v1/messages", an_headers({"x-fake-chunks": "3"}),
        json.dumps(an_body(stream=True)).encode())
    assert st == 200 and complete and h["content-type"].startswith("text/event-stream")
    assert h["transfer-encoding"] == "chunked"
    evs = []
    for _, c in chunks:        # one event per HTTP chunk
        e = fake_clouds.sse_parse(c)
        assert len(e) == 1 and c.endswith(b"\n\n") and not c.endswith(b"\r\n\r\n"), c
        assert c.startswith(b"event: "), c
        evs.append((e[0][0], jl(e[0][1])))
    names = [n for n, _ in evs]
    assert names == ["message_start", "content_block_start", "ping"] + \
        ["content_block_delta"] * 3 + ["content_block_stop", "message_delta",
                                       "message_stop"], names
    for n, d in evs:
        assert d["type"] == n
    start = evs[0][1]["message"]
    assert start["usage"]["output_tokens"] == 1 and start["usage"]["input_tokens"] > 0
    assert start["content"] == [] and start["stop_reason"] is None
    assert "".join(d["delta"]["text"] for n, d in evs if n == "content_block_delta") == words(3)
    assert evs[3][1]["delta"]["type"] == "text_delta"
    md = evs[-2][1]
    assert md["delta"]["stop_reason"] == "end_turn" and md["usage"]["output_tokens"] == 3


def test_anthropic_stream_error_event_and_drop():
    _, _, raw = an(an_body(stream=True), {"x-fake-stream-error-after": "2"})
    evs = fake_clouds.sse_parse(raw)
    names = [n for n, _ in evs]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "error"], names
    assert jl(evs[-1][1]) == {"type": "error", "error": {"type": "overloaded_error",
                                                         "message": "Overloaded"}}
    last = fc().last()
    assert last["outcome"] == "error_event" and last["events"] == 2
    _, _, raw = an(an_body(stream=True), {"x-fake-stream-error-after": "0",
                                          "x-fake-stream-error-type": "api_error"})
    assert jl(fake_clouds.sse_parse(raw)[-1][1])["error"]["type"] == "api_error"
    # drop_after: the connection closes mid-stream, the chunked body unterminated.
    st, _, chunks, complete = raw_exchange(AN, "POST", "/v1/messages",
                                           an_headers({"x-fake-drop-after": "2"}),
                                           json.dumps(an_body(stream=True)).encode())
    assert st == 200 and not complete
    names = [fake_clouds.sse_parse(c)[0][0] for _, c in chunks]
    assert names.count("content_block_delta") == 2 and "message_stop" not in names, names
    assert fc().last()["outcome"] == "dropped"


def test_anthropic_auth_and_validation():
    fc().reset()
    st, h, raw = call(AN, "POST", "/v1/messages", an_body(),
                      {"anthropic-version": "2023-06-01", "content-type": "application/json"})
    e = jl(raw)
    assert st == 401 and e["type"] == "error" and e["error"]["type"] == "authentication_error"
    assert h["request-id"].startswith("req_")
    st, _, raw = an(None, {"x-api-key": "sk-ant-wrong"})
    assert st == 401 and jl(raw)["error"]["type"] == "authentication_error"
    # Authorization: Bearer is refused on /v1/messages, even with the right key.
    hb = an_headers()
    del hb["x-api-key"]
    hb["Authorization"] = "Bearer " + fc().anthropic_key
    st, _, raw = call(AN, "POST", "/v1/messages", an_body(), hb)
    assert st == 401 and "x-api-key" in jl(raw)["error"]["message"], raw
    assert fc().last()["auth"] == "missing"
    h2 = an_headers()
    del h2["anthropic-version"]
    st, _, raw = call(AN, "POST", "/v1/messages", an_body(), h2)
    assert st == 400 and jl(raw)["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in jl(raw)["error"]["message"]
    b = an_body()
    del b["max_tokens"]
    st, _, raw = an(b)
    assert st == 400 and "max_tokens" in jl(raw)["error"]["message"]
    st, _, raw = an(an_body(stream="yes"))
    assert st == 400
    st, _, raw = an(b"{not json")
    assert st == 400 and jl(raw)["type"] == "error"
    st, _, raw = call(AN, "POST", "/v1/nothing", b"{}", an_headers())
    assert st == 404 and jl(raw)["error"]["type"] == "not_found_error"
    assert fc().stats()["auth_failures"] == 3


def test_anthropic_openai_compat():
    body = {"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "hi"}]}
    for h in ({"Authorization": "Bearer " + fc().anthropic_key},
              {"x-api-key": fc().anthropic_key}):
        st, _, raw = call(AN, "POST", "/v1/chat/completions", body, h)
        j = jl(raw)
        assert st == 200 and j["object"] == "chat.completion", raw
        assert j["choices"][0]["message"]["content"] == words(5)
        assert j["usage"]["completion_tokens"] == 5
    st, _, raw = call(AN, "POST", "/v1/chat/completions", body,
                      {"Authorization": "Bearer nope"})
    assert st == 401 and "error" in jl(raw)
    sb = dict(body, stream=True, stream_options={"include_usage": True})
    st, _, raw = call(AN, "POST", "/v1/chat/completions", sb,
                      {"Authorization": "Bearer " + fc().anthropic_key, "x-fake-chunks": "3"})
    evs = fake_clouds.sse_parse(raw)
    assert evs[-1] == (None, "[DONE]")
    chunks = [jl(d) for _, d in evs[:-1]]
    assert all("usage" in c for c in chunks) and chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]
                   if c["choices"]) == words(3)
    st, _, raw = call(AN, "POST", "/v1/chat/completions", dict(body, stream=True),
                      {"Authorization": "Bearer " + fc().anthropic_key})
    assert all("usage" not in jl(d) for _, d in fake_clouds.sse_parse(raw)[:-1])


# =============================================================================================
# Gemini
# =============================================================================================

def test_gemini_generate_content():
    st, h, raw = ge()
    assert st == 200, raw
    assert h["content-type"].startswith("application/json")
    j = jl(raw)
    cand = j["candidates"][0]
    assert cand["content"] == {"parts": [{"text": words(5)}], "role": "model"}
    assert cand["finishReason"] == "STOP" and cand["index"] == 0
    u = j["usageMetadata"]
    p = -(-len(json.dumps(GE_BODY).encode()) // 4)
    assert u["promptTokenCount"] == p and u["candidatesTokenCount"] == 5
    assert u["totalTokenCount"] == p + 5 and "thoughtsTokenCount" not in u
    assert j["modelVersion"] == "gemini-2.0-flash" and j["responseId"]
    j = jl(ge(extra={"x-fake-thoughts": "7", "x-fake-cached-tokens": "3",
                     "x-fake-prompt-tokens": "10"})[2])
    u = j["usageMetadata"]
    assert u["thoughtsTokenCount"] == 7 and u["cachedContentTokenCount"] == 3
    assert u["totalTokenCount"] == 10 + 5 + 7, u
    j = jl(ge(body=dict(GE_BODY, generationConfig={"maxOutputTokens": 2}))[2])
    assert j["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert j["candidates"][0]["content"]["parts"][0]["text"] == words(2)
    st, _, raw = ge(body={"contents": []})
    assert st == 400 and jl(raw)["error"]["status"] == "INVALID_ARGUMENT"


def test_gemini_stream_sse_crlf():
    st, h, chunks, complete = raw_exchange(
        GE, "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        ge_headers({"x-fake-chunks": "4", "x-fake-thoughts": "2"}),
        json.dumps(GE_BODY).encode())
    assert st == 200 and complete and h["content-type"].startswith("text/event-stream")
    assert len(chunks) == 4
    objs = []
    for _, c in chunks:
        assert c.startswith(b"data: ") and c.endswith(b"\r\n\r\n"), c
        assert c.count(b"\r\n\r\n") == 1 and b"\n\n" not in c
        objs.append(jl(c[6:-4]))
    assert "[DONE]" not in b"".join(c for _, c in chunks).decode()
    text = ""
    for i, o in enumerate(objs):
        cand = o["candidates"][0]
        text += cand["content"]["parts"][0]["text"]
        assert ("finishReason" in cand) == (i == 3), (i, cand)
        u = o["usageMetadata"]
        assert u["candidatesTokenCount"] == i + 1 and u["thoughtsTokenCount"] == 2
        assert u["totalTokenCount"] == u["promptTokenCount"] + i + 1 + 2
    assert text == words(4)


def test_gemini_stream_json_array():
    st, h, chunks, complete = raw_exchange(
        GE, "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        ge_headers({"x-fake-chunks": "3"}), json.dumps(GE_BODY).encode())
    assert st == 200 and complete and h["content-type"].startswith("application/json")
    body = b"".join(c for _, c in chunks)
    assert body.startswith(b"[{") and body.endswith(b"\r\n]") and b"\r\n,{" in body, body
    arr = jl(body)
    assert len(arr) == 3 and arr[-1]["candidates"][0]["finishReason"] == "STOP"
    assert [c for _, c in chunks][-1] == b"]"
    # An in-stream error closes the array with the error object.
    _, _, raw = ge("streamGenerateContent", extra={"x-fake-stream-error-after": "1"})
    arr = jl(raw)
    assert len(arr) == 2 and arr[1]["error"]["status"] == "INTERNAL", arr
    _, _, raw = ge("streamGenerateContent", "?alt=sse",
                   {"x-fake-stream-error-after": "2", "x-fake-stream-error-type": "UNAVAILABLE"})
    evs = fake_clouds.sse_parse(raw)
    assert len(evs) == 3 and jl(evs[-1][1])["error"]["code"] == 503


def test_gemini_auth():
    # A key in the URL is refused, even the right one and with the header too.
    st, _, raw = ge(query="?key=" + fc().gemini_key)
    e = jl(raw)["error"]
    assert st == 400 and e["status"] == "INVALID_ARGUMENT" and "URL" in e["message"], raw
    last = fc().last()
    assert fc().gemini_key not in json.dumps(last) and last["auth"] == "key_in_url"
    st, _, raw = ge(headers={"content-type": "application/json"})
    assert st == 403 and jl(raw)["error"]["status"] == "PERMISSION_DENIED"
    assert jl(raw)["error"]["code"] == 403
    # Bearer is not how AI Studio takes the key.
    st, _, raw = ge(headers={"Authorization": "Bearer " + fc().gemini_key})
    assert st == 403
    st, _, raw = ge(headers={"x-goog-api-key": "AIzaWRONG"})
    e = jl(raw)["error"]
    assert st == 400 and e["status"] == "INVALID_ARGUMENT" and e["code"] == 400
    info = [d for d in e["details"] if d["@type"] == fake_clouds.ERRINFO]
    assert info and info[0]["reason"] == "API_KEY_INVALID", e


def test_gemini_openai_compat():
    body = {"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hi"}]}
    st, _, raw = call(GE, "POST", "/v1beta/openai/chat/completions", body,
                      {"Authorization": "Bearer " + fc().gemini_key})
    assert st == 200 and jl(raw)["choices"][0]["message"]["content"] == words(5), raw
    st, _, raw = call(GE, "POST", "/v1beta/openai/chat/completions", body,
                      {"Authorization": "Bearer wrong"})
    assert st == 400 and jl(raw)[0]["error"]["status"] == "INVALID_ARGUMENT", raw
    st, _, raw = call(GE, "POST", "/v1beta/openai/chat/completions",
                      dict(body, stream=True, stream_options={"include_usage": True}),
                      {"Authorization": "Bearer " + fc().gemini_key})
    evs = fake_clouds.sse_parse(raw)
    assert evs[-1] == (None, "[DONE]") and jl(evs[-2][1])["usage"]["completion_tokens"] == 5


# =============================================================================================
# Google token endpoint and Vertex AI
# =============================================================================================

def test_service_account_file():
    f = fc().service_account_file
    assert os.stat(f).st_mode & 0o777 == 0o600
    assert os.stat(fc().credentials_file).st_mode & 0o777 == 0o600
    with open(f) as fh:
        sa = json.load(fh)
    for k in ("type", "project_id", "private_key_id", "private_key", "client_email",
              "client_id", "token_uri"):
        assert sa.get(k), k
    assert sa["type"] == "service_account" and sa["token_uri"] == fake_clouds.GOOGLE_TOKEN_URI
    assert sa["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    with open(fc().credentials_file) as fh:
        assert "PRIVATE KEY" not in fh.read()     # the server gets the public key only


def test_token_endpoint_jwt_checks():
    fc().reset()
    f = fc()
    st, tok = f.token_request()
    assert st == 200 and tok["token_type"] == "Bearer" and tok["expires_in"] == 3600, tok
    assert tok["access_token"].startswith("ya29.")
    rec = f.last()
    assert rec["vendor"] == "oauth" and rec["auth"] == "ok"
    assert rec["jwt"]["claims"]["iss"] == f.sa_email and "<redacted>" in rec["body"]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    now = time.time()
    bad = [
        (f.jwt(key_pem=other), "invalid_grant", "Signature"),
        (f.jwt(header={"kid": "0" * 40}), "invalid_grant", "Signature"),
        (f.jwt(header={"alg": "HS256"}), "invalid_grant", "Signature"),
        (f.jwt({"aud": "https://www.googleapis.com/oauth2/v4/token"}), "invalid_grant",
         "audience"),
        (f.jwt(now=now - 7200), "invalid_grant", "iat"),                   # expired
        (f.jwt({"exp": int(now) + 7200}), "invalid_grant", "iat"),         # too long
        (f.jwt(now=now + 900), "invalid_grant", "iat"),                    # from the future
        (f.jwt({"iss": "someone@else.iam.gserviceaccount.com"}), "invalid_grant", "account"),
        (f.jwt(drop=("scope",)), "invalid_scope", "scope"),
        (f.jwt({"scope": "https://www.googleapis.com/auth/userinfo.email"}), "invalid_scope",
         "scope"),
        ("not.a.jwt", "invalid_grant", "JWT"),
    ]
    for assertion, err, words_ in bad:
        st, body = f.token_request(assertion)
        assert st == 400 and body["error"] == err and words_ in body["error_description"], \
            (assertion[:40], st, body)
    # A tampered payload with the original signature.
    h, p, s = f.jwt().split(".")
    claims = json.loads(fake_clouds.b64url_decode(p))
    claims["scope"] += " https://www.googleapis.com/auth/devstorage.full_control"
    st, body = f.token_request(".".join([h, fake_clouds.b64url(json.dumps(claims)), s]))
    assert st == 400 and body["error"] == "invalid_grant"
    st, body = f.token_request(grant_type="client_credentials")
    assert st == 400 and body["error"] == "unsupported_grant_type"
    st, _, raw = call(OAUTH, "POST", "/token", json.dumps({"assertion": f.jwt()}),
                      {"Content-Type": "application/json"})
    assert st == 400
    # Several scopes, one of them cloud-platform: fine.
    st, _ = f.token_request(f.jwt({"scope": "https://www.googleapis.com/auth/userinfo.email "
                                   + fake_clouds.CLOUD_PLATFORM_SCOPE}))
    assert st == 200
    s = f.stats()
    assert s["token_requests"] == 2 + len(bad) + 3 and s["tokens_issued"] == 2
    assert s["token_failures"] == len(bad) + 3 and s["by_endpoint"]["oauth/token"] == \
        s["token_requests"]


def test_vertex_generate_and_stream():
    tok = fc().access_token()
    auth = {"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
    st, h, raw = call(VX, "POST", vx_path(), GE_BODY, auth)
    assert st == 200, raw
    j = jl(raw)
    assert j["candidates"][0]["content"]["parts"][0]["text"] == words(5)
    assert j["usageMetadata"]["candidatesTokenCount"] == 5
    st, h, chunks, complete = raw_exchange(VX, "POST", vx_path("streamGenerateContent") +
                                           "?alt=sse", dict(auth, **{"x-fake-chunks": "2"}),
                                           json.dumps(GE_BODY).encode())
    assert st == 200 and complete and len(chunks) == 2
    assert all(c.endswith(b"\r\n\r\n") for _, c in chunks)
    last = jl(chunks[-1][1][6:])
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["candidatesTokenCount"] == 2
    # The global endpoint and another region.
    st, _, _ = call("aiplatform.googleapis.com", "POST", vx_path(region="global"), GE_BODY,
                    auth)
    assert st == 200
    st, _, _ = call("europe-west4-aiplatform.googleapis.com", "POST",
                    vx_path(region="europe-west4"), GE_BODY, auth)
    assert st == 200


def test_vertex_auth_project_region():
    tok = fc().access_token()
    auth = {"Authorization": "Bearer " + tok}
    st, _, raw = call(VX, "POST", vx_path(), GE_BODY, {})
    assert st == 401 and jl(raw)["error"]["status"] == "UNAUTHENTICATED"
    st, _, raw = call(VX, "POST", vx_path(), GE_BODY, {"Authorization": "Bearer ya29.unknown"})
    e = jl(raw)["error"]
    assert st == 401 and e["status"] == "UNAUTHENTICATED" and e["code"] == 401
    assert e["message"].startswith("Request had invalid authentication credentials")
    assert e["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED", e
    # An API key is not a Vertex credential.
    st, _, _ = call(VX, "POST", vx_path(), GE_BODY, {"x-goog-api-key": fc().gemini_key})
    assert st == 401
    st, _, raw = call(VX, "POST", vx_path(project="someone-else"), GE_BODY, auth)
    assert st == 403 and jl(raw)["error"]["status"] == "PERMISSION_DENIED"
    st, _, raw = call(VX, "POST", vx_path(region="europe-west4"), GE_BODY, auth)
    assert st == 400 and jl(raw)["error"]["status"] == "INVALID_ARGUMENT"
    # A token past its expiry (token_ttl), and every token expired from the control port.
    fc().config(token_ttl=1)
    st, short = fc().token_request()
    fc().config()
    assert st == 200 and short["expires_in"] == 1
    short_auth = {"Authorization": "Bearer " + short["access_token"]}
    assert call(VX, "POST", vx_path(), GE_BODY, short_auth)[0] == 200
    time.sleep(1.2)
    st, _, raw = call(VX, "POST", vx_path(), GE_BODY, short_auth)
    assert st == 401 and jl(raw)["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
    assert fc().last()["auth"] == "expired"
    assert call(VX, "POST", vx_path(), GE_BODY, auth)[0] == 200
    assert fc().expire_tokens() >= 1
    st, _, raw = call(VX, "POST", vx_path(), GE_BODY, auth)
    assert st == 401 and jl(raw)["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
    # token_status: the token endpoint itself fails.
    st, body = fc().token_request(headers={"x-fake-token-status": "500"})
    assert st == 500 and body["error"] == "internal_failure"


# =============================================================================================
# Bedrock
# =============================================================================================

def test_bedrock_invoke_and_converse():
    st, h, raw = br("invoke")
    assert st == 200, raw
    m = jl(raw)
    assert m["type"] == "message" and m["content"][0]["text"] == words(5)
    assert m["model"] == "claude-3-5-haiku-20241022"
    assert h["x-amzn-bedrock-input-token-count"] == str(m["usage"]["input_tokens"])
    assert h["x-amzn-bedrock-output-token-count"] == "5"
    assert int(h["x-amzn-bedrock-invocation-latency"]) >= 1 and h["x-amzn-requestid"]
    rec = fc().last()
    assert rec["model"] == "anthropic.claude-3-5-haiku-20241022-v1:0"
    assert "%253A" in rec["sigv4"]["canonical_request"]     # double-encoded
    st, h, raw = br("converse", extra={"x-fake-chunks": "3", "x-fake-prompt-tokens": "11"})
    assert st == 200, raw
    j = jl(raw)
    assert j["output"]["message"] == {"role": "assistant", "content": [{"text": words(3)}]}
    assert j["stopReason"] == "end_turn"
    assert j["usage"] == {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14}
    assert j["metrics"]["latencyMs"] >= 1
    # invoke validation for Anthropic bodies
    for bad, key in ((br_body(model="claude"), "extraneous key [model] is not permitted"),
                     (br_body(stream=True), "extraneous key [stream] is not permitted"),
                     ({"max_tokens": 5, "messages": []},
                      "required key [anthropic_version] not found"),
                     (br_body(anthropic_version="2023-06-01"), "not a valid enum value")):
        st, h, raw = br("invoke", bad)
        assert st == 400 and h["x-amzn-errortype"] == "ValidationException", (st, h)
        assert key in jl(raw)["message"], raw
    st, h, raw = br("converse", {"messages": []})
    assert st == 400 and h["x-amzn-errortype"] == "ValidationException"
    # Other regions.
    for region in ("us-west-2", "eu-central-1"):
        assert br("converse", region=region)[0] == 200
    # Unknown operation, after the signature check.
    st, h, _ = br("nothing")
    assert st == 404


def test_bedrock_event_streams():
    st, h, chunks, complete = raw_exchange(
        BR, "POST", "/model/%s/converse-stream" % HAIKU,
        fc().bedrock_headers("POST", "/model/%s/converse-stream" % HAIKU,
                             json.dumps(CONVERSE_BODY).encode(),
                             headers={"Content-Type": "application/json"}),
        json.dumps(CONVERSE_BODY).encode())
    assert st == 200 and complete, st
    assert h["content-type"] == "application/vnd.amazon.eventstream"
    msgs = []
    for _, c in chunks:        # each HTTP chunk is exactly one whole frame
        m = fake_clouds.es_parse(c)
        assert len(m) == 1
        msgs += m
    for m in msgs:
        assert m["headers"][":message-type"] == "event"
        assert m["headers"][":content-type"] == "application/json"
    names = [m["headers"][":event-type"] for m in msgs]
    assert names == ["messageStart"] + ["contentBlockDelta"] * 5 + [
        "contentBlockStop", "messageStop", "metadata"], names
    assert msgs[0]["json"]["role"] == "assistant"
    assert "".join(m["json"]["delta"]["text"] for m in msgs[1:6]) == words(5)
    assert all(m["json"]["contentBlockIndex"] == 0 for m in msgs[1:7])
    assert msgs[7]["json"]["stopReason"] == "end_turn"
    u = msgs[8]["json"]["usage"]
    assert u["outputTokens"] == 5 and u["totalTokens"] == u["inputTokens"] + 5
    assert msgs[8]["json"]["metrics"]["latencyMs"] >= 1
    # Frame layout by hand: lengths and both CRCs.
    f = chunks[0][1]
    total, hlen = int.from_bytes(f[0:4], "big"), int.from_bytes(f[4:8], "big")
    assert total == len(f) and int.from_bytes(f[8:12], "big") == zlib.crc32(f[:8])
    assert int.from_bytes(f[-4:], "big") == zlib.crc32(f[:-4])
    assert f[12] == len(":event-type") and f[13:24] == b":event-type" and f[24] == 7
    # invoke-with-response-stream: Anthropic events, base64 in "bytes", metrics at the end.
    st, h, raw = br("invoke-with-response-stream", extra={"x-fake-chunks": "3",
                                                          "x-fake-prompt-tokens": "9"})
    assert st == 200 and h["content-type"] == "application/vnd.amazon.eventstream"
    msgs = fake_clouds.es_parse(raw)
    assert all(m["headers"][":event-type"] == "chunk" for m in msgs)
    assert all(set(m["json"]) == {"bytes", "p"} for m in msgs)
    evs = [jl(base64.b64decode(m["json"]["bytes"])) for m in msgs]
    assert [e["type"] for e in evs] == ["message_start", "content_block_start"] + \
        ["content_block_delta"] * 3 + ["content_block_stop", "message_delta", "message_stop"]
    assert evs == fake_clouds.invoke_stream_events(raw)
    assert evs[0]["message"]["usage"]["input_tokens"] == 9
    assert evs[0]["message"]["usage"]["output_tokens"] == 1
    met = evs[-1]["amazon-bedrock-invocationMetrics"]
    assert met["inputTokenCount"] == 9 and met["outputTokenCount"] == 3
    assert met["invocationLatency"] >= 1 and met["firstByteLatency"] >= 1
    assert evs[-2]["usage"]["output_tokens"] == 3
    # padding off
    _, _, raw = br("converse-stream", extra={"x-fake-padding": "0"})
    assert all("p" not in m["json"] for m in fake_clouds.es_parse(raw))


def test_bedrock_stream_exceptions_and_drop():
    st, _, raw = br("converse-stream", extra={"x-fake-stream-error-after": "2"})
    msgs = fake_clouds.es_parse(raw)
    assert st == 200 and [m["headers"].get(":event-type") for m in msgs[:3]] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta"]
    ex = msgs[-1]["headers"]
    assert len(msgs) == 4 and ex[":message-type"] == "exception"
    assert ex[":exception-type"] == "throttlingException" and "message" in msgs[-1]["json"]
    _, _, raw = br("invoke-with-response-stream",
                   extra={"x-fake-stream-error-after": "1",
                          "x-fake-stream-error-type": "internalServerException"})
    evs = fake_clouds.invoke_stream_events(raw)
    assert evs[-1]["exception"] == "internalServerException" and len(evs) == 4, evs
    # drop_after: cut mid-stream; the frames that came are whole and valid.
    path = "/model/%s/converse-stream" % HAIKU
    body = json.dumps(CONVERSE_BODY).encode()
    hs = fc().bedrock_headers("POST", path, body, headers={"Content-Type": "application/json"})
    hs["x-fake-drop-after"] = "3"
    st, _, chunks, complete = raw_exchange(BR, "POST", path, hs, body)
    assert st == 200 and not complete
    msgs = fake_clouds.es_parse(b"".join(c for _, c in chunks))
    assert [m["headers"][":event-type"] for m in msgs] == ["messageStart"] + \
        ["contentBlockDelta"] * 3


def test_bedrock_sigv4_failures():
    fc().reset()
    st, h, raw = br("converse", sign_kw={"secret": "wrong-secret"})
    assert st == 403 and h["x-amzn-errortype"] == "InvalidSignatureException", (st, h)
    assert "signature we calculated does not match" in jl(raw)["message"]
    assert fc().bedrock_secret_access_key not in raw.decode()
    st, h, _ = br("converse", sign_kw={"access_key": "AKIAUNKNOWN000000000"})
    assert st == 403 and h["x-amzn-errortype"] == "UnrecognizedClientException"
    st, h, raw = call(BR, "POST", "/model/%s/converse" % HAIKU, CONVERSE_BODY, {})
    assert st == 403 and h["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    assert jl(raw) == {"message": "Missing Authentication Token"}
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 600))
    st, h, raw = br("converse", sign_kw={"amz_date": old})
    assert st == 403 and h["x-amzn-errortype"] == "InvalidSignatureException"
    assert "Signature expired" in jl(raw)["message"]
    # Signed for another region (the scope says us-west-2, the host us-east-1).
    path = "/model/%s/converse" % HAIKU
    body = json.dumps(CONVERSE_BODY).encode()
    s = fake_clouds.sigv4_sign("POST", path, [("Host", BR)], body,
                               access_key=fc().bedrock_access_key_id,
                               secret=fc().bedrock_secret_access_key, region="us-west-2")
    st, h, raw = call(BR, "POST", path, body, dict(s["headers"]))
    assert st == 403 and "region" in jl(raw)["message"]
    # Signed for another service.
    s = fake_clouds.sigv4_sign("POST", path, [("Host", BR)], body,
                               access_key=fc().bedrock_access_key_id,
                               secret=fc().bedrock_secret_access_key, region="us-east-1",
                               service="bedrock-runtime")
    assert call(BR, "POST", path, body, dict(s["headers"]))[0] == 403
    # Host not signed.
    st, h, raw = br("converse", sign_kw={"signed_headers": ["content-type"]})
    assert st == 403 and "Host" in jl(raw)["message"]
    # Single-encoded canonical URI (the classic bug): the signature does not match.
    s = fake_clouds.sigv4_sign("POST", "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse",
                               [("Host", BR)], body, access_key=fc().bedrock_access_key_id,
                               secret=fc().bedrock_secret_access_key, region="us-east-1")
    st, h, _ = call(BR, "POST", path, body, dict(s["headers"]))
    assert st == 403 and h["x-amzn-errortype"] == "InvalidSignatureException"
    # x-amz-content-sha256, signed: right passes, wrong fails.
    assert br("converse", sign_kw={"sign_body": True})[0] == 200
    st, h, raw = br("converse", extra={"x-amz-content-sha256": hashlib.sha256(b"x").hexdigest()})
    assert st == 403 and "x-amz-content-sha256" in jl(raw)["message"]
    # A body changed after signing.
    hs = fc().bedrock_headers("POST", path, body, headers={"Content-Type": "application/json"})
    st, h, _ = call(BR, "POST", path, body.replace(b"Hello", b"Jello"), hs)
    assert st == 403 and h["x-amzn-errortype"] == "InvalidSignatureException"
    # A session token the credentials do not have.
    st, h, _ = br("converse", sign_kw={"session_token": "FwoGZXIvYXdzEXAMPLE"})
    assert st == 403 and h["x-amzn-errortype"] == "UnrecognizedClientException"
    s = fc().stats()
    assert s["by_vendor_status"]["bedrock"] == {"403": 11, "200": 1}, s
    assert s["auth_failures"] == 11 and s["requests"] == 12, s


def test_bedrock_session_credentials():
    token = "FwoGZXIvYXdzEXAMPLEsessiontoken//0123456789abcdef=="
    f = fakeclouds.FakeClouds(bedrock_access_key_id="ASIAFAKE0123456789AB",
                              bedrock_session_token=token).start()
    try:
        st, _, raw = br("converse", fake=f)
        assert st == 200, raw
        rec = f.last()
        assert "x-amz-security-token" in rec["sigv4"]["signed_headers"]
        assert token not in json.dumps(rec)
        st, h, _ = br("converse", fake=f, sign_kw={"session_token": ""})
        assert st == 403 and h["x-amzn-errortype"] == "UnrecognizedClientException"
        st, h, _ = br("converse", fake=f, sign_kw={"session_token": token + "x"})
        assert st == 403 and h["x-amzn-errortype"] == "UnrecognizedClientException"
        # Sent but not signed: refused.
        st, h, raw = br("converse", fake=f, sign_kw={"omit_session_token": True})
        assert st == 403 and "x-amz-security-token" in jl(raw)["message"], raw
        with open(f.log) as fh:
            assert token not in fh.read()
    finally:
        assert f.stop() == 0


def test_sigv4_signer_reproduces_aws_suite():
    """The Python signer reproduces every header-* file of AWS's public signing suite."""
    cases = sorted(d for d in os.listdir(VECTORS) if os.path.isdir(os.path.join(VECTORS, d)))
    assert len(cases) >= 30, cases
    for case in cases:
        d = os.path.join(VECTORS, case)
        with open(os.path.join(d, "context.json")) as f:
            ctx = json.load(f)
        with open(os.path.join(d, "request.txt"), "rb") as f:
            req = f.read().decode("utf-8")
        head, _, body = req.partition("\n\n")
        lines = head.split("\n")
        first = lines[0]
        method, rest = first.split(" ", 1)
        target = rest.rsplit(" ", 1)[0]
        headers = []
        for ln in lines[1:]:
            if not ln:
                continue
            if ln[:1] in (" ", "\t") and headers:      # a folded continuation line
                headers[-1] = (headers[-1][0], headers[-1][1] + " " + ln.strip())
                continue
            k, _, v = ln.partition(":")
            headers.append((k, v))
        cred = ctx["credentials"]
        ts = ctx["timestamp"].replace("-", "").replace(":", "")
        s = fake_clouds.sigv4_sign(
            method, target, headers, body.encode(), access_key=cred["access_key_id"],
            secret=cred["secret_access_key"], region=ctx["region"], service=ctx["service"],
            amz_date=ts, session_token=cred.get("token"), sign_body=ctx.get("sign_body", False),
            omit_session_token=ctx.get("omit_session_token", False),
            normalize=ctx.get("normalize", True))

        def want(name):
            with open(os.path.join(d, name), "rb") as f:
                return f.read().decode("utf-8")
        assert s["canonical_request"] == want("header-canonical-request.txt"), \
            (case, s["canonical_request"])
        assert s["string_to_sign"] == want("header-string-to-sign.txt"), case
        assert s["signature"] == want("header-signature.txt").strip(), case
        signed = want("header-signed-request.txt")
        assert "Authorization:" + s["authorization"] in signed, case


def test_event_stream_codec():
    f = fake_clouds.es_frame([(":event-type", "chunk"), (":message-type", "event")],
                             {"bytes": "eyJhIjoxfQ=="})
    m = fake_clouds.es_parse(f)
    assert m == [{"headers": {":event-type": "chunk", ":message-type": "event"},
                  "payload": b'{"bytes":"eyJhIjoxfQ=="}', "json": {"bytes": "eyJhIjoxfQ=="}}]
    two = f + fake_clouds.es_frame({":event-type": "x"}, b"")
    assert len(fake_clouds.es_parse(two)) == 2
    msgs, rest = fake_clouds.es_split(two[:-3])
    assert len(msgs) == 1 and rest == two[len(f):-3]
    for i in (5, 10, 20, len(f) - 2):         # any flipped byte: a CRC or length error
        bad = bytearray(f)
        bad[i] ^= 0x01
        try:
            fake_clouds.es_parse(bytes(bad))
            raise AssertionError("corruption at %d not seen" % i)
        except ValueError:
            pass
    try:
        fake_clouds.es_parse(f[:-1])
        raise AssertionError("truncated frame accepted")
    except ValueError:
        pass


# =============================================================================================
# Switches, counters, records
# =============================================================================================

def test_status_switch_and_retry_after():
    fc().reset()
    fc().config(status=429, count=2)
    assert an()[0] == 429
    st, h, raw = an()
    assert st == 429 and h["retry-after"] == "1"
    assert jl(raw)["error"]["type"] == "rate_limit_error" and h["request-id"]
    assert an()[0] == 200
    s = fc().stats()
    assert s["by_endpoint_status"]["anthropic/messages"] == {"429": 2, "200": 1}, s
    assert s["by_endpoint"]["anthropic/messages"] == 3 and s["requests"] == 3
    st, h, raw = an(None, {"x-fake-status": "529"})
    assert st == 529 and jl(raw)["error"]["type"] == "overloaded_error"
    st, h, _ = an(None, {"x-fake-status": "429", "x-fake-retry-after": "7",
                         "x-fake-retry-after-ms": "6500"})
    assert h["retry-after"] == "7" and h["retry-after-ms"] == "6500"
    st, h, _ = an(None, {"x-fake-status": "429", "x-fake-retry-after": "-1"})
    assert st == 429 and "retry-after" not in h
    st, h, raw = ge(extra={"x-fake-status": "429", "x-fake-retry-after": "3"})
    e = jl(raw)["error"]
    assert st == 429 and e["status"] == "RESOURCE_EXHAUSTED" and h["retry-after"] == "3"
    assert e["details"][0]["retryDelay"] == "3s"
    st, h, raw = ge(extra={"x-fake-status": "503"})
    assert st == 503 and jl(raw)["error"]["status"] == "UNAVAILABLE"
    st, h, raw = br("converse", extra={"x-fake-status": "429"})
    assert st == 429 and h["x-amzn-errortype"] == "ThrottlingException" and "message" in jl(raw)
    # Auth comes first: a wrong key still gets 401 with a status switch.
    assert an(None, {"x-fake-status": "500", "x-api-key": "bad"})[0] == 401
    # The vendor filter: switches for Bedrock leave Anthropic alone and are not used up.
    fc().config(status=503, count=1, vendor="bedrock")
    assert an()[0] == 200
    st, h, _ = br("converse")
    assert st == 503 and h["x-amzn-errortype"] == "ServiceUnavailableException"
    assert br("converse")[0] == 200
    # Token requests neither see nor use up the vendor switches.
    fc().config(status=500, count=1)
    assert fc().token_request()[0] == 200
    assert fc().control("GET", "/_fake/config")[1]["count"] == 1
    assert an()[0] == 500
    assert fc().control("GET", "/_fake/config")[1]["switches"] == {}


def test_empty_200_and_drop_non_streamed():
    st, h, raw = an(None, {"x-fake-empty-200": "1"})
    assert st == 200 and raw == b"" and h["content-length"] == "0"
    assert fc().last()["outcome"] == "empty"
    fc().config(empty_200=True, count=1)
    st, _, raw = ge()
    assert st == 200 and raw == b""
    st, _, raw = br("converse", extra={"x-fake-empty": "1"})
    assert st == 200 and raw == b""
    c = fc().https(AN)
    c.request("POST", "/v1/messages", json.dumps(an_body()), an_headers({"x-fake-drop-after":
                                                                         "10"}))
    r = c.getresponse()
    try:
        r.read()
        raise AssertionError("a cut body read whole")
    except http.client.IncompleteRead as e:
        assert len(e.partial) == 10
    c.close()


def test_delay_paces_events():
    st, _, chunks, complete = raw_exchange(
        AN, "POST", "/v1/messages", an_headers({"x-fake-chunks": "4", "x-fake-delay-ms": "150"}),
        json.dumps(an_body(stream=True)).encode())
    assert st == 200 and complete
    deltas = [t for t, c in chunks if b"content_block_delta" in c]
    assert len(deltas) == 4
    gaps = [b - a for a, b in zip(deltas, deltas[1:])]
    assert all(g >= 0.1 for g in gaps), gaps          # each event arrives on its own
    assert chunks[0][0] < deltas[0] - 0.1             # message_start before the first delay


def test_concurrent_streams_and_cancel():
    import threading
    fc().reset()
    results = []

    def one():
        st, _, raw = an(an_body(stream=True), {"x-fake-chunks": "5", "x-fake-delay-ms": "100"})
        results.append((st, len(fake_clouds.sse_parse(raw))))

    t0 = time.monotonic()
    ts = [threading.Thread(target=one) for _ in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == [(200, 11)] * 12, results
    assert time.monotonic() - t0 < 3.0       # side by side, not one after the other
    # A client that leaves mid-stream is seen and counted.
    s = socket.create_connection(("127.0.0.1", fc().port), timeout=10)
    s = fc().ssl_context().wrap_socket(s, server_hostname=AN)
    body = json.dumps(an_body(stream=True)).encode()
    hs = an_headers({"x-fake-chunks": "200", "x-fake-delay-ms": "10"})
    s.sendall(("POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n\r\n"
               % (AN, len(body), "\r\n".join("%s: %s" % kv for kv in hs.items()))).encode()
              + body)
    assert s.recv(100)
    s.close()
    harness.wait_until(lambda: fc().stats()["streams_cancelled"] == 1, what="cancel counted")
    assert fc().last()["outcome"] == "cancelled"
    assert fc().stats()["streams_completed"] == 12


def test_bad_switches():
    st, _, raw = an(None, {"x-fake-chunks": "many"})
    assert st == 400 and "x-fake-chunks" in jl(raw)["error"]["message"]
    st, _, raw = ge(extra={"x-fake-nonsense": "1"})
    assert st == 400 and jl(raw)["error"]["status"] == "INVALID_ARGUMENT"
    st, body = fc().control("POST", "/_fake/config", {"nonsense": 1})
    assert st == 400
    st, body = fc().control("POST", "/_fake/config", {"chunks": "x"})
    assert st == 400


def test_records_and_redaction():
    fc().reset()
    an(an_body(), {"x-fake-chunks": "2"})
    rec = fc().last()
    assert rec["vendor"] == "anthropic" and rec["endpoint"] == "messages"
    assert rec["method"] == "POST" and rec["path"] == "/v1/messages" and rec["status"] == 200
    assert rec["auth"] == "ok" and rec["header_map"]["x-api-key"] == "<redacted>"
    assert rec["switches"] == {"chunks": 2}
    assert jl(rec["body"]) == an_body() and rec["body_len"] == len(json.dumps(an_body()))
    tok = fc().access_token()
    call(VX, "POST", vx_path(), GE_BODY, {"Authorization": "Bearer " + tok})
    rec = fc().last()
    assert rec["header_map"]["authorization"] == "Bearer <redacted>" and rec["auth"] == "ok"
    br("converse")
    rec = fc().last()
    assert rec["header_map"]["authorization"].endswith("Signature=<redacted>")
    reqs = fc().requests()
    assert [r["vendor"] for r in reqs] == ["anthropic", "oauth", "vertex", "bedrock"]
    assert [r["seq"] for r in reqs] == sorted(r["seq"] for r in reqs)
    assert fc().last("oauth")["endpoint"] == "token"
    assert len(fc().requests("vertex")) == 1
    text = json.dumps(reqs)
    for secret in (fc().anthropic_key, fc().gemini_key, fc().bedrock_secret_access_key, tok):
        assert secret not in text


def test_keepalive_one_connection():
    c = fc().https(AN)
    for stream in (False, True, False):
        c.request("POST", "/v1/messages", json.dumps(an_body(stream=stream)), an_headers())
        r = c.getresponse()
        assert r.status == 200 and r.read()
    c.close()
    s = fc().stats()
    assert s["connections"] < s["requests"]


def test_log_lines_and_no_secrets():
    events = harness.log_events(fc().log)
    reqs = [e for e in events if e["event"] == "request"]
    assert len(reqs) > 50
    for e in reqs:
        for k in ("vendor", "endpoint", "method", "path", "status", "outcome", "ms"):
            assert k in e, e
    with open(fc().log) as f:
        text = f.read()
    sa = fc().service_account
    for secret in (fc().anthropic_key, fc().gemini_key, fc().bedrock_secret_access_key,
                   sa["private_key"].splitlines()[5], "ya29."):
        assert secret not in text, secret


def test_sigterm_exits_cleanly():
    assert fc().stop() == 0


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
