"""The Socket.IO server of one worker, whose session ids name the worker.

The load balancer routes every request carrying ``sid=w1.…`` to worker ``w1`` (sticky
long-polling and upgrades), while new handshakes spread over all workers, even when
every client comes from one address.

A packet no Socket.IO client sends (malformed, a server's type, binary past its bounds) closes
its connection, as Node's socket.io does on a parse error (``WorkerServer``, ``BoundedPacket``).
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any

import engineio
import orjson
import socketio
from aiohttp import hdrs, web

from shared import metrics

logger = logging.getLogger(__name__)


class WorkerEngine(engineio.AsyncServer):
    """Engine.IO server whose session ids start with ``<worker_id>.``."""

    # socket.io-client (Node's `ws`, and browsers) offers permessage-deflate, and aiohttp's
    # WebSocketResponse, as python-engineio builds it, accepts it: every connection then keeps
    # a zlib deflate stream of 262 KiB (wbits 15, memLevel 8) for as long as it is open, to
    # squeeze notifications of a few hundred bytes. Refusing it takes an idle connection from
    # 128 to 38 KiB of RSS (python -m bench.memory).
    websocket_compression = False

    def __init__(self, *args, worker_id: str, **kwargs) -> None:
        self.worker_id = worker_id
        super().__init__(*args, **kwargs)

    def generate_id(self) -> str:
        """A unique session id, prefixed for routing."""
        return f"{self.worker_id}.{super().generate_id()}"

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """Serve an Engine.IO request; a websocket handshake never negotiates compression."""
        if not self.websocket_compression and hdrs.SEC_WEBSOCKET_EXTENSIONS in request.headers:
            # Without the offer, aiohttp answers with no extension and the client sends and
            # expects plain frames (RFC 7692, section 5).
            headers = request.headers.copy()
            del headers[hdrs.SEC_WEBSOCKET_EXTENSIONS]
            request = request.clone(headers=headers)
        return await super().handle_request(request)


def engine_socket(server: socketio.AsyncServer, sid: str, namespace: str) -> Any:
    """The Engine.IO socket under a Socket.IO session, or None once it is gone."""
    eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
    return server.eio.sockets.get(eio_sid) if eio_sid is not None else None


async def close_session(server: engineio.AsyncServer, eio_sid: str) -> None:
    """Close an Engine.IO session now: its disconnect handlers run, and its transport shuts."""
    socket = server.sockets.get(eio_sid)
    if socket is None:
        return
    # Runs the disconnect handlers and queues Engine.IO CLOSE, without waiting for a polling
    # client to fetch it (it may never: its next poll of a closed session is refused, which
    # ends its transport just as well). engineio forgets the closed session by itself.
    await socket.close(wait=False, reason=server.reason.SERVER_DISCONNECT)
    # A websocket client ignores CLOSE and waits for the websocket itself to shut, which
    # engineio's writer does once its queue yields None (as when the client goes away).
    if socket.upgraded:
        await socket.queue.put(None)


async def close_sessions(server: engineio.AsyncServer) -> None:
    """Close every Engine.IO session still open, as ``close_session`` does."""
    for eio_sid in list(server.sockets):
        await close_session(server, eio_sid)


# What one binary packet (BINARY_EVENT, BINARY_ACK) may bring. python-socketio keeps a packet's
# attachments until as many came as its header announced (up to ten digits' worth), so without a
# bound one client could fill a worker's memory. Nothing the hub's clients send is binary; a few
# small attachments are still read (and answered by validation like any other argument).
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 1_000_000  # as much as one Engine.IO message may hold
# The Socket.IO packets a client sends (CONNECT_ERROR only ever comes from a server).
_FROM_CLIENTS = frozenset({socketio.packet.CONNECT, socketio.packet.DISCONNECT, socketio.packet.EVENT,
                           socketio.packet.ACK, socketio.packet.BINARY_EVENT, socketio.packet.BINARY_ACK})
# python-socketio's refusal of a binary packet for a namespace the client did not join.
_UNJOINED_BINARY = "Unexpected binary packet"


class RefusedPacket(ValueError):
    """A packet a worker does not read: not one a Socket.IO client sends, or binary past its bounds."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BoundedPacket(socketio.packet.Packet):
    """A Socket.IO packet that decodes only what a client may send, with binary attachments
    bounded in number and in bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.attachment_bytes = 0
        super().__init__(*args, **kwargs)

    def decode(self, encoded_packet: Any) -> int:
        try:
            count = super().decode(encoded_packet)
        except (ValueError, TypeError, RecursionError) as exc:  # JSON, ids, nesting, stray bytes
            raise RefusedPacket("malformed", f"not a Socket.IO packet ({str(exc)[:100]})") from None
        if self.packet_type not in _FROM_CLIENTS:
            raise RefusedPacket("malformed", f"packet type {self.packet_type!r} never comes from a client")
        if count > MAX_ATTACHMENTS:
            raise RefusedPacket("attachments", f"a binary packet announced {count} attachments")
        return count

    def add_attachment(self, attachment: bytes) -> bool:
        self.attachment_bytes += len(attachment)
        if self.attachment_bytes > MAX_ATTACHMENT_BYTES:
            raise RefusedPacket("attachments", f"a binary packet brought over {MAX_ATTACHMENT_BYTES} bytes")
        return super().add_attachment(attachment)


class WorkerServer(socketio.AsyncServer):
    """Socket.IO server built on WorkerEngine; a packet it cannot read closes its connection."""

    def __init__(self, *, worker_id: str, **kwargs) -> None:
        # Set before the base class builds its Engine.IO server.
        self.worker_id = worker_id
        super().__init__(serializer=BoundedPacket, **kwargs)

    def _engineio_server_class(self):
        return functools.partial(WorkerEngine, worker_id=self.worker_id)

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        # A packet that cannot be read closes the connection, as in Node's socket.io (a parse
        # error) and as a message over Engine.IO's limit does. Left to python-socketio, it is
        # dropped with a traceback in the log, as often as a client cares to send one.
        if not data and eio_sid not in self._binary_packet:
            # (python-socketio would take it for an EVENT without a name)
            await self._refuse(eio_sid, "malformed", "an empty message")
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except RefusedPacket as exc:
            await self._refuse(eio_sid, exc.reason, str(exc))
        except ValueError as exc:
            if str(exc) != _UNJOINED_BINARY:
                raise
            await self._refuse(eio_sid, "malformed", "a binary packet for a namespace it did not join")

    async def _refuse(self, eio_sid: str, reason: str, why: str) -> None:
        self._binary_packet.pop(eio_sid, None)
        metrics.PACKETS_REFUSED.labels(reason).inc()
        logger.info("closing Engine.IO session %s: %s", eio_sid, why)
        await close_session(self.eio, eio_sid)


class FastJson:
    """The ``json`` module python-socketio encodes packets with: orjson to write every outgoing
    event (the delivery hot path), the standard library to read what clients send (it keeps
    integers of any size, so validation answers them instead of the packet being dropped)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    loads = staticmethod(json.loads)
