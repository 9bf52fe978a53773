"""An ingest worker: create_app(settings, worker_id=…) builds it, for the server and the tests."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from shared import metrics
from shared import web as shared_web
from shared.events.handler import EventHandler
from shared.kafka import open_producer
from shared.runtime import open_runtime
from shared.settings import Settings

from .consumer import EventConsumer


CONSUMER = web.AppKey("consumer", EventConsumer)


# Wraps the event handler the consumer calls (tests put a crash between store and commit there).
HandlerWrapper = Callable[[EventHandler], EventHandler]


def create_app(settings: Settings, *, worker_id: str, wrap_handler: HandlerWrapper | None = None) -> web.Application:
    """/healthz and /metrics, with the consumer running in the background."""
    if not settings.kafka_bootstrap:
        raise SystemExit("the ingest worker needs NOTIHUB_KAFKA_BOOTSTRAP")
    app = web.Application()

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, app_name=f"notihub-ingest-{worker_id}") as runtime, \
                open_producer(settings, client_id=f"notihub-ingest-{worker_id}-dlq") as dlq:
            handler = EventHandler(service=runtime.service)
            consumer = EventConsumer(settings=settings, handler=wrap_handler(handler) if wrap_handler else handler,
                                     dlq=dlq, worker_id=worker_id)
            app[CONSUMER] = consumer
            await consumer.start()
            try:
                async with shared_web.essential_tasks(
                    ingest_consumer=consumer.run(),
                    metrics_share=metrics.share(runtime.redis, prefix=settings.channel_prefix, process=worker_id),
                ):
                    yield
            finally:
                await consumer.stop()

    app.cleanup_ctx.append(runtime_ctx)
    app.router.add_get("/healthz", shared_web.healthz)
    app.router.add_get("/metrics", shared_web.metrics(settings))
    return app

