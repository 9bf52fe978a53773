"""The Socket.IO server of one worker, whose session ids name the worker.

The load balancer routes every request carrying ``sid=w1.…`` to worker ``w1`` (sticky
long-polling and upgrades), while new handshakes spread over all workers, even when
every client comes from one address.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import engineio
import orjson
import socketio
from aiohttp import hdrs, web


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


class WorkerServer(socketio.AsyncServer):
    """Socket.IO server built on WorkerEngine."""

    def __init__(self, *, worker_id: str, **kwargs) -> None:
        # Set before the base class builds its Engine.IO server.
        self.worker_id = worker_id
        super().__init__(**kwargs)

    def _engineio_server_class(self):
        return functools.partial(WorkerEngine, worker_id=self.worker_id)


class FastJson:
    """The ``json`` module python-socketio encodes packets with: orjson to write every outgoing
    event (the delivery hot path), the standard library to read what clients send (it keeps
    integers of any size, so validation answers them instead of the packet being dropped)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    loads = staticmethod(json.loads)
