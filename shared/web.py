"""aiohttp pieces shared by the API and the socket workers (edges only, never the service)."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import HubError, NotFound, Unauthorized
from .settings import Settings


class AccessLogger(AbstractAccessLogger):
    """Logs method, path and status; never the query string, which may carry a token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %s %.1fms", request.remote, request.method, request.path, response.status, time * 1000
        )


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: "tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]") -> str | None:
    """The address of the client behind a request from ``peer``.

    A peer outside ``trusted`` (NOTIHUB_TRUSTED_PROXIES) is the client. A trusted one is a load
    balancer: the client is the nearest untrusted address of its X-Forwarded-For, read from the
    right (what the client wrote itself is on the left, and can be forged), or the leftmost when
    all are trusted. ``None`` for a trusted peer that forwards nothing: an internal caller.
    """
    if peer is None or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else None


def _within(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address: never a trusted proxy
    return any(ip in network for network in networks)


def metrics_refusal(request: web.Request, settings: Settings) -> HubError | None:
    """Why ``request`` may not read /metrics, if it may not.

    With NOTIHUB_METRICS_KEY set, the key is required (``Authorization: Bearer <key>``). Without
    it, /metrics is for internal callers only: requests through the load balancer (which sets
    X-Forwarded-For) are answered 404, except in development.
    """
    if settings.metrics_key:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), settings.metrics_key.encode()):
            return None
        return Unauthorized("send Authorization: Bearer <NOTIHUB_METRICS_KEY>")
    if "X-Forwarded-For" in request.headers and not settings.development:
        return NotFound("no such resource")
    return None


def metrics(settings: Settings):
    """The handler of /metrics: Prometheus text of this process, for those who may read it."""

    async def serve_metrics(request: web.Request) -> web.Response:
        refusal = metrics_refusal(request, settings)
        if refusal is not None:
            return web.json_response(refusal.to_dict(), status=refusal.status)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return serve_metrics


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind`` (NOTIHUB_EVENT_LOOP): uvloop, or the standard library's
    when asked for, or where uvloop is not installed (it does not run on Windows)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger(__name__).warning("uvloop is not installed: running on asyncio's own event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(app: web.Application, *, host: str, port: int, event_loop: str = "uvloop") -> None:
    """Serve an app with the redacting access log, on the event loop named by ``event_loop``."""
    loop = new_event_loop(event_loop)
    logging.getLogger(__name__).info("serving on %s:%s with %s's event loop", host, port,
                                     type(loop).__module__.partition(".")[0])
    web.run_app(
        app,
        loop=loop,
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
