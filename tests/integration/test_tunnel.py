"""The roadmap's phase-1 acceptance and the admin API: an agent connects, and
POST /admin/agents/{id}/messages returns its echo."""

import os
import signal
import time

from harness import Agent, Hub, has_event, log_events, run_tests, wait_until

hub = Hub().start()
alpha = Agent(hub, "alpha").start()


def test_agent_connects_and_is_listed():
    alpha.wait_connected()
    a = hub.agents()[alpha.id]
    assert a["name"] == "alpha"
    assert a["remote_addr"] == "127.0.0.1"
    assert a["agent_version"].startswith("relayhub-agent/")
    for k in ("connected_since", "last_seen"):
        assert a[k].endswith("Z") and a[k][:4].isdigit(), a[k]


def test_echo_round_trip():
    st, body, headers = hub.echo(alpha.id, "hello 你好 \"quoted\"\n")
    assert st == 200, (st, body)
    assert body["text"] == "hello 你好 \"quoted\"\n"
    assert body["agent_id"] == alpha.id
    assert len(body["req_id"]) == 32
    # the agent logged what it received, with the request id
    wait_until(lambda: has_event(alpha.log, "admin_echo", req_id=body["req_id"]),
               what="agent log line")


def test_echo_empty_and_control_text():
    for text in ("", "\u0000nul", "tab\tand\r\n", "\U0001F600 emoji"):
        st, body, _ = hub.echo(alpha.id, text)
        assert st == 200 and body["text"] == text, (text, st, body)


def test_echo_many_in_a_row():
    for i in range(50):
        st, body, _ = hub.echo(alpha.id, "n%d" % i)
        assert st == 200 and body["text"] == "n%d" % i


def test_echo_large_text():
    text = "x" * 60000
    st, body, _ = hub.echo(alpha.id, text)
    assert st == 200 and body["text"] == text


def test_admin_requires_token():
    for tok in ("", "wrong", hub.token + "x", hub.token[:-1]):
        st, body, headers = hub.admin("GET", "/admin/agents", token=tok)
        assert st == 401, (tok, st)
        assert "error" in body
        assert "bearer" in headers.get("WWW-Authenticate", headers.get("www-authenticate", "")).lower()
        st, _, _ = hub.admin("POST", "/admin/agents/%s/messages" % alpha.id, {"text": "x"},
                             token=tok)
        assert st == 401
    assert has_event(hub.log, "admin_unauthorized")
    # the token never appears in any log line
    with open(hub.log) as f:
        assert hub.token not in f.read()


def test_admin_errors():
    st, body, _ = hub.echo("0" * 32, "x")
    assert st == 404 and "not connected" in body["error"]["message"]
    st, _, _ = hub.echo("not-an-id", "x")
    assert st == 404
    path = "/admin/agents/%s/messages" % alpha.id
    for bad in ("{", "[]", '{"text": 5}', '{"txt": "a"}', "", '{"text":"a","text":"b"}'):
        st, body, _ = hub.admin("POST", path, bad)
        assert st == 400, (bad, st, body)
        assert body["error"]["message"]
    st, _, _ = hub.admin("POST", path, '{"text":"%s"}' % ("y" * 70000))
    assert st == 413
    st, _, _ = hub.admin("GET", path)
    assert st == 405
    st, _, _ = hub.admin("POST", "/admin/agents")
    assert st == 405
    st, _, _ = hub.admin("GET", "/admin/nothing")
    assert st == 404
    # chunked bodies (lws does not decode them) and repeated Content-Length are refused
    import socket
    for extra in ("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                  "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"):
        c = socket.create_connection(("127.0.0.1", hub.admin_port), timeout=5)
        c.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s"
                   % (path, hub.token, extra)).encode())
        resp = c.recv(4096).decode()
        c.close()
        assert resp.startswith("HTTP/1.1 411" if "chunked" in extra else "HTTP/1.1 400"), resp
    # still healthy afterwards
    assert hub.echo(alpha.id, "after")[0] == 200


def test_echo_timeout_is_504():
    os.kill(alpha.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        st, body, _ = hub.echo(alpha.id, "are you there", timeout=30)
        took = time.monotonic() - t0
        assert st == 504, (st, body)
        assert 4.0 <= took < 15, took  # admin_timeout defaults to 5 s
    finally:
        os.kill(alpha.proc.pid, signal.SIGCONT)
    wait_until(lambda: hub.echo(alpha.id, "back")[0] == 200, what="echo after SIGCONT")


def test_metrics_exposed():
    text = hub.metrics()
    for name in ("relayhub_tunnel_connections_total", "relayhub_tunnel_agents_connected",
                 "relayhub_messages_in_total", "relayhub_messages_out_total",
                 "relayhub_errors_total", "relayhub_tunnel_handshake_failures_total",
                 "relayhub_tunnel_admin_timeouts_total"):
        assert "# TYPE %s " % name in text, name
    assert hub.metric("relayhub_tunnel_agents_connected") == 1
    assert hub.metric("relayhub_tunnel_admin_timeouts_total") >= 1


def test_logs_are_json_lines():
    for path in (hub.log, alpha.log):
        evs = log_events(path)
        assert evs
        procs = {e["process"] for e in evs}
        assert procs <= {"hub-tunnel", "agent", "agent-ledger"}, procs
    assert any(e.get("agent_id") == alpha.id for e in log_events(hub.log))


def test_sigterm_stops_cleanly():
    assert alpha.stop() == 0
    wait_until(lambda: alpha.id not in hub.agents(), what="agent gone after SIGTERM")
    assert has_event(hub.log, "presence", agent_id=alpha.id)
    assert hub.stop() == 0


run_tests(globals())
