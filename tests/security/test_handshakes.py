"""Hostile Socket.IO handshakes through the load balancer: query strings of every shape (huge,
repeated parameters, NUL bytes, invalid percent-encoding, bytes that are not UTF-8, odd
content-language and since values) on the polling handshake, written byte for byte, and on the
websocket handshake; and auth objects of every shape.

A handshake is refused with ``connect_error`` whose data is ``{code, message}`` with a contract
code, or accepted (``init``, in a supported language) when it carries a valid token; no HTTP
answer is a 5xx (Engine.IO's own 400 for requests it cannot serve is fine); every worker stays up.
"""
from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs

import jwt
import pytest
from hypothesis import strategies as st
from yarl import URL

from shared.i18n import supported_languages

from ..conftest import JWT_SECRET
from .arena import HANDSHAKE_CODES, fresh_socket_gets_init, run_examples, worker_is_healthy
from .rawhttp import exchange, request
from .rawio import Closed, RawSocket

LANGS = set(supported_languages())
GARBAGE_TOKEN = "not.a.jwt"


def expired_token() -> str:
    return jwt.encode({"sub": "u-expired", "exp": int(time.time()) - 60}, JWT_SECRET, algorithm="HS256")


class Query:
    """A hostile query string; ``{valid}``, ``{expired}`` and ``{garbage}`` stand for tokens minted
    when the example runs (a fresh user each time)."""

    def __init__(self, raw: bytes, label: str = "") -> None:
        self.raw = raw
        self.label = label

    def render(self, tokens: dict[str, str]) -> bytes:
        out = self.raw
        for name, token in tokens.items():
            out = out.replace(b"{" + name.encode() + b"}", token.encode())
        return out

    def __repr__(self) -> str:
        shown = self.raw if len(self.raw) <= 300 else self.raw[:300] + b"...(%d bytes)" % len(self.raw)
        return f"Query({self.label + ': ' if self.label else ''}{shown!r})"


def server_view(query: bytes) -> dict[str, list[str]] | None:
    """The parameters the worker will see (aiohttp's URL parsing, then parse_qs as python-engineio
    and the namespace do), or None where nginx or aiohttp may refuse the request line first."""
    try:
        text = query.decode("ascii")
    except UnicodeDecodeError:
        return None
    if len(text) > 6000 or any(not 0x21 <= ord(c) < 0x7F for c in text):
        return None
    qs = text.partition("#")[0]
    try:
        return parse_qs(URL.build(path="/socket.io/", query_string=qs, encoded=True).query_string)
    except ValueError:
        return None


def expectation(view: dict[str, list[str]] | None, tokens: dict[str, str]) -> str | None:
    """What the handshake must end in: "connect", an error code, or None (any contract outcome)."""
    if view is None:
        return None
    if view.get("EIO") != ["4"] or "sid" in view or "j" in view or view.get("transport", ["polling"])[0] != "polling":
        return "engine refusal"
    first = view.get("token", [None])[0]
    if first is None:
        return "unauthorized"
    if first == tokens["valid"]:
        return "connect"
    if first == tokens["expired"]:
        return "token_expired"
    if first == tokens["garbage"]:
        return "unauthorized"
    return None


async def polling_handshake(port: int, query: bytes, *, timeout: float = 10) -> tuple[list[int], tuple | None]:
    """A polling handshake with ``query`` written as it is, then CONNECT to /notifications (the
    token comes from the query). Returns every HTTP status seen and ("connect", init) or
    ("connect_error", data), or None when the Engine.IO handshake was refused."""
    statuses = []
    responses, rest = await exchange(port, request("GET", b"/socket.io/?" + query), timeout=timeout)
    if not responses:
        # A request line cut short (by CR LF, say) reads as HTTP/0.9: the answer has no status line.
        assert not rest.startswith(b"HTTP/"), f"an unreadable HTTP response: {rest[:200]!r}"
        return [0], None
    first = responses[0]
    statuses.append(first.status)
    if first.status != 200 or not first.body.startswith(b"0{"):
        return statuses, None
    sid = json.loads(first.body[1:].split(b"\x1e")[0])["sid"]
    session = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    responses, _ = await exchange(port, request("POST", session, body=b"40/notifications,",
                                                headers=[("Content-Type", "text/plain;charset=UTF-8")]))
    statuses.append(responses[0].status)
    result = None
    try:
        async with asyncio.timeout(timeout):
            while result is None or result[0] == "connected":
                responses, _ = await exchange(port, request("GET", session), timeout=timeout)
                if not responses:
                    break
                statuses.append(responses[0].status)
                if responses[0].status != 200:
                    break
                for packet in responses[0].body.decode().split("\x1e"):
                    if packet.startswith("44/notifications,"):
                        result = ("connect_error", json.loads(packet[len("44/notifications,"):]).get("data"))
                    elif packet.startswith("40/notifications,"):
                        result = ("connected", None)
                    elif packet.startswith('42/notifications,["init",'):
                        result = ("connect", json.loads(packet[len("42/notifications,"):])[1])
    finally:
        await exchange(port, request("POST", session, body=b"1", headers=[("Content-Type", "text/plain")]),
                       timeout=timeout)
    return statuses, result


def _pct(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


NAMES = ["token", "token", "content-language", "lang", "since", "EIO", "transport", "sid", "j", "b64", "t", "",
         "token[]", "TOKEN", "content%2Dlanguage", "%74oken", "tok%00en", "__proto__", "constructor"]
lang_values = st.sampled_from(["ko", "ko-KR", "ko_KR", "KO", "%20ko%20", "en-US", "zh-Hant-TW", "x" * 36, "x" * 3000, "*",
                               "ko;q=0.5", "../../etc/passwd", "%E2%80%AEko", "%C4%B0", "ko%00", "-", "_", "ko-",
                               "i-klingon", "ko-KR-u-ca-buddhist", "en,ko", "%ff%fe", "null", "[]", "{}", "0"])
since_values = st.sampled_from(["0" * 24, "f" * 24, "F" * 24, "0" * 23, "0" * 25, "g" * 24, "%00" * 24, "-1", "null",
                                "[]", "{\"$gt\":\"\"}", "%7B%22%24gt%22%3A%22%22%7D", "%D9%A3" * 24, "9" * 400, "1e99",
                                "ffffffffffffffffffffffff%00", "%66" * 24])
ASCII_VALUES = ["", "%", "%Z", "%ZZ", "%%", "%00", "%FF%FE", "%C0%AF", "%ED%A0%80", "%E2%80%AE", "+", "%2B", "%26",
                "%3D", "%26token%3D{garbage}", "%26token%3D{valid}", "%26EIO%3D3", "%26sid%3Dw0.x", "%26j%3D1",
                "{valid}", "{expired}", "{garbage}", "null", "-1", "1e999", "NaN", "a=b=c", ";", "%0d%0aX-Injected:%201"]
# Bytes no client would put in a request line: nginx or aiohttp may refuse them before the worker.
# ("\udcff" is the byte 0xFF itself: queries are encoded with surrogateescape.)
RAW_VALUES = ["\x00", "a b", "\udcff\udcfe", "\t", "#frag", "\u00e9", "\r\nX-Injected: 1", "\x7f", "\\"]


def query_strategy(*, raw: bool) -> st.SearchStrategy:
    """Hostile query strings; with ``raw``, also bytes that are not printable ASCII."""
    names = st.one_of(st.sampled_from(NAMES + (["content-language\x00", "tok en"] if raw else [])),
                      st.text("abcdefghijklmnopqrstuvwxyz-_.~%", max_size=12))
    values = st.one_of(
        st.sampled_from(ASCII_VALUES + (RAW_VALUES if raw else [])),
        st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~", max_size=40),
        st.binary(max_size=24).map(_pct),
        st.sampled_from([1000, 5000] + ([7000, 9000] if raw else [])).map(lambda n: "a" * n),
        lang_values, since_values)
    params = st.lists(st.tuples(names, values), max_size=6)
    repeats = st.tuples(st.tuples(names, values), st.sampled_from([2, 50, 300] + ([2000] if raw else [])))
    prefixes = st.sampled_from(["EIO=4&transport=polling&token={valid}&", "EIO=4&transport=polling&token={valid}&",
                                "EIO=4&transport=polling&", "EIO=4&transport=polling&token={expired}&",
                                "EIO=4&transport=polling&token={garbage}&", "transport=polling&EIO=4&", "",
                                "EIO=4&transport=polling&token={garbage}&token={valid}&"])
    return st.builds(_query, prefixes, params, st.none() | repeats, st.sampled_from(["&", "&", "&&", ";", "&amp;"]))


def _query(prefix: str, pairs, repeat, separator: str) -> Query:
    parts = [f"{name}={value}" for name, value in pairs]
    if repeat is not None:
        (name, value), count = repeat
        parts += [f"{name}={value}"] * count
    return Query((prefix + separator.join(parts)).encode("utf-8", "surrogateescape"))


EXPLICIT_QUERIES = [
    Query(b"EIO=4&transport=polling&token={valid}", "well-formed"),
    Query(b"EIO=4&transport=polling&token={valid}&content-language=%ff%fe&since=%00%00", "junk language and since"),
    Query(b"EIO=4&transport=polling&" + b"content-language=ko&" * 300 + b"token={valid}", "300 repeated languages"),
    Query(b"EIO=4&transport=polling&token={valid}&x=%26token%3D{garbage}", "token injected after"),
    Query(b"EIO=4&transport=polling&x=%26token%3D{garbage}&token={valid}", "token injected before"),
    Query(b"EIO=4&transport=polling&token=" + b"a" * 7000, "7,000-byte token"),
    Query(b"EIO=4&transport=polling&token=" + b"a" * 70_000, "70,000-byte token"),
    Query(b"EIO=4&transport=polling&token=\x00{valid}", "raw NUL"),
    Query(b"EIO=4&transport=polling&token={valid}&content-language=\xff\xfe", "raw bytes that are not UTF-8"),
    Query(b"EIO=4&transport=polling&token=%ZZ%", "invalid percent-encoding"),
    Query(b"EIO=4&transport=polling&token={valid}&since=" + b"9" * 5000, "5,000-digit since"),
    Query(b"EIO=4&transport=polling&token={valid}&content-language=" + b"k" * 5000, "5,000-byte language"),
    Query(b"EIO=4&transport=polling&token={expired}", "expired"),
    Query(b"EIO=4&transport=polling&j=abc&token={valid}", "bad JSONP index"),
    Query(b"EIO=4&transport=polling&j=1&token={valid}", "JSONP"),
    Query(b"EIO=3&transport=polling&token={valid}", "old protocol"),
    Query(b"EIO=4&transport=websocket&token={valid}", "websocket without upgrade"),
    Query(b"EIO=4&transport=polling&sid=w0.nope&token={valid}", "unknown sid"),
    Query(b"EIO=4&transport=polling&token={valid}%0d%0aX-Injected:%201", "CRLF in a value"),
]


@pytest.fixture
def tokens(hub):
    """Fresh tokens for one example: a valid one for a user nobody else uses."""

    def mint() -> dict[str, str]:
        return {"valid": hub.token(hub.new_user("hs")), "expired": expired_token(), "garbage": GARBAGE_TOKEN}

    return mint


def _check_outcome(case, statuses: list[int], result, expected: str | None) -> str:
    assert all(s < 500 for s in statuses), f"{case!r}: HTTP {statuses}"
    if result is None:
        assert expected in (None, "engine refusal"), f"{case!r}: expected {expected}, the handshake got {statuses}"
        return f"http {statuses[0]}" if statuses[0] else "http/0.9"
    kind, data = result
    if kind == "connect":
        assert data["lang"] in LANGS, f"{case!r}: init in {data['lang']!r}"
        assert expected in (None, "connect"), f"{case!r}: expected {expected}, got connected"
        return "connect"
    assert kind == "connect_error", f"{case!r}: no CONNECT answer within the timeout ({statuses})"
    assert isinstance(data, dict) and set(data) >= {"code", "message"} and isinstance(data["message"], str), \
        f"{case!r}: connect_error data {data!r}"
    assert data["code"] in HANDSHAKE_CODES, f"{case!r}: connect_error code {data['code']!r}"
    if data["code"] != "rate_limited":
        assert expected in (None, data["code"]), f"{case!r}: expected {expected}, got {data}"
    return data["code"]


async def _all_workers_up(hub, stack, http) -> None:
    for worker in stack.worker_ids:
        await worker_is_healthy(stack, http, worker)
        await fresh_socket_gets_init(hub, worker)


async def test_hostile_query_strings_on_the_polling_handshake(hub, stack, http, tokens, tally, stack_logs):
    seen: dict[str, int] = {}

    async def check(case: Query) -> None:
        mark = stack_logs.mark()
        minted = tokens()
        query = case.render(minted)
        statuses, result = await polling_handshake(stack.public_port, query)
        outcome = _check_outcome(case, statuses, result, expectation(server_view(query), minted))
        seen[outcome] = seen.get(outcome, 0) + 1
        stack_logs.assert_no_defects(mark)

    failures = await run_examples(query_strategy(raw=True), check, max_examples=100, tally=tally,
                                  explicit=EXPLICIT_QUERIES)
    await _all_workers_up(hub, stack, http)
    print(f"outcomes: {dict(sorted(seen.items()))}")
    # Refusals quote request lines (aiohttp's parser errors do): never with the token in them.
    if stack_logs.tokens():
        failures.append(("the stack's logs", AssertionError(f"tokens in the logs: {stack_logs.tokens()[:3]}")))
    failures.raise_if_any()


lang_or_since = st.one_of(lang_values, since_values, st.just(None))
json_any = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                        max_leaves=8)
auth_objects = st.one_of(
    st.fixed_dictionaries({"token": st.sampled_from(["{valid}", "{expired}", "{garbage}", ""]) | json_any},
                          optional={"lang": lang_or_since | json_any, "since": lang_or_since | json_any,
                                    "__proto__": json_any, "content-language": json_any}),
    # Not a number that starts with a digit: on the wire ("40/notifications,5.0") Socket.IO reads
    # its digits as an ack id, so such a CONNECT is unreadable and goes unanswered until the
    # worker closes sessions that never join (NOTIHUB_NAMESPACE_TIMEOUT_SECONDS).
    json_any.filter(lambda v: not (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0)))


class Handshake:
    def __init__(self, query: Query, auth) -> None:
        self.query, self.auth = query, auth

    def __repr__(self) -> str:
        return f"Handshake({self.query!r}, auth={json.dumps(self.auth, default=str)[:300]})"


def _render_auth(auth, minted: dict[str, str]):
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return {**auth, "token": minted.get(auth["token"].strip("{}"), auth["token"])}
    return auth


async def test_hostile_websocket_handshakes_and_auth_objects(hub, stack, http, raw_http, tokens, tally, stack_logs):
    seen: dict[str, int] = {}

    async def check(case: Handshake) -> None:
        mark = stack_logs.mark()
        minted = tokens()
        query = case.query.render(minted).decode("ascii").replace("transport=polling", "transport=websocket")
        auth = _render_auth(case.auth, minted)
        try:
            sock = await RawSocket.open(raw_http, hub.url, query, raw_query=True)
        except Exception as exc:  # refused at the HTTP level: never by a 5xx
            status = getattr(exc, "status", None)
            assert status is None or status < 500, f"{case!r}: HTTP {status}"
            seen[f"http {status}"] = seen.get(f"http {status}", 0) + 1
            return
        try:
            kind, data = await sock.join(auth)
            if kind == "connect":
                init = await sock.wait_event("init", timeout=10)
                result = ("connect", init)
            else:
                result = (kind, data)
        except Closed:
            result = None
        finally:
            await sock.close()
        view = parse_qs(URL.build(path="/", query_string=query, encoded=True).query_string)
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            first = view.get("token", [None])[0]
            expected = {None: "unauthorized", minted["valid"]: "connect", minted["expired"]: "token_expired",
                        GARBAGE_TOKEN: "unauthorized"}.get(first)
        else:
            expected = {minted["valid"]: "connect", minted["expired"]: "token_expired"}.get(token, "unauthorized") \
                if isinstance(token, str) else "unauthorized"
        outcome = _check_outcome(case, [101], result, expected)
        seen[outcome] = seen.get(outcome, 0) + 1
        stack_logs.assert_no_defects(mark)

    cases = st.builds(Handshake, query_strategy(raw=False), auth_objects)
    explicit = [Handshake(Query(b"EIO=4&transport=websocket"), {"token": "{valid}", "lang": {"$gt": ""}, "since": [1]}),
                Handshake(Query(b"EIO=4&transport=websocket"), {"token": ["{valid}"]}),
                Handshake(Query(b"EIO=4&transport=websocket"), {"token": "{valid}", "since": "f" * 24, "lang": "ko-KR"}),
                Handshake(Query(b"EIO=4&transport=websocket&token={valid}"), {"token": "{garbage}"}),
                Handshake(Query(b"EIO=4&transport=websocket&token={valid}"), "not an object"),
                Handshake(Query(b"EIO=4&transport=websocket&token={valid}"), {"token": "", "lang": 7}),
                Handshake(Query(b"EIO=4&transport=websocket"), {"token": "{valid}" + "A" * 9000})]
    failures = await run_examples(cases, check, max_examples=80, tally=tally, explicit=explicit)
    await _all_workers_up(hub, stack, http)
    print(f"outcomes: {dict(sorted(seen.items()))}")
    # Refusals quote request lines (aiohttp's parser errors do): never with the token in them.
    if stack_logs.tokens():
        failures.append(("the stack's logs", AssertionError(f"tokens in the logs: {stack_logs.tokens()[:3]}")))
    failures.raise_if_any()
