"""HTTP/1.1 over a plain TCP connection (asyncio streams): exact bytes out, every response back.

Client libraries normalise what they send (header folding, framing, encoding of the target);
an attacker does not, so these tests write the bytes themselves and parse what comes back.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json


@dataclasses.dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"<{self.status} {self.reason} {self.body[:160]!r}>"


class Unparsable(Exception):
    """Bytes that are not an HTTP/1.x response."""


def _chunked(data: bytes, start: int) -> tuple[bytes, int] | None:
    body, pos = b"", start
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(data[pos:eol].split(b";")[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = data.find(b"\r\n", pos)  # no trailers from our servers: one empty line
            return (body, end + 2) if end >= 0 else None
        if len(data) < pos + size + 2:
            return None
        body += data[pos:pos + size]
        pos += size + 2


def parse_responses(data: bytes, *, head_only: bool = False) -> tuple[list[Response], bytes]:
    """The complete responses at the start of ``data``, and what follows them."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = data[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise Unparsable(data[:200])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        response = Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b"")
        start = end + 4
        te = (response.header("Transfer-Encoding") or "").lower()
        length = response.header("Content-Length")
        if head_only or response.status in (101, 204, 304) or 100 <= response.status < 200:
            stop = start
        elif "chunked" in te:
            parsed = _chunked(data, start)
            if parsed is None:
                break
            response.body, stop = parsed
        elif length is not None:
            stop = start + int(length)
            if len(data) < stop:
                break
            response.body = data[start:stop]
        else:  # until the connection closes
            response.body, stop = data[start:], len(data)
        out.append(response)
        data = data[stop:]
    return out, data


async def exchange(port: int, payload: bytes | list[bytes], *, timeout: float = 10, host: str = "127.0.0.1",
                   limit: int = 8 * 1024 * 1024) -> tuple[list[Response], bytes]:
    """Write ``payload`` (pieces are written one after the other), read until the server closes
    the connection (or ``timeout``), and return the responses and any bytes left unparsed."""
    reader, writer = await asyncio.open_connection(host, port, limit=limit)
    received = b""
    try:
        for piece in payload if isinstance(payload, list) else [payload]:
            writer.write(piece)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    try:
        return parse_responses(received)
    except Unparsable:
        return [], received


def request(method: str, target: str | bytes, *, headers: list[tuple[str, str]] | None = None,
            body: bytes = b"", close: bool = True) -> bytes:
    """An ordinary request, as bytes (``target`` is sent as it is)."""
    target = target if isinstance(target, bytes) else target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers or []]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers or []):
        lines.append(f"Content-Length: {len(body)}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
