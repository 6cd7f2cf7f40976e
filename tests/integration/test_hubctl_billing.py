"""hubctl's billing commands on SQLite and (under tests/with-servers) MySQL: user topup (queued
when hub-billing does not answer; applied and reported when it does, played here by a ROUTER on
the [bus] billing_router endpoint that receives the billing.poke and applies the top-up with
SQL), balance, price set/list (with the poke), ledger listing and ledger verify on chains written
with SQL and hashed in Python (ledger_chain.py), and every refusal's exit code."""

import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import zmq

import ledger_chain as lc
from harness import BIN, Agent, Hub, run_tests, unpack

MYSQL_URL = os.environ.get("RELAYHUB_TEST_MYSQL_URL")


class Side:
    """One hub (one backend) and raw SQL on its database, to play hub-billing's writes."""

    def __init__(self, backend):
        self.backend = backend
        if backend == "sqlite":
            self.hub = Hub()
            self.db = os.path.join(self.hub.dir, "hub.db")
            return
        u = urllib.parse.urlparse(MYSQL_URL)
        self._cli = ["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port),
                     "-u", urllib.parse.unquote(u.username),
                     "-p" + urllib.parse.unquote(u.password or ""), "-N", "-B"]
        self.dbname = "relayhub_it_bill_%d_%s" % (os.getpid(), secrets.token_hex(3))
        self._mysql(None, "CREATE DATABASE %s" % self.dbname)
        url = "mysql://%s:%s@%s:%d/%s" % (u.username, u.password or "", u.hostname, u.port,
                                          self.dbname)
        self.hub = Hub(store="mysql", mysql_url=url)

    def _mysql(self, db, stmt):
        args = self._cli + ([db] if db else []) + ["-e", stmt]
        return subprocess.run(args, check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def sql(self, stmt):
        """Runs statements in one transaction; returns the rows of the last one (as text)."""
        if self.backend == "sqlite":
            con = sqlite3.connect(self.db, timeout=10)
            try:
                con.executescript("BEGIN;\n" + stmt + "\nCOMMIT;")
            finally:
                con.close()
            return None
        return self._mysql(self.dbname, "START TRANSACTION;\n" + stmt + "\nCOMMIT;")

    def hubctl(self, *args, check=True):
        return self.hub.hubctl(*args, check=check)

    def user(self, name):
        out = self.hubctl("user", "add", name).stdout
        return int(re.search(r"^user_id: (\d+)$", out, re.M).group(1))


SIDES = [Side("sqlite")]
if MYSQL_URL:
    SIDES.append(Side("mysql"))
else:
    print("note: RELAYHUB_TEST_MYSQL_URL is not set: MySQL cases skipped (run under "
          "tests/with-servers)", file=sys.stderr)


class FakeBilling:
    """A ROUTER bound where hub-billing binds ([bus] billing_router), receiving hubctl's pokes."""

    def __init__(self, hub):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("ipc://" + os.path.join(hub.dir, "billing.ipc"))

    def poke(self, timeout=5.0):
        """The next envelope received (decoded), or None after timeout seconds."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        return unpack(frames[-1])

    def close(self):
        self.sock.close()
        self.ctx.term()


def _hubctl_bg(side, *args):
    return subprocess.Popen([BIN["hubctl"], "--config", side.hub.conf] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_balance_and_queued_topup():
    for side in SIDES:
        side.user("bob")
        r = side.hubctl("balance", "bob")
        assert r.stdout == "bob balance 0.000000 held 0.000000\n", (side.backend, r.stdout)
        t0 = time.monotonic()
        r = side.hubctl("user", "topup", "bob", "10.5")
        took = time.monotonic() - t0
        assert r.stdout == ("topup: bob +10.500000 queued (hub-billing is not running; it "
                            "applies it at start)\n"), (side.backend, r.stdout, r.stderr)
        assert 2.9 <= took < 10, took  # it waited its 3 s for hub-billing, not more
        side.hubctl("user", "topup", "bob", "0.000001")
        r = side.hubctl("balance", "bob")
        assert r.stdout == "bob balance 0.000000 held 0.000000 pending 10.500001\n", r.stdout


def test_topup_and_balance_refusals():
    for side in SIDES:
        side.user("dan")
        for amount in ("0", "0.000000", "-1", "1.0000001", "abc", "1e3", "", " 1", "+1",
                       "99999999999999999999"):
            r = side.hubctl("user", "topup", "dan", amount, check=False)
            assert r.returncode == 2, (side.backend, amount, r.stdout, r.stderr)
            assert "AMOUNT" in r.stderr, r.stderr
        r = side.hubctl("user", "topup", "nobody", "1", check=False)
        assert r.returncode == 1 and "nobody" in r.stderr, r
        for args in (("user", "topup", "dan"), ("user", "topup", "dan", "1", "2"),
                     ("balance",), ("balance", "dan", "bob")):
            r = side.hubctl(*args, check=False)
            assert r.returncode == 2, (args, r.stdout, r.stderr)
        r = side.hubctl("balance", "nobody", check=False)
        assert r.returncode == 1 and r.stdout == "" and "nobody" in r.stderr, r
        # Nothing refused was queued.
        assert side.hubctl("balance", "dan").stdout == "dan balance 0.000000 held 0.000000\n"


def test_topup_applied_by_billing():
    """hubctl pokes hub-billing and reports the balance as soon as the top-up is applied."""
    for side in SIDES:
        uid = side.user("carol")
        billing = FakeBilling(side.hub)
        try:
            t0 = time.monotonic()
            p = _hubctl_bg(side, "user", "topup", "carol", "2.25")
            env = billing.poke()
            assert env is not None, "no billing.poke"
            assert env["type"] == "billing.poke" and env["payload"] == {"what": "topups"}, env
            # What hub-billing does: the balance, then the top-up marked applied, in one go.
            side.sql("DELETE FROM balances WHERE user_id = %d;\n"
                     "INSERT INTO balances (user_id, balance) SELECT user_id, SUM(amount) "
                     "FROM topups WHERE user_id = %d GROUP BY user_id;\n"
                     "UPDATE topups SET applied_at = %d WHERE user_id = %d;"
                     % (uid, uid, int(time.time() * 1000), uid))
            out, err = p.communicate(timeout=10)
            took = time.monotonic() - t0
            assert p.returncode == 0, (out, err)
            assert out == "topup: carol +2.250000 balance 2.250000\n", (side.backend, out, err)
            assert took < 2.5, took
        finally:
            billing.close()
        # An active hold shows as held.
        side.sql("INSERT INTO holds (req_id, user_id, amount, created_at, expires_at, state) "
                 "VALUES (X'%s', %d, 250000, %d, %d, 0);"
                 % ("ab" * 16, uid, int(time.time() * 1000), int(time.time() * 1000) + 3600000))
        r = side.hubctl("balance", "carol")
        assert r.stdout == "carol balance 2.250000 held 0.250000\n", r.stdout


def _price_rows(text):
    """The rows of a price table: (model, iso, ms, input, cached, output)."""
    lines = text.splitlines()
    assert lines[0].split() == ["MODEL", "EFFECTIVE_FROM", "FROM_MS", "INPUT/1M",
                                "CACHED_INPUT/1M", "OUTPUT/1M"], lines
    return [tuple(l.split()) for l in lines[1:]]


def test_prices():
    for side in SIDES:
        billing = FakeBilling(side.hub)
        try:
            r = side.hubctl("price", "set", "gpt-4o-mini", "--input", "0.15", "--output", "0.6",
                            "--from", "1764115200000")
            assert _price_rows(r.stdout) == [("gpt-4o-mini", "2025-11-26T00:00:00.000Z",
                                              "1764115200000", "0.150000", "0.150000",
                                              "0.600000")], r.stdout
            env = billing.poke()
            assert env and env["type"] == "billing.poke" and env["payload"] == {"what": "prices"}
        finally:
            billing.close()
        side.hubctl("price", "set", "gpt-4o-mini", "--input", "0.2", "--output", "0.8",
                    "--cached-input", "0.075", "--from", "1764201600123")
        before = int(time.time() * 1000)
        r = side.hubctl("price", "set", "gpt-4o", "--input=2.5", "--output=10", "--from", "now")
        after = int(time.time() * 1000)
        (row,) = _price_rows(r.stdout)
        assert before <= int(row[2]) <= after and row[3:] == ("2.500000", "2.500000",
                                                             "10.000000"), row
        side.hubctl("price", "set", "free-model", "--input", "0", "--output", "0")
        rows = _price_rows(side.hubctl("price", "list").stdout)
        assert [x[0] for x in rows] == ["free-model", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
        assert rows[3] == ("gpt-4o-mini", "2025-11-27T00:00:00.123Z", "1764201600123",
                           "0.200000", "0.075000", "0.800000"), rows
        assert rows[0][3:] == ("0.000000", "0.000000", "0.000000"), rows
        # A version is never changed: the same (model, from) again is refused.
        r = side.hubctl("price", "set", "gpt-4o-mini", "--input", "9", "--output", "9",
                        "--from", "1764115200000", check=False)
        assert r.returncode == 1 and "already" in r.stderr, r
        for args in (("price", "set", "m", "--input", "-1", "--output", "1"),
                     ("price", "set", "m", "--input", "abc", "--output", "1"),
                     ("price", "set", "m", "--input", "1.0000001", "--output", "1"),
                     ("price", "set", "m", "--input", "1", "--output", "1",
                      "--cached-input", "x"),
                     ("price", "set", "m", "--input", "1"),
                     ("price", "set", "m", "--output", "1"),
                     ("price", "set", "--input", "1", "--output", "1"),
                     ("price", "set", "m", "--input", "1", "--output", "1", "--from", "soon"),
                     ("price", "set", "m", "--input", "1", "--output", "1", "--from", "-5"),
                     ("price", "set", "m\x01", "--input", "1", "--output", "1"),
                     ("price", "set", "x" * 257, "--input", "1", "--output", "1"),
                     ("price", "list", "extra"), ("price",), ("price", "frob")):
            r = side.hubctl(*args, check=False)
            assert r.returncode == 2, (side.backend, args, r.stdout, r.stderr)
        assert len(_price_rows(side.hubctl("price", "list").stdout)) == 4


def _ledger_lines(text):
    lines = text.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "REQ_ID", "ATT", "USER", "MODEL", "IN", "CACHED",
                                "OUT", "EST", "COST", "FEE", "CREDIT", "HASH"], lines
    return [l.split() for l in lines[1:]]


def test_ledger_and_verify():
    for side in SIDES:
        a = Agent(side.hub, "earner")
        idle = Agent(side.hub, "idle")
        rows = lc.chain(a.id, 7)
        side.sql(lc.hub_insert_sql(rows + lc.chain(idle.id[::-1], 2)))

        got = _ledger_lines(side.hubctl("ledger", a.id).stdout)
        assert [int(x[0]) for x in got] == [1, 2, 3, 4, 5, 6, 7], got
        r = rows[2]
        assert got[2] == [
            "3", "2026-11-18T11:06:43.000Z", r["req_id"].hex(), str(r["attempt"]),
            str(r["user_id"]), r["model"], str(r["input_tokens"]), str(r["cached_tokens"]),
            str(r["output_tokens"]), "no", "0.%06d" % r["cost"], "0.%06d" % r["fee"],
            "0.%06d" % r["credit"], r["hash"].hex()[:16]], got[2]
        assert got[6][9] == "yes" and rows[6]["estimated"], got[6]  # seq 7: an estimate
        got = _ledger_lines(side.hubctl("ledger", a.id, "--from", "4").stdout)
        assert [x[0] for x in got] == ["4", "5", "6", "7"], got
        assert _ledger_lines(side.hubctl("ledger", a.id, "--from", "99").stdout) == []
        assert _ledger_lines(side.hubctl("ledger", idle.id).stdout) == []

        # The Python-hashed chain verifies in C: the encoding is the same on both sides.
        r = side.hubctl("ledger", "verify", a.id)
        assert r.stdout == "ledger verify %s: 7 rows, ok\n" % a.id, r.stdout
        r = side.hubctl("ledger", "verify", idle.id)
        assert r.stdout == "ledger verify %s: 0 rows, ok\n" % idle.id, r.stdout

        # A token count changed in the database.
        side.sql("UPDATE ledger SET output_tokens = output_tokens + 1 WHERE agent_id = '%s' "
                 "AND seq = 3;" % a.id)
        r = side.hubctl("ledger", "verify", a.id, check=False)
        assert r.returncode == 1, r
        assert r.stdout.startswith("ledger verify %s: seq 3: bad_hash: " % a.id), r.stdout
        side.sql("UPDATE ledger SET output_tokens = output_tokens - 1 WHERE agent_id = '%s' "
                 "AND seq = 3;" % a.id)
        assert side.hubctl("ledger", "verify", a.id).returncode == 0
        # A micro-unit moved from the provider's credit to the hub's fee (the sum still holds).
        side.sql("UPDATE ledger SET fee = fee + 1, credit = credit - 1 WHERE "
                 "agent_id = '%s' AND seq = 4;" % a.id)
        r = side.hubctl("ledger", "verify", a.id, check=False)
        assert r.returncode == 1 and "seq 4: bad_hash" in r.stdout, r.stdout
        side.sql("UPDATE ledger SET fee = fee - 1, credit = credit + 1 WHERE agent_id = '%s' "
                 "AND seq = 4;" % a.id)
        # The last row dropped: only the chain's head (the agent's account) shows it.
        side.sql("DELETE FROM ledger WHERE agent_id = '%s' AND seq = 7;" % a.id)
        r = side.hubctl("ledger", "verify", a.id, check=False)
        assert r.returncode == 1 and r.stdout == (
            "ledger verify %s: seq 7: bad_head: the chain's head is seq 7, but its rows end at "
            "seq 6\n" % a.id), r.stdout
        side.sql(lc.hub_insert_sql([rows[6]]))
        assert side.hubctl("ledger", "verify", a.id).returncode == 0
        # A row dropped from the middle.
        side.sql("DELETE FROM ledger WHERE agent_id = '%s' AND seq = 2;" % a.id)
        r = side.hubctl("ledger", "verify", a.id, check=False)
        assert r.returncode == 1 and r.stdout.startswith(
            "ledger verify %s: seq 3: bad_seq: " % a.id), r.stdout

        for args in (("ledger",), ("ledger", "verify"), ("ledger", a.id, "extra"),
                     ("ledger", "verify", a.id, "extra"), ("ledger", a.id, "--from", "0"),
                     ("ledger", a.id, "--from", "x"), ("ledger", "verify", a.id, "--from", "2"),
                     ("ledger", "x" * 65)):
            r = side.hubctl(*args, check=False)
            assert r.returncode == 2, (side.backend, args, r.stdout, r.stderr)
        for args in (("ledger", "0" * 32), ("ledger", "verify", "0" * 32)):
            r = side.hubctl(*args, check=False)
            assert r.returncode == 1 and "no agent" in r.stderr, (args, r.stdout, r.stderr)


def test_help_lists_billing_commands():
    out = SIDES[0].hubctl("--help").stdout
    for cmd in ("user topup NAME AMOUNT", "balance NAME", "price set MODEL", "price list",
                "ledger AGENT_ID [--from SEQ]", "ledger verify AGENT_ID"):
        assert cmd in out, cmd


if __name__ == "__main__":
    run_tests(globals())
