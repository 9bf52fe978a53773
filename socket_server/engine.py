"""The Socket.IO server of one worker, whose session ids name the worker.

The load balancer routes every request carrying ``sid=w1.…`` to worker ``w1`` (sticky
long-polling and upgrades), while new handshakes spread over all workers, even when
every client comes from one address.
"""
from __future__ import annotations

import functools

import engineio
import socketio


class WorkerEngine(engineio.AsyncServer):
    """Engine.IO server whose session ids start with ``<worker_id>.``."""

    def __init__(self, *args, worker_id: str, **kwargs) -> None:
        self.worker_id = worker_id
        super().__init__(*args, **kwargs)

    def generate_id(self) -> str:
        """A unique session id, prefixed for routing."""
        return f"{self.worker_id}.{super().generate_id()}"


class WorkerServer(socketio.AsyncServer):
    """Socket.IO server built on WorkerEngine."""

    def __init__(self, *, worker_id: str, **kwargs) -> None:
        # Set before the base class builds its Engine.IO server.
        self.worker_id = worker_id
        super().__init__(**kwargs)

    def _engineio_server_class(self):
        return functools.partial(WorkerEngine, worker_id=self.worker_id)
