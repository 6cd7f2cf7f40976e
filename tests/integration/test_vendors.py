"""Every vendor natively, through the whole chain: users speak Anthropic's, Gemini's and
Bedrock's own formats to hub-gateway; the agent calls fake-clouds (Anthropic, Gemini AI Studio,
Vertex AI with its token endpoint, Bedrock with SigV4) under the official host names; answers
come back byte for byte and every request is billed from the vendor's own usage figures, which
ledger-diff then finds equal on both sides. Also the agent's retry layer (429s, 5xx, a 200 with
an empty body; a drop mid-stream is reported, not retried), a Vertex token refreshed before it
expires and after the vendor refuses it, and Bedrock's body limit. Runs on SQLite, or on
MariaDB with argument `mysql` (under tests/with-servers)."""

import http.client
import json
import os
import sys
import time
import urllib.parse

from chain import (AZURE_V1, BEDROCK, BEDROCK_SESSION_TOKEN, BEDROCK_TINY, CLAUDE, GEMINI, VERTEX,
                   Chain, cost_micros)
from harness import find_events, run_tests, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_vendor"))
import fake_clouds  # noqa: E402

STORE = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
ch = Chain(STORE, clouds=True, agent_sets=("agent.vendor_retry_max=20s",))
fc = ch.fc
KEY = ch.user("vera", "100")
ch.wait_routable(KEY)
MESSAGES = [{"role": "user", "content": "hello there"}]
BEDROCK_PATH = "/model/" + urllib.parse.quote(BEDROCK, safe="")  # %3A, as AWS's SDKs send it


def call(method, path, body=None, headers=None, key=KEY, auth="bearer", timeout=60):
    """One request to the gateway; (status, headers, raw body)."""
    h = {"Content-Type": "application/json"}
    if key and auth == "bearer":
        h["Authorization"] = "Bearer " + key
    elif key and auth == "x-api-key":
        h["x-api-key"] = key
    elif key and auth == "x-goog-api-key":
        h["x-goog-api-key"] = key
    h.update(headers or {})
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    c = http.client.HTTPConnection("127.0.0.1", ch.hub.gateway_port, timeout=timeout)
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def row_of(hdrs, timeout=20):
    req_id = hdrs["x-request-id"]
    wait_until(lambda: ch.row(req_id)[1], timeout=timeout, what="request %s settled" % req_id)
    return ch.row(req_id)[1]


def assert_billed(hdrs, want_in, want_out, cached=0):
    row = row_of(hdrs)
    assert (row["input"], row["output"], row["cached"]) == (want_in, want_out, cached), \
        (row, want_in, want_out, cached)
    assert not row["estimated"], row
    assert row["cost"] == "%d.%06d" % divmod(cost_micros(want_in, want_out, cached), 1000000), row
    return row


def anthropic_body(stream=False, model=CLAUDE, max_tokens=64):
    b = {"model": model, "max_tokens": max_tokens, "messages": MESSAGES}
    if stream:
        b["stream"] = True
    return b


def anthropic_stream_usage(raw):
    events = fake_clouds.sse_parse(raw)
    start = [json.loads(d) for e, d in events if e == "message_start"][0]["message"]["usage"]
    delta = [json.loads(d) for e, d in events if e == "message_delta"][-1]["usage"]
    inp = start["input_tokens"] + start.get("cache_creation_input_tokens", 0) + \
        start.get("cache_read_input_tokens", 0)
    return inp, delta["output_tokens"], [e for e, _ in events]


# ---- Anthropic ------------------------------------------------------------------------------

def test_anthropic_message_billed_from_its_usage():
    fc.reset()
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body(), auth="x-api-key",
                             headers={"anthropic-version": "2023-06-01"})
    assert status == 200, raw
    body = json.loads(raw)
    assert body["type"] == "message" and body["content"][0]["text"] == "tok0 tok1 tok2 tok3 tok4"
    u = body["usage"]
    last = fc.last("anthropic")
    assert last["auth"] == "ok", last  # the provider's key went as x-api-key
    assert_billed(hdrs, u["input_tokens"], u["output_tokens"])


def test_anthropic_stream_relayed_and_billed_with_bearer_key_and_default_version():
    fc.reset()
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body(stream=True))
    assert status == 200 and hdrs["content-type"].startswith("text/event-stream"), (status, raw)
    inp, out, names = anthropic_stream_usage(raw)
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    assert out == 5
    # no anthropic-version from the user: the agent sent the default one (the fake requires it)
    assert_billed(hdrs, inp, out)


def test_anthropic_cache_figures_count_as_input():
    fc.config(cached_tokens=7, cache_creation_tokens=3, count=1)
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body())
    assert status == 200, raw
    u = json.loads(raw)["usage"]
    assert u["cache_read_input_tokens"] == 7
    assert_billed(hdrs, u["input_tokens"] + 10, u["output_tokens"], cached=7)


def test_anthropic_count_tokens_is_not_billed():
    before = len(ch.all_rows())
    status, hdrs, raw = call("POST", "/v1/messages/count_tokens",
                             {"model": CLAUDE, "messages": MESSAGES})
    assert status == 200 and json.loads(raw)["input_tokens"] > 0, raw
    time.sleep(1)
    assert not [r for r in ch.all_rows() if r["req_id"] == hdrs["x-request-id"]]
    assert len(ch.all_rows()) == before


def test_anthropic_errors_in_its_shape():
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body(), key="sk-wrong",
                             auth="x-api-key")
    body = json.loads(raw)
    assert status == 401 and body["type"] == "error", raw
    assert body["error"]["type"] == "authentication_error", body
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body(model="claude-nope"))
    assert status == 404 and json.loads(raw)["error"]["type"] == "not_found_error", raw
    # the vendor's own error comes back as the vendor wrote it
    fc.config(status=400, count=1)
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body())
    assert status == 400 and json.loads(raw)["type"] == "error", raw


def test_anthropic_in_stream_error_is_relayed():
    fc.config(stream_error_after=2, count=1)
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body(stream=True))
    assert status == 200, raw
    names = [e for e, _ in fake_clouds.sse_parse(raw)]
    assert "error" in names and "message_stop" not in names, names
    row_of(hdrs)  # billed (by what was produced)


def test_anthropic_openai_compatible_endpoint():
    fc.reset()
    status, hdrs, raw = call("POST", "/v1/chat/completions",
                             {"model": CLAUDE, "messages": MESSAGES, "max_tokens": 16})
    assert status == 200, raw
    body = json.loads(raw)
    assert body["choices"][0]["message"]["content"], body
    assert fc.stats()["by_endpoint"].get("anthropic/chat_completions", 0) == 1, fc.stats()
    assert_billed(hdrs, body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])


def cancel_after(path, body, marker, count):
    """Starts a slow stream (200 pieces, 20 ms apart), reads until `marker` was seen `count`
    times, hangs up, and returns the request's ledger row once it settled."""
    fc.config(chunks=200, delay_ms=20, count=1)
    c = http.client.HTTPConnection("127.0.0.1", ch.hub.gateway_port, timeout=30)
    c.request("POST", path, body=json.dumps(body),
              headers={"Authorization": "Bearer " + KEY, "x-goog-api-key": KEY,
                       "Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    got = b""
    while got.count(marker) < count:
        piece = r.read1(4096)
        assert piece, got
        got += piece
    req_id = r.getheader("x-request-id")
    c.close()
    wait_until(lambda: ch.row(req_id)[1], timeout=30, what="cancelled stream settled")
    return ch.row(req_id)[1]


def test_cancelled_streams_are_billed_by_what_was_produced_in_every_format():
    cases = [
        ("/v1/messages", anthropic_body(stream=True, max_tokens=1000), b"content_block_delta"),
        (gemini_path(GEMINI, "streamGenerateContent") + "?alt=sse", GEMINI_BODY, b"data:"),
        (gemini_path(VERTEX, "streamGenerateContent") + "?alt=sse", GEMINI_BODY, b"data:"),
        (BEDROCK_PATH + "/converse-stream", CONVERSE_BODY, b"contentBlockDelta"),
        (BEDROCK_PATH + "/invoke-with-response-stream", INVOKE_BODY, b":event-type"),
    ]
    for path, body, marker in cases:
        row = cancel_after(path, body, marker, 6)
        assert row["input"] > 0 and 1 <= row["output"] < 200, (path, row)


# ---- Gemini (AI Studio) -----------------------------------------------------------------------

def gemini_path(model, method):
    return "/v1beta/models/%s:%s" % (model, method)


GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


def gemini_usage(u):
    return u["promptTokenCount"], u["candidatesTokenCount"] + u.get("thoughtsTokenCount", 0)


def test_gemini_generate_with_header_key():
    fc.reset()
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "generateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    assert status == 200, raw
    body = json.loads(raw)
    assert body["candidates"][0]["content"]["parts"][0]["text"], body
    last = fc.last("gemini")
    assert last["auth"] == "ok" and "key=" not in last.get("query", ""), last
    assert_billed(hdrs, *gemini_usage(body["usageMetadata"]))


def test_gemini_sse_stream_with_query_key_and_thoughts():
    path = gemini_path(GEMINI, "streamGenerateContent") + "?alt=sse&key=" + KEY
    fc.config(thoughts=4, count=1)
    status, hdrs, raw = call("POST", path, GEMINI_BODY, key=None)
    assert status == 200 and hdrs["content-type"].startswith("text/event-stream"), raw
    assert b"\r\n\r\n" in raw  # Google's CRLF events, relayed as they are
    chunks = [json.loads(d) for _, d in fake_clouds.sse_parse(raw)]
    assert len(chunks) >= 5
    assert_billed(hdrs, *gemini_usage(chunks[-1]["usageMetadata"]))
    assert KEY not in open(ch.hub.gateway_log).read()


def test_gemini_json_array_stream():
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "streamGenerateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    assert status == 200, raw
    arr = json.loads(raw)
    assert isinstance(arr, list) and len(arr) >= 5, raw
    assert_billed(hdrs, *gemini_usage(arr[-1]["usageMetadata"]))


def test_a_large_json_array_answer_is_read_on_both_sides():
    # Over 1 MiB of JSON array (6,000 pieces): the gateway gathers bodies as far as the agent
    # does (4 MiB), so both read the vendor's figures and nothing is estimated.
    fc.config(chunks=6000, count=1, vendor="gemini")
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "streamGenerateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    assert status == 200 and len(raw) > (1 << 20), (status, len(raw))
    arr = json.loads(raw)
    assert arr[-1]["usageMetadata"]["candidatesTokenCount"] == 6000
    assert_billed(hdrs, *gemini_usage(arr[-1]["usageMetadata"]))


def test_gemini_errors_in_googles_shape():
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "generateContent"), GEMINI_BODY,
                             key="sk-wrong", auth="x-goog-api-key")
    body = json.loads(raw)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT", raw
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "generateContent"), GEMINI_BODY,
                             key=None)
    assert status == 403 and json.loads(raw)["error"]["status"] == "PERMISSION_DENIED", raw
    status, hdrs, raw = call("POST", gemini_path("gemini-nope", "generateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    assert status == 404 and json.loads(raw)["error"]["status"] == "NOT_FOUND", raw


# ---- Vertex AI ------------------------------------------------------------------------------

def test_vertex_generate_and_stream_with_one_token():
    fc.reset(tokens=True)
    before = fc.stats()["token_requests"]
    for _ in range(3):
        status, hdrs, raw = call("POST", gemini_path(VERTEX, "generateContent"), GEMINI_BODY,
                                 auth="x-goog-api-key")
        assert status == 200, raw
        assert_billed(hdrs, *gemini_usage(json.loads(raw)["usageMetadata"]))
    status, hdrs, raw = call("POST", gemini_path(VERTEX, "streamGenerateContent") + "?alt=sse",
                             GEMINI_BODY, auth="x-goog-api-key")
    assert status == 200, raw
    chunks = [json.loads(d) for _, d in fake_clouds.sse_parse(raw)]
    assert_billed(hdrs, *gemini_usage(chunks[-1]["usageMetadata"]))
    # One token fetched (reset revoked any earlier one: one 401, answered by a refresh and a
    # second try), then cached between requests.
    st = fc.stats()
    assert st["token_requests"] - before == 1, st
    assert st["by_endpoint_status"]["vertex/generateContent"].get("200") == 3, st


def test_vertex_token_expiring_mid_run_is_refreshed_without_a_failed_request():
    # Tokens that live 8 s are renewed 2 s early (a quarter of their life), while requests go on.
    fc.config(token_ttl=8)
    fc.expire_tokens()  # the vendor forgets the current token: one 401, refreshed, retried
    before = fc.stats()["token_requests"]
    failures = []
    deadline = time.monotonic() + 14
    n = 0
    while time.monotonic() < deadline:
        status, hdrs, raw = call("POST", gemini_path(VERTEX, "generateContent"), GEMINI_BODY,
                                 auth="x-goog-api-key")
        n += 1
        if status != 200:
            failures.append((status, raw))
        time.sleep(0.25)
    fc.config()
    assert not failures, failures[:3]
    assert fc.stats()["token_requests"] - before >= 2, (fc.stats(), n)


# ---- Bedrock ----------------------------------------------------------------------------------

INVOKE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
               "messages": MESSAGES}
CONVERSE_BODY = {"messages": [{"role": "user", "content": [{"text": "hello there"}]}],
                 "inferenceConfig": {"maxTokens": 64}}


def test_bedrock_converse_and_invoke():
    fc.reset()
    status, hdrs, raw = call("POST", BEDROCK_PATH + "/converse", CONVERSE_BODY)
    assert status == 200, raw
    u = json.loads(raw)["usage"]
    assert_billed(hdrs, u["inputTokens"], u["outputTokens"])
    assert fc.last("bedrock")["auth"] == "ok"
    # the raw id (an unencoded ':') is accepted too
    status, hdrs, raw = call("POST", "/model/%s/invoke" % BEDROCK, INVOKE_BODY)
    assert status == 200, raw
    assert_billed(hdrs, int(hdrs["x-amzn-bedrock-input-token-count"]),
                  int(hdrs["x-amzn-bedrock-output-token-count"]))


def test_bedrock_event_streams_relayed_byte_for_byte():
    status, hdrs, raw = call("POST", BEDROCK_PATH + "/converse-stream", CONVERSE_BODY)
    assert status == 200 and hdrs["content-type"] == "application/vnd.amazon.eventstream", hdrs
    msgs = fake_clouds.es_parse(raw)  # every CRC checks: not a byte changed
    types = [m["headers"][":event-type"] for m in msgs]
    assert types[0] == "messageStart" and types[-1] == "metadata", types
    u = msgs[-1]["json"]["usage"]
    assert_billed(hdrs, u["inputTokens"], u["outputTokens"])
    status, hdrs, raw = call("POST", BEDROCK_PATH + "/invoke-with-response-stream", INVOKE_BODY)
    assert status == 200, raw
    events = fake_clouds.invoke_stream_events(raw)
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert_billed(hdrs, metrics["inputTokenCount"], metrics["outputTokenCount"])


def test_bedrock_renamed_model_and_body_limit():
    status, hdrs, raw = call("POST", "/model/%s/converse" % BEDROCK_TINY, CONVERSE_BODY)
    assert status == 200, raw  # the URL names the upstream id; the user named the public one
    big = dict(CONVERSE_BODY, system=[{"text": "x" * 4000}])
    status, hdrs, raw = call("POST", "/model/%s/converse" % BEDROCK_TINY, big)
    assert status == 413, (status, raw)
    assert hdrs.get("x-amzn-errortype") == "ValidationException", hdrs
    assert "limit" in json.loads(raw)["message"], raw


def test_large_bodies_flow_through_and_bedrock_buffers_within_its_credit():
    # 3 MiB: far over the gateway's first upload window (1 MiB), so the body only gets through
    # if the agent grants credit as it goes (Bedrock: as it buffers; others: as curl sends).
    filler = "x" * (3 * 1024 * 1024)
    fc.reset()
    status, hdrs, raw = call("POST", BEDROCK_PATH + "/converse",
                             dict(CONVERSE_BODY, system=[{"text": filler}]))
    assert status == 200, raw[:300]
    assert fc.last("bedrock")["auth"] == "ok"  # the signature covered all 3 MiB
    status, hdrs, raw = call("POST", "/v1/messages",
                             dict(anthropic_body(), system=filler))
    assert status == 200, raw[:300]
    # over agent.vendor_retry_body_bytes (1 MiB) the body is not kept: a 429 is not retried
    fc.reset()
    fc.config(status=429, retry_after=0, count=1, vendor="anthropic")
    status, hdrs, raw = call("POST", "/v1/messages", dict(anthropic_body(), system=filler))
    fc.config()
    assert status == 429 and json.loads(raw)["error"]["type"] == "rate_limit_error", raw[:300]
    assert endpoint_count("anthropic/messages") == 1, fc.stats()


def test_bedrock_errors_in_aws_shape():
    status, hdrs, raw = call("POST", BEDROCK_PATH + "/converse", CONVERSE_BODY, key="sk-wrong")
    assert status in (401, 403) and "message" in json.loads(raw), raw
    assert hdrs.get("x-amzn-errortype"), hdrs
    status, hdrs, raw = call("POST", BEDROCK_PATH + "/invoke", dict(INVOKE_BODY, stream=True))
    assert status == 400 and "extraneous key" in json.loads(raw)["message"], raw


# ---- Azure's v1 API ----------------------------------------------------------------------------

def test_azure_v1_api_for_chat():
    ch.fv.reset()
    status, hdrs, raw = call("POST", "/v1/chat/completions",
                             {"model": AZURE_V1, "messages": MESSAGES, "max_tokens": 16})
    assert status == 200, raw
    last = ch.fv.last()
    assert last["path"] == "/openai/v1/chat/completions" and "api-version" not in \
        last.get("query", ""), last
    assert json.loads(last["body"])["model"] == "prod-4o", last  # the deployment, in the body
    u = json.loads(raw)["usage"]
    assert_billed(hdrs, u["prompt_tokens"], u["completion_tokens"])


# ---- the retry layer --------------------------------------------------------------------------

def endpoint_count(name):
    return fc.stats()["by_endpoint"].get(name, 0)


def test_two_429s_then_success():
    # Gemini has one instance here: both waits are on it, each as long as Retry-After says.
    fc.reset()
    fc.config(status=429, retry_after=1, count=2, vendor="gemini")
    t0 = time.monotonic()
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "generateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    took = time.monotonic() - t0
    fc.config()
    assert status == 200, raw
    assert endpoint_count("gemini/generateContent") == 3, fc.stats()
    assert took >= 2.0, took  # Retry-After: 1 honoured twice
    assert_billed(hdrs, *gemini_usage(json.loads(raw)["usageMetadata"]))


def test_a_429_moves_to_another_instance_at_once():
    # Two Anthropic instances serve CLAUDE (another key of the same provider): a 429 with
    # Retry-After: 5 on one sends the next try to the other without waiting.
    fc.reset()
    fc.config(status=429, retry_after=5, count=1, vendor="anthropic")
    t0 = time.monotonic()
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body())
    took = time.monotonic() - t0
    fc.config()
    assert status == 200, raw
    assert endpoint_count("anthropic/messages") == 2 and took < 3, (fc.stats(), took)
    req_id = hdrs["x-request-id"]
    wait_until(lambda: any(e.get("req_id") == req_id for e in
                           find_events(ch.agent.log, "instance_switch")),
               timeout=5, what="the switch in the agent's log")
    u = json.loads(raw)["usage"]
    assert_billed(hdrs, u["input_tokens"], u["output_tokens"])


def test_5xx_once_then_success_and_529():
    fc.reset()
    fc.config(status=503, count=1, vendor="gemini")
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "generateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    fc.config()
    assert status == 200 and endpoint_count("gemini/generateContent") == 2, (raw, fc.stats())
    fc.reset()
    fc.config(status=529, count=1, vendor="anthropic")
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body(stream=True))
    fc.config()
    assert status == 200 and endpoint_count("anthropic/messages") == 2, (raw, fc.stats())


def test_200_with_an_empty_body_is_retried_then_an_error():
    fc.reset()
    fc.config(empty_200=1, count=1, vendor="gemini")
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "generateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    fc.config()
    assert status == 200 and json.loads(raw)["candidates"], raw
    assert endpoint_count("gemini/generateContent") == 2, fc.stats()
    # always empty: every try fails and the user gets a clear error, not an empty success
    fc.config(empty_200=1, vendor="gemini")
    status, hdrs, raw = call("POST", gemini_path(GEMINI, "generateContent"), GEMINI_BODY,
                             auth="x-goog-api-key")
    fc.config()
    assert status == 502 and b"empty body" in raw, (status, raw)
    assert json.loads(raw)["error"]["status"] == "UNAVAILABLE", raw


def test_a_drop_mid_stream_is_reported_not_retried():
    fc.reset()
    fc.config(chunks=10, drop_after=3, count=1)
    status, hdrs, raw = call("POST", "/v1/messages", anthropic_body(stream=True))
    assert status == 200, raw
    names = [e for e, _ in fake_clouds.sse_parse(raw)]
    assert "message_stop" not in names and names[-1] == "error", names
    assert endpoint_count("anthropic/messages") == 1, fc.stats()
    row = row_of(hdrs)
    assert row["estimated"] or row["output"] >= 1, row


def test_a_stream_without_its_final_event_is_an_error():
    fc.reset()
    fc.config(chunks=10, drop_after=4, count=1)
    status, hdrs, raw = call("POST", BEDROCK_PATH + "/converse-stream", CONVERSE_BODY)
    assert status == 200, raw
    msgs = fake_clouds.es_parse(raw)
    assert msgs[-1]["headers"].get(":message-type") == "exception", msgs[-1]
    assert endpoint_count("bedrock/converse-stream") == 1, fc.stats()


# ---- secrets ----------------------------------------------------------------------------------

def test_no_vendor_secret_or_user_key_in_any_log():
    secrets = [fc.anthropic_key, fc.gemini_key, fc.bedrock_secret_access_key,
               BEDROCK_SESSION_TOKEN, fc.service_account["private_key"].splitlines()[1], KEY]
    logs = [ch.agent.log, ch.hub.log, ch.hub.gateway_log, ch.hub.billing_log]
    for path in logs:
        text = open(path).read()
        for secret in secrets:
            assert secret not in text, (path, secret[:8])


# ---- the ledger --------------------------------------------------------------------------------

def test_ledger_diff_agrees_for_every_format():
    ch.settled()
    rc, out = ch.verify()
    assert rc == 0, out
    rows = ch.all_rows()
    cost, fee, credit = ch.totals(rows)
    assert cost == fee + credit, (cost, fee, credit)


run_tests(globals())
