"""The HTTP API: create_app(settings) builds it, for the server and the tests alike."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from shared.i18n import Renderer
from shared.kafka import ProducerLink
from shared.runtime import open_runtime
from shared.service import sweep_expired
from shared.settings import Settings
from shared.tokens import TokenVerifier
from shared.web import essential_tasks

from .keys import KAFKA, RENDERER, RUNTIME, SETTINGS, VERIFIER
from .middleware import errors
from .routes import setup_routes


def create_app(settings: Settings) -> web.Application:
    """The API application; resources open on start-up and close on clean-up."""
    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[RENDERER] = Renderer(default_lang=settings.default_lang)
    app[VERIFIER] = TokenVerifier(settings=settings)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, app_name="notihub-api") as runtime:
            app[RUNTIME] = runtime
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
    setup_routes(app)
    return app
