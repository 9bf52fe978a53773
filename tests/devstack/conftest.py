"""Fixtures that start real local services and always stop them."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Iterator

import pytest

from devstack.mongo import MongoReplicaSet
from devstack.ports import free_port
from devstack.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running RedisServer on a free port."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def delayed_replica_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoReplicaSet]:
    """A running replica set whose member 2 lags by ten minutes."""
    rs = MongoReplicaSet(
        ports=[free_port() for _ in range(3)],
        data_dir=tmp_path_factory.mktemp("mongo"),
        delayed_secs=600,
    )
    try:
        rs.start()
        yield rs
    finally:
        rs.stop()


class _NamedHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's name, so a test sees where nginx sent it."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = self.server.backend_name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


class Backend:
    """An in-process HTTP server standing in for the API or a socket worker."""

    def __init__(self, name: str) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NamedHandler)
        self.server.backend_name = name  # type: ignore[attr-defined]
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    """Stub backends named api, w0 and w1."""
    started = {name: Backend(name) for name in ("api", "w0", "w1")}
    try:
        yield started
    finally:
        for backend in started.values():
            backend.stop()
