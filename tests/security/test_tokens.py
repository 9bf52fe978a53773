"""Forged and malformed user tokens, on the socket handshake and on the HTTP user endpoints.

Every token below has something wrong with it: an algorithm other than the pinned one (``none``
in every spelling, HS512, RS256 signed by the attacker, key confusion), a wrong or missing
signature, headers pointing anywhere (``kid``, ``jku``, ``x5u``, ``jwk``, ``x5c``), claims of the
wrong type (``exp`` as a string or beyond any clock, ``sub`` that is not a string), nested or
huge claims, or a length of up to a megabyte. Each is refused: the socket gets ``connect_error``
``{code, message}`` with ``unauthorized`` or ``token_expired``, the HTTP API answers 401 with
``{"error": {code, message}}``; no process fetches a URL a token names. The same holds for a
socket worker and an API configured for RS256 (NOTIHUB_JWT_PUBLIC_KEY), where an HS256 token
signed with the public key's text is the classic confusion attack.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import strategies as st

from devstack.hub import REPO_ROOT, HubProcess
from devstack.ports import free_port

from ..conftest import JWT_SECRET
from .arena import Failures, fresh_socket_gets_init, run_examples, worker_is_healthy
from .rawio import Closed, RawSocket

REFUSED = {"unauthorized", "token_expired"}
# A refusal for the client's address or the user comes before the token is read: still a refusal.
LIMITED = "rate_limited"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()


ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())
ATTACKER_JWK = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ATTACKER_RSA.public_key()))


def _pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(header, payload, how: str, *, public_pem: bytes = b"") -> str:
    """A compact JWS of ``header`` and ``payload`` (dicts, or raw JSON bytes), signed as ``how`` says."""
    signing_input = b64(_json(header)) + "." + b64(_json(payload))
    data = signing_input.encode()
    if how == "secret":  # the real HS256 secret: only the header or the claims are wrong
        sig = hmac.new(JWT_SECRET.encode(), data, hashlib.sha256).digest()
    elif how == "secret-512":
        sig = hmac.new(JWT_SECRET.encode(), data, hashlib.sha512).digest()
    elif how == "wrong-secret":
        sig = hmac.new(b"not-the-secret-0123456789-0123456789", data, hashlib.sha256).digest()
    elif how == "public-pem":  # HMAC keyed with the verifier's public key text (key confusion)
        sig = hmac.new(public_pem, data, hashlib.sha256).digest()
    elif how == "public-pem-stripped":
        sig = hmac.new(public_pem.strip(), data, hashlib.sha256).digest()
    elif how == "attacker-rsa":
        sig = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(data, ATTACKER_RSA)
    elif how == "attacker-ec":
        sig = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).sign(data, ATTACKER_EC)
    elif how == "empty":
        return signing_input + "."
    elif how == "none":
        return signing_input
    elif how == "garbage":
        return signing_input + "." + b64(b"\x00" * 32)
    else:
        raise ValueError(how)
    return signing_input + "." + b64(sig)


def future() -> int:
    return int(time.time()) + 3600


class Token:
    """A token to present, built when the example runs (``exp`` is relative to now)."""

    def __init__(self, header, payload, how: str, label: str = "", *, mutate=None) -> None:
        self.header, self.payload, self.how, self.label, self.mutate = header, payload, how, label, mutate

    def build(self, *, public_pem: bytes = b"") -> str:
        payload = self.payload(future()) if callable(self.payload) else self.payload
        token = sign(self.header, payload, self.how, public_pem=public_pem)
        return self.mutate(token) if self.mutate else token

    def __repr__(self) -> str:
        payload = self.payload(future()) if callable(self.payload) else self.payload
        text = f"{self.header!r:.200} {payload!r:.200} signed:{self.how}"
        return f"Token({self.label + ': ' if self.label else ''}{text}{' (mutated)' if self.mutate else ''})"


HS = {"alg": "HS256", "typ": "JWT"}
RS = {"alg": "RS256", "typ": "JWT"}


def claims(**kw):
    return lambda exp: {"sub": "u-tok", "exp": exp, **kw}


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Where the canary server (below) listens: tokens built at import time point at it.
CANARY_PORT = free_port()
CANARY = f"http://127.0.0.1:{CANARY_PORT}/"


def pointing(header: dict) -> list[dict]:
    """``header`` with each of the headers that name a key somewhere else."""
    url = CANARY + "jwks.json"
    return [
        {**header, "kid": "../../../../../../dev/null"},
        {**header, "kid": "' UNION SELECT 'secret' --"},
        {**header, "kid": url},
        {**header, "jku": url},
        {**header, "x5u": url + "cert.pem"},
        {**header, "jwk": ATTACKER_JWK},
        {**header, "x5c": [b64(b"not a certificate")]},
        {**header, "jku": "http://169.254.169.254/latest/meta-data/", "kid": "1"},
        {**header, "jku": "file:///etc/passwd"},
    ]


EXPLICIT_TOKENS = [
    *(Token({**HS, "alg": alg}, claims(), how, f"alg {alg!r}")
      for alg, how in [("none", "none"), ("none", "empty"), ("None", "none"), ("NONE", "empty"), ("nOnE", "none"),
                       ("none", "secret"), ("HS512", "secret-512"), ("HS384", "secret"), ("RS256", "attacker-rsa"),
                       ("ES256", "attacker-ec"), ("PS256", "attacker-rsa"), ("EdDSA", "garbage"), ("", "secret"),
                       ("hs256", "secret"), ("HS256 ", "secret"), ("HS256\x00", "secret")]),
    Token({"typ": "JWT"}, claims(), "secret", "no alg"),
    Token({**HS, "alg": None}, claims(), "secret", "alg null"),
    Token({**HS, "alg": ["HS256"]}, claims(), "secret", "alg list"),
    Token({**HS, "alg": {"HS256": True}}, claims(), "secret", "alg object"),
    *(Token(h, claims(), "attacker-rsa", "RS256 with a key named elsewhere") for h in pointing(RS)),
    *(Token(h, claims(), "wrong-secret", "HS256 with a key named elsewhere") for h in pointing(HS)),
    Token({**RS, "jwk": ATTACKER_JWK}, claims(), "attacker-rsa", "embedded attacker jwk"),
    Token({**HS, "crit": ["exp"], "exp": 1}, claims(), "wrong-secret", "crit"),
    Token({**HS, "b64": False, "crit": ["b64"]}, claims(), "wrong-secret", "unencoded payload"),
    Token(HS, claims(), "wrong-secret", "wrong secret"),
    Token(HS, claims(), "garbage", "garbage signature"),
    Token(HS, claims(), "empty", "empty signature"),
    Token(HS, claims(), "none", "two segments"),
    Token(HS, claims(), "secret", "four segments", mutate=lambda t: t + ".x"),
    Token(HS, claims(), "secret", "padded", mutate=lambda t: t.replace(".", "==.", 1)),
    Token(HS, claims(), "secret", "flipped signature", mutate=lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB")),
    Token(HS, claims(), "secret", "whitespace inside", mutate=lambda t: t.replace(".", " .", 1)),
    Token(HS, claims(), "secret", "standard base64", mutate=lambda t: t.replace("-", "+").replace("_", "/") + "+/"),
    Token(HS, claims(), "secret", "not ASCII", mutate=lambda t: t + "é"),
    Token(HS, claims(), "secret", "NUL", mutate=lambda t: t[:10] + "\x00" + t[10:]),
    Token(HS, claims(), "secret", "1 MB", mutate=lambda t: t + "A" * (2**20 - len(t))),
    Token(HS, claims(), "secret", "900 kB", mutate=lambda t: t + "A" * 900_000),
    Token(HS, claims(), "secret", "10 kB", mutate=lambda t: t + "A" * 10_000),
    Token(HS, lambda exp: b'{"sub":"u-tok","exp":%d,"x":' % exp + _nested(2900) + b"}", "secret", "nested claims"),
    Token(b'{"alg":"HS256","x":' + _nested(2900) + b"}", claims(), "secret", "nested header"),
    # exp of the wrong type, or beyond any clock
    Token(HS, lambda exp: {"sub": "u-tok", "exp": str(exp)}, "secret", "exp as a numeric string"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": "tomorrow"}, "secret", "exp as a word"),
    Token(HS, lambda exp: b'{"sub":"u-tok","exp":1' + b"0" * 400 + b"}", "secret", "exp = 10**400"),
    Token(HS, lambda exp: b'{"sub":"u-tok","exp":1e400}', "secret", "exp = 1e400"),
    Token(HS, lambda exp: b'{"sub":"u-tok","exp":NaN}', "secret", "exp NaN"),
    Token(HS, lambda exp: b'{"sub":"u-tok","exp":Infinity}', "secret", "exp Infinity"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": None}, "secret", "exp null"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": True}, "secret", "exp true"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": [exp]}, "secret", "exp list"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": {"$gt": 0}}, "secret", "exp object"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": exp - 7200}, "secret", "expired"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": -(10**18)}, "secret", "exp far in the past"),
    Token(HS, lambda exp: {"sub": "u-tok"}, "secret", "no exp"),
    # sub that is not a user id
    *(Token(HS, (lambda sub: lambda exp: {"sub": sub, "exp": exp})(sub), "secret", f"sub {sub!r:.40}")
      for sub in [5, 5.5, None, True, ["u-tok"], {"$gt": ""}, "", " ", "u tok", "../../admin", "u" * 129, "ü",
                  "u-tok\x00", "-u", "*"]),
    Token(HS, lambda exp: {"exp": exp}, "secret", "no sub"),
    Token(HS, lambda exp: [{"sub": "u-tok", "exp": exp}], "secret", "claims as a list"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": exp, "nbf": exp}, "secret", "not valid before an hour"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": exp, "nbf": "now"}, "secret", "nbf a word"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": exp, "iat": "x"}, "secret", "iat a word"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": exp, "roles": "instructor"}, "secret", "roles a string"),
    Token(HS, lambda exp: {"sub": "u-tok", "exp": exp, "roles": [{"$ne": 1}]}, "secret", "roles objects"),
]

# Generated: a valid base with at least one defect, and decorations that alone change nothing.
algs = st.sampled_from(["none", "None", "HS512", "HS384", "RS256", "ES256", "PS256", "", "HS256 ", "hs256", None, 256,
                        ["HS256"]])
signings = st.sampled_from(["wrong-secret", "garbage", "empty", "none", "attacker-rsa", "attacker-ec", "secret-512"])
subs = st.one_of(st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                 st.text(max_size=3).map(lambda t: " " + t), st.just("u" * 129), st.just(""),
                 st.text(st.characters(categories=["Cc", "Zs", "So"]), min_size=1, max_size=5))
bad_exps = st.one_of(
    st.integers(-(10**12), int(time.time()) - 60), st.integers(10**309, 10**330),
    st.text(max_size=12), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
    st.sampled_from(["Infinity", "NaN", "-Infinity", "1e400"]).map(lambda raw: ("raw", raw)))
decorations = st.fixed_dictionaries({}, optional={
    "kid": st.one_of(st.text(max_size=20), st.just("../../../../dev/null"), st.integers()),
    "jku": st.sampled_from([CANARY + "jwks.json", "file:///etc/passwd", "http://169.254.169.254/"]),
    "x5u": st.sampled_from([CANARY + "x5u.pem", "https://evil.example/x.pem"]),
    "jwk": st.just(ATTACKER_JWK), "typ": st.sampled_from(["JWT", "jwt", "", "at+jwt", None]),
    "cty": st.sampled_from(["JWT", "json"]), "x5c": st.just([b64(b"junk")]),
    "extra": st.recursive(st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3), max_leaves=6)})
extra_claims = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.text(max_size=10), st.integers(), st.lists(st.integers(), max_size=2)),
    "aud": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=3), max_size=2)),
    "iss": st.text(max_size=5), "jti": st.text(max_size=5), "blob": st.text(max_size=3000)})


def _generated(defect: str, alg, how, sub, exp, deco, extra) -> Token:
    header = {**deco, "alg": "HS256"}
    base = {"sub": "u-tok", **extra}
    if defect == "alg":  # signed with the real secret: the algorithm alone is what is wrong
        header["alg"] = alg
        return Token(header, lambda e: {**base, "exp": e}, "none" if alg in ("none", "None") else "secret", "bad alg")
    if defect == "signature":
        return Token(header, lambda e: {**base, "exp": e}, how, "bad signature")
    if defect == "sub":
        return Token(header, lambda e: {**base, "sub": sub, "exp": e}, "secret", "bad sub")
    if isinstance(exp, tuple):  # a number JSON cannot spell: written into the claims' text
        return Token(header, lambda e: b'{"sub":"u-tok","exp":' + exp[1].encode() + b"}", "secret", "bad exp")
    return Token(header, lambda e: {**base, "exp": exp}, "secret", "bad exp")


tokens = st.builds(_generated, st.sampled_from(["alg", "signature", "sub", "exp"]), algs, signings, subs, bad_exps,
                   decorations, extra_claims)


# -- the canary: a server that a token names as where its key is ----------------------------

@pytest.fixture
async def canary() -> AsyncIterator[list[str]]:
    """An HTTP server that records every request; tokens point their jku/x5u/kid at it."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(f"{request.method} {request.path_qs}")
        return web.json_response({"keys": [ATTACKER_JWK]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", CANARY_PORT).start()
    try:
        yield hits
    finally:
        await runner.cleanup()


async def _http_verdict(http: aiohttp.ClientSession, base_url: str, token: str) -> tuple[int, object]:
    try:
        async with http.get(base_url + "/v1/me/notifications/unread-count",
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body[:200]
    except (ValueError, aiohttp.ClientError) as exc:  # a header aiohttp itself will not send
        return 0, repr(exc)


async def _socket_verdict(http: aiohttp.ClientSession, base_url: str, token: str) -> tuple[str, object]:
    sock = await RawSocket.open(http, base_url)
    try:
        # Every refusal here is immediate: a CONNECT unanswered for 5 s will not be answered.
        return await sock.join({"token": token, "lang": "en"}, timeout=5)
    except Closed:
        return "closed", None
    except TimeoutError:
        return "no answer", None
    finally:
        await sock.close()


def _check_refused(case, token: str, http_verdict, socket_verdict) -> str:
    problems = []
    status, body = http_verdict
    if status == 0:
        pass  # the client library refused to send it (non-ASCII, NUL): nothing reached the server
    elif len(token) > 8000 and status in (400, 413, 414, 431, 494):
        pass  # over nginx's header limits: refused before the API, never a 5xx
    elif status not in (401, 429):
        problems.append(f"HTTP {status} {body!r:.300}")
    elif not (isinstance(body, dict) and set(body) == {"error"}
              and body["error"].get("code") in (REFUSED if status == 401 else {LIMITED})
              and isinstance(body["error"].get("message"), str)):
        problems.append(f"HTTP {status} body {body!r:.300}")
    kind, data = socket_verdict
    verdict = None
    if kind == "closed" and len(token) > 990_000:
        verdict = "closed (over the Engine.IO message limit)"
    elif kind != "connect_error":
        problems.append(f"the socket handshake ended in {kind} {data!r:.300}")
    elif not (isinstance(data, dict) and data.get("code") in REFUSED | {LIMITED}
              and isinstance(data.get("message"), str)):
        problems.append(f"connect_error data {data!r:.300}")
    else:
        verdict = data["code"]
    assert not problems, f"{case!r}: " + "; ".join(problems)
    return verdict


async def test_forged_tokens_are_refused_on_sockets_and_http(hub, stack, http, raw_http, canary, tally, stack_logs):
    seen: dict[str, int] = {}

    async def check(case: Token) -> None:
        mark = stack_logs.mark()
        token = case.build()
        verdict = _check_refused(case, token, await _http_verdict(http, hub.url, token),
                                 await _socket_verdict(raw_http, hub.url, token))
        seen[verdict] = seen.get(verdict, 0) + 1
        stack_logs.assert_no_defects(mark)

    failures = await run_examples(tokens, check, max_examples=100, tally=tally, explicit=EXPLICIT_TOKENS)
    assert canary == [], f"a process fetched what a token named: {canary}"
    for worker in stack.worker_ids:
        await worker_is_healthy(stack, http, worker)
        await fresh_socket_gets_init(hub, worker)
    print(f"refusals: {dict(sorted(seen.items()))}")
    if stack_logs.tokens():
        failures.append(("the stack's logs", AssertionError(f"tokens in the logs: {stack_logs.tokens()[:3]}")))
    failures.raise_if_any()


async def test_unusual_but_valid_tokens_are_accepted_or_refused_cleanly(hub, http, raw_http, canary, tally,
                                                                        stack_logs):
    """Tokens signed with the real secret whose only oddity is allowed by RFC 7519: a fractional
    exp (a NumericDate), one centuries away, a big or nested extra claim, header fields the
    verifier does not use. Either verdict is acceptable, never a crash, never a fetch of the URL a
    header names; the well-formed control token is accepted."""
    cases = {
        "control": lambda: {"sub": hub.new_user("tok"), "exp": future()},
        "fractional exp": lambda: {"sub": hub.new_user("tok"), "exp": future() + 0.5},
        "exp in the year 5138": lambda: {"sub": hub.new_user("tok"), "exp": 10**11},
        "exp 1e300": lambda: {"sub": hub.new_user("tok"), "exp": 1e300},
        "exp 2**63": lambda: {"sub": hub.new_user("tok"), "exp": 2**63},
        "a 5 kB claim": lambda: {"sub": hub.new_user("tok"), "exp": future(), "x": "y" * 5000},
        "nested claims, 50 levels": lambda: {"sub": hub.new_user("tok"), "exp": future(), "x": json.loads(
            "[" * 50 + "]" * 50)},
        "unknown header fields": lambda: {"sub": hub.new_user("tok"), "exp": future()},
    }
    for name, payload in cases.items():
        tally.add()
        header = {**HS, "kid": "../../dev/null", "jku": CANARY} if name == "unknown header fields" else HS
        token = sign(header, payload(), "secret")
        status, body = await _http_verdict(http, hub.url, token)
        kind, data = await _socket_verdict(raw_http, hub.url, token)
        if name == "control":
            assert (status, kind) == (200, "connect"), (status, body, kind, data)
            continue
        assert status in (200, 401), f"{name}: HTTP {status} {body!r:.300}"
        assert kind == "connect" or (kind == "connect_error" and data.get("code") in REFUSED), (name, kind, data)
    assert canary == [], f"a process fetched what a token named: {canary}"
    stack_logs.assert_no_defects()


# -- a worker and an API configured for RS256 ----------------------------------------------

@pytest.fixture(scope="module")
def rs256(stack):
    """An API and a socket worker that verify RS256 tokens with NOTIHUB_JWT_PUBLIC_KEY (and have
    no HS256 secret), on the stack's MongoDB and Redis; stopped at the end."""
    issuer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem(issuer)
    env = {k: v for k, v in stack.child_env().items() if k != "NOTIHUB_JWT_SECRET"}
    env.update(NOTIHUB_JWT_PUBLIC_KEY=pem.decode(), NOTIHUB_DRAIN_SECONDS="0")
    api = HubProcess.api(port=free_port(), env=env, log_path=stack.log_dir / "api-rs256.log", cwd=REPO_ROOT)
    worker = HubProcess.socket_worker(worker_id="w9", port=free_port(), env=env, log_path=stack.log_dir / "w9-rs256.log",
                                      cwd=REPO_ROOT, drain_seconds=1)
    started = []
    try:
        for process in (api, worker):
            process.start()
            started.append(process)
        yield {"issuer": issuer, "pem": pem, "api": api.url, "worker": worker.url}
    finally:
        for process in reversed(started):
            process.stop(5)


def _rs256(issuer, payload, header=None) -> str:
    return jwt.encode(payload, issuer, algorithm="RS256", headers=header)


async def test_rs256_verifier_refuses_key_confusion_and_forgeries(rs256, http, raw_http, canary, tally, stack_logs):
    pem, issuer = rs256["pem"], rs256["issuer"]
    der = issuer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_text = jwt.algorithms.RSAAlgorithm.to_jwk(issuer.public_key()).encode()

    def hs_with(key: bytes, payload) -> str:
        data = (b64(_json(HS)) + "." + b64(_json(payload))).encode()
        return data.decode() + "." + b64(hmac.new(key, data, hashlib.sha256).digest())

    def good() -> dict:
        return {"sub": f"rs-{time.monotonic_ns()}", "exp": future()}

    forged = {
        "HS256 keyed with the public key PEM": lambda: hs_with(pem, good()),
        "HS256 keyed with the PEM, stripped": lambda: hs_with(pem.strip(), good()),
        "HS256 keyed with the DER key": lambda: hs_with(der, good()),
        "HS256 keyed with the JWK text": lambda: hs_with(jwk_text, good()),
        "HS256 keyed with an empty key": lambda: hs_with(b"", good()),
        "HS512 keyed with the PEM": lambda: sign({"alg": "HS512"}, good(), "none") + "." + b64(
            hmac.new(pem, (b64(_json({"alg": "HS512"})) + "." + b64(_json(good()))).encode(), hashlib.sha512).digest()),
        "RS256 by the attacker": lambda: sign(RS, good(), "attacker-rsa"),
        "RS256 by the attacker, its jwk embedded": lambda: sign({**RS, "jwk": ATTACKER_JWK}, good(), "attacker-rsa"),
        "RS256 by the attacker, jku to it": lambda: sign({**RS, "jku": CANARY + "jwks.json"}, good(), "attacker-rsa"),
        "RS256 by the attacker, x5u to it": lambda: sign({**RS, "x5u": CANARY + "c.pem"}, good(), "attacker-rsa"),
        "PS256 by the real issuer": lambda: jwt.encode(good(), issuer, algorithm="PS256"),
        "RS512 by the real issuer": lambda: jwt.encode(good(), issuer, algorithm="RS512"),
        "ES256 by the attacker": lambda: sign({"alg": "ES256"}, good(), "attacker-ec"),
        "alg none": lambda: sign({"alg": "none"}, good(), "none"),
        "RS256 expired": lambda: _rs256(issuer, {"sub": "rs-x", "exp": int(time.time()) - 60}),
        "RS256 exp as a string": lambda: _rs256(issuer, {"sub": "rs-x", "exp": str(future())}),
        "RS256 sub a number": lambda: _rs256(issuer, {"sub": 7, "exp": future()}),
        "RS256 signature of another token": lambda: _rs256(issuer, good()).rsplit(".", 1)[0] + "." + _rs256(
            issuer, good()).rsplit(".", 1)[1],
    }
    failures = Failures()
    for name, make in forged.items():
        tally.add()
        mark = stack_logs.mark()
        token = make()
        try:
            _check_refused(f"RS256 stack, {name}", token, await _http_verdict(http, rs256["api"], token),
                           await _socket_verdict(raw_http, rs256["worker"], token))
            stack_logs.assert_no_defects(mark)
        except AssertionError as exc:
            failures.append((name, exc))
    # The control: the real issuer's RS256 token is accepted on both.
    tally.add()
    token = _rs256(issuer, good())
    status, body = await _http_verdict(http, rs256["api"], token)
    assert status == 200, (status, body)
    kind, data = await _socket_verdict(raw_http, rs256["worker"], token)
    assert kind == "connect", (kind, data)
    assert canary == [], f"a process fetched what a token named: {canary}"
    failures.raise_if_any()
