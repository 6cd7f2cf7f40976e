"""End to end with the vendors' own official SDKs: `@anthropic-ai/sdk` (messages streamed and
not, raw stream events, count_tokens, a cancel, a wrong key, an unknown model) and
`@google/genai` (generateContent, the SSE stream, a wrong key) against hub-gateway, through the
whole chain to fake-clouds; every request the SDKs made is billed from the vendor's figures and
ledger-diff finds both sides equal."""

import json
import os
import subprocess
import time

from chain import CLAUDE, GEMINI, VERTEX, Chain
from harness import run_tests, wait_until

E2E = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e")
ch = Chain("sqlite", clouds=True)
fc = ch.fc
KEY = ch.user("sdk-vendors", "100")
ch.wait_routable(KEY)


def sdk(script, model, *checks, key=KEY):
    env = dict(os.environ, RELAYHUB_BASE_URL="http://127.0.0.1:%d" % ch.hub.gateway_port,
               RELAYHUB_API_KEY=key, RELAYHUB_MODEL=model)
    r = subprocess.run(["node", os.path.join(E2E, script)] + list(checks),
                       capture_output=True, text=True, timeout=120, env=env, cwd=E2E)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def rows_since(n):
    return ch.all_rows()[n:]


def test_anthropic_message_and_stream():
    n = len(ch.all_rows())
    out = sdk("anthropic_sdk.mjs", CLAUDE, "message", "stream")
    msg, stream = out["message"], out["stream"]
    assert "error" not in msg and "error" not in stream, out
    assert msg["text"] == "tok0 tok1 tok2 tok3 tok4" and msg["stop_reason"] == "end_turn", msg
    assert stream["text"] == msg["text"], stream
    assert stream["usage"]["output_tokens"] == 5, stream
    wait_until(lambda: len(rows_since(n)) == 2, timeout=20, what="two rows")
    rows = rows_since(n)
    assert [r["output"] for r in rows] == [5, 5], rows
    assert rows[0]["input"] == msg["usage"]["input_tokens"], (rows, msg)


def test_anthropic_raw_stream_events_in_order():
    out = sdk("anthropic_sdk.mjs", CLAUDE, "stream_raw")["stream_raw"]
    types = out["types"]
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    assert types.count("content_block_delta") == 5 and "message_delta" in types, types


def test_anthropic_count_tokens():
    out = sdk("anthropic_sdk.mjs", CLAUDE, "count_tokens")["count_tokens"]
    assert out.get("input_tokens", 0) > 0, out


def test_anthropic_abort_is_billed():
    n = len(ch.all_rows())
    fc.config(chunks=300, delay_ms=20, count=1)
    out = sdk("anthropic_sdk.mjs", CLAUDE, "abort")["abort"]
    assert out.get("aborted") and out["after"] == 3, out
    wait_until(lambda: len(rows_since(n)) == 1, timeout=30, what="the cancelled stream's row")
    row = rows_since(n)[0]
    assert 3 <= row["output"] < 300, row


def test_anthropic_wrong_key_and_unknown_model():
    out = sdk("anthropic_sdk.mjs", CLAUDE, "bad_key", "unknown_model")
    bad, unknown = out["bad_key"], out["unknown_model"]
    assert bad["rejected"] and bad["status"] == 401 and bad["isAuth"], bad
    assert bad["type"] == "authentication_error", bad
    assert unknown["rejected"] and unknown["status"] == 404 and unknown["isNotFound"], unknown
    assert unknown["type"] == "not_found_error", unknown


def test_gemini_generate_and_stream():
    n = len(ch.all_rows())
    for model in (GEMINI, VERTEX):
        out = sdk("gemini_sdk.mjs", model, "generate", "stream")
        gen, stream = out["generate"], out["stream"]
        assert "error" not in gen and "error" not in stream, out
        assert gen["text"] == "tok0 tok1 tok2 tok3 tok4", gen
        assert stream["text"] == gen["text"] and stream["chunks"] >= 5, stream
        assert stream["usage"]["candidatesTokenCount"] == 5, stream
    wait_until(lambda: len(rows_since(n)) == 4, timeout=20, what="four rows")
    assert all(r["output"] == 5 and not r["estimated"] for r in rows_since(n)), rows_since(n)


def test_gemini_wrong_key():
    out = sdk("gemini_sdk.mjs", GEMINI, "bad_key")["bad_key"]
    assert out["rejected"] and out["status"] == 400, out
    assert "API key not valid" in out["message"], out


def test_ledgers_agree():
    time.sleep(0.5)
    ch.settled()
    rc, out = ch.verify()
    assert rc == 0, out


run_tests(globals())
