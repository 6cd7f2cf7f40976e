"""ledger-diff: a hub made by `hubctl init` whose ledger rows are written with SQL (as
hub-billing would write them, hashed in Python by ledger_chain.py), against agent-ledger.db files
made with sqlite3: identical chains, a changed amount, a missing row on either side, a changed
string, an unreadable value, a broken chain, paging over a long chain, and usage errors."""

import os
import re

import ledger_chain as lc
from harness import BIN, BUILD, Hub, run, run_tests, tmpdir

LEDGER_DIFF = BIN.get("ledger-diff") or os.path.join(BUILD, "services", "hubctl", "ledger-diff")
AID = "3c8e0f7a9b1d2e4f5a6b7c8d9e0f1a2b"
OTHER = "ffeeddccbbaa99887766554433221100"

hub = Hub()
HUB_DB = os.path.join(hub.dir, "hub.db")
work = tmpdir()
_n = [0]


def _fresh(hub_rows, agent_rows, **kw):
    """Puts hub_rows in the hub (replacing every ledger row) and agent_rows in a new agent
    database; returns its path."""
    lc.hub_sqlite_exec(HUB_DB, "DELETE FROM ledger;\nDELETE FROM agent_accounts;\n" +
                       lc.hub_insert_sql(hub_rows))
    _n[0] += 1
    return lc.agent_db(os.path.join(work, "agent-ledger-%d.db" % _n[0]), agent_rows, **kw)


def _diff(agent_path, *extra):
    """Runs ledger-diff; returns (exit code, stdout lines)."""
    r = run([LEDGER_DIFF, "--hub", hub.conf, "--agent", agent_path] + list(extra), check=False)
    return r.returncode, r.stdout.splitlines(), r.stderr


def test_identical_chains():
    rows = lc.chain(AID, 20)
    # Rows of another agent in the hub are not this agent's business.
    path = _fresh(rows + lc.chain(OTHER, 3), rows)
    rc, out, err = _diff(path)
    assert rc == 0 and out == ["ledger-diff: 20 rows, 0 differences"], (rc, out, err)
    # The same through --config, the common option of every relayhub program.
    r = run([LEDGER_DIFF, "--config", hub.conf, "--agent", path], check=False)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == out[-1], r


def test_changed_amount():
    rows = lc.chain(AID, 20)
    path = _fresh(rows, rows)
    # The agent's copy of row 7 says the user paid one micro-unit more (credit to match).
    lc.agent_exec(path, "UPDATE ledger SET cost = cost + 1, credit = credit + 1 WHERE seq = 7")
    rc, out, _ = _diff(path)
    r7 = rows[6]
    assert rc == 1, out
    assert out == [
        "seq 7: cost hub=0.%06d agent=0.%06d" % (r7["cost"], r7["cost"] + 1),
        "seq 7: credit hub=0.%06d agent=0.%06d" % (r7["credit"], r7["credit"] + 1),
        "seq 7: agent chain bad_hash",
        "ledger-diff: 20 rows, 3 differences",
    ], out


def test_each_break_reported_once():
    """After a break, each side's check goes on from the row as it stands: a second, separate
    break is reported too, and rows after a break that follow it are not reported again."""
    rows = lc.chain(AID, 12)
    path = _fresh(rows, rows)
    lc.agent_exec(path, "UPDATE ledger SET input_tokens = input_tokens + 1 WHERE seq IN (3, 9)")
    rc, out, _ = _diff(path)
    assert rc == 1 and out == [
        "seq 3: input_tokens hub=%d agent=%d" % (rows[2]["input_tokens"],
                                                 rows[2]["input_tokens"] + 1),
        "seq 3: agent chain bad_hash",
        "seq 9: input_tokens hub=%d agent=%d" % (rows[8]["input_tokens"],
                                                 rows[8]["input_tokens"] + 1),
        "seq 9: agent chain bad_hash",
        "ledger-diff: 12 rows, 4 differences"], out


def test_missing_row_on_agent():
    rows = lc.chain(AID, 20)
    path = _fresh(rows, rows[:11] + rows[12:])
    rc, out, _ = _diff(path)
    assert rc == 1
    assert out == ["seq 12: missing on agent", "seq 13: agent chain bad_seq",
                   "ledger-diff: 20 rows, 2 differences"], out
    # The last row lost: only the count shows it (a shorter chain is still a chain).
    path = _fresh(rows, rows[:19])
    rc, out, _ = _diff(path)
    assert rc == 1 and out == ["seq 20: missing on agent",
                               "ledger-diff: 20 rows, 1 differences"], out


def test_extra_rows():
    rows = lc.chain(AID, 21)
    # The agent has a row the hub does not.
    path = _fresh(rows[:20], rows)
    rc, out, _ = _diff(path)
    assert rc == 1 and out == ["seq 21: missing on hub", "ledger-diff: 21 rows, 1 differences"], out
    # The hub has rows the agent does not: its chain then starts at seq 2, which is no start.
    path = _fresh(rows, rows[1:20])
    rc, out, _ = _diff(path)
    assert rc == 1
    assert out == ["seq 1: missing on agent", "seq 2: agent chain bad_seq",
                   "seq 21: missing on agent", "ledger-diff: 21 rows, 3 differences"], out


def test_changed_strings_and_ids():
    rows = lc.chain(AID, 5)
    path = _fresh(rows, rows)
    lc.agent_exec(path, "UPDATE ledger SET model = 'gpt-4o\n\"x\"', req_id = ?, attempt = 3 "
                  "WHERE seq = 2", (bytes(range(16)),))
    rc, out, _ = _diff(path)
    r2 = rows[1]
    assert rc == 1
    assert out == [
        "seq 2: req_id hub=%s agent=000102030405060708090a0b0c0d0e0f" % r2["req_id"].hex(),
        "seq 2: attempt hub=%d agent=3" % r2["attempt"],
        "seq 2: model hub=\"%s\" agent=\"gpt-4o\\x0a\\\"x\\\"\"" % r2["model"],
        "seq 2: agent chain bad_hash",
        "ledger-diff: 5 rows, 4 differences",
    ], out


def test_forged_hub_row_is_seen_twice():
    """A hub row changed and re-hashed: its fields differ from the agent's copy and the hub's
    own chain breaks at the next row."""
    rows = lc.chain(AID, 6)
    forged = [dict(r) for r in rows]
    forged[2] = lc.row(AID, 3, rows[1]["hash"], output_tokens=rows[2]["output_tokens"] + 100)
    path = _fresh(forged, rows)
    rc, out, _ = _diff(path)
    assert rc == 1
    assert out[0] == "seq 3: output_tokens hub=%d agent=%d" % (
        forged[2]["output_tokens"], rows[2]["output_tokens"]), out
    assert out[1] == "seq 3: hash hub=%s agent=%s" % (forged[2]["hash"].hex(),
                                                      rows[2]["hash"].hex()), out
    assert out[2:] == ["seq 4: hub chain bad_prev", "ledger-diff: 6 rows, 3 differences"], out


def test_unreadable_agent_values():
    rows = lc.chain(AID, 3)
    path = _fresh(rows, rows)
    lc.agent_exec(path, "UPDATE ledger SET hash = ?, estimated = 'yes' WHERE seq = 3",
                  (b"\x01" * 31,))
    rc, out, _ = _diff(path)
    assert rc == 1
    assert "seq 3: estimated unreadable on agent (not an integer)" in out, out
    assert "seq 3: hash unreadable on agent (not a blob of 32 bytes)" in out, out
    assert out[-1].startswith("ledger-diff: 3 rows, ") and out[-1] != \
        "ledger-diff: 3 rows, 0 differences", out


def test_agent_id_from_rows_without_meta():
    rows = lc.chain(AID, 4)
    path = _fresh(rows, rows, meta=False)
    rc, out, _ = _diff(path)
    assert rc == 0 and out == ["ledger-diff: 4 rows, 0 differences"], out
    # meta names the agent even when it has no rows yet: every hub row is missing on it.
    path = _fresh(rows, [], agent_id=AID)
    rc, out, _ = _diff(path)
    assert rc == 1 and out[-1] == "ledger-diff: 4 rows, 4 differences", out
    assert out[0] == "seq 1: missing on agent", out


def test_long_chain_pages():
    """2,500 rows: more than one page of each side; one difference deep inside."""
    rows = lc.chain(AID, 2500)
    path = _fresh(rows, rows)
    rc, out, _ = _diff(path)
    assert rc == 0 and out == ["ledger-diff: 2500 rows, 0 differences"], out
    lc.agent_exec(path, "UPDATE ledger SET fee_ppm = 99999 WHERE seq = 2049")
    rc, out, _ = _diff(path)
    assert rc == 1 and out == ["seq 2049: fee_ppm hub=100000 agent=99999",
                               "seq 2049: agent chain bad_hash",
                               "ledger-diff: 2500 rows, 2 differences"], out


def test_usage_and_io_errors():
    rows = lc.chain(AID, 2)
    path = _fresh(rows, rows)
    for args in ([], ["--hub", hub.conf], ["--agent", path], ["--hub", hub.conf, "--agent", path,
                                                              "extra-word"],
                 ["--bogus", "x"]):
        r = run([LEDGER_DIFF] + args, check=False)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "ledger-diff:" not in r.stdout, r.stdout
    r = run([LEDGER_DIFF, "--help"])
    assert "--hub" in r.stdout and "--agent" in r.stdout
    rc, out, err = _diff(os.path.join(work, "no-such.db"))
    assert rc == 2 and out == [] and "no-such.db" in err, (rc, out, err)
    r = run([LEDGER_DIFF, "--hub", os.path.join(work, "no-hub.conf"), "--agent", path],
            check=False)
    assert r.returncode == 2 and r.stdout == "", r
    # An agent database that says nothing about whose it is.
    empty = _fresh(rows, [], meta=False)
    rc, out, err = _diff(empty)
    assert rc == 2 and "agent" in err, (rc, out, err)
    # A file that is not an agent database.
    junk = os.path.join(work, "junk.db")
    with open(junk, "wb") as f:
        f.write(b"not a database" * 100)
    rc, out, err = _diff(junk)
    assert rc == 2 and out == [], (rc, out, err)


def test_agent_database_left_untouched():
    rows = lc.chain(AID, 3)
    path = _fresh(rows, rows)
    before = open(path, "rb").read()
    mtime = os.stat(path).st_mtime_ns
    assert _diff(path)[0] == 0
    assert open(path, "rb").read() == before and os.stat(path).st_mtime_ns == mtime


if __name__ == "__main__":
    run_tests(globals())
