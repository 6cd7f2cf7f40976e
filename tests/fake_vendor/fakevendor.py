"""Test helpers for fake-vendor: a throwaway CA and server certificate, and the process itself
with its control API. For tests in tests/integration (or e2e):

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "fake_vendor"))
    import fakevendor
    fv = fakevendor.FakeVendor().start()
    fv.connect_to("api.openai.com")   # "api.openai.com:443:127.0.0.1:PORT" (curl's CONNECT_TO)
    fv.ca                              # the CA file to trust (agent.conf ca_file)
    fv.stats(); fv.last(); fv.reset(); fv.config(status=429, count=1)

Processes are started through harness.spawn, so they die with the test script.
"""

import http.client
import json
import os
import socket
import ssl
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "integration"))
import harness  # noqa: E402

OPENAI_KEY = "sk-fake-openai-0123456789abcdef"
AZURE_KEY = "fakeazurekey0123456789abcdef0123"

_CNF = """[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = %s
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def binary():
    """The fake-vendor executable in the build directory."""
    return os.path.join(harness.BUILD, "tests", "fake_vendor", "fake-vendor")


def sanitized():
    """True when the build directory was set up with -Dsanitize (RSS figures mean little)."""
    try:
        with open(os.path.join(harness.BUILD, "meson-info", "intro-buildoptions.json")) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        return False
    return any(o["name"] == "sanitize" and o["value"] != "none" for o in opts)


def make_certs(directory, names=("api.openai.com", "*.openai.azure.com"), ips=("127.0.0.1",)):
    """A throwaway CA and a server certificate for names and ips, made with the openssl CLI.
    Returns {"ca", "ca_key", "cert", "key"} (PEM file paths)."""
    os.makedirs(directory, exist_ok=True)
    p = {k: os.path.join(directory, f) for k, f in
         (("ca", "ca.pem"), ("ca_key", "ca.key"), ("cert", "server.pem"), ("key", "server.key"),
          ("csr", "server.csr"), ("cnf", "openssl.cnf"))}
    san = ", ".join(["DNS:" + n for n in names] + ["IP:" + i for i in ips])
    with open(p["cnf"], "w") as f:
        f.write(_CNF % san)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    harness.run(["openssl", "req", "-x509"] + ec + ["-keyout", p["ca_key"], "-out", p["ca"],
                 "-days", "2", "-subj", "/CN=relayhub fake-vendor test CA", "-config", p["cnf"],
                 "-extensions", "ca"])
    harness.run(["openssl", "req"] + ec + ["-keyout", p["key"], "-out", p["csr"],
                 "-subj", "/CN=" + names[0], "-config", p["cnf"]])
    harness.run(["openssl", "x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey",
                 p["ca_key"], "-CAcreateserial", "-out", p["cert"], "-days", "2",
                 "-extfile", p["cnf"], "-extensions", "leaf"])
    return {k: p[k] for k in ("ca", "ca_key", "cert", "key")}


class _Conn(http.client.HTTPSConnection):
    """HTTPS to the fake's loopback port, with the official host name in SNI and Host."""

    def __init__(self, host, port, context, timeout):
        super().__init__(host, 443, context=context, timeout=timeout)
        self._fake_port = port

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self._fake_port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class LoopbackFake:
    """What the fakes share: a process with an HTTPS port reached under official host names
    (curl's CONNECT_TO, a throwaway CA) and a plain-HTTP control port. Subclasses set dir, ca,
    port, control_port, log, proc, NAME and DEFAULT_HOST, and args()."""

    NAME = "fake"
    DEFAULT_HOST = "api.openai.com"

    def start(self):
        self.proc = harness.spawn(self.args(), self.log)
        harness.wait_until(lambda: self.proc.poll() is None and
                           self.control("GET", "/_fake/health")[0] == 200,
                           what="%s up" % self.NAME)
        return self

    def stop(self, sig=15, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def connect_to(self, host, port=443):
        """curl's CONNECT_TO entry (and agent.conf's connect_to) for host."""
        return "%s:%d:127.0.0.1:%d" % (host, port, self.port)

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def https(self, host=None, timeout=15):
        """An http.client connection to the fake as host (TLS verified against the test CA)."""
        return _Conn(host or self.DEFAULT_HOST, self.port, self.ssl_context(), timeout)

    def control(self, method, path, body=None, timeout=10):
        """Calls the control port; returns (status, parsed JSON)."""
        c = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=timeout)
        data = None if body is None else json.dumps(body)
        c.request(method, path, body=data,
                  headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, json.loads(raw) if raw else None

    def stats(self):
        return self.control("GET", "/_fake/stats")[1]

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


class FakeVendor(LoopbackFake):
    """One fake-vendor process in a temporary folder."""

    NAME = "fake-vendor"

    def __init__(self, root=None, openai_key=OPENAI_KEY, azure_key=AZURE_KEY, log_level="info"):
        self.dir = os.path.join(root or harness.tmpdir("relayhub-fv-"), "fake-vendor")
        os.makedirs(self.dir, exist_ok=True)
        self.certs = make_certs(os.path.join(self.dir, "tls"))
        self.ca = self.certs["ca"]
        self.openai_key = openai_key
        self.azure_key = azure_key
        self.log_level = log_level
        self.port = harness.free_port()
        self.control_port = harness.free_port()
        self.log = os.path.join(self.dir, "fake-vendor.log")
        self.proc = None

    def args(self):
        return [binary(), "--listen", "127.0.0.1:%d" % self.port,
                "--cert", self.certs["cert"], "--key", self.certs["key"],
                "--control", "127.0.0.1:%d" % self.control_port,
                "--openai-key", self.openai_key, "--azure-key", self.azure_key,
                "--log-level", self.log_level]

    def last(self):
        return self.control("GET", "/_fake/last")[1]

    def requests(self):
        return self.control("GET", "/_fake/requests")[1]["requests"]

    def reset(self):
        return self.control("POST", "/_fake/reset")[1]

    def config(self, **switches):
        """Server-wide switches, e.g. config(status=429, retry_after=2, count=1).
        config() clears them."""
        st, body = self.control("POST", "/_fake/config", switches)
        assert st == 200, body
        return body
