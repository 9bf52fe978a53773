"""Who is calling: a producer with a service key, or a user with a JWT."""
from __future__ import annotations

import hmac

from aiohttp import web

from shared.errors import Unauthorized
from shared.tokens import User

from .keys import SETTINGS, VERIFIER


def _bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip() or not value.isascii():
        raise Unauthorized("send Authorization: Bearer <credentials>")
    return value.strip()


def require_service(request: web.Request) -> None:
    """Accept the request only with one of the configured service keys."""
    presented = _bearer(request).encode()
    if not any(hmac.compare_digest(presented, key.encode()) for key in request.app[SETTINGS].service_keys):
        raise Unauthorized("unknown service key")


def require_user(request: web.Request) -> User:
    """The user whose JWT the request carries."""
    return request.app[VERIFIER].verify(_bearer(request))
