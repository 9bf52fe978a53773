"""Who is calling, and whether they may call again: a producer with a service key, or a user with
a JWT, each counted against its rate limit (per producer key, per user)."""
from __future__ import annotations

import functools
import hashlib
import hmac

from aiohttp import web

from shared.errors import Unauthorized
from shared.ratelimit import RedisLimiter, Verdict
from shared.tokens import User

from .keys import LIMITS, SETTINGS, VERIFIER

# The verdict of the request's rate limit, for its RateLimit-* headers (see add_rate_limit_headers).
VERDICT = web.RequestKey("rate_limit", Verdict)


@functools.lru_cache(maxsize=64)  # the configured keys: one digest each, not one per request
def producer_id(key: str) -> str:
    """A producer's name in idempotency records, limits and logs: a digest of its key, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip() or not value.isascii():
        raise Unauthorized("send Authorization: Bearer <credentials>")
    return value.strip()


async def _count(request: web.Request, limiter: RedisLimiter, who: str) -> None:
    verdict = await limiter.hit(who)
    request[VERDICT] = verdict
    if not verdict.allowed:
        raise verdict.refusal("requests")


async def require_service(request: web.Request) -> str:
    """Accept the request only with one of the configured service keys, within its key's rate
    limit; the producer's id (see ``producer_id``)."""
    presented = _bearer(request).encode()
    for key in request.app[SETTINGS].service_keys:
        if hmac.compare_digest(presented, key.encode()):
            producer = producer_id(key)
            await _count(request, request.app[LIMITS].producer, producer)
            return producer
    raise Unauthorized("unknown service key")


async def require_user(request: web.Request) -> User:
    """The user whose JWT the request carries, within the user's rate limit."""
    user = request.app[VERIFIER].verify(_bearer(request))
    await _count(request, request.app[LIMITS].user, user.id)
    return user


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: RateLimit-* (and Retry-After when refused) on limited routes."""
    verdict: Verdict | None = request.get(VERDICT)
    if verdict is not None and verdict.limit:
        response.headers.update(verdict.headers())
