"""Parsing JSON requests and shaping JSON answers."""
from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import InvalidJSON, InvalidRequest, UnsupportedMediaType
from shared.validation import describe

M = TypeVar("M", bound=BaseModel)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def json_response(value: Any, *, status: int = 200) -> web.Response:
    """A JSON answer (orjson)."""
    return web.json_response(value, status=status, dumps=_dumps)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Read and validate a JSON body, or raise the matching HubError."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send JSON with Content-Type: application/json")
    raw = await request.read()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidJSON("the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc, root="body")) from None


def only_query(request: web.Request, *names: str) -> None:
    """Refuse query parameters other than ``names``: a misspelt one must not pass unnoticed."""
    unknown = sorted(set(request.query) - set(names))
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}; expected {', '.join(names)}")


def query_str(request: web.Request, name: str) -> str | None:
    """An optional query parameter; given empty (``?cursor=``) it is not given."""
    return request.query.get(name) or None


def query_int(request: web.Request, name: str) -> int | None:
    """An optional whole-number query parameter."""
    raw = query_str(request, name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number") from None


def query_bool(request: web.Request, name: str) -> bool:
    """An optional true/false query parameter."""
    raw = (query_str(request, name) or "false").lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no", ""):
        return False
    raise InvalidRequest(f"{name} must be true or false")
