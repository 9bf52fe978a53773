"""A hand-driven Engine.IO 4 / Socket.IO 5 client over one websocket (aiohttp), for sending what no
client library would: malformed packets, other namespaces, stray binary attachments, ack ids of
any size. It answers the server's pings, keeps every acknowledgement it receives, and notes when
the server closes the connection.

Packet text, for reference: ``4`` (Engine.IO MESSAGE) + Socket.IO type (``0`` CONNECT, ``2``
EVENT, ``3`` ACK, ``5`` BINARY_EVENT...) + ``<n>-`` (attachments) + ``/nsp,`` + ack id + JSON.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

NAMESPACE = "/notifications"
# Acknowledgement ids of the probes this module sends itself, far from what tests generate.
FENCE_BASE = 7_000_000_000_000


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Closed(Exception):
    """The server closed the connection."""


class RawSocket:
    """One Engine.IO session over a websocket, driven packet by packet."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, handshake: dict[str, Any]) -> None:
        self.ws = ws
        self.handshake = handshake
        self.sid: str = handshake["sid"]
        self.acks: dict[int, list[Any]] = {}
        self.all_acks: list[tuple[int, Any]] = []
        self.events: list[tuple[str, Any]] = []
        self.connects: list[tuple[str, Any]] = []
        # Set when the server closes the connection, or disconnects the socket from its namespace
        # (after which python-socketio drops its events unanswered).
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._fences = iter(range(FENCE_BASE, FENCE_BASE + 10**9))
        self._reader = asyncio.create_task(self._read(), name=f"raw-{self.sid}")

    @property
    def worker(self) -> str:
        """The worker that owns this session (its sid starts with ``<worker id>.``)."""
        return self.sid.split(".", 1)[0]

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base_url: str, query: dict[str, str] | str | None = None,
                   *, raw_query: bool = False, timeout: float = 10) -> "RawSocket":
        """A websocket Engine.IO session through ``base_url`` (the public port). With
        ``raw_query`` the query string is sent exactly as given (nothing added, nothing quoted)."""
        if raw_query:
            url = URL(f"{base_url}/socket.io/?{query}", encoded=True)
        else:
            extra = query if isinstance(query, str) else urlencode(query or {})
            url = URL(f"{base_url}/socket.io/?EIO=4&transport=websocket" + (f"&{extra}" if extra else ""))
        ws = await http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5),
                                   autoping=True, max_msg_size=0, compress=0)
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.TEXT or not msg.data.startswith("0"):
            await ws.close()
            raise ConnectionError(f"no Engine.IO OPEN packet: {msg.type} {str(msg.data)[:200]}")
        return cls(ws, json.loads(msg.data[1:]))

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await self._packet(msg.data)
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.ERROR):
                    break
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _packet(self, text: str) -> None:
        if text == "2":  # PING: answer it, or the server closes the session
            with contextlib.suppress(Exception):
                await self.ws.send_str("3")
            return
        if text.startswith("1"):  # Engine.IO CLOSE
            await self.ws.close()
            return
        if not text.startswith("4") or len(text) < 2:
            return
        kind, rest = text[1], text[2:]
        namespace = "/"
        if rest.startswith("/"):
            namespace, _, rest = rest.partition(",")
        if kind == "3":  # ACK
            digits = len(rest) - len(rest.lstrip("0123456789"))
            ack_id, payload = int(rest[:digits]), json.loads(rest[digits:])
            self.acks[ack_id] = payload
            self.all_acks.append((ack_id, payload))
        elif kind == "2":  # EVENT
            payload = json.loads(rest)
            self.events.append((payload[0], payload[1] if len(payload) > 1 else None))
        elif kind == "0":  # CONNECT
            self.connects.append(("connect", json.loads(rest) if rest else None))
        elif kind == "4":  # CONNECT_ERROR: {message, data}; clients see data as the error's data
            payload = json.loads(rest) if rest else None
            self.connects.append(("connect_error", payload.get("data", payload) if isinstance(payload, dict)
                                  else payload))
        elif kind == "1":
            self.connects.append(("disconnect", namespace))
            if namespace == NAMESPACE:
                self.closed.set()
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, ready, timeout: float) -> bool:
        """True once ``ready()``; False at ``timeout`` or when the connection is gone."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: ready() or self.closed.is_set())
        except TimeoutError:
            return False
        return ready()

    # -- sending ---------------------------------------------------------------------------

    async def send(self, frame: str | bytes) -> None:
        """One websocket frame as it is (text or binary); Closed when the server has gone."""
        if self.closed.is_set() or self.ws.closed:
            raise Closed(self.sid)
        try:
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            elif _utf8(frame):
                await self.ws.send_str(frame)
            else:
                # A text frame that is not UTF-8 (lone surrogates): aiohttp's public API refuses
                # to send one, its frame writer does not.
                await self.ws._writer.send_frame(frame.encode("utf-8", "surrogatepass"), aiohttp.WSMsgType.TEXT)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise Closed(self.sid) from exc

    async def join(self, auth: Any = None, *, namespace: str = NAMESPACE, timeout: float = 10) -> tuple[str, Any]:
        """Socket.IO CONNECT to ``namespace``: ("connect", {sid}) or ("connect_error", {code, message})."""
        seen = len(self.connects)
        await self.send("40" + namespace + "," + (json.dumps(auth) if auth is not None else ""))
        if not await self._wait(lambda: len(self.connects) > seen, timeout):
            raise Closed(self.sid) if self.closed.is_set() else TimeoutError(f"no answer to CONNECT {namespace}")
        return self.connects[seen]

    def event_packet(self, args: list[Any], ack_id: int | None = None, *, namespace: str = NAMESPACE) -> str:
        """The text of an EVENT packet (``args`` is [name, *arguments])."""
        prefix = "42" + ("" if namespace == "/" else namespace + ",")
        return prefix + ("" if ack_id is None else str(ack_id)) + json.dumps(args, separators=(",", ":"))

    async def emit(self, args: list[Any], ack_id: int | None = None, *, namespace: str = NAMESPACE) -> None:
        await self.send(self.event_packet(args, ack_id, namespace=namespace))

    async def ack(self, ack_id: int, timeout: float = 10) -> Any:
        """The data of acknowledgement ``ack_id``; Closed or TimeoutError when none comes."""
        if not await self._wait(lambda: ack_id in self.acks, timeout):
            raise Closed(self.sid) if self.closed.is_set() else TimeoutError(f"no ack {ack_id} within {timeout}s")
        return self.acks.pop(ack_id)

    async def call(self, args: list[Any], ack_id: int, timeout: float = 10) -> Any:
        await self.emit(args, ack_id)
        return await self.ack(ack_id, timeout)

    async def fence(self, timeout: float = 5) -> Any:
        """An unknown event with an ack: once it is answered, what was sent before it has been read."""
        ack_id = next(self._fences)
        return await self.call(["security.fence"], ack_id, timeout)

    async def wait_event(self, name: str, timeout: float = 10, predicate=lambda data: True) -> Any:
        """The data of the first server event ``name`` (matching ``predicate``) received so far or soon."""
        found: list[Any] = []

        def ready() -> bool:
            found[:] = [data for event, data in self.events if event == name and predicate(data)][:1]
            return bool(found)

        if not await self._wait(ready, timeout):
            raise Closed(self.sid) if self.closed.is_set() else TimeoutError(f"no {name} within {timeout}s")
        return found[0]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
