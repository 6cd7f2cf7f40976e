"""Test helpers for fake-clouds (fake_clouds.py: Anthropic, Gemini, Vertex AI + Google OAuth,
Bedrock runtime): its credentials, certificates and process, and its control API. For tests in
tests/integration (or e2e):

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "fake_vendor"))
    import fakeclouds
    fc = fakeclouds.FakeClouds().start()
    fc.connect_to("api.anthropic.com")   # "api.anthropic.com:443:127.0.0.1:PORT"
    fc.connect_tos()                     # one entry for every host in fakeclouds.HOSTS
    fc.ca, fc.anthropic_key, fc.gemini_key, fc.service_account_file, fc.bedrock_access_key_id
    fc.stats(); fc.last(); fc.reset(); fc.config(status=429, count=1, vendor="bedrock")

Processes are started through harness.spawn, so they die with the test script.
"""

import json
import os
import secrets
import sys
import time
import urllib.parse

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "integration"))
sys.path.insert(0, _HERE)
import harness  # noqa: E402
import fakevendor  # noqa: E402
import fake_clouds  # noqa: E402

SCRIPT = os.path.join(_HERE, "fake_clouds.py")
PYTHON = "/usr/bin/python3"

ANTHROPIC_KEY = "sk-ant-api03-fake-anthropic-0123456789abcdef"
GEMINI_KEY = "AIzaSyFAKEgemini-0123456789abcdefghijk"
VERTEX_PROJECT = "relayhub-fake-project"
SA_EMAIL = "relayhub-agent@relayhub-fake-project.iam.gserviceaccount.com"
BEDROCK_ACCESS_KEY_ID = "AKIAFAKE0123456789AB"
BEDROCK_SECRET_ACCESS_KEY = "fakeSecretKey/0123456789+abcdefghijklmnop"
BEDROCK_REGIONS = ("us-east-1", "us-west-2", "eu-central-1")
VERTEX_REGIONS = ("us-central1", "europe-west4")

# Names on the server certificate (*.googleapis.com covers oauth2 and REGION-aiplatform).
CERT_NAMES = ("api.anthropic.com", "generativelanguage.googleapis.com", "*.googleapis.com") + \
    tuple("bedrock-runtime.%s.amazonaws.com" % r for r in BEDROCK_REGIONS)

# Every host name a test may point at the fake.
HOSTS = ("api.anthropic.com", "generativelanguage.googleapis.com", "oauth2.googleapis.com",
         "aiplatform.googleapis.com") + \
    tuple("%s-aiplatform.googleapis.com" % r for r in VERTEX_REGIONS) + \
    tuple("bedrock-runtime.%s.amazonaws.com" % r for r in BEDROCK_REGIONS)


def make_service_account(path, project=VERTEX_PROJECT, client_email=SA_EMAIL):
    """A fresh RSA-2048 service account; writes its JSON (0600) to path and returns the dict."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    sa = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(100000000000000000000 + secrets.randbelow(10 ** 20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": fake_clouds.GOOGLE_TOKEN_URI,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" +
                                urllib.parse.quote(client_email),
        "universe_domain": "googleapis.com",
    }
    write_private(path, json.dumps(sa, indent=2) + "\n")
    return sa


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)




class FakeClouds(fakevendor.LoopbackFake):
    """One fake-clouds process in a temporary folder, with its own CA, service account and
    credentials (written to state/credentials.json, 0600: secrets never go on its command
    line)."""

    NAME = "fake-clouds"
    DEFAULT_HOST = "api.anthropic.com"

    def __init__(self, root=None, anthropic_key=ANTHROPIC_KEY, gemini_key=GEMINI_KEY,
                 vertex_project=VERTEX_PROJECT, sa_email=SA_EMAIL,
                 bedrock_access_key_id=BEDROCK_ACCESS_KEY_ID,
                 bedrock_secret_access_key=BEDROCK_SECRET_ACCESS_KEY,
                 bedrock_session_token=None, log_level="info", certs=None):
        self.dir = os.path.join(root or harness.tmpdir("relayhub-fc-"), "fake-clouds")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.certs = certs or fakevendor.make_certs(os.path.join(self.dir, "tls"),
                                                    names=CERT_NAMES)
        self.ca = self.certs["ca"]
        self.anthropic_key = anthropic_key
        self.gemini_key = gemini_key
        self.vertex_project = vertex_project
        self.bedrock_access_key_id = bedrock_access_key_id
        self.bedrock_secret_access_key = bedrock_secret_access_key
        self.bedrock_session_token = bedrock_session_token
        self.service_account_file = os.path.join(self.dir, "service-account.json")
        self.service_account = make_service_account(self.service_account_file, vertex_project,
                                                    sa_email)
        self.sa_email = sa_email
        self.state_dir = os.path.join(self.dir, "state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.credentials_file = os.path.join(self.state_dir, "credentials.json")
        self.write_credentials()
        self.log_level = log_level
        self.port = harness.free_port()
        self.control_port = harness.free_port()
        self.log = os.path.join(self.dir, "fake-clouds.log")
        self.proc = None

    def write_credentials(self):
        sa = self.service_account
        creds = {
            "anthropic_key": self.anthropic_key,
            "gemini_key": self.gemini_key,
            "vertex_project": self.vertex_project,
            "service_accounts": [{
                "client_email": sa["client_email"], "private_key_id": sa["private_key_id"],
                "public_key": fake_clouds.public_key_of(sa["private_key"])}],
            "bedrock": {"access_key_id": self.bedrock_access_key_id,
                        "secret_access_key": self.bedrock_secret_access_key,
                        "session_token": self.bedrock_session_token},
        }
        write_private(self.credentials_file, json.dumps(creds, indent=2) + "\n")

    def args(self):
        return [PYTHON, SCRIPT, "--listen", "127.0.0.1:%d" % self.port,
                "--cert", self.certs["cert"], "--key", self.certs["key"],
                "--control", "127.0.0.1:%d" % self.control_port,
                "--state-dir", self.state_dir, "--log-level", self.log_level]

    # ---- reaching it ----
    def connect_tos(self, hosts=HOSTS):
        """One CONNECT_TO entry per host (every host name the fake answers, by default)."""
        return [self.connect_to(h) for h in hosts]

    def connect_to_list(self, hosts=HOSTS):
        """The comma-separated value for agent.conf's upstream.connect_to."""
        return ",".join(self.connect_tos(hosts))

    def call(self, host, method, path, body=None, headers=None, timeout=15):
        """One request on a fresh connection: (status, lower-case header dict, raw body)."""
        c = self.https(host, timeout)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        raw = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, raw

    # ---- control port ----
    def last(self, vendor=None):
        return self.control("GET", "/_fake/last" + ("?vendor=" + vendor if vendor else ""))[1]

    def requests(self, vendor=None):
        q = "?vendor=" + vendor if vendor else ""
        return self.control("GET", "/_fake/requests" + q)[1]["requests"]

    def reset(self, tokens=False):
        """Counters, records and switches back to the start (issued access tokens stay valid
        unless tokens=True)."""
        return self.control("POST", "/_fake/reset", {"tokens": True} if tokens else None)[1]

    def config(self, **switches):
        """Server-wide switches, e.g. config(status=429, retry_after=2, count=1,
        vendor="anthropic"). config() clears them."""
        st, body = self.control("POST", "/_fake/config", switches)
        assert st == 200, body
        return body

    def expire_tokens(self):
        """Every access token issued so far expires now; returns how many were valid."""
        return self.control("POST", "/_fake/tokens/expire")[1]["expired"]

    # ---- credentials for tests that act as the agent ----
    def jwt(self, claims=None, header=None, key_pem=None, now=None, drop=()):
        """A service-account assertion as google-auth makes it; claims/header override the
        defaults, drop removes claims, key_pem signs with another key."""
        sa = self.service_account
        now = int(time.time() if now is None else now)
        c = {"iss": sa["client_email"], "scope": fake_clouds.CLOUD_PLATFORM_SCOPE,
             "aud": sa["token_uri"], "iat": now, "exp": now + 3600}
        c.update(claims or {})
        for k in drop:
            c.pop(k, None)
        return fake_clouds.jwt_rs256(key_pem or sa["private_key"], c, sa["private_key_id"],
                                     header)

    def token_request(self, assertion=None, grant_type=fake_clouds.JWT_BEARER, headers=None):
        """POSTs to oauth2.googleapis.com/token: (status, parsed JSON)."""
        form = urllib.parse.urlencode({"grant_type": grant_type,
                                       "assertion": assertion or self.jwt()})
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(headers or {})
        st, _, raw = self.call("oauth2.googleapis.com", "POST", "/token", form, h)
        return st, json.loads(raw) if raw else None

    def access_token(self):
        st, body = self.token_request()
        assert st == 200, (st, body)
        return body["access_token"]

    def bedrock_headers(self, method, path, body=b"", region="us-east-1", headers=None,
                        secret=None, access_key=None, session_token=None, amz_date=None,
                        **kw):
        """The headers of a SigV4-signed Bedrock request (path raw, as sent: the model id
        percent-encoded). Returns a dict to pass to http.client."""
        host = "bedrock-runtime.%s.amazonaws.com" % region
        hs = [("Host", host)] + list((headers or {}).items())
        s = fake_clouds.sigv4_sign(
            method, path, hs, body, access_key=access_key or self.bedrock_access_key_id,
            secret=secret or self.bedrock_secret_access_key, region=region,
            service="bedrock", amz_date=amz_date,
            session_token=session_token if session_token is not None else
            self.bedrock_session_token, **kw)
        return {k: v for k, v in s["headers"]}
