"""The whole money chain on loopback, for the billing tests: a hub (hub-tunnel, hub-billing,
hub-gateway) on SQLite or a fresh MariaDB database, one agent (agent run, its adapters and
agent-ledger) serving gpt-4o-mini from the C fake vendor, a priced model, and helpers to read
balances and ledgers back through hubctl and ledger-diff."""

import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_vendor"))
import fakevendor  # noqa: E402
from harness import BIN, Agent, Hub, run, tmpdir, wait_until  # noqa: E402

MODEL = "gpt-4o-mini"
# Prices per 1M tokens as hubctl takes them, and the same in micro-units per 1M tokens.
PRICE_IN, PRICE_OUT, PRICE_CACHED = "0.15", "0.60", "0.075"
MICRO_IN, MICRO_OUT, MICRO_CACHED = 150000, 600000, 75000
FEE_PPM = 100000


def mysql_url_for_new_db():
    """A fresh database on the MariaDB of tests/with-servers, or None without one."""
    url = os.environ.get("RELAYHUB_TEST_MYSQL_URL")
    if not url:
        return None
    u = urllib.parse.urlparse(url)
    db = "relayhub_bill_%d_%s" % (os.getpid(), secrets.token_hex(3))
    subprocess.run(["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port),
                    "-u", urllib.parse.unquote(u.username),
                    "-p" + urllib.parse.unquote(u.password or ""), "-e",
                    "CREATE DATABASE %s" % db], check=True, capture_output=True, timeout=30)
    return "mysql://%s:%s@%s:%d/%s" % (u.username, u.password or "", u.hostname, u.port, db)


def cost_micros(prompt, completion, cached=0):
    """lib/money's rule: the exact sum, rounded once, up, to the micro-unit."""
    total = (prompt - cached) * MICRO_IN + cached * MICRO_CACHED + completion * MICRO_OUT
    return -(-total // 1000000)


class Chain:
    def __init__(self, store="sqlite", sets=(), agent_sets=()):
        self.root = tmpdir()
        self.fv = fakevendor.FakeVendor(self.root).start()
        mysql_url = mysql_url_for_new_db() if store == "mysql" else None
        if store == "mysql" and not mysql_url:
            raise SystemExit("RELAYHUB_TEST_MYSQL_URL is not set: run under tests/with-servers")
        base = ["billing.unpriced=refuse", "billing.fee_ppm=%d" % FEE_PPM,
                "billing.agent_grace=2s", "billing.resend=500ms", "gateway.report_resend=300ms",
                "gateway.hold_timeout=20s"]
        self.hub = Hub(self.root, store=store, mysql_url=mysql_url, sets=base + list(sets))
        self.hub.start()
        self.hub.hubctl("price", "set", MODEL, "--input", PRICE_IN, "--output", PRICE_OUT,
                        "--cached-input", PRICE_CACHED)
        self.hub.start_gateway()
        self.agent = Agent(self.hub, "bill-agent", root=self.root)
        with open(os.path.join(self.agent.dir, "agent.conf"), "a") as f:
            f.write("\n[upstream]\nconnect_to = %s\nca_file = %s\n\n[instance.main]\n"
                    "vendor = openai\napi_key = %s\nmodels = %s\nmax_concurrency = 512\n"
                    % (self.fv.connect_to("api.openai.com"), self.fv.ca, fakevendor.OPENAI_KEY,
                       MODEL))
        self.agent_sets = list(agent_sets)
        self.hub.wait_registry(1)
        self.agent.start(sets=self.agent_sets)
        self.agent.wait_connected(timeout=20)
        self.ledger_db = os.path.join(self.agent.dir, "agent-ledger.db")

    def wait_routable(self, key):
        wait_until(lambda: MODEL in json.dumps(self.hub.gw("GET", "/v1/models", key=key)[1]),
                   timeout=20, what="model routable at the gateway")

    def user(self, name, amount=None):
        """A user with a key and (optionally) a top-up; returns the key."""
        key = self.hub.user_key(name)
        if amount is not None:
            self.hub.hubctl("user", "topup", name, amount)
        return key

    def balance(self, name):
        """(balance, held) in micro-units, from `hubctl balance`."""
        out = self.hub.hubctl("balance", name).stdout
        m = re.search(r"balance (-?\d+)\.(\d{6}) held (-?\d+)\.(\d{6})", out)
        assert m, out
        def micros(units, frac):
            v = abs(int(units)) * 1000000 + int(frac)
            return -v if units.startswith("-") else v
        return micros(m.group(1), m.group(2)), micros(m.group(3), m.group(4))

    def ledger_diff(self):
        r = run([BIN["ledger-diff"], "--hub", self.hub.conf, "--agent", self.ledger_db],
                check=False)
        return r.returncode, r.stdout + r.stderr

    def verify(self):
        r = self.hub.hubctl("ledger", "verify", self.agent.id, check=False)
        return r.returncode, r.stdout + r.stderr

    def ledger_rows(self):
        """The hub's rows of the agent's chain, as dicts (parsed from `hubctl ledger`: SEQ TIME
        REQ_ID ATT USER MODEL IN CACHED OUT EST COST FEE CREDIT HASH)."""
        out = self.hub.hubctl("ledger", self.agent.id).stdout
        rows = []
        for line in out.splitlines()[1:]:
            f = line.split()
            if len(f) != 14:
                continue
            rows.append({"seq": int(f[0]), "req_id": f[2], "attempt": int(f[3]),
                         "input": int(f[6]), "cached": int(f[7]), "output": int(f[8]),
                         "estimated": f[9] == "yes", "cost": f[10],
                         "amounts": [f[10], f[11], f[12]], "line": line})
        return rows

    def chat(self, key, stream=False, max_tokens=None, extra=None, timeout=60):
        """One chat completion; returns (status, body bytes, headers)."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
        if stream:
            body["stream"] = True
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if extra:
            body.update(extra)
        data = json.dumps(body).encode()
        c = http.client.HTTPConnection("127.0.0.1", self.hub.gateway_port, timeout=timeout)
        try:
            c.request("POST", "/v1/chat/completions", body=data,
                      headers={"Authorization": "Bearer " + key,
                               "Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()

    def settled(self, timeout=60):
        """Waits until the agent holds every row of the hub's chain, and they agree."""
        last = {}

        def agree():
            rc, out = self.ledger_diff()
            last["out"] = out
            return rc == 0
        wait_until(agree, timeout=timeout, interval=0.5,
                   what="the agent's ledger equal to the hub's: %s" % last.get("out", ""))
