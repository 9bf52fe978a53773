"""Turns every failure into the contract's error shape."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from shared import metrics
from shared.errors import HubError, InternalError, MethodNotAllowed, NotFound, PayloadTooLarge, Unavailable
from shared.runtime import services_fault

from .respond import json_response

logger = logging.getLogger(__name__)

_HTTP_CODES = {404: NotFound("no such resource"), 405: MethodNotAllowed("method not allowed")}


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def _defect(request: web.Request) -> web.Response:
    # A defect, not the client's fault: log it in full, and still answer in the contract's shape.
    logger.exception("unhandled error in %s %s", request.method, _route_name(request))
    error = InternalError("an internal error occurred")
    return json_response(error.to_dict(), status=error.status)


@web.middleware
async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Answer HubErrors and aiohttp's HTTP errors as ``{"error": {code, message}}``."""
    try:
        response = await handler(request)
    except HubError as exc:
        response = json_response(exc.to_dict(), status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        exc = PayloadTooLarge("the request body is too large")
        response = json_response(exc.to_dict(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _HTTP_CODES.get(exc.status) or HubError(exc.reason, code="http_error")
        response = json_response(error.to_dict(), status=exc.status)
    except Exception as exc:
        if services_fault(exc):
            # An election, a restart, a deadline: the caller may try again (with the same
            # idempotency key) and lose nothing.
            logger.warning("backing service unavailable: %s", exc)
            error = Unavailable("a backing service is unavailable; try again")
            response = json_response(error.to_dict(), status=error.status)
        else:
            response = _defect(request)
    metrics.HTTP_REQUESTS.labels(request.method, _route_name(request), str(response.status)).inc()
    return response
