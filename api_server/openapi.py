"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from .respond import json_response
from .schemas import ErrorOut

if TYPE_CHECKING:
    from .routes import Endpoint


@dataclasses.dataclass(frozen=True)
class Param:
    """A query (or header) parameter."""

    name: str
    type: str
    description: str
    minimum: int | None = None
    maximum: int | None = None
    where: str = "query"

    def to_dict(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return {"name": self.name, "in": self.where, "required": False, "description": self.description, "schema": schema}


_RATE_HEADERS = {
    "RateLimit-Limit": {"description": "requests allowed at once (and per period)", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "requests left now", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "seconds until the whole allowance is back", "schema": {"type": "integer"}},
}
_RETRY_AFTER = {"description": "seconds to wait before the next request", "schema": {"type": "integer"}}


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build(endpoints: "tuple[Endpoint, ...]") -> dict[str, Any]:
    """The whole document."""
    models = {ErrorOut}
    for e in endpoints:
        models.update(m for m in (e.body, *e.responses.values()) if m is not None)
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    error = {"description": "error", "content": {"application/json": {"schema": _ref(ErrorOut)}}}
    for e in endpoints:
        op: dict[str, Any] = {"summary": e.summary, "operationId": e.handler.__name__, "tags": [e.tag]}
        params = [p.to_dict() for p in (*e.query, *e.headers)]
        for name in re.findall(r"{(\w+)}", e.path):
            params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
        if params:
            op["parameters"] = params
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(e.body)}}}
        responses: dict[str, Any] = {}
        for status, model in e.responses.items():
            responses[str(status)] = {"description": "ok" if status < 300 else "see body"}
            if model is not None:
                responses[str(status)]["content"] = {"application/json": {"schema": _ref(model)}}
        if e.auth is not None:
            op["security"] = [{"serviceKey": []}] if e.auth == "service" else [{"userToken": []}]
            responses.setdefault("401", error)
            responses.setdefault("429", {**error, "description": "rate limited: try again after Retry-After seconds",
                                         "headers": {"Retry-After": _RETRY_AFTER}})
        if e.body is not None or params:
            responses.setdefault("400", error)
        if e.body is not None:
            responses.setdefault("413", error)
            responses.setdefault("415", error)
        if "{" in e.path:
            responses.setdefault("404", error)
        if e.conflicts:
            responses.setdefault("409", error)
        # Any operation that needs MongoDB or Redis answers 503 while one of them is down.
        responses.setdefault("503", error)
        if e.auth is not None:
            # Limited per producer key or per user: every answer says how much is left.
            responses = {status: {**response, "headers": {**_RATE_HEADERS, **response.get("headers", {})}}
                         for status, response in responses.items()}
        op["responses"] = responses
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "notihub", "version": "1", "description": "Real-time notification hub."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "serviceKey": {"type": "http", "scheme": "bearer", "description": "a key of NOTIHUB_SERVICE_KEYS"},
                "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def serve(document: dict[str, Any]):
    """A handler that answers with the document."""

    async def openapi_json(request: web.Request) -> web.Response:
        return json_response(document)

    return openapi_json
