"""The HTTP API: create_app(settings) builds it, for the server and the tests alike."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from shared.i18n import Renderer
from shared.kafka import ProducerLink
from shared.ratelimit import RedisLimiter
from shared.runtime import open_runtime
from shared.service import sweep_expired
from shared.settings import Settings
from shared.tokens import TokenVerifier
from shared.web import essential_tasks

from .auth import add_rate_limit_headers
from .keys import KAFKA, LIMITS, RENDERER, RUNTIME, SETTINGS, VERIFIER, ApiLimits
from .middleware import errors
from .routes import setup_routes
from .security import add_security_headers, setup_cors


def create_app(settings: Settings) -> web.Application:
    """The API application; resources open on start-up and close on clean-up."""
    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[RENDERER] = Renderer(default_lang=settings.default_lang)
    app[VERIFIER] = TokenVerifier(settings=settings)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, app_name="notihub-api") as runtime:
            app[RUNTIME] = runtime
            app[LIMITS] = ApiLimits(
                producer=RedisLimiter(redis=runtime.redis, prefix=settings.channel_prefix, name="producer",
                                      rate=settings.producer_rate, timeout=settings.redis_timeout),
                user=RedisLimiter(redis=runtime.redis, prefix=settings.channel_prefix, name="user",
                                  rate=settings.user_rate, timeout=settings.redis_timeout))
            async with essential_tasks(retention_sweep=sweep_expired(runtime.service,
                                                                     every=settings.retention_sweep_seconds)):
                yield

    async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
        link = app[KAFKA] = ProducerLink(settings=settings, client_id="notihub-api")
        connecting = asyncio.create_task(link.run())
        yield
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await link.close()

    app.cleanup_ctx.append(runtime_ctx)
    if settings.kafka_bootstrap:
        app.cleanup_ctx.append(kafka_ctx)
    app.on_response_prepare.append(add_rate_limit_headers)
    app.on_response_prepare.append(add_security_headers)
    setup_routes(app)
    setup_cors(app, settings.cors_origins)
    return app
