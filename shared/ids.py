"""Notification ids and opaque page cursors."""
from __future__ import annotations

import base64
import binascii

from bson import ObjectId
from bson.errors import InvalidId

from .errors import InvalidRequest

_CURSOR_VERSION = b"\x01"


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
