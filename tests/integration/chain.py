"""The whole money chain on loopback, for the billing tests: a hub (hub-tunnel, hub-billing,
hub-gateway) on SQLite or a fresh MariaDB database, one agent (agent run, its adapters and
agent-ledger) serving gpt-4o-mini from the C fake vendor (and, with clouds=True, Anthropic,
Gemini, Vertex AI and Bedrock models from fake-clouds), priced models, and helpers to read
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
import fakeclouds  # noqa: E402
import fakevendor  # noqa: E402
from harness import BIN, Agent, Hub, run, tmpdir, wait_until  # noqa: E402

MODEL = "gpt-4o-mini"       # served by an OpenAI instance
AZURE_MODEL = "gpt-4o"      # served by an Azure OpenAI instance (deployment "prod-4o")
EMBED_MODEL = "text-embedding-3-small"
AZURE_HOST = "myres.openai.azure.com"
# fake-clouds models (clouds=True): each served by one instance of its vendor.
CLAUDE = "claude-sonnet-4-5"            # anthropic (openai_compatible: also OpenAI chat)
GEMINI = "gemini-2.5-flash"             # gemini (AI Studio)
VERTEX = "gemini-2.5-pro"               # vertex (us-central1)
BEDROCK = "anthropic.claude-3-5-haiku-20241022-v1:0"  # bedrock (us-east-1)
BEDROCK_TINY = "bedrock-tiny"           # bedrock, renamed to BEDROCK, max_body_bytes 2048
BEDROCK_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEFAKEsessiontoken0123456789abcdef/+="
AZURE_V1 = "gpt-4o-v1"                  # azure with api_version = v1 (deployment "prod-4o")
CLOUD_MODELS = (CLAUDE, GEMINI, VERTEX, BEDROCK, BEDROCK_TINY, AZURE_V1)
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
    def __init__(self, store="sqlite", sets=(), agent_sets=(), agents=1, clouds=False):
        self.root = tmpdir()
        self.fv = fakevendor.FakeVendor(self.root).start()
        # Bedrock with session credentials (as from STS): the token is signed too.
        self.fc = fakeclouds.FakeClouds(os.path.join(self.root, "clouds"),
                                        bedrock_session_token=BEDROCK_SESSION_TOKEN).start() \
            if clouds else None
        self.ca = self.fv.ca
        if self.fc:
            # One CA file for the agent (curl's CAINFO takes a bundle): both fakes' CAs.
            self.ca = os.path.join(self.root, "ca-bundle.pem")
            with open(self.ca, "w") as out:
                for path in (self.fv.ca, self.fc.ca):
                    with open(path) as f:
                        out.write(f.read())
        mysql_url = mysql_url_for_new_db() if store == "mysql" else None
        if store == "mysql" and not mysql_url:
            raise SystemExit("RELAYHUB_TEST_MYSQL_URL is not set: run under tests/with-servers")
        base = ["billing.unpriced=refuse", "billing.fee_ppm=%d" % FEE_PPM,
                "billing.agent_grace=2s", "billing.resend=500ms", "gateway.report_resend=300ms",
                "gateway.hold_timeout=20s"]
        self.hub = Hub(self.root, store=store, mysql_url=mysql_url, sets=base + list(sets))
        self.hub.start()
        for model in (MODEL, AZURE_MODEL, EMBED_MODEL) + (CLOUD_MODELS if self.fc else ()):
            self.hub.hubctl("price", "set", model, "--input", PRICE_IN, "--output", PRICE_OUT,
                            "--cached-input", PRICE_CACHED)
        self.hub.start_gateway()
        self.agent_sets = list(agent_sets)
        self.agents = [self._agent("bill-agent" if i == 0 else "bill-agent-%d" % (i + 1))
                       for i in range(agents)]
        self.agent = self.agents[0]
        self.ledger_db = os.path.join(self.agent.dir, "agent-ledger.db")
        self.hub.wait_registry(agents)
        for a in self.agents:
            a.start(sets=self.agent_sets)
        for a in self.agents:
            a.wait_connected(timeout=20)

    def _agent(self, name):
        """An agent serving MODEL and EMBED_MODEL from the fake's OpenAI side and AZURE_MODEL
        from its Azure side."""
        a = Agent(self.hub, name, root=self.root)
        clouds = ""
        if self.fc:
            fc = self.fc
            clouds = ("," + fc.connect_to_list(),
                      "\n[instance.claude]\nvendor = anthropic\napi_key = %s\nmodels = %s\n"
                      "openai_compatible = true\n\n"
                      "[instance.claude-b]\nvendor = anthropic\napi_key = %s\nmodels = %s\n\n"
                      "[instance.studio]\nvendor = gemini\napi_key = %s\nmodels = %s\n\n"
                      "[instance.vertex]\nvendor = vertex\nproject = %s\nregion = us-central1\n"
                      "service_account_file = %s\nmodels = %s\n\n"
                      "[instance.bedrock]\nvendor = bedrock\nregion = us-east-1\n"
                      "access_key_id = %s\nsecret_access_key = %s\nsession_token = %s\n"
                      "models = %s\n\n"
                      "[instance.bedrock-tiny]\nvendor = bedrock\nregion = us-east-1\n"
                      "access_key_id = %s\nsecret_access_key = %s\nsession_token = %s\n"
                      "models = %s=%s\n"
                      "max_body_bytes = 2048\n\n"
                      "[instance.az-v1]\nvendor = azure\nresource = %s\napi_key = %s\n"
                      "api_version = v1\nmodels = %s=prod-4o\n"
                      % (fc.anthropic_key, CLAUDE, fc.anthropic_key, CLAUDE, fc.gemini_key,
                         GEMINI, fc.vertex_project,
                         fc.service_account_file, VERTEX, fc.bedrock_access_key_id,
                         fc.bedrock_secret_access_key, BEDROCK_SESSION_TOKEN, BEDROCK,
                         fc.bedrock_access_key_id, fc.bedrock_secret_access_key,
                         BEDROCK_SESSION_TOKEN, BEDROCK_TINY, BEDROCK,
                         AZURE_HOST.split(".")[0], fakevendor.AZURE_KEY, AZURE_V1))
        with open(os.path.join(a.dir, "agent.conf"), "a") as f:
            f.write("\n[upstream]\nconnect_to = %s,%s%s\nca_file = %s\n\n"
                    "[instance.main]\nvendor = openai\napi_key = %s\nmodels = %s, %s\n"
                    "max_concurrency = 512\n\n"
                    "[instance.az]\nvendor = azure\nresource = %s\napi_key = %s\n"
                    "models = %s=prod-4o\nmax_concurrency = 512\n"
                    % (self.fv.connect_to("api.openai.com"), self.fv.connect_to(AZURE_HOST),
                       clouds[0] if clouds else "", self.ca, fakevendor.OPENAI_KEY, MODEL,
                       EMBED_MODEL, AZURE_HOST.split(".")[0], fakevendor.AZURE_KEY,
                       AZURE_MODEL))
            if clouds:
                f.write("\n" + clouds[1])
        return a

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

    def ledger_diff(self, agent=None):
        db = os.path.join((agent or self.agent).dir, "agent-ledger.db")
        r = run([BIN["ledger-diff"], "--hub", self.hub.conf, "--agent", db], check=False)
        return r.returncode, r.stdout + r.stderr

    def verify(self):
        """`hubctl ledger verify` of every agent's chain: (0, output) when all verify."""
        rc, out = 0, ""
        for a in self.agents:
            r = self.hub.hubctl("ledger", "verify", a.id, check=False)
            rc, out = rc or r.returncode, out + r.stdout + r.stderr
        return rc, out

    def ledger_rows(self, agent=None):
        """The hub's rows of an agent's chain (the first agent's by default), as dicts (parsed
        from `hubctl ledger`: SEQ TIME REQ_ID ATT USER MODEL IN CACHED OUT EST COST FEE CREDIT
        HASH)."""
        out = self.hub.hubctl("ledger", (agent or self.agent).id).stdout
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

    def row(self, req_id):
        """(agent, row) of a request, searched in every agent's chain; (None, None) if none."""
        for a in self.agents:
            for r in self.ledger_rows(a):
                if r["req_id"] == req_id:
                    return a, r
        return None, None

    def all_rows(self):
        return [r for a in self.agents for r in self.ledger_rows(a)]

    def totals(self, rows):
        """(cost, fee, credit) summed over rows, in micro-units."""
        def micros(t):
            u, f = t.split(".")
            v = abs(int(u)) * 1000000 + int(f)
            return -v if u.startswith("-") else v
        return tuple(sum(micros(r["amounts"][i]) for r in rows) for i in range(3))

    def open_stream(self, key, events):
        """Starts a streamed chat and reads until `events` SSE events arrived; returns
        (connection, response, req_id) with the stream still open."""
        c = http.client.HTTPConnection("127.0.0.1", self.hub.gateway_port, timeout=30)
        data = json.dumps({"model": MODEL, "stream": True, "max_tokens": 1000,
                           "messages": [{"role": "user", "content": "hello there"}]}).encode()
        c.request("POST", "/v1/chat/completions", body=data,
                  headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.status
        got = b""
        while got.count(b"data:") < events:
            piece = r.read1(4096)
            assert piece, got
            got += piece
        return c, r, r.getheader("x-request-id")

    def chat(self, key, stream=False, max_tokens=None, extra=None, timeout=60,
             path="/v1/chat/completions", body=None):
        """One request (a chat completion unless body and path say otherwise); returns
        (status, body bytes, headers)."""
        if body is None:
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
            c.request("POST", path, body=data,
                      headers={"Authorization": "Bearer " + key,
                               "Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()

    def settled(self, timeout=60):
        """Waits until every agent holds every row of the hub's chain, and they agree."""
        last = {}

        def agree():
            for a in self.agents:
                rc, out = self.ledger_diff(a)
                last["out"] = out
                if rc != 0:
                    return False
            return True
        wait_until(agree, timeout=timeout, interval=0.5,
                   what="the agent's ledger equal to the hub's: %s" % last.get("out", ""))
