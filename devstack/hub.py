"""Launch the notihub application processes (API server and socket workers)."""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from devstack.process import ManagedProcess, wait_until

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def healthy(url: str, timeout: float = 1.0) -> bool:
    """Return True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


class HubProcess:
    """One application process (python -m MODULE ...) that serves GET /healthz."""

    def __init__(
        self,
        *,
        name: str,
        module: str,
        args: Sequence[str],
        port: int,
        env: Mapping[str, str],
        log_path: str | os.PathLike[str],
        cwd: str | os.PathLike[str] = REPO_ROOT,
        python: str = sys.executable,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.port = port
        # How long stop() waits after SIGTERM before SIGKILL.
        self.stop_timeout = stop_timeout
        self.process = ManagedProcess(
            name=name,
            argv=[python, "-m", module, "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            log_path=log_path,
            cwd=cwd,
        )

    @classmethod
    def api(cls, *, port: int, env: Mapping[str, str], log_path: str | os.PathLike[str], **kwargs: object) -> "HubProcess":
        """The HTTP API server."""
        return cls(name="api", module="api_server", args=[], port=port, env=env, log_path=log_path, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def socket_worker(cls, *, worker_id: str, port: int, env: Mapping[str, str], log_path: str | os.PathLike[str],
                      drain_seconds: float = 10.0, **kwargs: object) -> "HubProcess":
        """One Socket.IO worker; after SIGTERM it drains for up to drain_seconds, then exits."""
        return cls(
            name=worker_id, module="socket_server", args=["--worker-id", worker_id],
            port=port, env=env, log_path=log_path, stop_timeout=drain_seconds + 10,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def url(self) -> str:
        """Base URL of the process."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        """host:port, as nginx wants it."""
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.alive

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until GET /healthz answers 200."""
        self.process.start()
        try:
            wait_until(lambda: healthy(f"{self.url}/healthz"), timeout, f"{self.name} /healthz on port {self.port}", process=self.process)
        except BaseException:
            self.process.stop(5)
            raise

    def stop(self, timeout: float | None = None) -> None:
        """Stop the process: SIGTERM, then SIGKILL after timeout (default stop_timeout) seconds."""
        self.process.stop(self.stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL the process (for failure tests)."""
        self.process.kill()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (if running) and start the process again."""
        self.stop()
        self.start(timeout)
