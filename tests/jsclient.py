"""Drive the real Socket.IO JavaScript client (``socket.io-client`` from npm) from asyncio tests.

``tests/js/bridge.mjs`` is a long-running Node process that owns any number of client sockets and
speaks JSON lines (its header documents the protocol). This module wraps it::

    async with JsBridge() as js:
        sock = await js.connect("tab1", "http://127.0.0.1:8080/notifications",
                                transports=["websocket"], query={"token": tok},
                                reconnection=True, reconnection_delay=100)
        init = await sock.wait_for("init", timeout=10)
        ack = await sock.emit_ack("mark_read", {"ids": [init["notifications"][0]["id"]]})
        note = await sock.wait_for("notification", predicate=lambda n: n["type"] == "post.liked")

Every socket keeps an ordered log of everything the client saw (server events, ``connect``,
``disconnect``, ``connect_error``, ``reconnect_attempt``, ``reconnect``, ``upgrade``...).
``wait_for(name)`` returns the data of the first event called ``name`` after that name's cursor
and moves the cursor past it, so successive calls return successive events; ``events(name)``
lists them all regardless of cursors. Waiting is event-driven and always bounded by a timeout.

Requires ``npm install`` (or ``npm ci``) in ``tests/js`` once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "BRIDGE_SCRIPT",
    "JS_DIR",
    "JsAckTimeout",
    "JsBridge",
    "JsBridgeError",
    "JsEvent",
    "JsSocket",
    "node_available",
]

log = logging.getLogger("tests.jsclient")

JS_DIR = Path(__file__).resolve().parent / "js"
BRIDGE_SCRIPT = JS_DIR / "bridge.mjs"

# Socket.IO client options that tests commonly pass as keyword arguments (snake_case -> camelCase).
_OPTION_NAMES = {
    "transports": "transports",
    "query": "query",
    "auth": "auth",
    "path": "path",
    "reconnection": "reconnection",
    "reconnection_delay": "reconnectionDelay",
    "reconnection_delay_max": "reconnectionDelayMax",
    "reconnection_attempts": "reconnectionAttempts",
    "randomization_factor": "randomizationFactor",
    "timeout": "timeout",
    "upgrade": "upgrade",
    "remember_upgrade": "rememberUpgrade",
    "extra_headers": "extraHeaders",
    "force_new": "forceNew",
    "multiplex": "multiplex",
    "with_credentials": "withCredentials",
    "ack_timeout": "ackTimeout",
    "retries": "retries",
    "try_all_transports": "tryAllTransports",
}


def node_available() -> bool:
    """True when ``node`` is on PATH and the npm dependencies of ``tests/js`` are installed."""
    return shutil.which("node") is not None and (JS_DIR / "node_modules" / "socket.io-client").is_dir()


class JsBridgeError(RuntimeError):
    """The bridge refused a command, or the Node process is gone."""


class JsAckTimeout(TimeoutError):
    """The server did not acknowledge an emit in time."""


class JsEvent:
    """One entry of a socket's event log."""

    __slots__ = ("name", "data", "args", "transport", "engine_id", "sid", "seq", "ts", "server_ack", "received")

    def __init__(self, msg: Mapping[str, Any]):
        self.name: str = msg.get("event")
        self.data: Any = msg.get("data")
        self.args: list | None = msg.get("args")
        self.transport: str | None = msg.get("transport")
        self.engine_id: str | None = msg.get("engine_id")
        self.sid: str | None = msg.get("sid")
        self.seq: int | None = msg.get("seq")
        self.ts: int | None = msg.get("ts")
        self.server_ack: bool = bool(msg.get("server_ack"))
        self.received: float = time.monotonic()

    def __repr__(self) -> str:
        data = json.dumps(self.data, default=str)
        if len(data) > 200:
            data = data[:200] + "…"
        return f"<JsEvent #{self.seq} {self.name} {data} transport={self.transport}>"


class JsSocket:
    """One ``socket.io-client`` socket living in the bridge (one browser tab, say)."""

    def __init__(self, bridge: "JsBridge", id: str, url: str, options: dict):
        self.bridge = bridge
        self.id = id
        self.url = url
        self.options = options
        self.log: list[JsEvent] = []
        self._cursors: dict[str, int] = collections.defaultdict(int)
        self._cond = asyncio.Condition()
        self.engine_id: str | None = None
        self.transport: str | None = None
        self.sid: str | None = None
        self.connected = False

    def __repr__(self) -> str:
        return f"<JsSocket {self.id} connected={self.connected} transport={self.transport} sid={self.sid}>"

    # ------------------------------------------------------------ event log

    async def _add(self, msg: Mapping[str, Any]) -> None:
        ev = JsEvent(msg)
        if ev.name == "connect":
            self.connected = True
            self.sid = (ev.data or {}).get("sid") or ev.sid
        elif ev.name == "disconnect":
            self.connected = False
        if ev.name == "upgrade":
            self.transport = (ev.data or {}).get("transport") or ev.transport
        elif ev.transport and ev.name not in ("disconnect", "connect_error", "reconnect_error"):
            self.transport = ev.transport
        if ev.engine_id and ev.name not in ("disconnect", "connect_error", "reconnect_error"):
            self.engine_id = ev.engine_id
        self.log.append(ev)
        async with self._cond:
            self._cond.notify_all()

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def events(self, name: str | None = None) -> list:
        """Data of every event called ``name`` received so far (all events' records if None)."""
        if name is None:
            return list(self.log)
        return [ev.data for ev in self.log if ev.name == name]

    def records(self, name: str | None = None) -> list[JsEvent]:
        """Full records (data, transport, engine_id, sid, seq...) of events called ``name``."""
        return [ev for ev in self.log if name is None or ev.name == name]

    def names(self) -> list[str]:
        """Names of all events received so far, in order."""
        return [ev.name for ev in self.log]

    def _find(self, names: tuple[str, ...], predicate, start: int) -> int | None:
        for i in range(start, len(self.log)):
            ev = self.log[i]
            if ev.name in names and i >= self._cursors[ev.name] and (predicate is None or predicate(ev.data)):
                return i
        return None

    def _describe(self) -> str:
        tail = self.log[-15:]
        return ", ".join(repr(ev) for ev in tail) or "nothing"

    async def wait_for(
        self,
        name: str | Iterable[str],
        timeout: float = 10,
        predicate: Callable[[Any], bool] | None = None,
        *,
        full: bool = False,
        consume: bool = True,
    ) -> Any:
        """Data of the next event ``name`` after that name's cursor for which ``predicate(data)``.

        ``name`` may be a list of names: the first unconsumed event among them is returned and
        the cursors of all of them move past it. Moves the cursor past the returned event (unless ``consume=False``); events skipped
        because the predicate refused them stay in ``events()``. ``full=True`` returns the
        :class:`JsEvent` record. Raises ``TimeoutError`` describing what did arrive.
        """
        names = (name,) if isinstance(name, str) else tuple(name)
        start = min(self._cursors[n] for n in names)
        found: list[int] = []

        def ready() -> bool:
            if self.bridge.dead:
                return True
            i = self._find(names, predicate, start)
            if i is None:
                return False
            found.append(i)
            return True

        try:
            async with asyncio.timeout(timeout):
                async with self._cond:
                    await self._cond.wait_for(ready)
        except TimeoutError:
            raise TimeoutError(
                f"[{self.id}] no {'/'.join(names)!s} event"
                f"{' matching the predicate' if predicate else ''} within {timeout}s; "
                f"last events: {self._describe()}{self.bridge.stderr_note()}"
            ) from None
        if not found:
            raise JsBridgeError(f"[{self.id}] bridge exited while waiting for {names}{self.bridge.stderr_note()}")
        i = found[-1]
        if consume:
            for n in names:
                self._cursors[n] = max(self._cursors[n], i + 1)
        ev = self.log[i]
        return ev if full else ev.data

    async def wait_for_any(self, *names: str, timeout: float = 10) -> JsEvent:
        """The next event among ``names`` (consumed), as a full record."""
        return await self.wait_for(names, timeout=timeout, full=True)

    async def assert_no_event(self, name: str, within: float = 1.0, predicate=None) -> None:
        """Fail if an unconsumed event ``name`` (matching ``predicate``) arrives within ``within`` s."""
        try:
            ev = await self.wait_for(name, timeout=within, predicate=predicate, full=True, consume=False)
        except TimeoutError:
            return
        raise AssertionError(f"[{self.id}] unexpected {name} event: {ev!r}")

    def skip(self, name: str | None = None) -> None:
        """Move the cursor of ``name`` (of every name seen if None) to the end of the log."""
        end = len(self.log)
        if name is not None:
            self._cursors[name] = end
            return
        for n in {ev.name for ev in self.log} | set(self._cursors):
            self._cursors[n] = end

    # ------------------------------------------------------------ commands

    async def emit(self, event: str, data: Any = None, *, args: list | None = None, raw: bool = False) -> None:
        """Emit without acknowledgement (returns once the client has queued it).

        ``raw=True`` sends the packet even for a name socket.io-client reserves (``connect``...).
        """
        cmd: dict[str, Any] = {"op": "emit", "id": self.id, "event": event, "raw": raw}
        if args is not None:
            cmd["args"] = list(args)
        elif data is not None:
            cmd["data"] = data
        await self.bridge.request(cmd)

    async def emit_ack(self, event: str, data: Any = None, timeout: float = 5, *, args: list | None = None,
                       raw: bool = False) -> Any:
        """Emit with ``socket.timeout(ms).emitWithAck`` and return the acknowledgement's data.

        Raises :class:`JsAckTimeout` if the server does not acknowledge within ``timeout`` s.
        While the socket is disconnected the client buffers the emit until it reconnects (not
        with ``raw=True``, which sends the packet even for a reserved name such as ``connect``).
        """
        cmd: dict[str, Any] = {"op": "emit", "id": self.id, "event": event, "ack": True,
                               "timeout": int(timeout * 1000), "raw": raw}
        if args is not None:
            cmd["args"] = list(args)
        elif data is not None:
            cmd["data"] = data
        reply = await self.bridge.request(cmd, timeout=timeout + 10)
        if "error" in reply:
            if reply["error"] == "timeout":
                raise JsAckTimeout(f"[{self.id}] no acknowledgement of {event!r} within {timeout}s")
            raise JsBridgeError(f"[{self.id}] {event!r} acknowledgement failed: {reply['error']}")
        return reply.get("data")

    async def set_auth(self, value: Mapping[str, Any] | None, *, merge: bool = False) -> dict | None:
        """Set ``socket.auth`` for the next (re)connection (``merge=True`` updates keys)."""
        reply = await self.bridge.request({"op": "set", "id": self.id, "path": "auth",
                                           "value": value, "merge": merge})
        return reply.get("auth")

    async def set_query(self, value: Mapping[str, Any] | None, *, merge: bool = False) -> dict:
        """Set ``socket.io.opts.query`` for the next (re)connection (``merge=True`` updates keys)."""
        reply = await self.bridge.request({"op": "set", "id": self.id, "path": "query",
                                           "value": value, "merge": merge})
        return reply.get("query")

    async def disconnect(self) -> None:
        """``socket.disconnect()``: client-side disconnect, no automatic reconnection."""
        await self.bridge.request({"op": "disconnect", "id": self.id})

    async def open(self) -> None:
        """``socket.connect()`` again after :meth:`disconnect` (or a server-side disconnect)."""
        await self.bridge.request({"op": "open", "id": self.id})

    async def drop(self) -> None:
        """Close the underlying transport like a lost network; the client reconnects if enabled."""
        await self.bridge.request({"op": "drop", "id": self.id})

    async def status(self) -> dict:
        """``{connected, active, sid, transport, engine_id}`` as the client sees them now."""
        return await self.bridge.request({"op": "status", "id": self.id})

    async def remove(self) -> None:
        """Disconnect and forget this socket in the bridge (its id may be reused)."""
        await self.bridge.request({"op": "remove", "id": self.id})
        self.bridge._sockets.pop(self.id, None)


class JsBridge:
    """The Node bridge process. Use as ``async with JsBridge() as js: ...``."""

    def __init__(
        self,
        *,
        node: str = "node",
        script: str | os.PathLike = BRIDGE_SCRIPT,
        env: Mapping[str, str] | None = None,
        stderr_log: str | os.PathLike | None = None,
        start_timeout: float = 20,
        request_timeout: float = 10,
    ):
        """``env`` is added to the environment (e.g. ``{"DEBUG": "socket.io-client:*"}`` for
        the client's own debug output on stderr). ``stderr_log`` also writes Node's stderr to that
        file; the last lines are kept in memory and attached to failures either way.
        """
        self.node = node
        self.script = Path(script)
        self.env = dict(env or {})
        self.stderr_log = Path(stderr_log) if stderr_log else None
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict = {}
        self.errors: list[dict] = []  # unsolicited {"type":"error"} lines
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=200)
        self.dead = False
        self._sockets: dict[str, JsSocket] = {}
        self._pending: dict[int, asyncio.Future] = {}
        self._req_ids = itertools.count(1)
        self._ready: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []
        self._stderr_file = None

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> "JsBridge":
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            await self.close()
        finally:
            if exc is not None and self.stderr_lines and hasattr(exc, "add_note"):
                exc.add_note("node bridge stderr (last lines):\n" + "\n".join(self.stderr_lines))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def client_version(self) -> str | None:
        return self.info.get("client_version")

    def stderr_note(self) -> str:
        if not self.stderr_lines:
            return ""
        return "\nnode bridge stderr (last lines):\n" + "\n".join(list(self.stderr_lines)[-20:])

    async def start(self) -> None:
        if self.proc is not None:
            raise JsBridgeError("bridge already started")
        if not (JS_DIR / "node_modules" / "socket.io-client").is_dir() and self.script == BRIDGE_SCRIPT:
            raise JsBridgeError(f"socket.io-client is not installed: run `npm ci` in {JS_DIR}")
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        if self.stderr_log:
            self.stderr_log.parent.mkdir(parents=True, exist_ok=True)
            self._stderr_file = open(self.stderr_log, "a", encoding="utf-8")
        env = {**os.environ, **self.env}
        self.proc = await asyncio.create_subprocess_exec(
            self.node, str(self.script),
            cwd=str(self.script.parent),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=64 * 1024 * 1024,  # one line may carry a large init payload
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name="jsbridge-stdout"),
            asyncio.create_task(self._read_stderr(), name="jsbridge-stderr"),
        ]
        try:
            self.info = await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
        except BaseException:
            await self.close()
            raise
        log.debug("bridge ready: %s", self.info)

    async def close(self, timeout: float = 5) -> None:
        """Ask the bridge to disconnect everything and exit; kill it (by pid) if it does not."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.returncode is None and not self.dead and proc.stdin and not proc.stdin.is_closing():
                with contextlib.suppress(Exception):
                    proc.stdin.write(b'{"op":"close"}\n')
                    await proc.stdin.drain()
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("node bridge pid %s did not exit; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout)
        finally:
            for task in self._tasks:
                if not task.done():
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(task), 2)
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._mark_dead("bridge closed")
            if self._stderr_file:
                self._stderr_file.close()
                self._stderr_file = None

    # ------------------------------------------------------------ I/O

    def _mark_dead(self, why: str) -> None:
        if self.dead:
            return
        self.dead = True
        err = JsBridgeError(f"{why}{self.stderr_note()}")
        if self._ready and not self._ready.done():
            self._ready.set_exception(err)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()

    async def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("bridge printed a non-JSON line: %r", line[:500])
                    continue
                await self._dispatch(msg)
        finally:
            # Let stderr catch up so the error names what Node printed before leaving.
            stderr_task = self._tasks[1] if len(self._tasks) > 1 else None
            if stderr_task is not None and not stderr_task.done():
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(stderr_task), 1)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.proc.wait(), 1)
            rc = self.proc.returncode
            self._mark_dead(f"node bridge exited (returncode {rc})")
            for sock in list(self._sockets.values()):
                await sock._wake()

    async def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.stderr_lines.append(text)
            log.debug("node: %s", text)
            if self._stderr_file:
                self._stderr_file.write(text + "\n")
                self._stderr_file.flush()

    async def _dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "event":
            sock = self._sockets.get(msg.get("id"))
            if sock is None:
                log.debug("event for unknown socket: %s", msg)
                return
            await sock._add(msg)
            return
        if kind == "ready":
            if self._ready and not self._ready.done():
                self._ready.set_result(msg)
            return
        req = msg.get("req")
        if req is not None:
            fut = self._pending.pop(req, None)
            if fut is not None and not fut.done():
                if kind == "error":
                    fut.set_exception(JsBridgeError(f"bridge refused {msg.get('op')}: {msg.get('message')}"))
                else:
                    fut.set_result(msg)
            return
        if kind == "error":
            log.warning("bridge error: %s", msg.get("message"))
            self.errors.append(msg)

    async def request(self, cmd: dict, timeout: float | None = None) -> dict:
        """Send one command with a fresh ``req`` and return the bridge's reply."""
        if self.dead or self.proc is None or self.proc.stdin is None:
            raise JsBridgeError(f"bridge is not running{self.stderr_note()}")
        req = next(self._req_ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        try:
            self.proc.stdin.write((json.dumps({**cmd, "req": req}) + "\n").encode())
            await self.proc.stdin.drain()
            return await asyncio.wait_for(fut, timeout or self.request_timeout)
        except TimeoutError:
            raise TimeoutError(f"bridge did not answer {cmd.get('op')} within {timeout or self.request_timeout}s"
                               f"{self.stderr_note()}") from None
        finally:
            self._pending.pop(req, None)

    # ------------------------------------------------------------ sockets

    def socket(self, id: str) -> JsSocket:
        return self._sockets[id]

    @property
    def sockets(self) -> dict[str, JsSocket]:
        return dict(self._sockets)

    async def connect(
        self,
        id: str,
        url: str,
        *,
        wait: bool = True,
        connect_timeout: float = 15,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> JsSocket:
        """Create socket ``id`` with ``io(url, options)`` and return its :class:`JsSocket`.

        Keyword arguments are client options in snake_case (``transports``, ``query``, ``auth``,
        ``path``, ``reconnection`` (default True), ``reconnection_delay``,
        ``reconnection_delay_max``, ``reconnection_attempts``, ``timeout``, ``extra_headers``...);
        ``options`` passes raw camelCase options. With ``wait`` (default) returns once the socket
        got its first ``connect`` or ``connect_error`` (neither is consumed), raising
        ``TimeoutError`` after ``connect_timeout`` s.
        """
        opts: dict[str, Any] = {"reconnection": True}
        for key, value in kwargs.items():
            if key not in _OPTION_NAMES:
                raise TypeError(f"unknown socket.io-client option {key!r} (use options={{...}})")
            if value is not None:
                opts[_OPTION_NAMES[key]] = value
        opts.update(options or {})
        old = self._sockets.get(id)
        sock = JsSocket(self, id, url, opts)
        self._sockets[id] = sock
        try:
            await self.request({"op": "connect", "id": id, "url": url, "options": opts})
        except BaseException:
            if old is not None:
                self._sockets[id] = old
            else:
                self._sockets.pop(id, None)
            raise
        if wait:
            await sock.wait_for(("connect", "connect_error"), timeout=connect_timeout, consume=False)
        return sock
