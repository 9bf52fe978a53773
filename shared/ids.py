"""Notification ids and opaque page cursors."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import threading

from bson import ObjectId
from bson.errors import InvalidId

from .errors import InvalidRequest

_CURSOR_VERSION = b"\x01"


class IdClock:
    """Makes notification ids that sort in creation order across processes, to the millisecond.

    A standard ObjectId holds whole seconds, so two ids made in the same second by two processes
    sort by their processes' random values, not by time: a notification from the ingest worker
    could sort below an older one from the API. These ids keep the ObjectId layout where it
    matters (the first 4 bytes are the creation second, so ``generation_time`` still works) and
    fill the rest with: milliseconds (2 bytes), a random per-process value (4 bytes) and a
    counter that orders ids of one millisecond (2 bytes). Ids of one process strictly increase.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process = os.urandom(4)
        self._pid = os.getpid()
        self._last_ms = 0
        self._counter = 0

    def next(self, at: dt.datetime) -> ObjectId:
        """A new id for something created at ``at`` (an aware datetime)."""
        return self.at_ms(int(at.timestamp() * 1000))

    def at_ms(self, ms: int) -> ObjectId:
        """A new id of the millisecond ``ms`` since the epoch (or later, to stay increasing)."""
        with self._lock:
            if os.getpid() != self._pid:  # a forked child must not share its parent's ids
                self._process, self._pid, self._last_ms, self._counter = os.urandom(4), os.getpid(), 0, 0
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, 0
            else:
                self._counter += 1
                if self._counter > 0xFFFF:
                    self._last_ms, self._counter = self._last_ms + 1, 0
            ms = self._last_ms
            counter = self._counter
        seconds, millis = divmod(ms, 1000)
        return ObjectId(
            seconds.to_bytes(4, "big") + millis.to_bytes(2, "big") + self._process + counter.to_bytes(2, "big")
        )


_clock = IdClock()
new_id = _clock.next


def new_id_after(last: ObjectId | None, at: dt.datetime) -> ObjectId:
    """A new id for something created at ``at`` that sorts after ``last``.

    The notification store calls it inside the transaction that commits a recipient's
    notifications, so that one recipient's ids increase in commit order (see
    storage/notifications.py): a ``since`` never skips a notification committed later.
    """
    ms = int(at.timestamp() * 1000)
    if last is not None:
        ms = max(ms, int.from_bytes(last.binary[:4], "big") * 1000 + int.from_bytes(last.binary[4:6], "big") + 1)
    return _clock.at_ms(ms)


def first_id_at(at: dt.datetime) -> ObjectId:
    """The smallest id of the millisecond ``at``: every id made later sorts after it."""
    seconds, millis = divmod(int(at.timestamp() * 1000), 1000)
    return ObjectId(seconds.to_bytes(4, "big") + millis.to_bytes(2, "big") + bytes(6))


def parse_id(value: object, *, field: str = "id") -> ObjectId:
    """Turn a client-supplied notification id into an ObjectId, or raise InvalidRequest."""
    if isinstance(value, str) and len(value) == 24:
        try:
            return ObjectId(value)
        except (InvalidId, TypeError):
            pass
    raise InvalidRequest(f"{field} must be a notification id (24 hexadecimal characters)")


def parse_ids(values: object, *, limit: int = 1000) -> list[ObjectId]:
    """Parse a list of notification ids, keeping order and dropping repeats."""
    if not isinstance(values, list):
        raise InvalidRequest("ids must be a list of notification ids")
    if not values:
        raise InvalidRequest("ids must not be empty")
    if len(values) > limit:
        raise InvalidRequest(f"ids may hold at most {limit} ids")
    return list(dict.fromkeys(parse_id(v, field="ids[]") for v in values))


def encode_cursor(last_id: ObjectId) -> str:
    """An opaque cursor pointing just past ``last_id`` in newest-first order."""
    return base64.urlsafe_b64encode(_CURSOR_VERSION + last_id.binary).decode().rstrip("=")


def decode_cursor(cursor: object) -> ObjectId:
    """Read a cursor made by encode_cursor, or raise InvalidRequest."""
    if isinstance(cursor, str) and 0 < len(cursor) <= 64:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 13 and raw[:1] == _CURSOR_VERSION:
            return ObjectId(raw[1:])
    raise InvalidRequest("cursor is not valid")
