"""Phase-3 acceptance: the handshake and pinning refuse every impostor, each with its own
close code, and never displace the honest agent."""

import os
import shutil
import subprocess
import time

import nacl.signing

from harness import (Agent, Hub, RawClient, arun, envelope, has_event, has_event_with,
                     load_agent_key, run,
                     run_tests, tmpdir, wait_until)

hub = Hub(sets=["tunnel.handshake_timeout=1500ms"]).start()
honest = Agent(hub, "honest").start(sets=["hub.reconnect_cap=1s"])
honest.wait_connected()
honest_key = load_agent_key(honest.dir)


def _refused(coro_fn):
    async def go():
        c = await RawClient(hub).connect()
        try:
            return await coro_fn(c)
        finally:
            await c.close()
    return arun(go())


def _failures(reason):
    return hub.metric("relayhub_tunnel_handshake_failures_total", 'reason="%s"' % reason) or 0


def test_raw_client_with_the_real_key_is_welcomed_and_replaces():
    # proves the raw client speaks the protocol, so the refusals below are meaningful
    async def go(c):
        w = await c.handshake(honest.id, honest_key)
        assert w["type"] == "welcome", w
        # the honest agent's old connection was replaced (4010) ...
        wait_until(lambda: has_event(honest.log, "disconnected"), what="old closed")
        return True
    assert _refused(go)
    assert hub.metric("relayhub_tunnel_replaced_total") >= 1
    # ... and, the raw client gone, the agent reconnects by itself
    honest.wait_connected(timeout=15)
    wait_until(lambda: hub.echo(honest.id, "hi")[0] == 200, what="echo after reconnect")


def test_changed_key_is_refused():
    """The same agent id signed with another key: bad signature, 4004."""
    before = _failures("bad_signature")
    forged = nacl.signing.SigningKey.generate()

    async def go(c):
        await c.handshake(honest.id, forged)
        return await c.close_code()
    assert _refused(go) == 4004
    assert _failures("bad_signature") == before + 1
    assert has_event(hub.log, "handshake_refused", agent_id=honest.id)
    # a forged attempt never displaces the honest agent
    assert honest.id in hub.agents()
    assert hub.echo(honest.id, "still me")[0] == 200


def test_agent_whose_key_file_was_replaced_is_refused():
    """A real agent process whose agent.key was swapped: its id no longer matches the
    registry, so the hub refuses it (unknown agent) and keeps refusing it on every retry."""
    root = tmpdir()
    victim = Agent(hub, "victim", root=root)
    other = Agent(hub, "other", root=tmpdir(), register=False)
    shutil.copy(os.path.join(other.dir, "agent.key"), os.path.join(victim.dir, "agent.key"))
    os.chmod(os.path.join(victim.dir, "agent.key"), 0o600)
    victim.start(sets=["hub.reconnect_base=50ms", "hub.reconnect_cap=200ms"])
    wait_until(lambda: has_event(victim.log, "disconnected"), what="victim refused")
    time.sleep(0.5)
    assert victim.id not in hub.agents() and other.id not in hub.agents()
    assert has_event_with(victim.log, "disconnected", "4002 unknown agent")
    victim.stop()


def test_unknown_agent_is_refused():
    key = nacl.signing.SigningKey.generate()

    async def go(c):
        await c.handshake("ab" * 16, key)
        return await c.close_code()
    assert _refused(go) == 4002


def test_disabled_agent_is_refused_and_kicked():
    d = Agent(hub, "to-disable").start()
    d.wait_connected()
    hub.hubctl("agent", "disable", d.id)
    # a connected agent is closed within a second of the change
    t0 = time.monotonic()
    wait_until(lambda: d.id not in hub.agents(), timeout=3, what="disabled agent kicked")
    assert time.monotonic() - t0 < 2.0
    # and every new attempt is refused with 4003
    key = load_agent_key(d.dir)

    async def go(c):
        await c.handshake(d.id, key)
        return await c.close_code()
    assert _refused(go) == 4003
    # a wrong signature for a disabled agent says bad signature, not "disabled"
    async def go2(c):
        await c.handshake(d.id, nacl.signing.SigningKey.generate())
        return await c.close_code()
    assert _refused(go2) == 4004
    wait_until(lambda: has_event_with(d.log, "disconnected", "4003 agent disabled"),
               what="agent log names 4003")
    hub.hubctl("agent", "enable", d.id)
    d.wait_connected(timeout=40)
    d.stop()


def test_replayed_handshake_fails():
    recorded = []

    async def first(c):
        w = await c.handshake(honest.id, honest_key, keep_auth=recorded)
        assert w["type"] == "welcome"
        return True
    assert _refused(first)
    honest.wait_connected(timeout=15)
    before = _failures("nonce_replay")

    async def replay(c):
        await c.send(envelope("hello", {"proto_version": 1}))
        ch = await c.recv()
        assert ch["type"] == "challenge"
        await c.send(recorded[0])  # the old auth, signed over the old nonce
        return await c.close_code()
    assert _refused(replay) == 4005
    assert _failures("nonce_replay") == before + 1

    # replaying on the same connection after a refusal is impossible too: nonce consumed
    async def twice(c):
        await c.send(envelope("hello", {"proto_version": 1}))
        ch = await c.recv()
        bad = envelope("auth", {"agent_id": honest.id, "nonce": ch["payload"]["nonce"],
                                "signature": b"\0" * 64})
        await c.send(bad)
        return await c.close_code()
    assert _refused(twice) == 4004
    honest.wait_connected(timeout=15)


def test_signature_bound_to_the_pin():
    """A signature made for another hub's pin (a TLS interceptor) does not verify here."""
    async def go(c):
        await c.handshake(honest.id, honest_key, pin="sha256/" + "A" * 43 + "=")
        return await c.close_code()
    assert _refused(go) == 4004


def test_message_before_handshake():
    async def go(c):
        await c.send(envelope("admin.echo", {"text": "sneaky"}, req_id=b"\1" * 16))
        return await c.close_code()
    assert _refused(go) == 4001

    async def auth_first(c):
        await c.send(envelope("auth", {"agent_id": honest.id, "nonce": b"\0" * 32,
                                       "signature": b"\0" * 64}))
        return await c.close_code()
    assert _refused(auth_first) == 4001


def test_malformed_and_version():
    async def garbage(c):
        await c.send(b"\x81\xa1")  # truncated msgpack
        return await c.close_code()
    assert _refused(garbage) == 4000

    async def text_frame(c):
        await c.send("hello")
        return await c.close_code()
    assert _refused(text_frame) == 4000

    async def version(c):
        await c.send(envelope("hello", {"proto_version": 99}))
        return await c.close_code()
    assert _refused(version) == 4008
    assert honest.id in hub.agents()


def test_handshake_timeout():
    async def silent(c):
        return await c.close_code(timeout=5)
    assert _refused(silent) == 4009


def test_wrong_path_refused():
    import websockets
    try:
        arun(RawClient(hub).connect(path="/other"))
        assert False, "upgrade on another path accepted"
    except (websockets.InvalidStatusCode, websockets.InvalidHandshake, ConnectionError, OSError):
        pass


def test_pin_mismatch_refuses_to_connect():
    """An agent whose [hub] pin does not match the hub's certificate never speaks."""
    before = hub.metric("relayhub_tunnel_connections_total")
    wrong_pin = "sha256/" + "B" * 43 + "="
    a = Agent(hub, "wrong-pin", pin=wrong_pin).start(
        sets=["hub.reconnect_base=50ms", "hub.reconnect_cap=100ms"])
    wait_until(lambda: has_event(a.log, "disconnected"), what="refusal logged")
    time.sleep(0.5)
    e = has_event(a.log, "disconnected")
    assert "does not match hub.pin" in e["msg"], e
    assert a.id not in hub.agents()
    # the TLS handshake failed: no WebSocket connection ever reached the hub
    assert hub.metric("relayhub_tunnel_connections_total") == before
    a.stop()


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def test_ca_valid_certificate_with_other_key_is_refused():
    """A hub certificate a trusted CA vouches for, but with another key: refused by the pin.
    The CA is made trusted for the agent through SSL_CERT_FILE (OpenSSL's default store)."""
    d = tmpdir()
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    h2 = Hub(sets=["tunnel.cert=" + os.path.join(d, "srv.crt"),
                   "tunnel.key=" + os.path.join(d, "srv.key")]).start()
    env = dict(os.environ, SSL_CERT_FILE=os.path.join(d, "ca.crt"))
    # control: the right pin connects (so the refusal below is the pin's doing)
    good = Agent(h2, "good").start(env=env)
    good.wait_connected()
    # an agent pinned to another key refuses the CA-valid certificate
    bad = Agent(h2, "bad", pin=hub.pin).start(env=env, sets=["hub.reconnect_base=50ms"])
    wait_until(lambda: has_event(bad.log, "disconnected"), what="refusal")
    assert "does not match hub.pin" in has_event(bad.log, "disconnected")["msg"]
    assert bad.id not in h2.agents()
    bad.stop()
    good.stop()
    h2.stop()


run_tests(globals())
