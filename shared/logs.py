"""Logging set-up: one format for every process, and no token ever written out."""
from __future__ import annotations

import logging
import re
import sys

# A JWT (three base64url parts) or a token=/Bearer value, wherever it appears in a line.
_SECRET = re.compile(
    r"(?i)((?:token|authorization|content-language_token)=|bearer\s+)[^\s&\"',;]+"
    r"|eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*"
)


def redact(text: str) -> str:
    """Replace tokens in a line of text with [redacted]."""
    return _SECRET.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class RedactingFormatter(logging.Formatter):
    """Formats a record, then removes anything that looks like a token."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(level: str = "INFO", *, name: str) -> None:
    """Configure the root logger of a process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
