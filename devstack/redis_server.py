"""A throwaway redis-server on loopback."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path

from devstack.process import ManagedProcess, wait_until

log = logging.getLogger(__name__)


def answers_ping(port: int) -> bool:
    """Return True when the Redis server on port answers PING (raw protocol, stdlib only)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# A subscriber that falls this far behind is disconnected by Redis (hard limit, or soft limit
# for 60 s): bus messages are at most 256 KiB (shared/bus.py), so 32 MiB is over a hundred
# messages unread. A worker cut off sees a gap and catches its sockets up from MongoDB; Redis's
# memory stays bounded whatever one slow worker does. compose.yaml sets the same.
PUBSUB_BUFFER_LIMIT = "pubsub 32mb 8mb 60"


class RedisServer:
    """redis-server without persistence, bound to 127.0.0.1."""

    name = "redis"

    def __init__(self, *, port: int, data_dir: str | os.PathLike[str], log_path: str | os.PathLike[str] | None = None) -> None:
        self.port = port
        self.data_dir = Path(data_dir)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = ManagedProcess(
            name="redis",
            argv=[
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                # No persistence: the local stack and tests start from an empty store every time.
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.data_dir),
                # Deliberate, not by default: see PUBSUB_BUFFER_LIMIT.
                "--client-output-buffer-limit", PUBSUB_BUFFER_LIMIT,
            ],
            log_path=log_path or self.data_dir / "redis.log",
        )

    @property
    def url(self) -> str:
        """Connection URL for clients."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def env(self) -> dict[str, str]:
        """Variables this service exports to the application processes."""
        return {"NOTIHUB_REDIS_URL": self.url}

    def start(self, timeout: float = 15.0) -> None:
        """Start redis-server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        wait_until(lambda: answers_ping(self.port), timeout, f"redis PING on port {self.port}", process=self.process)

    def ping(self) -> bool:
        """Return True when the server answers PING."""
        return answers_ping(self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop redis-server."""
        self.process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL redis-server (for failure tests)."""
        self.process.kill()
