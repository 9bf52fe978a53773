"""Validation shared by every input path: readable errors, and data that can be stored as given."""
from __future__ import annotations

from typing import Annotated, Any

import bson
import orjson
from bson.errors import InvalidDocument
from pydantic import AfterValidator, Field, StringConstraints, ValidationError

MAX_DATA_BYTES = 16 * 1024

# User ids, topic names and the ids producers give: plain enough for URLs, Redis keys and topic
# names such as "followers:<id>" as they are (auth0-style "provider|id" included).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+|\-]*$"
MAX_USER_ID = 128
UserId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_USER_ID, pattern=NAME_PATTERN)]
TopicName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN)]
NotificationType = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
]

# A link a notification may carry: a path on the client's own site or an http(s) URL. Not "//host"
# nor "/\\host", which browsers read as another site.
Url = Annotated[str, StringConstraints(max_length=2048, pattern=r"^(/([^/\\].*)?|https?://[^/\\].*)$")]


def describe(exc: ValidationError, *, root: str) -> str:
    """``where: what`` for the first few problems; ``root`` names the whole input."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or root
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _storable(value: dict[str, Any]) -> dict[str, Any]:
    # What is accepted must come back unchanged: as JSON to clients and as BSON in MongoDB.
    # JSON numbers beyond 64 bits, keys holding NUL and the like pass a JSON parser but not these.
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        raise ValueError("must hold only JSON values, with integers within 64 bits") from None
    if size > MAX_DATA_BYTES:
        raise ValueError(f"must be at most {MAX_DATA_BYTES} bytes of JSON")
    try:
        bson.encode({"data": value})
    except OverflowError:
        raise ValueError("integers must fit in 64 bits (-2^63 to 2^63-1)") from None
    except InvalidDocument as exc:
        raise ValueError(f"cannot be stored: {exc}") from None
    return value


Data = Annotated[
    dict[str, Any],
    AfterValidator(_storable),
    Field(description=f"Any JSON object, at most {MAX_DATA_BYTES // 1024} KiB; integers within 64 bits."),
]
