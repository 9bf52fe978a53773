"""A child process with its own session and log file, stopped by pid."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

_POLL_INTERVAL = 0.1


def pid_gone(pid: int) -> bool:
    """True when no process has this id any more (it exited and was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def log_tail(path: str | os.PathLike[str], lines: int = 20) -> str:
    """Return the last lines of a log file, or an empty string when it is missing."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    process: "ManagedProcess | None" = None,
) -> None:
    """Poll predicate until it is true; raise TimeoutError naming what after timeout seconds."""
    # Polling is acceptable only here: an external process gives no event when it is ready.
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        # Fail fast instead of waiting out the timeout when the process already died.
        if process is not None and not process.alive:
            raise RuntimeError(
                f"{process.name} exited with code {process.returncode} while waiting for {what}; "
                f"log {process.log_path}:\n{log_tail(process.log_path)}"
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(_POLL_INTERVAL)


class ManagedProcess:
    """A subprocess.Popen in its own session whose output goes to a log file."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = Path(log_path)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ManagedProcess(name={self.name!r}, pid={self.pid}, alive={self.alive})"

    @property
    def pid(self) -> int | None:
        """The pid of the current (or last) child, or None if never started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def alive(self) -> bool:
        """True while the child runs (reaps it when it has exited)."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code of the child once it has exited, else None."""
        return self._popen.poll() if self._popen is not None else None

    def start(self) -> None:
        """Start the child; a no-op when it is already running."""
        if self.alive:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append so that a restarted process keeps the history of the previous run.
        with open(self.log_path, "ab") as out:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                # Own session: Ctrl-C in the terminal reaches only the supervisor, which then
                # stops children in the right order instead of all of them dying at once.
                start_new_session=True,
                close_fds=True,
            )
        log.info("started %s (pid %s), log %s", self.name, self._popen.pid, self.log_path)

    def wait(self, timeout: float) -> bool:
        """Wait up to timeout seconds for the child to exit; return True when it has."""
        if self._popen is None:
            return True
        try:
            self._popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def signal(self, signum: int) -> None:
        """Send signum to the child by pid, ignoring a child that is already gone."""
        if self.alive:
            assert self._popen is not None
            try:
                os.kill(self._popen.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child: SIGTERM, then SIGKILL after timeout seconds, and reap it."""
        if not self.alive:
            return
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            log.warning("%s (pid %s) ignored SIGTERM for %.0fs, killing it", self.name, self.pid, timeout)
            self.kill()
            return
        log.info("stopped %s (pid %s)", self.name, self.pid)

    def kill(self) -> None:
        """SIGKILL the child and reap it (also used by failure tests)."""
        if not self.alive:
            return
        self.signal(signal.SIGKILL)
        self.wait(10.0)
        log.info("killed %s (pid %s)", self.name, self.pid)
