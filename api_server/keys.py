"""Typed application state of the API."""
from __future__ import annotations

import dataclasses

from aiohttp import web

from shared.i18n import Renderer
from shared.kafka import ProducerLink
from shared.ratelimit import RedisLimiter
from shared.runtime import Runtime
from shared.settings import Settings
from shared.tokens import TokenVerifier

SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
RENDERER = web.AppKey("renderer", Renderer)
VERIFIER = web.AppKey("verifier", TokenVerifier)
KAFKA = web.AppKey("kafka", ProducerLink)


@dataclasses.dataclass(frozen=True, slots=True)
class ApiLimits:
    """The API's shared rate limits."""

    producer: RedisLimiter
    user: RedisLimiter


LIMITS = web.AppKey("limits", ApiLimits)
