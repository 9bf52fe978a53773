"""What every attack test needs: attacker sockets (raw), well-behaved sockets (python-socketio's
client) on a chosen worker, the checks that a worker survived, and a way to run hypothesis
examples against the live stack from an async test."""
from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import socketio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .rawio import NAMESPACE, Closed, RawSocket

# Error codes the contract names; "internal" (shared/errors.py InternalError) is a defect.
INTERNAL = "internal"
HANDSHAKE_CODES = {"unauthorized", "token_expired", "too_many_connections", "rate_limited"}


def error_code(ack: Any) -> str | None:
    """The code of an ``{ok: false, error: {code}}`` answer (as Socket.IO delivers it: a list of
    arguments, or the object itself)."""
    if isinstance(ack, list) and len(ack) == 1:
        ack = ack[0]
    if isinstance(ack, dict) and ack.get("ok") is False and isinstance(ack.get("error"), dict):
        return ack["error"].get("code")
    return None


def check_ack(ack: Any, what: str) -> None:
    """An acknowledgement is ``{ok: true, …}`` or ``{ok: false, error: {code, message}}``, never internal."""
    assert isinstance(ack, list) and len(ack) == 1 and isinstance(ack[0], dict), f"{what}: odd ack {ack!r:.300}"
    answer = ack[0]
    assert isinstance(answer.get("ok"), bool), f"{what}: ack without ok: {answer!r:.300}"
    if answer["ok"] is False:
        error = answer.get("error")
        assert isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(
            error.get("message"), str), f"{what}: error ack not in the contract's shape: {answer!r:.300}"
        assert error["code"] != INTERNAL, f"{what}: answered with an internal error: {answer!r:.300}"


async def open_attacker(http: aiohttp.ClientSession, hub, *, worker: str | None = None,
                        tries: int = 8) -> RawSocket:
    """A raw socket joined to /notifications as a fresh user, on ``worker`` if given (new
    handshakes are spread over the workers by the load balancer: try until one lands there)."""
    for _ in range(tries):
        sock = await RawSocket.open(http, hub.url)
        if worker is not None and sock.worker != worker:
            await sock.close()
            continue
        kind, data = await sock.join({"token": hub.token(hub.new_user("attacker")), "lang": "en"})
        assert kind == "connect", f"an attacker with a valid token was refused: {data}"
        return sock
    raise AssertionError(f"no handshake landed on worker {worker} in {tries} tries")


class Client:
    """A well-behaved socket: python-socketio's AsyncClient, through the load balancer."""

    def __init__(self, hub, user: str) -> None:
        self.hub = hub
        self.user = user
        self.sio = socketio.AsyncClient(reconnection=False)
        self.inits: asyncio.Queue = asyncio.Queue()
        self.notifications: asyncio.Queue = asyncio.Queue()
        self.sio.on("init", self.inits.put_nowait, namespace=NAMESPACE)
        self.sio.on("notification", self.notifications.put_nowait, namespace=NAMESPACE)

    @property
    def worker(self) -> str | None:
        return self.sio.eio.sid.split(".", 1)[0] if self.sio.eio.sid else None

    @classmethod
    async def on_worker(cls, hub, worker: str | None, *, tries: int = 8) -> "Client":
        """Connected (``init`` received) on ``worker`` (any when None)."""
        for _ in range(tries):
            client = cls(hub, hub.new_user("bystander"))
            await client.sio.connect(hub.url, namespaces=[NAMESPACE], transports=["websocket"],
                                     auth={"token": hub.token(client.user), "lang": "en"}, wait_timeout=10)
            if worker is None or client.worker == worker:
                init = await asyncio.wait_for(client.inits.get(), 10)
                assert init["user_id"] == client.user, init
                return client
            await client.close()
        raise AssertionError(f"no well-behaved socket landed on worker {worker} in {tries} tries")

    async def mark_all_read(self) -> Any:
        return await self.sio.call("mark_all_read", {}, namespace=NAMESPACE, timeout=10)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


async def worker_is_healthy(stack, http: aiohttp.ClientSession, worker: str) -> None:
    """The worker's process runs and its /healthz answers (asked directly, not through nginx)."""
    process = stack.socket_workers[worker]
    assert process.alive, f"socket worker {worker} died; see {process.process.log_path}"
    async with http.get(stack.worker_urls[worker] + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200, f"{worker} /healthz answered {resp.status}"


async def fresh_socket_gets_init(hub, worker: str) -> None:
    """A new well-behaved socket on ``worker`` is admitted and gets ``init``."""
    client = await Client.on_worker(hub, worker)
    await client.close()


async def receives(client: Client, published: dict, timeout: float = 10) -> None:
    """Wait until ``client`` gets the one notification of a publish answer ``published``."""
    [created] = published["notifications"]
    while True:
        note = await asyncio.wait_for(client.notifications.get(), timeout)
        if note["id"] == created["id"]:
            return


async def bystander_unaffected(hub, bystander: Client) -> None:
    """A notification published now reaches the bystander, and its requests are still answered."""
    status, body = await hub.publish([bystander.user], "post.liked", actor={"id": "a", "name": "Kim"},
                                     data={"post_title": "Graphs"})
    assert status == 201, (status, body)
    await receives(bystander, body)
    ack = await bystander.mark_all_read()
    assert ack == {"ok": True, "unread_count": 0}, ack


class Attacker:
    """An attacker's socket that is replaced when the server closes it, when it stops answering,
    or before it has sent so much that any per-socket event limit would refuse everything."""

    def __init__(self, http: aiohttp.ClientSession, hub, worker: str, *, events_per_socket: int = 40) -> None:
        self.http = http
        self.hub = hub
        self.worker = worker
        self.events_per_socket = events_per_socket
        self.sock: RawSocket | None = None
        self.sent = 0
        self.opened = 0
        self.closed_by_server = 0
        self.unresponsive = 0
        self.acks: list[tuple[int, Any]] = []

    async def socket(self) -> RawSocket:
        if self.sock is None or self.sock.closed.is_set() or self.sent >= self.events_per_socket:
            await self.recycle()
            self.sock = await open_attacker(self.http, self.hub, worker=self.worker)
            self.opened += 1
            self.sent = 0
        return self.sock

    async def recycle(self) -> None:
        if self.sock is not None:
            self.acks.extend(self.sock.all_acks)
            await self.sock.close()
            self.sock = None

    async def fence(self, timeout: float = 3) -> str:
        """Send a fence: answered, closed (by the server), or silent (no answer: the socket is replaced)."""
        assert self.sock is not None
        self.sent += 1
        try:
            ack = await self.sock.fence(timeout)
        except Closed:
            self.closed_by_server += 1
            await self.recycle()
            return "closed"
        except TimeoutError:
            if self.sock.closed.is_set():
                self.closed_by_server += 1
                await self.recycle()
                return "closed"
            self.unresponsive += 1
            await self.recycle()
            return "silent"
        check_ack(ack, "fence")
        return "answered"

    def summary(self) -> str:
        return (f"attacker sockets opened: {self.opened}, closed by the server: {self.closed_by_server}, "
                f"stopped answering: {self.unresponsive}")


def hypothesis_settings(max_examples: int) -> settings:
    """Deterministic (derandomized, no example database), bounded, no deadline: the stack is real.
    Failing examples are not shrunk (each one is a round trip to the stack) unless
    SECURITY_SHRINK=1 asks for a minimal one."""
    phases = [Phase.generate, Phase.shrink] if os.environ.get("SECURITY_SHRINK") == "1" else [Phase.generate]
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=False, phases=phases)


class _Shown:
    """A generated input as hypothesis printed it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Failures(list):
    """Inputs that broke a rule: (input, error), reported together at the end of a test."""

    def raise_if_any(self) -> None:
        if not self:
            return
        lines = [f"{len(self)} input(s) broke the rules:"]
        for value, exc in self:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            lines.append(f"- {value!r:.400}\n    {type(exc).__name__}: {first[:600]}")
        raise AssertionError("\n".join(lines)) from self[0][1]


async def run_examples(strategy: st.SearchStrategy, check: Callable[[Any], Awaitable[None]], *,
                       max_examples: int, tally, explicit: Sequence[Any] = (), timeout: float = 90) -> Failures:
    """Run ``check`` on the test's event loop for each of ``explicit``, then for the examples
    hypothesis draws from ``strategy`` (it stops at the first that fails). Every failing input is
    returned, so that the test can still check that the stack survived before reporting them.
    Hypothesis drives from a thread, on the same event loop as the test's clients."""
    failures = Failures()
    for value in explicit:
        tally.add()
        try:
            await asyncio.wait_for(check(value), timeout)
        except Exception as exc:  # noqa: BLE001 - every failing input is reported
            failures.append((value, exc))
    loop = asyncio.get_running_loop()

    def prop(value):
        tally.add()
        try:
            asyncio.run_coroutine_threadsafe(check(value), loop).result(timeout)
        except BaseException as exc:
            exc.add_note(f"input: {value!r:.2000}")
            raise

    try:
        await asyncio.to_thread(hypothesis_settings(max_examples)(given(strategy)(prop)))
    except Exception as exc:  # noqa: BLE001 - reported with the others
        notes = [n for n in getattr(exc, "__notes__", []) if n.startswith("input: ")]
        failures.append((_Shown(notes[-1][len("input: "):] if notes else "a generated input"), exc))
    return failures
