"""Draining a socket worker for a rolling deploy, so that its sockets move elsewhere gradually."""
from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from shared.errors import Draining

logger = logging.getLogger(__name__)

ENGINEIO_PATH = "/socket.io/"
# Batches are at least this far apart: a handful of sockets at a time, not a timer per socket.
MIN_INTERVAL = 0.1


class Drainer:
    """Takes a socket worker out of service without dropping all its sockets at once.

    On SIGTERM (see ``install``), in this order:

    1. The worker leaves the load balancer's rotation: ``/healthz`` answers 503 ``draining``, and
       so does every new Engine.IO handshake (a request to ``/socket.io/`` without ``sid``), which
       nginx then retries on another worker (``proxy_next_upstream … http_503``). Requests of the
       sessions already here (long-polls, upgrades) are served as before.
    2. Its sockets, in random order, are closed in batches spread evenly over ``seconds`` (all at
       once when 0). Each is closed at its transport (``close``), so that socket.io-client
       reconnects by itself, through the load balancer to another worker, and replays what it
       missed with ``since``.
    3. Sockets whose handshake was under way when draining began are closed last.
    4. Then whatever else is open (``close_rest``): Engine.IO sessions that joined no namespace
       or left it, so that none of their long-polls holds the shutdown for its whole timeout.
    5. The process shuts down as aiohttp does after a plain SIGTERM (``GracefulExit``).

    SIGINT still shuts down at once.
    """

    def __init__(self, *, seconds: float, sockets: Callable[[], Iterable[str]],
                 close: Callable[[str], Awaitable[None]],
                 close_rest: Callable[[], Awaitable[None]] | None = None) -> None:
        self.seconds = seconds
        self._sockets = sockets
        self._close = close
        self._close_rest = close_rest
        self.draining = False
        self._task: asyncio.Task[None] | None = None

    async def drain(self) -> None:
        """Steps 1 to 4: leave the rotation, then close every socket, spread over ``seconds``."""
        self.draining = True
        loop = asyncio.get_running_loop()
        began = loop.time()
        sids = list(self._sockets())
        # Shuffled, so that no group of users (the oldest connections, say) always moves first.
        random.shuffle(sids)
        batches = max(1, min(len(sids), int(self.seconds / MIN_INTERVAL)))
        logger.info("draining: closing %d sockets in %d batches over %ss", len(sids), batches, self.seconds)
        for i in range(batches):
            await asyncio.sleep(max(0.0, began + self.seconds * i / batches - loop.time()))
            await self._close_all(sids[len(sids) * i // batches:len(sids) * (i + 1) // batches])
        await self._close_all(list(self._sockets()))
        if self._close_rest is not None:
            try:
                await self._close_rest()
            except Exception as exc:
                logger.warning("could not close the other sessions while draining: %r", exc)
        logger.info("drained in %.1fs", loop.time() - began)

    async def _close_all(self, sids: list[str]) -> None:
        results = await asyncio.gather(*(self._close(sid) for sid in sids), return_exceptions=True)
        for sid, result in zip(sids, results):
            if isinstance(result, Exception):
                # Shutdown closes it anyway; the rest of the batch must not wait for it.
                logger.warning("could not close socket %s while draining: %r", sid, result)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        """While draining: 503 ``draining`` for ``/healthz`` and for new handshakes."""
        if self.draining and (request.path == "/healthz" or (
                request.path.startswith(ENGINEIO_PATH) and "sid" not in request.query)):
            error = Draining("this worker is shutting down; connect again to reach another one")
            return web.json_response(error.to_dict(), status=error.status, headers={"Retry-After": "1"})
        return await handler(request)

    def install(self, app: web.Application) -> None:
        """Make SIGTERM drain first and only then shut down (for an app served by run_app)."""

        async def on_startup(app: web.Application) -> None:
            # Replaces the handler that run_app installed a moment earlier; it removes ours at exit.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_sigterm)

        app.on_startup.append(on_startup)

    def _on_sigterm(self) -> None:
        if self._task is not None:
            return
        logger.info("SIGTERM: draining before shutting down")
        self._task = asyncio.get_running_loop().create_task(self.drain(), name="drain")
        self._task.add_done_callback(self._shut_down)

    @staticmethod
    def _shut_down(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # the process is shutting down already (SIGINT)
        if task.exception() is not None:
            logger.error("draining failed; shutting down now", exc_info=task.exception())
        # What run_app's own SIGTERM handler raises: its graceful shutdown follows.
        raise web.GracefulExit()
