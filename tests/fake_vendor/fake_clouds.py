#!/usr/bin/python3
"""fake-clouds: a local HTTPS server speaking the wire formats of Anthropic, Gemini (AI Studio),
Vertex AI (with Google's OAuth token endpoint) and AWS Bedrock runtime, with fault switches and
counters, for relayhub's tests. The sibling of fake-vendor (OpenAI/Azure, in C); see README.md.

    python3 fake_clouds.py --listen 127.0.0.1:PORT --cert server.pem --key server.key \
        --control 127.0.0.1:PORT --state-dir DIR        # credentials from DIR/credentials.json

Tests reach it through curl's CONNECT_TO with the official host names (routing is by Host and
path). The module also holds small helpers other tests import: es_frame / es_parse / es_split
(AWS event-stream frames), sse_parse, sigv4_sign and its canonicalization (written from AWS's
SigV4 specification), jwt_rs256 (a Google service-account assertion).

Python 3 standard library plus python3-cryptography (for RS256 only).
"""

import argparse
import base64
import binascii
import collections
import datetime
import hashlib
import hmac
import http.server
import json
import math
import os
import random
import secrets
import signal
import socket
import ssl
import string
import struct
import sys
import threading
import time
import urllib.parse
import uuid
import zlib

# ============================================================================================
# AWS event-stream framing (application/vnd.amazon.eventstream)
# ============================================================================================

ES_PRELUDE = 12


def es_frame(headers, payload=b""):
    """One event-stream message. headers: dict or list of (name, value) string pairs (type 7);
    payload: bytes, str, or a JSON-able object (encoded compactly)."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    if not isinstance(payload, (bytes, bytearray, str)):
        payload = json.dumps(payload, separators=(",", ":"))
    if isinstance(payload, str):
        payload = payload.encode()
    hb = bytearray()
    for name, value in headers:
        n = name.encode()
        v = value if isinstance(value, (bytes, bytearray)) else str(value).encode()
        if len(n) > 255 or len(v) > 65535:
            raise ValueError("event-stream header too long")
        hb += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = ES_PRELUDE + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(hb) + bytes(payload)
    return msg + struct.pack(">I", zlib.crc32(msg))


def _es_headers(hb):
    out = {}
    i = 0
    while i < len(hb):
        nl = hb[i]
        name = hb[i + 1:i + 1 + nl].decode()
        i += 1 + nl
        t = hb[i]
        i += 1
        if t in (0, 1):
            val = (t == 0)
        elif t == 2:
            val = struct.unpack(">b", hb[i:i + 1])[0]
            i += 1
        elif t == 3:
            val = struct.unpack(">h", hb[i:i + 2])[0]
            i += 2
        elif t == 4:
            val = struct.unpack(">i", hb[i:i + 4])[0]
            i += 4
        elif t in (5, 8):
            val = struct.unpack(">q", hb[i:i + 8])[0]
            i += 8
        elif t in (6, 7):
            ln = struct.unpack(">H", hb[i:i + 2])[0]
            raw = bytes(hb[i + 2:i + 2 + ln])
            if len(raw) != ln:
                raise ValueError("event-stream: truncated header value")
            val = raw.decode() if t == 7 else raw
            i += 2 + ln
        elif t == 9:
            val = uuid.UUID(bytes=bytes(hb[i:i + 16]))
            i += 16
        else:
            raise ValueError("event-stream: bad header type %d" % t)
        if i > len(hb):
            raise ValueError("event-stream: truncated header")
        out[name] = val
    return out


def es_split(data):
    """Decodes the complete messages at the start of data. Returns (messages, rest): each
    message a dict {"headers": {name: value}, "payload": bytes, "json": parsed payload or None};
    rest the bytes of an incomplete last message. Raises ValueError on a bad CRC or length."""
    msgs = []
    i = 0
    data = bytes(data)
    while len(data) - i >= ES_PRELUDE:
        total, hlen, pcrc = struct.unpack(">III", data[i:i + 12])
        if zlib.crc32(data[i:i + 8]) != pcrc:
            raise ValueError("event-stream: bad prelude CRC at byte %d" % i)
        if total < ES_PRELUDE + 4 + hlen or total > 16 * 1024 * 1024:
            raise ValueError("event-stream: bad lengths at byte %d" % i)
        if len(data) - i < total:
            break
        m = data[i:i + total]
        if zlib.crc32(m[:-4]) != struct.unpack(">I", m[-4:])[0]:
            raise ValueError("event-stream: bad message CRC at byte %d" % i)
        headers = _es_headers(m[12:12 + hlen])
        payload = m[12 + hlen:-4]
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        msgs.append({"headers": headers, "payload": payload, "json": parsed})
        i += total
    return msgs, data[i:]


def es_parse(data):
    """Every message of a whole event stream (CRCs checked); ValueError if bytes are left over."""
    msgs, rest = es_split(data)
    if rest:
        raise ValueError("event-stream: %d trailing bytes (an incomplete message)" % len(rest))
    return msgs


def invoke_stream_events(data):
    """The Anthropic events carried by an invoke-with-response-stream body, in order (each
    chunk's base64 "bytes" decoded as JSON). Exception messages come as
    {"exception": type, "message": ...}."""
    out = []
    for m in es_parse(data):
        h = m["headers"]
        if h.get(":message-type") == "exception":
            out.append({"exception": h.get(":exception-type"),
                        "message": (m["json"] or {}).get("message")})
        elif h.get(":event-type") == "chunk":
            out.append(json.loads(base64.b64decode(m["json"]["bytes"])))
    return out


# ============================================================================================
# Server-sent events
# ============================================================================================

def sse_parse(raw):
    """Splits an SSE body (LF or CRLF line ends) into (event name or None, data) pairs."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    raw = raw.replace("\r\n", "\n")
    out = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        ev, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            name, _, val = line.partition(":")
            if val.startswith(" "):
                val = val[1:]
            if name == "event":
                ev = val
            elif name == "data":
                data.append(val)
        if ev is None and not data:
            continue
        out.append((ev, "\n".join(data)))
    return out


# ============================================================================================
# AWS Signature Version 4 (written from AWS's specification; independent of lib/sigv4)
# ============================================================================================

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def uri_encode(s, keep_slash=False):
    """AWS's UriEncode: every byte but the unreserved ones as %XX (upper-case hex)."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    return "".join(chr(c) if c in _UNRESERVED or (keep_slash and c == 0x2F) else "%%%02X" % c
                   for c in b)


def sigv4_normalize_path(path):
    """RFC 3986 dot-segment removal plus empty-segment removal, as AWS's SDKs do for every
    service but S3 ("//a/./b/../" -> "/a/")."""
    if not path:
        return "/"
    segs = path.split("/")
    out = []
    for s in segs:
        if s in ("", "."):
            continue
        if s == "..":
            if out:
                out.pop()
            continue
        out.append(s)
    res = "/" + "/".join(out)
    if out and segs[-1] in ("", ".", ".."):
        res += "/"
    return res


def sigv4_canonical_uri(raw_path, normalize=True):
    """The canonical URI of a path as it appears on the wire (still percent-encoded): each
    segment is URI-encoded again, so Bedrock's "%3A" becomes "%253A"."""
    p = raw_path or "/"
    if normalize:
        p = sigv4_normalize_path(p)
    return uri_encode(p, keep_slash=True)


def sigv4_canonical_query(raw_query):
    """Decoded, re-encoded, sorted by name then value; "name=" for a name without value."""
    if not raw_query:
        return ""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((uri_encode(urllib.parse.unquote_to_bytes(k)),
                      uri_encode(urllib.parse.unquote_to_bytes(v))))
    pairs.sort()
    return "&".join(k + "=" + v for k, v in pairs)


def _trimall(v):
    return " ".join(v.split())


def sigv4_canonical_headers(headers, signed):
    """(canonical header block, signed header list string). headers: (name, value) pairs with
    repeats; signed: lower-case names in the order to sign. Raises KeyError for a signed header
    that is absent."""
    vals = collections.OrderedDict()
    for n, v in headers:
        vals.setdefault(n.lower(), []).append(_trimall(v))
    lines = []
    for n in signed:
        if n not in vals:
            raise KeyError(n)
        lines.append("%s:%s\n" % (n, ",".join(vals[n])))
    return "".join(lines), ";".join(signed)


def sigv4_canonical_request(method, raw_path, raw_query, headers, signed, payload_hash,
                            normalize=True):
    ch, sh = sigv4_canonical_headers(headers, signed)
    return "\n".join([method, sigv4_canonical_uri(raw_path, normalize),
                      sigv4_canonical_query(raw_query), ch, sh, payload_hash])


def sigv4_string_to_sign(amz_date, scope, canonical_request):
    return "\n".join([SIGV4_ALGORITHM, amz_date, scope,
                      hashlib.sha256(canonical_request.encode()).hexdigest()])


def sigv4_signing_key(secret, date, region, service):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def sigv4_signature(secret, date, region, service, string_to_sign):
    return hmac.new(sigv4_signing_key(secret, date, region, service), string_to_sign.encode(),
                    hashlib.sha256).hexdigest()


def amz_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def sigv4_sign(method, path, headers, body=b"", *, access_key, secret, region,
               service="bedrock", amz_date=None, session_token=None, sign_body=False,
               omit_session_token=False, normalize=True, signed_headers=None):
    """Signs a request in the header style. path may carry "?query" (raw, as sent); headers:
    (name, value) pairs including Host. Every given header is signed (or signed_headers), plus
    x-amz-date, x-amz-security-token (with a session token unless omit_session_token) and
    x-amz-content-sha256 (with sign_body). Returns a dict: headers (the pairs to send, with the
    added ones and Authorization), authorization, signature, canonical_request,
    string_to_sign, signed_headers, scope."""
    if isinstance(body, str):
        body = body.encode()
    raw_path, _, raw_query = path.partition("?")
    amz_date = amz_date or amz_now()
    hs = [(n, v) for n, v in (headers.items() if isinstance(headers, dict) else headers)]
    hs.append(("X-Amz-Date", amz_date))
    payload_hash = hashlib.sha256(body or b"").hexdigest()
    if sign_body:
        hs.append(("x-amz-content-sha256", payload_hash))
    if session_token and not omit_session_token:
        hs.append(("X-Amz-Security-Token", session_token))
    if signed_headers is None:
        signed = sorted({n.lower() for n, _ in hs})
    else:
        signed = sorted({n.lower() for n in signed_headers} | {"x-amz-date"})
    canon = sigv4_canonical_request(method, raw_path, raw_query, hs, signed, payload_hash,
                                    normalize)
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    sts = sigv4_string_to_sign(amz_date, scope, canon)
    sig = sigv4_signature(secret, amz_date[:8], region, service, sts)
    auth = "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        SIGV4_ALGORITHM, access_key, scope, ";".join(signed), sig)
    if session_token and omit_session_token:
        hs.append(("X-Amz-Security-Token", session_token))
    hs.append(("Authorization", auth))
    return {"headers": hs, "authorization": auth, "signature": sig, "canonical_request": canon,
            "string_to_sign": sts, "signed_headers": ";".join(signed), "scope": scope}


def sigv4_parse_authorization(value):
    """{"credential", "signed_headers", "signature"} of an AWS4-HMAC-SHA256 Authorization
    value, or None when it is not one."""
    if not value or not value.startswith(SIGV4_ALGORITHM + " "):
        return None
    out = {}
    for part in value[len(SIGV4_ALGORITHM) + 1:].split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            out[k] = v
    if not all(k in out for k in ("Credential", "SignedHeaders", "Signature")):
        return None
    return {"credential": out["Credential"], "signed_headers": out["SignedHeaders"],
            "signature": out["Signature"]}


# ============================================================================================
# JWT (RS256) for Google service accounts
# ============================================================================================

def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    s = s.encode() if isinstance(s, str) else s
    return base64.urlsafe_b64decode(s + b"=" * (-len(s) % 4))


def jwt_rs256(private_key_pem, claims, kid=None, header=None):
    """A compact JWS signed with RS256 (PKCS#1 v1.5, SHA-256)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    key = serialization.load_pem_private_key(
        private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem,
        password=None)
    h = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        h["kid"] = kid
    h.update(header or {})
    signing_input = b64url(json.dumps(h, separators=(",", ":"))) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")))
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def _rs256_verify(public_key_pem, signing_input, sig):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    key = serialization.load_pem_public_key(public_key_pem.encode())
    try:
        key.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def public_key_of(private_key_pem):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# ============================================================================================
# Constants of the wire formats
# ============================================================================================

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
ERRINFO = "type.googleapis.com/google.rpc.ErrorInfo"
P_ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits

GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                 500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}
GOOGLE_CODE = {v: k for k, v in GOOGLE_STATUS.items()}
GOOGLE_MESSAGE = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
ANTHROPIC_TYPE = {400: "invalid_request_error", 401: "authentication_error",
                  403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                  429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
ANTHROPIC_MESSAGE = {"rate_limit_error": "This request would exceed your organization's rate "
                     "limit. Please try again later.",
                     "overloaded_error": "Overloaded", "api_error": "Internal server error"}
BEDROCK_TYPE = {400: "ValidationException", 403: "AccessDeniedException",
                404: "ResourceNotFoundException", 408: "ModelTimeoutException",
                424: "ModelErrorException", 429: "ThrottlingException",
                500: "InternalServerException", 503: "ServiceUnavailableException"}
BEDROCK_MESSAGE = {"ThrottlingException": "Too many requests, please wait before trying again.",
                   "ServiceUnavailableException": "Bedrock is unable to process your request.",
                   "InternalServerException": "The server encountered an internal error while "
                   "processing the request.",
                   "ModelTimeoutException": "Model has timed out in processing the request."}
OAUTH_ERROR = {400: "invalid_grant", 401: "invalid_client", 403: "access_denied",
               429: "rate_limit_exceeded", 500: "internal_failure", 503: "temporarily_unavailable"}

SECRET_HEADERS = {"authorization", "x-api-key", "x-goog-api-key", "api-key",
                  "x-amz-security-token", "proxy-authorization", "cookie"}

# ============================================================================================
# Switches
# ============================================================================================

INT_SWITCHES = ("chunks", "delay_ms", "status", "retry_after", "retry_after_ms", "empty_200",
                "drop_after", "prompt_tokens", "cached_tokens", "cache_creation_tokens",
                "thoughts", "stream_error_after", "stall_ms", "token_ttl", "token_status",
                "padding")
STR_SWITCHES = ("stream_error_type",)
ALIASES = {"empty": "empty_200", "error_after": "stream_error_after",
           "thoughts_tokens": "thoughts"}


def switch_name(name):
    n = name.strip().lower().replace("-", "_")
    n = ALIASES.get(n, n)
    if n not in INT_SWITCHES and n not in STR_SWITCHES:
        raise ValueError("unknown switch %r" % name)
    return n


def switch_value(name, value):
    if name in STR_SWITCHES:
        if not isinstance(value, str) or not value:
            raise ValueError("switch %s wants a string" % name)
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("switch %s wants an integer" % name)


class BadSwitch(Exception):
    pass


# ============================================================================================
# Shared state: credentials, switches, counters, records, tokens
# ============================================================================================

class Credentials:
    def __init__(self):
        self.anthropic_key = None
        self.gemini_key = None
        self.vertex_project = None
        self.service_accounts = {}      # client_email -> {"private_key_id", "public_key"}
        self.bedrock = {}               # access key id -> {"secret", "session_token"}

    def add_service_account(self, sa):
        pub = sa.get("public_key")
        if not pub and sa.get("private_key"):
            pub = public_key_of(sa["private_key"])
        if not (sa.get("client_email") and sa.get("private_key_id") and pub):
            raise ValueError("a service account needs client_email, private_key_id and "
                             "public_key (or private_key)")
        self.service_accounts[sa["client_email"]] = {"private_key_id": sa["private_key_id"],
                                                     "public_key": pub}
        if not self.vertex_project and sa.get("project_id"):
            self.vertex_project = sa["project_id"]

    def add_bedrock(self, akid, secret, token=None):
        if akid and secret:
            self.bedrock[akid] = {"secret": secret, "session_token": token or None}

    def load_file(self, path):
        with open(path) as f:
            d = json.load(f)
        self.anthropic_key = d.get("anthropic_key") or self.anthropic_key
        self.gemini_key = d.get("gemini_key") or self.gemini_key
        self.vertex_project = d.get("vertex_project") or self.vertex_project
        for sa in d.get("service_accounts") or []:
            self.add_service_account(sa)
        b = d.get("bedrock") or []
        for c in (b if isinstance(b, list) else [b]):
            self.add_bedrock(c.get("access_key_id"), c.get("secret_access_key"),
                             c.get("session_token"))

    def summary(self):
        """What is configured, without a secret."""
        return {"anthropic": bool(self.anthropic_key), "gemini": bool(self.gemini_key),
                "vertex_project": self.vertex_project,
                "service_accounts": sorted(self.service_accounts),
                "bedrock_access_keys": sorted(self.bedrock)}


class State:
    def __init__(self, creds, max_records=100, log_level="info"):
        self.creds = creds
        self.lock = threading.Lock()
        self.max_records = max_records
        self.log_level = log_level
        self.tokens = {}                # access token -> {"exp", "client_email"}
        self._reset_locked()

    def _reset_locked(self):
        self.generation = getattr(self, "generation", 0) + 1
        self.switches = {}
        self.count = None
        self.vendor_filter = None
        self.records = collections.deque(maxlen=self.max_records)
        self.seq = 0
        self.stats = {
            "requests": 0, "by_vendor": {}, "by_endpoint": {}, "by_status": {},
            "by_vendor_status": {}, "by_endpoint_status": {},
            "token_requests": 0, "tokens_issued": 0, "token_failures": 0,
            "auth_failures": 0, "switched": 0,
            "streams_started": 0, "streams_completed": 0, "streams_dropped": 0,
            "streams_cancelled": 0, "streams_errored": 0,
            "connections": 0, "tls_failures": 0, "bytes_in": 0, "bytes_out": 0,
        }

    def reset(self, tokens=False):
        with self.lock:
            self._reset_locked()
            if tokens:
                self.tokens.clear()

    # ---- switches ----
    def set_config(self, body):
        sw = {}
        count = None
        vendor = None
        for k, v in body.items():
            if k == "count":
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                    raise ValueError("count wants a non-negative integer")
                count = v
            elif k == "vendor":
                if v is None:
                    continue
                vendor = [v] if isinstance(v, str) else list(v)
            else:
                n = switch_name(k)
                sw[n] = switch_value(n, v)
        with self.lock:
            self.switches, self.count, self.vendor_filter = sw, count, vendor
        return self.get_config()

    def get_config(self):
        with self.lock:
            return {"switches": dict(self.switches), "count": self.count,
                    "vendor": self.vendor_filter}

    def take_switches(self, vendor, consume=True):
        """The server-wide switches for one request of vendor (a copy); counts it against
        count when consume."""
        with self.lock:
            if not self.switches:
                return {}
            if self.vendor_filter and vendor not in self.vendor_filter:
                return {}
            if self.count is not None and self.count <= 0:
                return {}
            sw = dict(self.switches)
            if consume:
                self.stats["switched"] += 1
                if self.count is not None:
                    self.count -= 1
                    if self.count <= 0:
                        self.switches, self.count, self.vendor_filter = {}, None, None
            return sw

    # ---- records and counters ----
    def new_record(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            rec["_gen"] = self.generation
            self.records.append(rec)
            s = self.stats
            s["requests"] += 1
            s["by_vendor"][rec["vendor"]] = s["by_vendor"].get(rec["vendor"], 0) + 1
            ep = rec["vendor"] + "/" + rec["endpoint"]
            s["by_endpoint"][ep] = s["by_endpoint"].get(ep, 0) + 1
            s["bytes_in"] += rec["body_len"]
            if rec["vendor"] == "oauth":
                s["token_requests"] += 1

    def finish_record(self, rec):
        with self.lock:
            if rec.pop("_gen", None) != self.generation:
                return      # begun before a reset: counted in neither
            s = self.stats
            st = str(rec["status"])
            s["by_status"][st] = s["by_status"].get(st, 0) + 1
            v = s["by_vendor_status"].setdefault(rec["vendor"], {})
            v[st] = v.get(st, 0) + 1
            e = s["by_endpoint_status"].setdefault(rec["vendor"] + "/" + rec["endpoint"], {})
            e[st] = e.get(st, 0) + 1
            if rec["auth"] not in ("ok", "n/a"):
                s["auth_failures"] += 1
            if rec["vendor"] == "oauth":
                if rec["status"] == 200:
                    s["tokens_issued"] += 1
                else:
                    s["token_failures"] += 1
            if rec["stream"]:
                key = {"completed": "streams_completed", "dropped": "streams_dropped",
                       "cancelled": "streams_cancelled",
                       "error_event": "streams_errored"}.get(rec["outcome"])
                if key:
                    s[key] += 1

    def bump(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def snapshot_stats(self):
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            now = time.time()
            out["tokens_valid"] = sum(1 for t in self.tokens.values() if t["exp"] > now)
            return out

    def snapshot_records(self):
        # Handlers update their record as the request goes on (without the lock): a copy
        # taken while a key is added is taken again.
        for _ in range(50):
            try:
                with self.lock:
                    recs = json.loads(json.dumps(list(self.records)))
                break
            except RuntimeError:
                time.sleep(0.001)
        for r in recs:
            r.pop("_gen", None)
        return recs

    # ---- access tokens ----
    def issue_token(self, client_email, ttl):
        tok = "ya29.c." + secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[tok] = {"exp": time.time() + ttl, "client_email": client_email}
        return tok

    def check_token(self, tok):
        """"ok", "expired" or "unknown"."""
        with self.lock:
            t = self.tokens.get(tok)
        if t is None:
            return "unknown"
        return "ok" if t["exp"] > time.time() else "expired"

    def expire_tokens(self):
        with self.lock:
            now = time.time()
            n = 0
            for t in self.tokens.values():
                if t["exp"] > now:
                    n += 1
                t["exp"] = min(t["exp"], now - 1)
            return n

    def log(self, level, event, **fields):
        order = {"debug": 0, "info": 1, "warn": 2, "error": 3}
        if order.get(level, 1) < order.get(self.log_level, 1):
            return
        line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"), "level": level,
            "process": "fake-clouds", "event": event}
        line.update(fields)
        try:
            sys.stderr.write(json.dumps(line) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


# ============================================================================================
# Helpers
# ============================================================================================

def words(n):
    """Content pieces 0..n-1: "tok0", " tok1", ..."""
    return ["tok%d" % i if i == 0 else " tok%d" % i for i in range(n)]


def rand_id(n, alphabet=string.ascii_letters + string.digits):
    return "".join(random.choice(alphabet) for _ in range(n))


def padding_p():
    return P_ALPHABET[:random.randint(1, len(P_ALPHABET))]


def jdump(o):
    return json.dumps(o, separators=(",", ":")).encode()


class ClientGone(Exception):
    pass


class Dropped(Exception):
    pass


def redact_header(name, value):
    ln = name.lower()
    if ln not in SECRET_HEADERS:
        return value
    if ln == "authorization":
        if value.startswith(SIGV4_ALGORITHM + " "):
            p = sigv4_parse_authorization(value)
            if p:
                return "%s Credential=%s, SignedHeaders=%s, Signature=<redacted>" % (
                    SIGV4_ALGORITHM, p["credential"], p["signed_headers"])
        scheme = value.split(" ", 1)[0] if " " in value else ""
        return (scheme + " <redacted>").strip()
    return "<redacted>"


def redact_query(raw_query):
    if not raw_query:
        return raw_query
    parts = []
    for part in raw_query.split("&"):
        k, sep, v = part.partition("=")
        if k.lower() in ("key", "access_token", "x-amz-signature", "x-amz-security-token"):
            v = "<redacted>"
        parts.append(k + sep + v)
    return "&".join(parts)


# ============================================================================================
# The API server (TLS)
# ============================================================================================

class Call:
    """One API request as the vendor handlers see it."""

    def __init__(self, h, vendor, endpoint, rec, body, raw_path, raw_query, host):
        self.h = h
        self.vendor = vendor
        self.endpoint = endpoint
        self.rec = rec
        self.body = body
        self.raw_path = raw_path
        self.raw_query = raw_query
        self.query = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
        self.host = host
        self.sw = {}
        self.explicit = set()
        self.t0 = time.monotonic()
        self._json = None
        self.json_error = None
        self.head_sent = False

    def header(self, name, default=None):
        return self.h.headers.get(name, default)

    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body or b"null")
            except ValueError as e:
                self.json_error = str(e)
                self._json = False
        return self._json if self._json is not False else None

    def s(self, name, default=None):
        return self.sw.get(name, default)

    def ms(self):
        return int((time.monotonic() - self.t0) * 1000)

    def prompt_tokens(self):
        v = self.s("prompt_tokens")
        return v if v is not None else math.ceil(len(self.body) / 4)

    def pieces(self, limit=None):
        """(N, cut): the content piece count, cut down to limit unless chunks was given."""
        if "chunks" in self.sw:
            return max(0, self.sw["chunks"]), False
        n = 5
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < n:
            return limit, True
        return n, False


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, ctx, state):
        self.ctx = ctx
        self.state = state
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        self.state.bump("connections")
        request.settimeout(5)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            self.state.bump("tls_failures")
            return
        tls.settimeout(None)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


class ApiHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_hdr = "fake-clouds"

    def log_message(self, fmt, *args):
        pass

    def version_string(self):
        return self.server_name_hdr

    def send_response(self, code, message=None):
        self.send_response_only(code, message)
        if self.server_name_hdr:
            self.send_header("Server", self.server_name_hdr)
        self.send_header("Date", self.date_time_string())

    def do_POST(self):
        self.dispatch()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    # ---- request body ----
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        cls = self.headers.get_all("Content-Length") or []
        if te and cls:
            raise ValueError("Content-Length with Transfer-Encoding")
        if len(set(cls)) > 1:
            raise ValueError("repeated Content-Length")
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ValueError("truncated chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self.rfile.readline(8192)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(8)
        if cls:
            n = int(cls[0])
            if n < 0:
                raise ValueError("negative Content-Length")
            data = self.rfile.read(n)
            if len(data) != n:
                raise ValueError("truncated body")
            return data
        return b""

    # ---- writing ----
    def write(self, data):
        try:
            self.wfile.write(data)
        except (OSError, ValueError) as e:
            self.close_connection = True
            raise ClientGone() from e
        self.server.state.bump("bytes_out", len(data))

    def head(self, c, status, headers, ctype=None, length=None, chunked=False):
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        if chunked:
            if self.request_version == "HTTP/1.0":
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length or 0))
        try:
            self.end_headers()
        except (OSError, ValueError) as e:
            self.close_connection = True
            raise ClientGone() from e
        c.head_sent = True
        c.rec["status"] = status

    def reply(self, c, status, body, headers=(), ctype="application/json"):
        """A whole answer; honours drop_after (cut after N body bytes) on 2xx."""
        if isinstance(body, (dict, list)):
            body = jdump(body)
        elif isinstance(body, str):
            body = body.encode()
        self.head(c, status, list(headers), ctype, len(body))
        drop = c.s("drop_after")
        if drop is not None and status < 300 and drop < len(body):
            self.write(body[:max(0, drop)])
            raise Dropped()
        if self.command != "HEAD":
            self.write(body)

    def chunk(self, data):
        if self.request_version == "HTTP/1.0":
            self.write(data)
        else:
            self.write(b"%X\r\n" % len(data) + data + b"\r\n")

    def end_chunks(self):
        if self.request_version != "HTTP/1.0":
            self.write(b"0\r\n\r\n")

    def drop_connection(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stream(self, c, ctype, headers, events, error_event):
        """Sends events (an iterable of (kind, bytes), kind "pre", "content" or "post") as one
        HTTP chunk each. delay_ms before each content event; drop_after / stream_error_after
        cut the stream once that many content events are out (error_event(c, sent) gives the
        bytes of the vendor's in-stream error)."""
        st = self.server.state
        c.rec["stream"] = True
        st.bump("streams_started")
        self.head(c, 200, headers, ctype, chunked=True)
        sent = 0
        drop = c.s("drop_after")
        err = c.s("stream_error_after")
        delay = c.s("delay_ms", 0) or 0

        def cut():
            if drop is not None and sent >= drop:
                c.rec["events"] = sent
                raise Dropped()
            if err is not None and sent >= err:
                self.chunk(error_event(c, sent))
                self.end_chunks()
                c.rec["outcome"] = "error_event"
                return True
            return False

        for kind, data in events:
            if kind != "pre" and cut():
                c.rec["events"] = sent
                return
            if kind == "content" and delay > 0:
                time.sleep(delay / 1000.0)
            self.chunk(data)
            if kind == "content":
                sent += 1
                c.rec["events"] = sent
        if cut():
            return
        self.end_chunks()
        c.rec["outcome"] = "completed"

    # ---- dispatch ----
    def dispatch(self):
        st = self.server.state
        t0 = time.monotonic()
        raw_path, _, raw_query = self.path.partition("?")
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            host = host.split("]")[0] + "]"
        else:
            host = host.split(":")[0]
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            try:
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
            except OSError:
                pass
            return
        vendor, endpoint, fn = route(host, raw_path)
        rec = {
            "time": time.time(), "vendor": vendor, "endpoint": endpoint,
            "method": self.command, "host": host, "path": raw_path,
            "query": redact_query(raw_query), "http_version": self.request_version,
            "headers": [[k, redact_header(k, v)] for k, v in self.headers.items()],
            "header_map": {}, "body": None, "body_len": len(body),
            "body_truncated": len(body) > 65536, "status": None, "stream": False,
            "events": 0, "outcome": None, "auth": "n/a", "auth_detail": None, "switches": {},
            "model": None, "region": None, "project": None, "jwt": None, "sigv4": None,
            "ms": None,
        }
        for k, v in rec["headers"]:
            lk = k.lower()
            rec["header_map"][lk] = (rec["header_map"][lk] + ", " + v) if lk in \
                rec["header_map"] else v
        rec["body"] = body[:65536].decode("utf-8", "replace")
        c = Call(self, vendor, endpoint, rec, body, raw_path, raw_query, host)
        if vendor == "oauth":
            rec["body"] = redact_form(rec["body"])
        st.new_record(rec)
        self.server_name_hdr = {"anthropic": "cloudflare", "bedrock": "", "unknown": "",
                                "oauth": "scaffolding on HTTPServer2"}.get(vendor, "ESF")
        try:
            self.resolve_switches(c)
            fn(c)
        except BadSwitch as e:
            vendor_error(c, 400, str(e))
        except ClientGone:
            rec["outcome"] = "cancelled"
        except Dropped:
            rec["outcome"] = "dropped"
            self.drop_connection()
        except Exception as e:  # a bug in the fake: answer 500 and say so in the log
            st.log("error", "handler_error", error=repr(e), path=raw_path)
            if not c.head_sent:
                try:
                    self.reply(c, 500, {"error": "fake-clouds internal error: %r" % e})
                except (ClientGone, Dropped):
                    pass
            self.close_connection = True
        if rec["outcome"] is None:
            rec["outcome"] = "completed" if (rec["status"] or 0) < 400 else "error"
        if rec["status"] is None:
            rec["status"] = 0
        rec["ms"] = int((time.monotonic() - t0) * 1000)
        st.finish_record(rec)
        st.log("info", "request", vendor=vendor, endpoint=endpoint, method=self.command,
               path=raw_path, status=rec["status"], outcome=rec["outcome"], auth=rec["auth"],
               stream=rec["stream"], events=rec["events"], bytes_in=len(body), ms=rec["ms"])

    def resolve_switches(self, c):
        consume = c.vendor not in ("oauth", "unknown")
        sw = self.server.state.take_switches(c.vendor, consume=consume)
        if c.vendor == "oauth":
            # The token endpoint only sees the token_* server-wide switches (a 429 meant for
            # a vendor must not break the token fetch before it); headers still apply.
            sw = {k: v for k, v in sw.items() if k.startswith("token_")}
        for k, v in self.headers.items():
            lk = k.lower()
            if not lk.startswith("x-fake-"):
                continue
            try:
                n = switch_name(lk[7:])
                sw[n] = switch_value(n, v)
                c.explicit.add(n)
            except ValueError:
                raise BadSwitch("bad header %s: %r" % (k, v))
        c.sw = sw
        c.rec["switches"] = dict(sw)
        stall = sw.get("stall_ms")
        if stall and stall > 0:
            time.sleep(stall / 1000.0)


def redact_form(text):
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
    except ValueError:
        return text
    return "&".join("%s=%s" % (k, "<redacted>" if k in ("assertion", "client_secret",
                                                         "refresh_token") else v)
                    for k, v in pairs)


# ============================================================================================
# Error shapes and fault switches, per vendor
# ============================================================================================

def retry_headers(c, status):
    out = []
    ra = c.s("retry_after")
    if ra is None and status == 429:
        ra = 1
    if ra is not None and ra >= 0:
        out.append(("Retry-After", str(ra)))
    ram = c.s("retry_after_ms")
    if ram is not None and ram >= 0:
        out.append(("retry-after-ms", str(ram)))
    return out


def anthropic_headers():
    return [("request-id", "req_011C" + rand_id(20)),
            ("anthropic-organization-id", str(uuid.uuid4())),
            ("cf-ray", "%016x-SJC" % random.getrandbits(64)), ("x-robots-tag", "none")]


def anthropic_error(c, status, etype=None, message=None, extra=()):
    etype = etype or ANTHROPIC_TYPE.get(status, "api_error")
    message = message or ANTHROPIC_MESSAGE.get(etype, "Error")
    hs = anthropic_headers() + list(extra)
    if status in (429, 500, 503, 529):
        hs.append(("x-should-retry", "true"))
    c.h.reply(c, status, {"type": "error", "error": {"type": etype, "message": message}},
              hs + retry_headers(c, status) if status >= 400 else hs)


def openai_error(c, status, message, etype=None, code=None, extra=()):
    etype = etype or {401: "authentication_error", 429: "rate_limit_error",
                      400: "invalid_request_error", 404: "not_found_error"}.get(status,
                                                                               "api_error")
    hs = anthropic_headers() + list(extra) + retry_headers(c, status)
    c.h.reply(c, status, {"error": {"message": message, "type": etype, "param": None,
                                    "code": code}}, hs)


def google_error_body(status, message=None, gstatus=None, details=None):
    gstatus = gstatus or GOOGLE_STATUS.get(status, "UNKNOWN")
    err = {"code": status, "message": message or GOOGLE_MESSAGE.get(status, gstatus.title()),
           "status": gstatus}
    if details:
        err["details"] = details
    return {"error": err}


def google_headers():
    return [("Vary", "Origin, X-Origin, Referer"), ("X-XSS-Protection", "0"),
            ("X-Frame-Options", "SAMEORIGIN"), ("X-Content-Type-Options", "nosniff"),
            ("Server-Timing", "gfet4t7; dur=%d" % random.randint(100, 900))]


def google_error(c, status, message=None, gstatus=None, details=None, as_list=False):
    if status == 429 and details is None:
        ra = c.s("retry_after")
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": "%ds" % (1 if ra is None or ra < 0 else ra)}]
    body = google_error_body(status, message, gstatus, details)
    c.h.reply(c, status, [body] if as_list else body, google_headers() +
              retry_headers(c, status), "application/json; charset=UTF-8")


def bedrock_headers():
    return [("x-amzn-RequestId", str(uuid.uuid4()))]


def bedrock_error(c, status, etype=None, message=None):
    etype = etype or BEDROCK_TYPE.get(status, "InternalServerException")
    message = message or BEDROCK_MESSAGE.get(etype, etype)
    c.h.reply(c, status, {"message": message}, bedrock_headers() +
              [("x-amzn-ErrorType", etype)] + retry_headers(c, status))


def oauth_error(c, status, error, desc):
    c.h.reply(c, status, {"error": error, "error_description": desc},
              [("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"),
               ("Pragma", "no-cache")], "application/json; charset=utf-8")


def vendor_error(c, status, message):
    """An error in the shape of the vendor c talks to (for a bad switch header and such)."""
    if c.vendor == "anthropic":
        if c.endpoint == "chat_completions":
            return openai_error(c, status, message)
        return anthropic_error(c, status, None, message)
    if c.vendor in ("gemini", "vertex"):
        return google_error(c, status, message, as_list=(c.endpoint == "chat_completions"))
    if c.vendor == "bedrock":
        return bedrock_error(c, status, None, message)
    if c.vendor == "oauth":
        return oauth_error(c, status, "invalid_request", message)
    c.h.reply(c, status, {"error": message})


def faults(c, error_fn, empty_ctype="application/json"):
    """The status and empty_200 switches (after auth and validation). True when answered."""
    status = c.s("status")
    if status and status >= 400:
        error_fn(status)
        return True
    if c.s("empty_200"):
        c.h.reply(c, 200, b"", [], empty_ctype)
        c.rec["outcome"] = "empty"
        return True
    return False


# ============================================================================================
# OpenAI-compatible chat completions (Anthropic's and Gemini's compat endpoints)
# ============================================================================================

def chat_completions(c, error_fn, id_prefix, extra_headers):
    body = c.json()
    if not isinstance(body, dict):
        return error_fn(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_fn(400, "you must provide a model parameter")
    if not isinstance(body.get("messages"), list):
        return error_fn(400, "messages: field required")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        return error_fn(400, "stream: Input should be a valid boolean")
    if faults(c, lambda st: error_fn(st, None)):
        return
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    n, cut = c.pieces(limit)
    finish = "length" if cut else "stop"
    p = c.prompt_tokens()
    cached = c.s("cached_tokens")
    usage = {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    cid = id_prefix + rand_id(24)
    created = int(time.time())
    if not stream:
        return c.h.reply(c, 200, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(words(n))},
                         "finish_reason": finish}],
            "usage": usage}, extra_headers)
    so = body.get("stream_options") or {}
    include_usage = isinstance(so, dict) and so.get("include_usage") is True

    def chunk(choices, usage_val=None, with_usage=include_usage):
        o = {"id": cid, "object": "chat.completion.chunk", "created": created,
             "model": model, "choices": choices}
        if with_usage:
            o["usage"] = usage_val
        return b"data: " + jdump(o) + b"\n\n"

    def events():
        yield "pre", chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "finish_reason": None}])
        for w in words(n):
            yield "content", chunk([{"index": 0, "delta": {"content": w},
                                     "finish_reason": None}])
        yield "post", chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        if include_usage:
            yield "post", chunk([], usage)
        yield "post", b"data: [DONE]\n\n"

    def err_event(c_, sent):
        return b"data: " + jdump({"error": {"message": "Overloaded", "type":
                                            c.s("stream_error_type") or "overloaded_error",
                                            "code": None, "param": None}}) + b"\n\n"

    c.h.stream(c, "text/event-stream; charset=utf-8",
               extra_headers + [("Cache-Control", "no-cache")], events(), err_event)


# ============================================================================================
# Anthropic
# ============================================================================================

def anthropic_auth(c, allow_bearer=False):
    key = c.header("x-api-key")
    auth = c.header("Authorization") or ""
    want = c.h.server.state.creds.anthropic_key
    if key is None and allow_bearer and auth.startswith("Bearer "):
        key = auth[7:].strip()
    if key is None:
        c.rec["auth"] = "missing"
        if auth:
            c.rec["auth_detail"] = "Authorization sent instead of x-api-key"
            return "x-api-key header is required (fake-clouds refuses Authorization: Bearer " \
                   "on this endpoint: send x-api-key)"
        return "x-api-key header is required"
    if not want or not hmac.compare_digest(key.encode(), want.encode()):
        c.rec["auth"] = "wrong"
        return "invalid x-api-key"
    c.rec["auth"] = "ok"
    return None


def h_anthropic_messages(c):
    if c.h.command != "POST":
        return anthropic_error(c, 405, "invalid_request_error", "Method Not Allowed")
    msg = anthropic_auth(c)
    if msg:
        return anthropic_error(c, 401, "authentication_error", msg)
    if not c.header("anthropic-version"):
        return anthropic_error(c, 400, "invalid_request_error",
                               "anthropic-version: header is required")
    body = c.json()
    if not isinstance(body, dict):
        return anthropic_error(c, 400, "invalid_request_error",
                               "There was an issue with your request body: invalid JSON")
    for k in ("model", "messages") + (("max_tokens",) if c.endpoint == "messages" else ()):
        if k not in body:
            return anthropic_error(c, 400, "invalid_request_error", "%s: Field required" % k)
    if not isinstance(body["model"], str):
        return anthropic_error(c, 400, "invalid_request_error",
                               "model: Input should be a valid string")
    if c.endpoint == "messages" and (isinstance(body["max_tokens"], bool) or
                                     not isinstance(body["max_tokens"], int)):
        return anthropic_error(c, 400, "invalid_request_error",
                               "max_tokens: Input should be a valid integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        return anthropic_error(c, 400, "invalid_request_error",
                               "stream: Input should be a valid boolean")
    if faults(c, lambda st: anthropic_error(c, st)):
        return
    hs = anthropic_headers()
    if c.endpoint == "count_tokens":
        return c.h.reply(c, 200, {"input_tokens": c.prompt_tokens()}, hs)
    n, cut = c.pieces(body.get("max_tokens"))
    msg_id = "msg_01" + rand_id(22)
    stop = "max_tokens" if cut else "end_turn"
    if not stream:
        return c.h.reply(c, 200, anthropic_message(c, body["model"], msg_id, n, stop), hs)
    c.h.stream(c, "text/event-stream; charset=utf-8", hs + [("Cache-Control", "no-cache")],
               sse_named(anthropic_events(c, body["model"], msg_id, n, stop, ping=True)),
               anthropic_stream_error)


def anthropic_usage(c, output):
    u = {"input_tokens": c.prompt_tokens(),
         "cache_creation_input_tokens": c.s("cache_creation_tokens", 0) or 0,
         "cache_read_input_tokens": c.s("cached_tokens", 0) or 0,
         "output_tokens": output}
    return u


def anthropic_message(c, model, msg_id, n, stop):
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "".join(words(n))}],
            "stop_reason": stop, "stop_sequence": None, "usage": anthropic_usage(c, n)}


def anthropic_events(c, model, msg_id, n, stop, ping):
    """(kind, event name, JSON object) of an Anthropic Messages stream."""
    start = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
             "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": anthropic_usage(c, 1)}
    yield "pre", "message_start", {"type": "message_start", "message": start}
    yield "pre", "content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}
    if ping:
        yield "pre", "ping", {"type": "ping"}
    for w in words(n):
        yield "content", "content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": w}}
    yield "post", "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "post", "message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": stop, "stop_sequence": None},
                                    "usage": {"output_tokens": n}}
    yield "post", "message_stop", {"type": "message_stop"}


def sse_named(events):
    for kind, name, obj in events:
        yield kind, b"event: " + name.encode() + b"\ndata: " + jdump(obj) + b"\n\n"


def anthropic_stream_error(c, sent):
    etype = c.s("stream_error_type") or "overloaded_error"
    return b"event: error\ndata: " + jdump({"type": "error", "error": {
        "type": etype, "message": ANTHROPIC_MESSAGE.get(etype, "Error")}}) + b"\n\n"


def h_anthropic_chat(c):
    if c.h.command != "POST":
        return openai_error(c, 405, "Method Not Allowed")
    msg = anthropic_auth(c, allow_bearer=True)
    if msg:
        return openai_error(c, 401, msg, "authentication_error")
    chat_completions(c, lambda st, m: openai_error(c, st, m or ANTHROPIC_MESSAGE.get(
        ANTHROPIC_TYPE.get(st, "api_error"), "Error"), ANTHROPIC_TYPE.get(st)), "chatcmpl-",
        anthropic_headers())


def h_anthropic_unknown(c):
    anthropic_error(c, 404, "not_found_error", "Not Found")


# ============================================================================================
# Gemini (AI Studio) and Vertex AI
# ============================================================================================

def gemini_key_check(c, allow_bearer=False):
    """None when the key is good, else answers the error and returns True."""
    as_list = c.endpoint == "chat_completions"
    if "key" in c.query:
        c.rec["auth"] = "key_in_url"
        google_error(c, 400, "fake-clouds: the API key must not be in the URL (?key=); send "
                     "it in the x-goog-api-key header", "INVALID_ARGUMENT", as_list=as_list)
        return True
    key = c.header("x-goog-api-key")
    auth = c.header("Authorization") or ""
    if key is None and allow_bearer and auth.startswith("Bearer "):
        key = auth[7:].strip()
    if key is None:
        c.rec["auth"] = "missing"
        google_error(c, 403, "Method doesn't allow unregistered callers (callers without "
                     "established identity). Please use API Key or other form of API consumer "
                     "identity to call this API.", "PERMISSION_DENIED", as_list=as_list)
        return True
    want = c.h.server.state.creds.gemini_key
    if not want or not hmac.compare_digest(key.encode(), want.encode()):
        c.rec["auth"] = "wrong"
        google_error(c, 400, "API key not valid. Please pass a valid API key.",
                     "INVALID_ARGUMENT", [
                         {"@type": ERRINFO, "reason": "API_KEY_INVALID",
                          "domain": "googleapis.com",
                          "metadata": {"service": "generativelanguage.googleapis.com"}},
                         {"@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                          "locale": "en-US",
                          "message": "API key not valid. Please pass a valid API key."}],
                     as_list=as_list)
        return True
    c.rec["auth"] = "ok"
    return None


def vertex_token_check(c):
    auth = c.header("Authorization") or ""
    service = {"service": "aiplatform.googleapis.com",
               "method": "google.cloud.aiplatform.v1.PredictionService." +
               ("StreamGenerateContent" if c.endpoint == "streamGenerateContent"
                else "GenerateContent")}
    if not auth.startswith("Bearer "):
        c.rec["auth"] = "missing"
        google_error(c, 401, "Request is missing required authentication credential. Expected "
                     "OAuth 2 access token, login cookie or other valid authentication "
                     "credential. See https://developers.google.com/identity/sign-in/web/"
                     "devconsole-project.", "UNAUTHENTICATED",
                     [{"@type": ERRINFO, "reason": "CREDENTIALS_MISSING",
                       "domain": "googleapis.com", "metadata": service}])
        return True
    tok = auth[7:].strip()
    res = c.h.server.state.check_token(tok)
    if res == "ok":
        c.rec["auth"] = "ok"
        return None
    c.rec["auth"] = "expired" if res == "expired" else "wrong"
    reason = "ACCESS_TOKEN_EXPIRED" if (res == "expired" or tok.startswith("ya29.")) \
        else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
    google_error(c, 401, "Request had invalid authentication credentials. Expected OAuth 2 "
                 "access token, login cookie or other valid authentication credential. See "
                 "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                 "UNAUTHENTICATED", [{"@type": ERRINFO, "reason": reason,
                                      "domain": "googleapis.com", "metadata": service}])
    return True


def h_gemini(c, model, method):
    if c.h.command != "POST":
        return google_error(c, 405, "Method Not Allowed", "INVALID_ARGUMENT")
    if gemini_key_check(c):
        return
    generate(c, model, method, vertex=False)


def h_vertex(c, project, region, model, method):
    if c.h.command != "POST":
        return google_error(c, 405, "Method Not Allowed", "INVALID_ARGUMENT")
    if vertex_token_check(c):
        return
    host_region = "global" if c.host == "aiplatform.googleapis.com" else \
        c.host[:-len("-aiplatform.googleapis.com")]
    c.rec["region"] = region
    c.rec["project"] = project
    if host_region != region:
        return google_error(c, 400, "Location %s does not match the endpoint %s (region %s)."
                            % (region, c.host, host_region), "INVALID_ARGUMENT")
    want = c.h.server.state.creds.vertex_project
    if project != want:
        return google_error(c, 403, "Permission 'aiplatform.endpoints.predict' denied on "
                            "resource '//aiplatform.googleapis.com/projects/%s/locations/%s/"
                            "publishers/google/models/%s' (or it may not exist)."
                            % (project, region, model), "PERMISSION_DENIED",
                            [{"@type": ERRINFO, "reason": "IAM_PERMISSION_DENIED",
                              "domain": "aiplatform.googleapis.com",
                              "metadata": {"permission": "aiplatform.endpoints.predict"}}])
    generate(c, model, method, vertex=True)


def generate(c, model, method, vertex):
    body = c.json()
    if not isinstance(body, dict):
        return google_error(c, 400, "Invalid JSON payload received. %s"
                            % (c.json_error or "Expected an object."), "INVALID_ARGUMENT")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return google_error(c, 400, "* GenerateContentRequest.contents: contents is not "
                            "specified\n", "INVALID_ARGUMENT")
    c.rec["model"] = model
    if faults(c, lambda st: google_error(c, st), "application/json; charset=UTF-8"):
        return
    gc = body.get("generationConfig") or {}
    n, cut = c.pieces(gc.get("maxOutputTokens") if isinstance(gc, dict) else None)
    finish = "MAX_TOKENS" if cut else "STOP"
    p = c.prompt_tokens()
    thoughts = c.s("thoughts")
    cached = c.s("cached_tokens")
    rid = rand_id(22, string.ascii_letters + string.digits + "-_")

    def usage(out):
        u = {"promptTokenCount": p, "candidatesTokenCount": out,
             "totalTokenCount": p + out + (thoughts or 0)}
        if cached is not None:
            u["cachedContentTokenCount"] = cached
        if thoughts is not None:
            u["thoughtsTokenCount"] = thoughts
        u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": p}]
        return u

    def response(text, out, fin):
        cand = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if fin:
            cand["finishReason"] = fin
        r = {"candidates": [cand], "usageMetadata": usage(out), "modelVersion": model}
        if vertex:
            r["createTime"] = datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        r["responseId"] = rid
        return r

    hs = google_headers()
    if method == "generateContent":
        return c.h.reply(c, 200, response("".join(words(n)), n, finish), hs,
                         "application/json; charset=UTF-8")
    sse = c.query.get("alt", [""])[-1] == "sse"
    pieces = words(n) or [""]

    def objs():
        for i, w in enumerate(pieces):
            last = i == len(pieces) - 1
            kind = "content" if n else "post"
            yield kind, response(w, min(i + 1, n), finish if last else None)

    def err_obj(sent):
        gst = c.s("stream_error_type") or "INTERNAL"
        code = GOOGLE_CODE.get(gst, 500)
        return google_error_body(code, None, gst)

    if sse:
        events = ((k, b"data: " + jdump(o) + b"\r\n\r\n") for k, o in objs())
        c.h.stream(c, "text/event-stream", hs + [("Content-Disposition", "attachment")],
                   events, lambda c_, sent: b"data: " + jdump(err_obj(sent)) + b"\r\n\r\n")
        return

    state = {"first": True}

    def array_events():
        for k, o in objs():
            pre = b"[" if state["first"] else b","
            state["first"] = False
            yield k, pre + jdump(o) + b"\r\n"
        yield "post", b"]" if not state["first"] else b"[]"

    def arr_err(c_, sent):
        pre = b"[" if state["first"] else b","
        state["first"] = False
        return pre + jdump(err_obj(sent)) + b"\r\n]"

    c.h.stream(c, "application/json; charset=UTF-8", hs, array_events(), arr_err)


def h_gemini_chat(c):
    if c.h.command != "POST":
        return google_error(c, 405, "Method Not Allowed", as_list=True)
    if gemini_key_check(c, allow_bearer=True):
        return
    chat_completions(c, lambda st, m: google_error(c, st, m, as_list=True), "",
                     google_headers())


def h_google_unknown(c):
    google_error(c, 404, "Requested entity was not found.", "NOT_FOUND")


# ============================================================================================
# Google OAuth token endpoint
# ============================================================================================

def h_token(c):
    st = c.h.server.state
    if c.h.command != "POST":
        return oauth_error(c, 405, "invalid_request", "Method Not Allowed")
    ts = c.s("token_status")
    if ts and ts >= 400:
        return oauth_error(c, ts, OAUTH_ERROR.get(ts, "internal_failure"),
                           "fake-clouds: token_status switch")
    ctype = (c.header("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return oauth_error(c, 400, "invalid_request",
                           "Content-Type must be application/x-www-form-urlencoded")
    form = dict(urllib.parse.parse_qsl(c.body.decode("utf-8", "replace"),
                                       keep_blank_values=True))
    gt = form.get("grant_type")
    if gt != JWT_BEARER:
        return oauth_error(c, 400, "unsupported_grant_type", "Invalid grant_type: %s" % gt)
    assertion = form.get("assertion")
    if not assertion:
        return oauth_error(c, 400, "invalid_request", "Missing required parameter: assertion")
    c.rec["auth"] = "wrong"
    parts = assertion.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three parts")
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise ValueError("not objects")
    except (ValueError, TypeError, binascii.Error):
        c.rec["auth_detail"] = "malformed"
        return oauth_error(c, 400, "invalid_grant", "Invalid JWT: malformed assertion")
    c.rec["jwt"] = {"header": header, "claims": claims}
    iss = claims.get("iss")
    sa = st.creds.service_accounts.get(iss) if isinstance(iss, str) else None
    if sa is None:
        c.rec["auth_detail"] = "unknown iss"
        return oauth_error(c, 400, "invalid_grant", "Invalid grant: account not found")
    if header.get("alg") != "RS256":
        c.rec["auth_detail"] = "alg"
        return oauth_error(c, 400, "invalid_grant", "Invalid JWT Signature.")
    if header.get("kid") != sa["private_key_id"]:
        c.rec["auth_detail"] = "kid"
        return oauth_error(c, 400, "invalid_grant", "Invalid JWT Signature.")
    if not _rs256_verify(sa["public_key"], (parts[0] + "." + parts[1]).encode(), sig):
        c.rec["auth_detail"] = "signature"
        return oauth_error(c, 400, "invalid_grant", "Invalid JWT Signature.")
    if claims.get("aud") != GOOGLE_TOKEN_URI:
        c.rec["auth_detail"] = "aud"
        return oauth_error(c, 400, "invalid_grant", "Invalid JWT: Failed audience check. The "
                           "right audience is %s" % GOOGLE_TOKEN_URI)
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (iat, exp)) \
            or abs(iat - now) > 300 or exp <= now or exp - iat > 3600 or exp <= iat:
        c.rec["auth_detail"] = "iat/exp"
        return oauth_error(c, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived "
                           "token (60 minutes) and in a reasonable timeframe. Check your iat "
                           "and exp values in the JWT claim.")
    scope = claims.get("scope")
    if not isinstance(scope, str) or CLOUD_PLATFORM_SCOPE not in scope.split():
        c.rec["auth_detail"] = "scope"
        return oauth_error(c, 400, "invalid_scope",
                           "Invalid OAuth scope or ID token audience provided.")
    c.rec["auth"] = "ok"
    ttl = c.s("token_ttl")
    ttl = 3600 if ttl is None else ttl
    tok = st.issue_token(iss, ttl)
    c.h.reply(c, 200, {"access_token": tok, "expires_in": ttl, "token_type": "Bearer"},
              [("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"),
               ("Pragma", "no-cache")], "application/json; charset=utf-8")


# ============================================================================================
# Bedrock runtime
# ============================================================================================

def bedrock_verify(c, region):
    """SigV4 of the request. None when good; else answers the error and returns True."""
    st = c.h.server.state
    auth = c.header("Authorization")
    if not auth:
        c.rec["auth"] = "missing"
        bedrock_error(c, 403, "MissingAuthenticationTokenException",
                      "Missing Authentication Token")
        return True
    p = sigv4_parse_authorization(auth)
    if p is None:
        c.rec["auth"] = "wrong"
        c.rec["auth_detail"] = "malformed Authorization"
        bedrock_error(c, 403, "IncompleteSignatureException",
                      "Authorization header requires 'Credential', 'Signature' and "
                      "'SignedHeaders' parameters (AWS4-HMAC-SHA256).")
        return True
    cred = p["credential"].split("/")
    signed = p["signed_headers"].split(";")
    c.rec["sigv4"] = {"credential": p["credential"], "signed_headers": signed,
                      "canonical_request": None, "string_to_sign": None}
    if len(cred) != 5:
        c.rec["auth"] = "wrong"
        bedrock_error(c, 403, "IncompleteSignatureException",
                      "Credential should have 5 parts (AKID/date/region/service/aws4_request).")
        return True
    akid, sdate, sregion, sservice, term = cred
    creds = st.creds.bedrock.get(akid)
    if creds is None:
        c.rec["auth"] = "unknown_key"
        bedrock_error(c, 403, "UnrecognizedClientException",
                      "The security token included in the request is invalid.")
        return True
    token = c.header("x-amz-security-token")
    if (creds["session_token"] or token) and not (
            token and creds["session_token"] and
            hmac.compare_digest(token.encode(), creds["session_token"].encode())):
        c.rec["auth"] = "wrong"
        c.rec["auth_detail"] = "session token"
        bedrock_error(c, 403, "UnrecognizedClientException",
                      "The security token included in the request is invalid.")
        return True

    def bad(msg, etype="InvalidSignatureException"):
        c.rec["auth"] = "wrong"
        c.rec["auth_detail"] = msg
        bedrock_error(c, 403, etype, msg)
        return True

    amz_date = c.header("x-amz-date")
    if not amz_date:
        return bad("Authorization header requires existence of either a 'X-Amz-Date' or a "
                   "'Date' header.", "IncompleteSignatureException")
    try:
        t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return bad("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
                   "IncompleteSignatureException")
    now = time.time()
    fmt = lambda x: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(x))  # noqa: E731
    if t < now - 300:
        return bad("Signature expired: %s is now earlier than %s (%s - 5 min.)"
                   % (amz_date, fmt(now - 300), fmt(now)))
    if t > now + 300:
        return bad("Signature not yet current: %s is still later than %s (%s + 5 min.)"
                   % (amz_date, fmt(now + 300), fmt(now)))
    if sdate != amz_date[:8]:
        return bad("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                   "date from HTTP: '%s' != '%s', from '%s'." % (sdate, amz_date[:8], amz_date))
    if sregion != region:
        return bad("Credential should be scoped to a valid region. ")
    if sservice != "bedrock":
        return bad("Credential should be scoped to correct service: 'bedrock'. ")
    if term != "aws4_request":
        return bad("Credential should be scoped with a valid terminator: 'aws4_request', "
                   "not '%s'. " % term)
    if "host" not in signed:
        return bad("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    if "x-amz-date" not in signed:
        return bad("fake-clouds: x-amz-date must be a SignedHeader.")
    if creds["session_token"] and "x-amz-security-token" not in signed:
        return bad("fake-clouds: x-amz-security-token must be a SignedHeader with session "
                   "credentials.")
    payload_hash = hashlib.sha256(c.body).hexdigest()
    sent_hash = c.header("x-amz-content-sha256")
    if sent_hash is not None and sent_hash != payload_hash:
        return bad("The provided 'x-amz-content-sha256' header does not match what was "
                   "computed.")
    try:
        canon = sigv4_canonical_request(c.h.command, c.raw_path, c.raw_query,
                                        c.h.headers.items(), signed, payload_hash)
    except KeyError as e:
        return bad("fake-clouds: signed header %s is not in the request." % e.args[0])
    sts = sigv4_string_to_sign(amz_date, "/".join(cred[1:]), canon)
    want = sigv4_signature(creds["secret"], sdate, sregion, sservice, sts)
    shown = canon
    if token:
        shown = shown.replace(token, "<redacted>")
    c.rec["sigv4"]["canonical_request"] = shown
    c.rec["sigv4"]["string_to_sign"] = sts
    if not hmac.compare_digest(want.encode(), p["signature"].encode()):
        c.rec["auth"] = "wrong"
        c.rec["auth_detail"] = "signature"
        bedrock_error(c, 403, "InvalidSignatureException",
                      "The request signature we calculated does not match the signature you "
                      "provided. Check your AWS Secret Access Key and signing method. Consult "
                      "the service documentation for details.\n\nThe Canonical String for this "
                      "request should have been\n'%s'\n\nThe String-to-Sign should have been\n"
                      "'%s'\n" % (shown, sts))
        return True
    c.rec["auth"] = "ok"
    return None


def h_bedrock(c, region, raw_model, op):
    if bedrock_verify(c, region):
        return
    model = urllib.parse.unquote(raw_model)
    c.rec["model"] = model
    c.rec["region"] = region
    if op is None:
        return bedrock_error(c, 404, "UnknownOperationException", "Unknown operation")
    if c.h.command != "POST":
        return bedrock_error(c, 405, "UnknownOperationException", "Unknown operation")
    body = c.json()
    if not isinstance(body, dict):
        return bedrock_error(c, 400, "ValidationException",
                             "Malformed input request, please reformat your input and try "
                             "again.")
    if op in ("invoke", "invoke-with-response-stream"):
        if "anthropic." not in model:
            return bedrock_error(c, 400, "ValidationException",
                                 "fake-clouds: invoke supports Anthropic (anthropic.*) models "
                                 "only; use converse")
        problems = []
        for k in ("anthropic_version", "max_tokens", "messages"):
            if k not in body:
                problems.append("#: required key [%s] not found" % k)
        for k in ("model", "stream"):
            if k in body:
                problems.append("#: extraneous key [%s] is not permitted" % k)
        if "anthropic_version" in body and body["anthropic_version"] != \
                BEDROCK_ANTHROPIC_VERSION:
            problems.append("#/anthropic_version: %s is not a valid enum value"
                            % body["anthropic_version"])
        if problems:
            return bedrock_error(c, 400, "ValidationException", "Malformed input request: " +
                                 "".join(problems) + ", please reformat your input and try "
                                 "again.")
    else:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return bedrock_error(c, 400, "ValidationException",
                                 "1 validation error detected: Value null at 'messages' failed "
                                 "to satisfy constraint: Member must not be null")
    if faults(c, lambda st: bedrock_error(c, st)):
        return
    p = c.prompt_tokens()
    cached = c.s("cached_tokens")
    hs = bedrock_headers()
    if op == "invoke":
        n, cut = c.pieces(body.get("max_tokens"))
        msg = anthropic_message(c, anthropic_model_name(model), "msg_bdrk_01" + rand_id(22), n,
                                "max_tokens" if cut else "end_turn")
        hs += [("x-amzn-bedrock-input-token-count", str(p)),
               ("x-amzn-bedrock-output-token-count", str(n)),
               ("x-amzn-bedrock-invocation-latency", str(max(1, c.ms())))]
        if cached:
            hs.append(("x-amzn-bedrock-cache-read-input-token-count", str(cached)))
        return c.h.reply(c, 200, msg, hs)
    if op == "converse":
        ic = body.get("inferenceConfig") or {}
        n, cut = c.pieces(ic.get("maxTokens") if isinstance(ic, dict) else None)
        return c.h.reply(c, 200, {
            "output": {"message": {"role": "assistant",
                                   "content": [{"text": "".join(words(n))}]}},
            "stopReason": "max_tokens" if cut else "end_turn",
            "usage": converse_usage(c, p, n, cached),
            "metrics": {"latencyMs": max(1, c.ms())}}, hs)
    pad = c.s("padding", 1)

    def padded(o):
        if pad:
            o["p"] = padding_p()
        return o

    def ev(name, payload):
        return es_frame([(":event-type", name), (":content-type", "application/json"),
                         (":message-type", "event")], payload)

    def exc(c_, sent):
        etype = c.s("stream_error_type") or "throttlingException"
        cap = etype[:1].upper() + etype[1:]
        return es_frame([(":exception-type", etype), (":content-type", "application/json"),
                         (":message-type", "exception")],
                        {"message": BEDROCK_MESSAGE.get(cap, "fake-clouds: " + etype)})

    shs = hs + [("x-amzn-bedrock-content-type", "application/json")]
    first = {}
    if op == "converse-stream":
        ic = body.get("inferenceConfig") or {}
        n, cut = c.pieces(ic.get("maxTokens") if isinstance(ic, dict) else None)

        def events():
            yield "pre", ev("messageStart", padded({"role": "assistant"}))
            for w in words(n):
                first.setdefault("ms", c.ms())
                yield "content", ev("contentBlockDelta", padded(
                    {"contentBlockIndex": 0, "delta": {"text": w}}))
            yield "post", ev("contentBlockStop", padded({"contentBlockIndex": 0}))
            yield "post", ev("messageStop", padded(
                {"stopReason": "max_tokens" if cut else "end_turn"}))
            yield "post", ev("metadata", padded({"usage": converse_usage(c, p, n, cached),
                                                 "metrics": {"latencyMs": max(1, c.ms())}}))

        c.h.stream(c, "application/vnd.amazon.eventstream", shs, events(), exc)
        return
    # invoke-with-response-stream
    n, cut = c.pieces(body.get("max_tokens"))
    stop = "max_tokens" if cut else "end_turn"
    mid = "msg_bdrk_01" + rand_id(22)

    def events():
        for kind, name, obj in anthropic_events(c, anthropic_model_name(model), mid, n, stop,
                                                ping=False):
            if kind == "content":
                first.setdefault("ms", c.ms())
            if name == "message_stop":
                m = {"inputTokenCount": p, "outputTokenCount": n,
                     "invocationLatency": max(1, c.ms()),
                     "firstByteLatency": max(1, first.get("ms", c.ms()))}
                if cached:
                    m["cacheReadInputTokenCount"] = cached
                obj = dict(obj, **{"amazon-bedrock-invocationMetrics": m})
            chunk = {"bytes": base64.b64encode(jdump(obj)).decode()}
            if pad:
                chunk["p"] = padding_p()
            yield kind, ev("chunk", chunk)

    c.h.stream(c, "application/vnd.amazon.eventstream", shs, events(), exc)


def converse_usage(c, p, n, cached):
    u = {"inputTokens": p, "outputTokens": n, "totalTokens": p + n + (cached or 0)}
    if cached is not None:
        u["cacheReadInputTokens"] = cached
        u["cacheWriteInputTokens"] = c.s("cache_creation_tokens", 0) or 0
        u["totalTokens"] += u["cacheWriteInputTokens"]
    return u


def anthropic_model_name(model_id):
    """anthropic.claude-3-5-haiku-20241022-v1:0 (or us.anthropic.…) -> claude-3-5-haiku-20241022"""
    m = model_id.split("anthropic.", 1)[-1].split(":")[0]
    parts = m.rsplit("-v", 1)
    return parts[0] if len(parts) == 2 and parts[1].isdigit() else m


def h_bedrock_unknown_path(c, region):
    h_bedrock(c, region, "", None)


# ============================================================================================
# Routing
# ============================================================================================

def route(host, raw_path):
    """(vendor, endpoint name, handler taking a Call)."""
    if host == "api.anthropic.com":
        if raw_path == "/v1/messages":
            return "anthropic", "messages", h_anthropic_messages
        if raw_path == "/v1/messages/count_tokens":
            return "anthropic", "count_tokens", h_anthropic_messages
        if raw_path == "/v1/chat/completions":
            return "anthropic", "chat_completions", h_anthropic_chat
        return "anthropic", "unknown", h_anthropic_unknown
    if host == "generativelanguage.googleapis.com":
        if raw_path == "/v1beta/openai/chat/completions":
            return "gemini", "chat_completions", h_gemini_chat
        parts = raw_path.split("/")
        # /v1beta/models/{model}:{method}
        if len(parts) == 4 and parts[0] == "" and parts[1] in ("v1", "v1beta") and \
                parts[2] == "models" and ":" in parts[3]:
            model, _, method = parts[3].partition(":")
            if method in ("generateContent", "streamGenerateContent") and model:
                return "gemini", method, lambda c: h_gemini(c, model, method)
        return "gemini", "unknown", h_google_unknown
    if host == "oauth2.googleapis.com":
        if raw_path == "/token":
            return "oauth", "token", h_token
        return "oauth", "unknown", lambda c: oauth_error(c, 404, "invalid_request",
                                                         "Not Found")
    if host.endswith("aiplatform.googleapis.com") and (
            host == "aiplatform.googleapis.com" or host.endswith("-aiplatform.googleapis.com")):
        parts = raw_path.split("/")
        # /v1/projects/P/locations/R/publishers/google/models/M:method
        if len(parts) == 10 and parts[0] == "" and parts[1] in ("v1", "v1beta1") and \
                parts[2] == "projects" and parts[4] == "locations" and \
                parts[6] == "publishers" and parts[7] == "google" and parts[8] == "models" \
                and ":" in parts[9]:
            project, region = parts[3], parts[5]
            model, _, method = parts[9].partition(":")
            if method in ("generateContent", "streamGenerateContent") and model:
                return "vertex", method, lambda c: h_vertex(c, project, region, model, method)
        return "vertex", "unknown", h_google_unknown
    if host.startswith("bedrock-runtime.") and host.endswith(".amazonaws.com"):
        region = host[len("bedrock-runtime."):-len(".amazonaws.com")]
        parts = raw_path.split("/")
        if len(parts) == 4 and parts[0] == "" and parts[1] == "model" and parts[2] and \
                parts[3] in ("invoke", "invoke-with-response-stream", "converse",
                             "converse-stream"):
            model, op = parts[2], parts[3]
            return "bedrock", op, lambda c: h_bedrock(c, region, model, op)
        return "bedrock", "unknown", lambda c: h_bedrock_unknown_path(c, region)
    return "unknown", "unknown", lambda c: c.h.reply(
        c, 404, {"error": "fake-clouds: unknown host %r" % host})


# ============================================================================================
# Control port
# ============================================================================================

class ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw.strip() else {}

    def do_GET(self):
        st = self.server.state
        path, _, q = self.path.partition("?")
        qs = urllib.parse.parse_qs(q)
        if path == "/_fake/health":
            return self.send_json(200, {"ok": True})
        if path == "/_fake/stats":
            return self.send_json(200, st.snapshot_stats())
        if path == "/_fake/last":
            recs = st.snapshot_records()
            if "vendor" in qs:
                recs = [r for r in recs if r["vendor"] in qs["vendor"]]
            if not recs:
                return self.send_json(404, {"error": "no request yet"})
            return self.send_json(200, recs[-1])
        if path == "/_fake/requests":
            recs = st.snapshot_records()
            if "vendor" in qs:
                recs = [r for r in recs if r["vendor"] in qs["vendor"]]
            return self.send_json(200, {"requests": recs})
        if path == "/_fake/config":
            return self.send_json(200, st.get_config())
        if path == "/_fake/credentials":
            return self.send_json(200, st.creds.summary())
        if path == "/_fake/tokens":
            s = st.snapshot_stats()
            return self.send_json(200, {"valid": s["tokens_valid"],
                                        "issued": s["tokens_issued"]})
        self.send_json(404, {"error": "unknown control path"})

    def do_POST(self):
        st = self.server.state
        path = self.path.partition("?")[0]
        try:
            body = self.body()
        except ValueError:
            return self.send_json(400, {"error": "invalid JSON"})
        if path == "/_fake/reset":
            st.reset(tokens=bool(isinstance(body, dict) and body.get("tokens")))
            return self.send_json(200, {"ok": True})
        if path == "/_fake/config":
            if not isinstance(body, dict):
                return self.send_json(400, {"error": "want a JSON object"})
            try:
                return self.send_json(200, st.set_config(body))
            except ValueError as e:
                return self.send_json(400, {"error": str(e)})
        if path == "/_fake/tokens/expire":
            return self.send_json(200, {"expired": st.expire_tokens()})
        self.send_json(404, {"error": "unknown control path"})


class ControlServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, state):
        self.state = state
        super().__init__(addr, ControlHandler)


# ============================================================================================
# main
# ============================================================================================

def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_credentials(args):
    creds = Credentials()
    path = args.credentials or os.environ.get("FAKE_CLOUDS_CREDENTIALS")
    if not path and args.state_dir and os.path.exists(
            os.path.join(args.state_dir, "credentials.json")):
        path = os.path.join(args.state_dir, "credentials.json")
    if path:
        creds.load_file(path)
    env = os.environ.get
    creds.anthropic_key = args.anthropic_key or env("FAKE_CLOUDS_ANTHROPIC_KEY") or \
        creds.anthropic_key
    creds.gemini_key = args.gemini_key or env("FAKE_CLOUDS_GEMINI_KEY") or creds.gemini_key
    sa_file = args.service_account or env("FAKE_CLOUDS_SERVICE_ACCOUNT")
    if sa_file:
        with open(sa_file) as f:
            creds.add_service_account(json.load(f))
    creds.vertex_project = args.vertex_project or env("FAKE_CLOUDS_VERTEX_PROJECT") or \
        creds.vertex_project
    akid = args.bedrock_access_key_id or env("FAKE_CLOUDS_BEDROCK_ACCESS_KEY_ID")
    secret = args.bedrock_secret_access_key or env("FAKE_CLOUDS_BEDROCK_SECRET_ACCESS_KEY")
    token = args.bedrock_session_token or env("FAKE_CLOUDS_BEDROCK_SESSION_TOKEN")
    creds.add_bedrock(akid, secret, token)
    return creds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT of the HTTPS API port")
    ap.add_argument("--cert", required=True, help="PEM certificate chain")
    ap.add_argument("--key", required=True, help="PEM private key")
    ap.add_argument("--control", required=True, help="HOST:PORT of the plain-HTTP control port")
    ap.add_argument("--state-dir", help="reads credentials.json there, writes ports.json")
    ap.add_argument("--credentials", help="credentials JSON file (see README)")
    ap.add_argument("--anthropic-key")
    ap.add_argument("--gemini-key")
    ap.add_argument("--vertex-project")
    ap.add_argument("--service-account", help="service-account JSON (public key derived)")
    ap.add_argument("--bedrock-access-key-id")
    ap.add_argument("--bedrock-secret-access-key")
    ap.add_argument("--bedrock-session-token")
    ap.add_argument("--max-records", type=int, default=100)
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))
    args = ap.parse_args(argv)

    creds = load_credentials(args)
    state = State(creds, max_records=args.max_records, log_level=args.log_level)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    api = TLSServer(hostport(args.listen), ApiHandler, ctx, state)
    ctl = ControlServer(hostport(args.control), state)
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)
        tmp = os.path.join(args.state_dir, "ports.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"api": api.server_address[1], "control": ctl.server_address[1],
                       "pid": os.getpid()}, f)
        os.replace(tmp, os.path.join(args.state_dir, "ports.json"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                daemon=True) for s in (api, ctl)]
    for t in threads:
        t.start()
    state.log("info", "listening", api=api.server_address[1], control=ctl.server_address[1],
              credentials=creds.summary())
    while not stop.wait(0.5):
        pass
    api.shutdown()
    ctl.shutdown()
    api.server_close()
    ctl.server_close()
    state.log("info", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
