"""Parsing JSON requests and shaping JSON answers."""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import InvalidJSON, InvalidRequest, UnsupportedMediaType
from shared.validation import describe

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def json_response(value: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer (orjson)."""
    return web.json_response(value, status=status, headers=headers, dumps=_dumps)


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


def only_query(handler: Handler, *names: str) -> Handler:
    """Wrap a view so that query parameters other than ``names`` are a 400."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        unknown = sorted(set(request.query) - set(names))
        if unknown:
            raise InvalidRequest(f"unknown query parameter {unknown[0]!r}; expected {', '.join(names)}")
        return await handler(request)

    return checked


def query_int(request: web.Request, name: str) -> int | None:
    """An optional whole-number query parameter."""
    raw = request.query.get(name)
    if not raw:
        return None  # absent, or given empty ("?limit=")
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number") from None


def query_bool(request: web.Request, name: str) -> bool:
    """An optional true/false query parameter."""
    raw = request.query.get(name, "false").lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no", ""):
        return False
    raise InvalidRequest(f"{name} must be true or false")
