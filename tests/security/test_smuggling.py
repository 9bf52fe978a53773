"""Request smuggling through the public port, written byte for byte on a plain TCP connection:
duplicate Content-Length, Content-Length with Transfer-Encoding, odd transfer codings, invalid
chunk sizes, obs-fold headers, absurdly long header lines, absolute URIs naming another host.

Each attack hides a second request in its body: a user request without credentials, or a
producer's write with the real service key (subscribing a canary user to a canary topic). The
rules: nothing the API executes was hidden from nginx (every request in the API's access log is
one nginx logged as a request of its own, and the canary subscription exists only if nginx served
the hidden request openly, as a pipelined one); no answer is a 5xx; the API stays up.
"""
from __future__ import annotations

import collections
import uuid

from hypothesis import strategies as st

from ..conftest import SERVICE_KEY
from .arena import run_examples
from .rawhttp import exchange

SENTINEL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
# Junk after the sentinel: whatever length a request declares, the connection ends promptly.
PADDING = b"X" * 8192


class Attack:
    """Raw bytes of one attack (``{smuggled}`` stands for the hidden request), with a short repr."""

    def __init__(self, raw: bytes, label: str = "") -> None:
        self.raw, self.label = raw, label

    def __repr__(self) -> str:
        shown = self.raw if len(self.raw) <= 500 else self.raw[:500] + b"...(%d bytes)" % len(self.raw)
        return f"Attack({self.label + ': ' if self.label else ''}{shown!r})"


def hidden_requests(canary: str) -> dict[str, bytes]:
    """The requests an attack hides, each with a path no other request uses (the access logs name
    paths, not query strings)."""
    return {
        "user request": f"GET /v1/me/notifications/{canary} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        "producer write": (f"PUT /v1/topics/smuggled-{canary}/subscribers/u-{canary} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Authorization: Bearer {SERVICE_KEY}\r\nContent-Length: 0\r\n\r\n").encode(),
    }


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


# -- generated attacks ---------------------------------------------------------------------

methods = st.sampled_from([b"POST", b"POST", b"GET", b"PUT", b"DELETE", b"OPTIONS"])
targets = st.sampled_from([b"/v1/events", b"/v1/notifications", b"/healthz", b"/v1/me/notifications/read-all",
                           b"/socket.io/?EIO=4&transport=polling", b"http://evil.example/v1/me/notifications",
                           b"http://127.0.0.1:1/healthz", b"//evil.example/healthz", b"/healthz#frag"])
te_values = st.sampled_from([b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"\tchunked", b"chunked\t",
                             b"chunked, identity", b"identity, chunked", b"gzip, chunked", b"xchunked", b"chunked;q=1",
                             b"\x0bchunked", b"chunk", b'"chunked"', b"identity"])
te_names = st.sampled_from([b"Transfer-Encoding", b"transfer-encoding", b"Transfer-Encoding ", b"Transfer_Encoding",
                            b"Transfer-Encoding\t", b" Transfer-Encoding", b"X-Transfer-Encoding"])
cl_values = st.one_of(st.integers(0, 300).map(lambda n: b"%d" % n),
                      st.sampled_from([b"+5", b"-1", b"0x10", b" 5", b"5 ", b"5, 5", b"5,6", b"05", b"1e2", b"",
                                       b"99999999999999999999", b"5\x00"]))
framing_headers = st.lists(st.one_of(
    st.builds(lambda v: b"Content-Length: " + v, cl_values),
    st.builds(lambda n, v: n + b": " + v, te_names, te_values),
    st.builds(lambda v: b"Transfer-Encoding:\r\n " + v, te_values),  # obs-fold
    st.builds(lambda v: b"X-Folded: a\r\n Transfer-Encoding: " + v, te_values),
), min_size=1, max_size=3)
chunk_sizes = st.sampled_from([b"-1", b"0x5", b"5 ", b" 5", b"ffffffffffffffffffff", b"5;ext=1", b"5;ext=\"a\"",
                               b"g", b"", b"+5", b"05", b"5\n"])
long_lines = st.sampled_from([b"", b"", b"X-Long: " + b"a" * 4000, b"X-Long: " + b"a" * 8200,
                              b"X-Long: " + b"a" * 70_000, b"Cookie: " + b"c=" * 5000])


def _body(kind: str, size: bytes, smuggled: bytes) -> bytes:
    if kind == "chunked with the request inside":
        return _chunk(b"{}") + b"0\r\n\r\n" + smuggled
    if kind == "chunked, request as a chunk":
        return _chunk(smuggled) + b"0\r\n\r\n"
    if kind == "odd chunk size":
        return size + b"\r\nhello\r\n0\r\n\r\n" + smuggled
    if kind == "trailer":
        return b"0\r\nX-Trailer: " + smuggled.replace(b"\r\n", b" ") + b"\r\n\r\n"
    if kind == "bare LF":
        return b"2\n{}\n0\n\n" + smuggled
    return b"{}" + smuggled  # plain: the request right after two bytes of body


def _attack(method, target, headers, long_line, kind, size) -> Attack:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json"]
    lines += headers + ([long_line] if long_line else [])
    return Attack(b"\r\n".join(lines) + b"\r\n\r\n" + _body(kind, size, b"{smuggled}"))


attacks = st.builds(_attack, methods, targets, framing_headers, long_lines,
                    st.sampled_from(["plain", "chunked with the request inside", "chunked, request as a chunk",
                                     "odd chunk size", "trailer", "bare LF"]), chunk_sizes)


def _post(headers: list[bytes], body: bytes, label: str, target: bytes = b"/v1/events") -> Attack:
    head = b"\r\n".join([b"POST " + target + b" HTTP/1.1", b"Host: 127.0.0.1"] + headers)
    return Attack(head + b"\r\n\r\n" + body, label)


S = b"{smuggled}"
EXPLICIT_ATTACKS = [
    _post([b"Content-Length: 2", b"Content-Length: 40"], b"{}" + S, "two Content-Lengths"),
    _post([b"Content-Length: 2", b"Content-Length: 2"], b"{}" + S, "two equal Content-Lengths"),
    _post([b"Content-Length: 2, 40"], b"{}" + S, "a Content-Length list"),
    _post([b"Content-Length: 6", b"Transfer-Encoding: chunked"], b"0\r\n\r\n" + S, "CL.TE"),
    _post([b"Transfer-Encoding: chunked", b"Content-Length: 60"], b"0\r\n\r\n" + S, "TE.CL"),
    _post([b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"], b"0\r\n\r\n" + S, "TE twice"),
    _post([b"Transfer-Encoding: xchunked", b"Content-Length: 2"], b"{}" + S, "unknown coding with CL"),
    _post([b"Transfer-Encoding:\r\n chunked", b"Content-Length: 2"], b"{}" + S, "obs-fold TE"),
    _post([b"Transfer-Encoding : chunked", b"Content-Length: 2"], b"{}" + S, "space before colon"),
    _post([b"Transfer-Encoding: chunked"], b"-1\r\n\r\n" + S, "negative chunk size"),
    _post([b"Transfer-Encoding: chunked"], b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n" + S, "chunk size overflow"),
    _post([b"Transfer-Encoding: chunked"], b"0x2\r\n{}\r\n0\r\n\r\n" + S, "0x chunk size"),
    _post([b"Transfer-Encoding: chunked"], b"2\r\n{}\r\n0\r\n" + S, "no final CRLF"),
    _post([b"Transfer-Encoding: chunked"], b"2;" + b"e" * 5000 + b"\r\n{}\r\n0\r\n\r\n" + S, "huge chunk extension"),
    _post([b"Content-Length: 2", b"X-Long: " + b"a" * 70_000], b"{}" + S, "a 70 kB header line"),
    _post([b"Content-Length: 2"] + [b"X-%d: 1" % i for i in range(3000)], b"{}" + S, "3,000 headers"),
    Attack(b"GET http://evil.example/v1/me/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n" + S,
           "absolute URI to another host"),
    Attack(b"GET http://127.0.0.1:1/healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n" + S, "absolute URI, odd Host"),
    Attack(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n" + S, "two Host headers"),
    Attack(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n" + S, "GET with a body"),
    Attack(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n" + S, "h2c upgrade"),
    Attack(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Version: 99\r\nSec-WebSocket-Key: x\r\n\r\n" + S,
           "a websocket upgrade the worker refuses"),
    Attack(b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + S, "CL.TE to the socket workers"),
    Attack(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + S, "plain pipelining (the control)"),
]


class AccessLogs:
    """nginx's and the API's access logs from a mark on. Both write a request's line after
    answering it, so a line may lag its response: waiting for one polls the file, bounded (a
    log file gives no event when it grows)."""

    def __init__(self, stack) -> None:
        self.nginx = stack.nginx.access_log
        self.api = stack.log_dir / "api.log"
        self.start = (self.nginx.stat().st_size, self.api.stat().st_size)

    def text(self) -> tuple[str, str]:
        out = []
        for path, offset in zip((self.nginx, self.api), self.start):
            with open(path, "rb") as fh:
                fh.seek(offset)
                out.append(fh.read().decode("utf-8", "replace"))
        return out[0], out[1]

    def served_openly(self, path: str) -> bool:
        """Whether nginx logged a request for ``path`` as one of its own. nginx writes a request's
        line when it frees the request, before it closes the connection, and ``exchange`` reads
        until the connection is closed: the line of any request of that connection is there."""
        return f" {path} " in self.text()[0]

    def executed(self, path: str) -> bool:
        """Whether the API logged a request for ``path``."""
        return f" {path} " in self.text()[1]


async def test_smuggled_requests_never_reach_the_api(hub, stack, tally, stack_logs):
    logs = AccessLogs(stack)
    server_errors: list[str] = []
    outcomes: collections.Counter = collections.Counter()
    canaries: list[tuple[str, str, Attack]] = []

    async def check(attack: Attack) -> None:
        tally.add()  # two exchanges per attack: one for each hidden request
        for name, hidden in hidden_requests(uuid.uuid4().hex[:24]).items():
            mark = stack_logs.mark()
            raw = attack.raw.replace(b"{smuggled}", hidden)
            responses, rest = await exchange(stack.public_port, [raw, SENTINEL, PADDING], timeout=5)
            statuses = [r.status for r in responses]
            outcomes[" ".join(map(str, statuses[:3])) or "no response"] += 1
            server_errors.extend(f"{status} for {attack!r:.300}" for status in statuses if status >= 500)
            path = hidden.split(b" ", 2)[1].decode()
            canaries.append((path, name, attack))
            if logs.executed(path):
                assert logs.served_openly(path), \
                    f"{attack!r} with a hidden {name}: the API executed {path}, which nginx never served"
            stack_logs.assert_no_defects(mark)

    failures = await run_examples(attacks, check, max_examples=150, tally=tally, explicit=EXPLICIT_ATTACKS)
    # Lines written after their check: every hidden request the API executed, nginx served openly.
    await exchange(stack.public_port, [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"])
    for path, name, attack in canaries:
        if logs.executed(path) and not logs.served_openly(path):
            failures.append((attack, AssertionError(f"the API executed the hidden {name} {path}")))
        if name == "producer write" and not logs.served_openly(path):
            topic = path.split("/")[3]
            status, body = await hub.request("GET", f"/v1/topics/{topic}/subscribers", service=True)
            if not (status == 200 and body.get("subscribers") == []):
                failures.append((attack, AssertionError(f"{topic} has subscribers: {status} {body}")))
    status, body = await hub.request("GET", "/healthz")
    assert status == 200, (status, body)
    print(f"first statuses on each connection: {dict(outcomes.most_common())}")
    failures.raise_if_any()
    assert not server_errors, f"{len(server_errors)} answers were 5xx:\n" + "\n".join(sorted(set(server_errors))[:20])


# -- what the public port answers to requests it refuses ----------------------------------

REFUSED_REQUESTS = {
    "a 70 kB header line": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
    "3,000 headers": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(3000))
                     + b"\r\n",
    "a 20 kB target": b"GET /healthz?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "an unknown transfer coding": b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\n\r\n"
                                  b"0\r\n\r\n",
    "an unknown method": b"FOO /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "TRACE": b"TRACE /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "HTTP/1.0 without Host": b"GET /v1/me/notifications HTTP/1.0\r\n\r\n",
    "bytes that are not ASCII in the path": b"GET /v1/me/notifications/\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "Content-Length with Transfer-Encoding": b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "a body over the limit": b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3000000\r\n\r\n",
}


async def test_refusals_keep_the_contract_error_shape(stack, tally):
    """Whatever refuses a request (nginx, aiohttp's parser or the API), the answer is a 4xx with
    ``{"error": {code, message}}``: the contract's shape for every error."""
    off_contract = []
    for name, raw in REFUSED_REQUESTS.items():
        tally.add()
        responses, rest = await exchange(stack.public_port, raw + b"\r\n" + PADDING, timeout=3)
        if not responses:
            off_contract.append(f"{name}: no HTTP response: {rest[:200]!r}")
            continue
        response = responses[0]
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        shaped = isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
        if not (400 <= response.status < 500 and shaped):
            off_contract.append(f"{name}: HTTP {response.status} {response.header('Content-Type')}: "
                                f"{response.body[:120]!r}")
    assert not off_contract, f"{len(off_contract)} refusals are not a 4xx in the contract's error shape:\n" + \
        "\n".join(off_contract)
