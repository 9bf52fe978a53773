"""aiohttp pieces shared by the API and the socket workers (edges only, never the service)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class AccessLogger(AbstractAccessLogger):
    """Logs method, path and status; never the query string, which may carry a token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %s %.1fms", request.remote, request.method, request.path, response.status, time * 1000
        )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text of this process."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


def run(app: web.Application, *, host: str, port: int) -> None:
    """Serve an app with the redacting access log."""
    web.run_app(
        app,
        host=host,
        port=port,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("notihub.access"),
        print=None,
        handle_signals=True,
        shutdown_timeout=5,
    )


@contextlib.asynccontextmanager
async def essential_tasks(**coroutines: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run a process's essential background tasks (by name) while the block runs.

    One that dies stops the process (see stop_process_on_failure); leaving the block, even by
    an error, cancels them all and waits for them.
    """
    tasks = [asyncio.create_task(coro, name=name) for name, coro in coroutines.items()]
    for task in tasks:
        task.add_done_callback(stop_process_on_failure)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def stop_process_on_failure(task: asyncio.Task) -> None:
    """A done-callback for a process's essential background task (a consumer, a listener).

    A task that died must not leave a healthy-looking process behind: log why and stop the
    process (SIGTERM, so that it shuts down cleanly) for its supervisor to start a new one.
    """
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).critical("%s stopped: %r", task.get_name(), task.exception(),
                                             exc_info=task.exception())
        os.kill(os.getpid(), signal.SIGTERM)
