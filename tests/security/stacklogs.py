"""What the stack's processes logged since a mark: the api, the socket and ingest workers, nginx."""
from __future__ import annotations

import collections
import re
from pathlib import Path

from devstack.hub import REPO_ROOT

_PROJECT_DIRS = tuple(f"{REPO_ROOT / name}/" for name in ("api_server", "socket_server", "shared", "ingest"))
_TRACEBACK = "Traceback (most recent call last):"
# "<time> <process> ERROR socket_server.namespace: ..." (shared/logs.py)
_OWN_LOGGER = re.compile(r" (ERROR|CRITICAL|WARNING) (api_server|socket_server|shared|ingest)[.:]")
_ERROR_LINE = re.compile(r" (ERROR|CRITICAL) |\[(crit|alert|emerg)\]")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ ")
_JWT = re.compile(r"eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]+")


class StackLogs:
    """Reads the stack's log files from a mark on."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.start = self.mark()

    def _files(self) -> list[Path]:
        files = sorted(p for p in self.stack.log_dir.glob("*.log") if not p.name.startswith(("mongod", "kafka")))
        if self.stack.nginx is not None:
            files.append(self.stack.nginx.error_log)
        return files

    def mark(self) -> dict[Path, int]:
        return {path: path.stat().st_size for path in self._files() if path.exists()}

    def since(self, mark: dict[Path, int] | None = None) -> dict[str, str]:
        """File name -> text written after ``mark`` (the fixture's start when None)."""
        mark = self.start if mark is None else mark
        out = {}
        for path in self._files():
            if not path.exists():
                continue
            with open(path, "rb") as fh:
                fh.seek(mark.get(path, 0))
                text = fh.read().decode("utf-8", "replace")
            if text:
                out[path.name] = text
        return out

    def defects(self, mark: dict[Path, int] | None = None) -> list[str]:
        """Unhandled exceptions that are the hub's own: logged by its own modules, or raised in its
        own code (a library error merely passing through its middleware is not), and asyncio's
        never-retrieved task errors."""
        found = []
        for name, text in self.since(mark).items():
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if "Task exception was never retrieved" in line:
                    found.append(f"{name}:\n" + "\n".join(lines[i:i + 40]))
                if line.strip() != _TRACEBACK:
                    continue
                header = lines[i - 1] if i else ""
                block = [header, line]
                for follow in lines[i + 1:]:
                    block.append(follow)
                    if follow and not follow.startswith(" "):
                        break
                frames = [f for f in block if f.lstrip().startswith("File ")]
                logged_by_us = _OWN_LOGGER.search(header) is not None
                raised_by_us = bool(frames) and any(d in frames[-1] for d in _PROJECT_DIRS)
                if logged_by_us or raised_by_us:
                    found.append(f"{name}:\n" + "\n".join(block))
        return found

    def assert_no_defects(self, mark: dict[Path, int] | None = None) -> None:
        defects = self.defects(mark)
        assert not defects, "the hub's own code raised:\n" + "\n\n".join(defects[:3])

    def errors(self, mark: dict[Path, int] | None = None) -> str:
        """Each distinct error the processes logged (the line and the exception it names), with
        how often, for the report."""
        parts = []
        for name, text in self.since(mark).items():
            seen: collections.Counter = collections.Counter()
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if line.strip() == _TRACEBACK:
                    header = _STAMP.sub("", lines[i - 1]) if i else ""
                    end = next((f for f in lines[i + 1:] if f and not f.startswith(" ")), "")
                    seen[f"{header} -> {end}"[:300]] += 1
                elif _ERROR_LINE.search(line) and not (i + 1 < len(lines) and lines[i + 1].strip() == _TRACEBACK):
                    seen[_STAMP.sub("", line)[:300]] += 1
            if seen:
                parts.append(f"--- {name}\n" + "\n".join(f"{n:>5} x {what}" for what, n in seen.most_common(30)))
        return "\n".join(parts)

    def tokens(self, mark: dict[Path, int] | None = None) -> list[str]:
        """Lines that hold something shaped like a JWT (no log may: clients pass tokens in URLs)."""
        return [f"{name}: {line[:200]}" for name, text in self.since(mark).items()
                for line in text.splitlines() if _JWT.search(line)]
