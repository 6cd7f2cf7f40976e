"""What operators touch: --help, --version, config errors (exit 2, one line naming the key),
`agent init` files and refusals, the directory lock, hubctl, and bus-tap."""

import json
import os
import re
import signal
import stat
import subprocess
import time

from harness import (BIN, Agent, Hub, has_event, log_events, run, run_tests, spawn, tmpdir,
                     wait_until)

hub = Hub().start()


def test_help_lists_every_key_with_default():
    out = run([BIN["hub-tunnel"], "--help"]).stdout
    for key in ("store.backend", "store.sqlite_path", "store.mysql_url", "bus.tunnel_router",
                "bus.tunnel_presence", "bus.tunnel_tap", "tunnel.listen", "tunnel.admin_listen",
                "tunnel.metrics_listen", "tunnel.cert", "tunnel.key", "tunnel.admin_token",
                "tunnel.heartbeat", "tunnel.dead_after", "log.level"):
        assert key in out, key
    assert re.search(r"tunnel\.heartbeat\s*=\s*15s", out)
    assert re.search(r"tunnel\.dead_after\s*=\s*45s", out)
    out = run([BIN["agent"], "--help"]).stdout
    for key in ("hub.url", "hub.pin", "identity.key_file", "upstream.connect_to",
                "upstream.ca_file", "agent.metrics_listen", "log.level"):
        assert key in out, key
    assert "hubctl init" in run([BIN["hubctl"], "--help"]).stdout
    for b in ("hub-tunnel", "agent", "hubctl", "bus-tap"):
        r = run([BIN[b], "--version"])
        assert r.stdout.startswith(b + " "), r.stdout


def _exit2(args, key):
    r = run(args, check=False)
    assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert key in lines[0], (key, lines[0])


def test_bad_config_exits_2_naming_the_key():
    t = BIN["hub-tunnel"]
    _exit2([t, "--config", hub.conf, "--set", "tunnel.heartbeat=15x"], "tunnel.heartbeat")
    _exit2([t, "--config", hub.conf, "--set", "tunnel.lisen=127.0.0.1:1"], "tunnel.lisen")
    _exit2([t, "--config", hub.conf, "--set", "tunnel.listen=nowhere"], "tunnel.listen")
    _exit2([t, "--config", hub.conf, "--set", "store.backend=oracle"], "store.backend")
    _exit2([t, "--config", hub.conf, "--set", "log.level=loud"], "log.level")
    _exit2([t, "--config", hub.conf, "--set", "tunnel.dead_after=1s",
            "--set", "tunnel.heartbeat=2s"], "tunnel.dead_after")
    _exit2([t, "--config", "/nonexistent/hub.conf"], "hub.conf")
    bad = os.path.join(tmpdir(), "hub.conf")
    with open(bad, "w") as f:
        f.write("[tunnel]\nlisten = 127.0.0.1:1\nbogus = 1\n")
    _exit2([t, "--config", bad], "tunnel.bogus")
    _exit2([t, "--bogus-flag"], "--bogus-flag")
    # an unknown section is some other process's business: ignored
    with open(bad, "w") as f:
        f.write("[somebody_else]\nwhatever = 1\n[tunnel]\nadmin_token = x\n")
    r = run([t, "--config", bad, "--set", "tunnel.cert=/nonexistent"], check=False)
    assert r.returncode == 1  # got past config parsing, failed on the missing certificate
    a = Agent(hub, "cfg")
    _exit2([BIN["agent"], "run", "--dir", a.dir, "--set", "hub.url=ws://x:1/"], "hub.url")
    _exit2([BIN["agent"], "run", "--dir", a.dir, "--set", "hub.pin=md5/abc"], "hub.pin")
    _exit2([BIN["agent"], "run", "--dir", a.dir,
            "--set", "upstream.connect_to=api.openai.com:443:10.1.2.3:443"], "connect_to")


def test_agent_init_files_and_refusals():
    d = os.path.join(tmpdir(), "ag")
    out = run([BIN["agent"], "init", "--dir", d, "--hub", hub.url, "--pin", hub.pin]).stdout
    pk = re.search(r"^pubkey: (\S+)$", out, re.M).group(1)
    aid = re.search(r"^agent_id: ([0-9a-f]{32})$", out, re.M).group(1)
    key = os.path.join(d, "agent.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    with open(key) as f:
        before = f.read()
    r = run([BIN["agent"], "init", "--dir", d, "--hub", hub.url, "--pin", hub.pin], check=False)
    assert r.returncode != 0 and "refusing to overwrite" in r.stderr
    with open(key) as f:
        assert f.read() == before
    assert run([BIN["agent"], "pubkey", "--dir", d]).stdout.strip() == pk
    # the id is derived from the key: hubctl computes the same one
    assert hub.hubctl("agent", "add", "derived", "--pubkey", pk).stdout.strip() == aid
    # bad inputs to init
    for args in (["--hub", "http://x/", "--pin", hub.pin], ["--hub", hub.url, "--pin", "x"],
                 ["--hub", hub.url]):
        r = run([BIN["agent"], "init", "--dir", os.path.join(tmpdir(), "n")] + args, check=False)
        assert r.returncode == 2, args
    # a key readable by others is refused at run
    os.chmod(key, 0o644)
    r = run([BIN["agent"], "run", "--dir", d], check=False)
    assert r.returncode == 1 and "chmod 600" in r.stderr


def test_one_agent_per_directory():
    a = Agent(hub, "locked").start()
    a.wait_connected()
    r = run([BIN["agent"], "run", "--dir", a.dir], check=False)
    assert r.returncode == 1 and "already running" in r.stderr
    a.stop()


def test_hubctl_agents():
    a = Agent(hub, "listed", register=True)
    out = hub.hubctl("agent", "list").stdout
    line = [l for l in out.splitlines() if a.id in l][0]
    assert "active" in line and "listed" in line and a.pubkey in line
    r = hub.hubctl("agent", "add", "listed", "--pubkey", a.pubkey, check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    r = hub.hubctl("agent", "add", "x", "--pubkey", "not-base64!", check=False)
    assert r.returncode == 2
    r = hub.hubctl("agent", "disable", "f" * 32, check=False)
    assert r.returncode == 1 and "no agent" in r.stderr
    hub.hubctl("agent", "disable", a.id)
    assert "disabled" in [l for l in hub.hubctl("agent", "list").stdout.splitlines()
                          if a.id in l][0]
    r = run([BIN["hubctl"], "init", "--dir", hub.dir], check=False)
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    # hub.conf holds the admin token: owner-only
    assert stat.S_IMODE(os.stat(hub.conf).st_mode) == 0o600


def test_bus_tap_prints_envelopes():
    a = Agent(hub, "tapped").start()
    a.wait_connected()
    tap_ep = "ipc://" + os.path.join(hub.dir, "tap-tunnel.ipc")
    out_path = os.path.join(tmpdir(), "tap.out")
    p = spawn([BIN["bus-tap"], tap_ep], out_path)
    time.sleep(0.5)  # let the subscription reach the XPUB socket
    # both directions: the echo going out to the agent and its reply coming in (echo again
    # until the subscription has reached the tap)
    def both():
        text = open(out_path).read()
        if '"dir":"in"' in text and '"dir":"out"' in text and "tap me" in text:
            return True
        hub.echo(a.id, "tap me")
        return False
    wait_until(both, interval=0.2, what="tap output in both directions")
    lines = [json.loads(l) for l in open(out_path) if l.strip()]
    echoes = [l for l in lines if l["envelope"]["type"] == "admin.echo"]
    dirs = {l["dir"] for l in echoes}
    assert dirs == {"in", "out"}, lines
    assert all(l["process"] == "hub-tunnel" for l in lines)
    assert echoes[0]["envelope"]["payload"]["text"] == "tap me"
    assert re.fullmatch(r"[0-9a-f]{32}", echoes[0]["envelope"]["req_id"])
    # presence events are mirrored too
    a.stop()
    wait_until(lambda: any(json.loads(l)["envelope"]["type"] == "presence"
                           for l in open(out_path) if l.strip()), what="presence on tap")
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=5) == 0


def test_bus_router_echo():
    """Another hub process (a gateway, a tool) reaches an agent through the tunnel's ROUTER."""
    import os as _os
    import zmq
    from harness import envelope, unpack
    a = Agent(hub, "via-bus").start()
    a.wait_connected()
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect("ipc://" + _os.path.join(hub.dir, "tunnel.ipc"))
    rid = _os.urandom(16)
    s.send(envelope("admin.echo", {"agent_id": a.id, "text": "over the bus"}, req_id=rid))
    r = unpack(s.recv())
    assert r["type"] == "admin.echo" and r["req_id"] == rid, r
    assert r["payload"]["text"] == "over the bus"
    s.send(envelope("admin.echo", {"agent_id": "0" * 32, "text": "x"}, req_id=rid))
    r = unpack(s.recv())
    assert r["type"] == "error" and r["payload"]["code"] == 404 and r["req_id"] == rid, r
    s.send(b"\x93garbage")
    r = unpack(s.recv())
    assert r["type"] == "error" and r["payload"]["code"] == 400, r
    s.send(envelope("no.such.type", {}, req_id=rid))
    r = unpack(s.recv())
    assert r["type"] == "error" and r["req_id"] == rid and "no.such.type" in r["payload"]["message"]
    s.send(envelope("pong", {"seq": 1}, req_id=rid))   # not a message for the tunnel's bus side
    r = unpack(s.recv())
    assert r["type"] == "error" and r["payload"]["code"] == 501, r
    s.close()
    ctx.term()
    a.stop()


# ---- users and API keys -----------------------------------------------------------------

def _key_create(h, user):
    """hubctl key create USER: returns (key_id, secret, CompletedProcess), checking that the
    secret is printed exactly once, on its own line, and nowhere else."""
    r = h.hubctl("key", "create", user)
    kid = re.search(r"^key_id: (key_[a-z2-7]{12})$", r.stdout, re.M).group(1)
    keys = re.findall(r"^sk-[A-Za-z0-9_-]+$", r.stdout, re.M)
    assert len(keys) == 1, r.stdout
    secret = keys[0]
    assert len(secret) == 46, secret  # "sk-" + base64url of 32 bytes
    assert r.stdout.count(secret[3:]) == 1, r.stdout
    assert secret[3:] not in r.stderr and "cannot be shown again" in r.stderr
    assert re.search(r"^user: %s$" % re.escape(user), r.stdout, re.M)
    return kid, secret, r


def _key_check(h, secret):
    """hubctl key check with the key on standard input."""
    return run([BIN["hubctl"], "--config", h.conf, "key", "check"], check=False,
               input=secret + "\n")


def _list_line(out, kid):
    lines = [l for l in out.splitlines() if l.startswith(kid)]
    assert len(lines) == 1, out
    return lines[0]


def test_hubctl_users():
    r = hub.hubctl("user", "add", "carol")
    uid = int(re.search(r"^user_id: (\d+)$", r.stdout, re.M).group(1))
    assert re.search(r"^name: carol$", r.stdout, re.M)
    r = hub.hubctl("user", "add", "carol", check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    # names compare byte for byte: another case is another user
    r = hub.hubctl("user", "add", "Carol")
    assert int(re.search(r"^user_id: (\d+)$", r.stdout, re.M).group(1)) > uid
    hub.hubctl("user", "add", "名前 ünïcødé")
    for bad in ("", " lead", "trail ", "tab\there", "x" * 129):
        r = hub.hubctl("user", "add", bad, check=False)
        assert r.returncode == 2 and "user name" in r.stderr, (bad, r.stderr)
    for args in (("user",), ("user", "add"), ("user", "add", "a", "b"), ("user", "list", "x"),
                 ("user", "frob")):
        assert hub.hubctl(*args, check=False).returncode == 2, args
    out = hub.hubctl("user", "list").stdout
    assert out.splitlines()[0].split() == ["ID", "STATUS", "CREATED", "NAME"]
    line = [l for l in out.splitlines() if l.endswith("  carol")][0]
    assert line.split()[0] == str(uid) and "active" in line
    assert any(l.endswith("  名前 ünïcødé") for l in out.splitlines())
    hub.hubctl("user", "disable", "Carol")
    assert "disabled" in [l for l in hub.hubctl("user", "list").stdout.splitlines()
                          if l.endswith("  Carol")][0]
    r = hub.hubctl("user", "disable", "nobody", check=False)
    assert r.returncode == 1 and "no user" in r.stderr
    assert "user add NAME" in run([BIN["hubctl"], "--help"]).stdout


def test_hubctl_key_shown_once_stored_as_hash():
    import hashlib
    import sqlite3
    hub.hubctl("user", "add", "dave")
    kid, secret, _ = _key_create(hub, "dave")
    kid2, secret2, _ = _key_create(hub, "dave")
    assert kid != kid2 and secret != secret2
    for out in (hub.hubctl("key", "list").stdout, hub.hubctl("key", "list", "dave").stdout):
        line = _list_line(out, kid)
        assert "active" in line and line.endswith("  dave")
        assert ("sk-%s..." % secret[3:11]) in line
        for s in (secret, secret2):
            assert s[3:12] not in out  # only 8 characters after sk-, never more
        _list_line(out, kid2)
    r = hub.hubctl("key", "list", "nobody", check=False)
    assert r.returncode == 1 and "no user" in r.stderr
    r = hub.hubctl("key", "create", "nobody", check=False)
    assert r.returncode == 1 and "no user" in r.stderr
    for args in (("key",), ("key", "create"), ("key", "create", "a", "b"), ("key", "revoke"),
                 ("key", "list", "a", "b"), ("key", "check", "x"), ("key", "frob")):
        assert hub.hubctl(*args, check=False).returncode == 2, args
    # the database holds SHA-256 of the whole key, never the key
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(hub.dir, "hub.db"), uri=True)
    row = db.execute("SELECT k.hash, k.prefix, k.status, u.name FROM api_keys k "
                     "JOIN users u ON u.id = k.user_id WHERE k.id = ?", (kid,)).fetchone()
    db.close()
    assert row == (hashlib.sha256(secret.encode()).digest(), secret[3:11], "active", "dave")
    for name in os.listdir(hub.dir):
        if not os.path.isfile(os.path.join(hub.dir, name)):
            continue  # ipc sockets
        with open(os.path.join(hub.dir, name), "rb") as f:
            data = f.read()
        for s in (secret, secret2):
            assert s[3:].encode() not in data, name
    r = _key_check(hub, secret)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^key_id: %s$" % kid, r.stdout, re.M)
    assert "status: active" in r.stdout and "user: dave" in r.stdout
    assert secret[3:] not in r.stdout + r.stderr


def test_hubctl_key_revoke():
    hub.hubctl("user", "add", "erin")
    kid, secret, _ = _key_create(hub, "erin")
    kid2, secret2, _ = _key_create(hub, "erin")
    r = hub.hubctl("key", "revoke", kid)
    assert "%s revoked" % kid in r.stdout
    r = _key_check(hub, secret)
    assert r.returncode == 1
    assert re.search(r"^status: revoked$", r.stdout, re.M), r.stdout
    assert _key_check(hub, secret2).returncode == 0  # the user's other key is untouched
    line = _list_line(hub.hubctl("key", "list", "erin").stdout, kid)
    assert line.split()[1] == "revoked" and line.split()[3] != "-"
    assert _list_line(hub.hubctl("key", "list", "erin").stdout, kid2).split()[1] == "active"
    # a second revoke changes nothing and still succeeds
    r = hub.hubctl("key", "revoke", kid)
    assert "already revoked" in r.stdout
    r = hub.hubctl("key", "revoke", "key_zzzzzzzzzzzz", check=False)
    assert r.returncode == 1 and "no key" in r.stderr
    # the secret instead of the id: refused without echoing it
    r = hub.hubctl("key", "revoke", secret2, check=False)
    assert r.returncode == 2 and "key id" in r.stderr
    assert secret2[3:] not in r.stdout + r.stderr
    assert _key_check(hub, secret2).returncode == 0
    # a disabled user's keys are refused, and accepted again once enabled
    hub.hubctl("user", "disable", "erin")
    r = _key_check(hub, secret2)
    assert r.returncode == 1 and "user_status: disabled" in r.stdout
    hub.hubctl("user", "enable", "erin")
    assert _key_check(hub, secret2).returncode == 0


def test_hubctl_key_check_refusals():
    for text in ("", "not a key", "sk-", "sk-abc def", "Bearer sk-abc", "sk-" + "A" * 200):
        r = _key_check(hub, text)
        assert r.returncode == 1 and "no API key" in r.stderr, (text, r.stderr)
    r = _key_check(hub, "sk-" + "A" * 43)
    assert r.returncode == 1 and "status: unknown" in r.stdout
    # nothing of any key reached the hub's log
    hub.hubctl("user", "add", "frank")
    _, secret, _ = _key_create(hub, "frank")
    with open(hub.log, "rb") as f:
        assert secret[3:].encode() not in f.read()


run_tests(globals())
