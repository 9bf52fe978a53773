"""Path traversal on the static routes (/dashboard/{name}, /docs/{name}, /vendor/{package}/{path}),
byte for byte, through the public port and straight to the API (as a caller inside the network
would, without nginx normalising anything first).

Names: ``..`` in every spelling (percent-encoded, double-encoded, overlong UTF-8, full-width,
backslashes), absolute paths, NUL, very long names, names of files outside the served folders
(the repository's own .py files, /etc/passwd, /proc/self/environ), symlink-like names. The answer
is 404 or 400 in the contract's error shape (straight to the API, aiohttp's parser may refuse a
target it cannot read with a plain 400), or 200 with the bytes of a file that is inside the
served folders; never /etc/passwd, never a file of the repository outside them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import strategies as st

from api_server.static_files import _TYPES, STATIC_DIR, VENDOR_DIR, VENDOR_PACKAGES

from .arena import run_examples
from .rawhttp import exchange, request

SECRET_MARKERS = [b"root:x:0:0", b"from __future__ import annotations", b"NOTIHUB_", b"[core]\n",
                  b"PATH=", b"-----BEGIN"]


@pytest.fixture(scope="module")
def served() -> set[str]:
    """Digests of every file the static routes may serve: inside their folders, with a served suffix."""
    roots = [STATIC_DIR] + [VENDOR_DIR / package for package in VENDOR_PACKAGES]
    digests = set()
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and path.suffix in _TYPES and path.resolve().is_relative_to(Path(root).resolve()):
                digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return digests


class Probe:
    def __init__(self, target: bytes, direct: bool, label: str = "") -> None:
        self.target, self.direct, self.label = target, direct, label

    def __repr__(self) -> str:
        shown = self.target if len(self.target) <= 300 else self.target[:300] + b"...(%d bytes)" % len(self.target)
        return f"Probe({self.label + ': ' if self.label else ''}{'API' if self.direct else 'public'} GET {shown!r})"


UP = [b"..", b"%2e%2e", b"%2E%2E", b".%2e", b"%2e.", b"%252e%252e", b"%25252e%25252e", b"%c0%ae%c0%ae", b"%e0%80%ae" * 2,
      b"%uff0e%uff0e", "．．".encode(), b"...", b"....", b"..;", b"..%00", b"%2e%2e%00"]
SEP = [b"/", b"%2f", b"%2F", b"%252f", b"\\", b"%5c", b"%255c", b"%c0%af", b"%e0%80%af", b"//", b"/./", b";/", b"%u2215"]
GOALS = [b"etc/passwd", b"proc/self/environ", b"api_server/static_files.py", b"shared/settings.py", b"README.md",
         b".git/config", b"api_server/assets/package.json", b"dashboard.js", b"index.html", b"docs.js",
         b"tests/conftest.py", b"devstack/nginx.py"]
PREFIXES = [b"/dashboard/", b"/docs/", b"/vendor/swagger-ui-dist/", b"/vendor/socket.io-client/",
            b"/vendor/socket.io-client/dist/", b"/vendor/", b"/vendor/%2e%2e/", b"/vendor/swagger-ui-dist%2f..%2f/",
            b"/vendor/socket.io-client%00/", b"/vendor/SWAGGER-UI-DIST/", b"/dashboard", b"/docs"]
ODD_NAMES = [b"%00", b"index.html%00.js", b"index.html%00", b"\x00", b"a" * 255 + b".js", b"a" * 256 + b".js",
             b"a" * 4000 + b".js", b"index.html@", b"dashboard.js%20-%3e%20%2fetc%2fpasswd", b".bin/x", b"~root",
             b"%2fetc%2fpasswd", b"/etc/passwd", b"//etc/passwd", b"file:%2f%2f%2fetc%2fpasswd", b"C:%5cwindows",
             b"CON", b"aux.js", b"index.html::$DATA", b"index.html.", b"index.html%20", b"INDEX.HTML", b"%ff%fe.js",
             b"%ed%a0%80.js", b"dashboard.js%2f..%2fdashboard.css", b".", b"%2e", b"..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd"]


def _traversal(prefix: bytes, ups: list[bytes], sep: bytes, goal: bytes, lead: bytes) -> bytes:
    return prefix + lead + sep.join(ups + [goal.replace(b"/", sep)])


traversals = st.builds(_traversal, st.sampled_from(PREFIXES), st.lists(st.sampled_from(UP), min_size=1, max_size=8),
                       st.sampled_from(SEP), st.sampled_from(GOALS), st.sampled_from([b"", b"/", b"x/", b"./", b"%2f"]))
odd = st.builds(lambda prefix, name: prefix + name, st.sampled_from(PREFIXES), st.sampled_from(ODD_NAMES))
probes = st.builds(Probe, st.one_of(traversals, traversals, odd), st.booleans())

EXPLICIT_PROBES = [
    *(Probe(p + b"../../../../../../etc/passwd", d, "dot-dot") for p in PREFIXES[:4] for d in (False, True)),
    *(Probe(p + b"%2e%2e%2f%2e%2e%2f%2e%2e%2fstatic_files.py", d, "encoded") for p in PREFIXES[:4] for d in (False, True)),
    *(Probe(p + b"%252e%252e%252f%252e%252e%252fstatic_files.py", d, "double-encoded") for p in PREFIXES[:4]
      for d in (False, True)),
    *(Probe(p + b"..%5c..%5c..%5capi_server%5cstatic_files.py", d, "backslashes") for p in PREFIXES[:4]
      for d in (False, True)),
    Probe(b"/vendor/swagger-ui-dist//etc/passwd", True, "absolute path as the file"),
    Probe(b"/vendor/swagger-ui-dist/%2fetc%2fpasswd", True, "encoded absolute path"),
    Probe(b"/vendor/swagger-ui-dist/..%2f..%2f..%2fstatic%2fdocs.js", True, "into a sibling folder"),
    Probe(b"/vendor/socket.io-client/package.json", True, "a file with a suffix not served"),
    Probe(b"/docs/dashboard%2findex.html", True, "a subfolder through an encoded slash"),
    Probe(b"/dashboard/" + b"a" * 9000, False, "very long name"),
    Probe(b"/dashboard/" + b"a" * 300, True, "a name longer than the file system allows"),
    Probe(b"/dashboard/index.html\x00.js", False, "raw NUL"),
    Probe(b"/dashboard/index.html", False, "the control"),
    Probe(b"/vendor/socket.io-client/dist/socket.io.min.js", False, "the control, vendor"),
]


async def test_static_routes_serve_nothing_outside_their_folders(stack, served, tally, stack_logs):
    outcomes: dict[str, int] = {}
    # Answers that serve nothing but are not what the contract promises (a status other than
    # 404/400, or an error body not in its shape): collected, so that generation goes on looking
    # for a file served from outside, and reported at the end.
    off_contract: dict[str, str] = {}

    async def check(probe: Probe) -> None:
        mark = stack_logs.mark()
        port = stack.api_port if probe.direct else stack.public_port
        responses, rest = await exchange(port, request("GET", probe.target), timeout=5)
        assert responses, f"{probe!r}: no HTTP response ({rest[:200]!r})"
        response = responses[0]
        for marker in SECRET_MARKERS:
            assert marker not in response.body, f"{probe!r}: the answer holds {marker!r}: {response.body[:300]!r}"
        if response.status == 200:
            digest = hashlib.sha256(response.body).hexdigest()
            assert digest in served, f"{probe!r}: 200 with a file that is not in a served folder: {response.body[:200]!r}"
        elif response.status in (301, 308) and probe.target in (b"/dashboard", b"/docs"):
            pass  # the folder's own redirect
        else:
            body = response.json()
            error = body.get("error") if isinstance(body, dict) else None
            shaped = isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
            # The contract's shape is the public entry's promise; straight to the API (an internal
            # port), aiohttp's own HTTP parser refuses a request target it cannot read with a
            # text/plain 400 before any application code runs: a 4xx is what is asked there.
            plain_parser_refusal = probe.direct and response.status == 400
            if response.status not in (400, 404) or not (shaped or plain_parser_refusal):
                kind = f"{response.status} {'JSON error' if shaped else response.header('Content-Type')}"
                off_contract.setdefault(kind, f"{probe!r:.300}: {response.body[:160]!r}")
        key = f"{response.status} {'API' if probe.direct else 'public'}"
        outcomes[key] = outcomes.get(key, 0) + 1
        stack_logs.assert_no_defects(mark)

    failures = await run_examples(probes, check, max_examples=200, tally=tally, explicit=EXPLICIT_PROBES)
    responses, _ = await exchange(stack.public_port, request("GET", "/healthz"))
    assert responses and responses[0].status == 200
    print(f"outcomes: {dict(sorted(outcomes.items()))}")
    failures.raise_if_any()
    assert not off_contract, "answers not 404/400 in the contract's error shape (one input each):\n" + "\n".join(
        f"- {kind}: {example}" for kind, example in off_contract.items())
