"""The same tunnel on the MySQL backend (a real MariaDB started by tests/with-servers)."""

import os
import secrets
import subprocess
import time
import urllib.parse

from harness import Agent, Hub, run_tests, wait_until

URL = os.environ.get("RELAYHUB_TEST_MYSQL_URL")
if not URL:
    raise SystemExit("RELAYHUB_TEST_MYSQL_URL is not set: run under tests/with-servers")
u = urllib.parse.urlparse(URL)
DB = "relayhub_it_%d_%s" % (os.getpid(), secrets.token_hex(3))


def _sql(stmt):
    subprocess.run(["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port),
                    "-u", urllib.parse.unquote(u.username),
                    "-p" + urllib.parse.unquote(u.password or ""), "-e", stmt],
                   check=True, capture_output=True, timeout=30)


def _sql_out(stmt):
    """Runs one statement and returns its rows, tab-separated, without column names."""
    return subprocess.run(["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port),
                           "-u", urllib.parse.unquote(u.username),
                           "-p" + urllib.parse.unquote(u.password or ""), "-N", "-B", "-e", stmt],
                          check=True, capture_output=True, text=True, timeout=30).stdout


_sql("CREATE DATABASE %s" % DB)
db_url = "mysql://%s:%s@%s:%d/%s" % (u.username, u.password or "", u.hostname, u.port, DB)
hub = Hub(store="mysql", mysql_url=db_url).start()


def test_init_creates_schema_on_mysql():
    out = hub.hubctl("migrate").stdout
    assert "0 migration(s) applied" in out  # init already applied them


def test_agent_echo_on_mysql():
    a = Agent(hub, "on-mysql").start()
    a.wait_connected()
    st, body, _ = hub.echo(a.id, "from mariadb")
    assert st == 200 and body["text"] == "from mariadb"
    hub.hubctl("agent", "disable", a.id)
    wait_until(lambda: a.id not in hub.agents(), timeout=3, what="disabled agent kicked")
    assert "disabled" in hub.hubctl("agent", "list").stdout


def test_registry_outage_is_survived():
    """hub-tunnel keeps serving connected agents when the database is unreachable, and reads
    changes again once it is back."""
    b = Agent(hub, "survivor").start()
    b.wait_connected()
    _sql("RENAME TABLE %s.agents TO %s.agents_away" % (DB, DB))
    time.sleep(1.0)
    assert hub.echo(b.id, "still here")[0] == 200
    _sql("RENAME TABLE %s.agents_away TO %s.agents" % (DB, DB))
    c = Agent(hub, "late")
    c.start()
    c.wait_connected(timeout=20)


def test_users_and_keys_on_mysql():
    import hashlib
    import re
    from harness import BIN, run
    hub.hubctl("user", "add", "mysql-user")
    r = hub.hubctl("user", "add", "mysql-user", check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    hub.hubctl("user", "add", "MySQL-User")  # byte-exact names on MariaDB too
    r = hub.hubctl("key", "create", "mysql-user")
    kid = re.search(r"^key_id: (key_[a-z2-7]{12})$", r.stdout, re.M).group(1)
    (secret,) = re.findall(r"^sk-[A-Za-z0-9_-]+$", r.stdout, re.M)
    line = [l for l in hub.hubctl("key", "list", "mysql-user").stdout.splitlines()
            if l.startswith(kid)][0]
    assert "active" in line and "sk-%s..." % secret[3:11] in line and secret[3:12] not in line
    out = _sql_out("SELECT HEX(hash), prefix FROM %s.api_keys WHERE id = '%s'" % (DB, kid))
    assert out.split() == [hashlib.sha256(secret.encode()).hexdigest().upper(), secret[3:11]]

    def check():
        return run([BIN["hubctl"], "--config", hub.conf, "key", "check"], check=False,
                   input=secret + "\n")
    assert check().returncode == 0
    hub.hubctl("key", "revoke", kid)
    r = check()
    assert r.returncode == 1 and "status: revoked" in r.stdout
    assert "already revoked" in hub.hubctl("key", "revoke", kid).stdout
    r = hub.hubctl("key", "revoke", "key_zzzzzzzzzzzz", check=False)
    assert r.returncode == 1


try:
    run_tests(globals())
finally:
    _sql("DROP DATABASE IF EXISTS %s" % DB)
