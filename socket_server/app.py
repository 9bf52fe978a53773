"""A socket worker: create_app(settings, worker_id=…) builds it, for the server and the tests."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError
from socketio.packet import EVENT

from shared import metrics
from shared import web as shared_web
from shared.bus import Gap
from shared.i18n import Renderer
from shared.presence import LEASE_SECONDS, Presence
from shared.ratelimit import LocalLimiter, Rate, RedisLimiter
from shared.runtime import Runtime, open_runtime
from shared.settings import Settings
from shared.tokens import TokenVerifier

from .drain import Drainer
from .engine import FastJson, WorkerServer, close_sessions, engine_socket
from .hub import CHECK_GRACE_SECONDS, Hub
from .namespace import NAMESPACE, NotificationsNamespace, SocketLimits, reconnect
from .manager import TargetedRedisManager

logger = logging.getLogger(__name__)

# How long a delivery waits, once per bus message, for the writer of a socket over its queue
# bound to take its queue (hub.py, rule 7).
SETTLE_SECONDS = 0.05

RUNTIME = web.AppKey("runtime", Runtime)
SIO = web.AppKey("sio", WorkerServer)
HUB = web.AppKey("hub", Hub)
BUS_READY = web.AppKey("bus_ready", asyncio.Event)
DRAINER = web.AppKey("drainer", Drainer)


def allowed_origins(origins: tuple[str, ...]) -> Any:
    """Engine.IO's ``cors_allowed_origins``: the hub's own origin, and NOTIHUB_CORS_ORIGINS (``*``:
    any)."""
    if "*" in origins:
        return "*"
    if not origins:
        return None  # engineio: the origin the request was made to, only

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        own = (environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http")).split(",")[0].strip()
               + "://" + environ.get("HTTP_HOST", ""))
        return origin in origins or origin == own

    return allowed


def create_sio(settings: Settings, *, worker_id: str) -> WorkerServer:
    """The Socket.IO server; every worker shares one Redis client manager."""
    # The Redis manager lets any worker (or any process with a write-only manager) emit to
    # rooms such as user:<id>, reaching only the workers that hold the user (manager.py);
    # notifications travel on the event bus instead so that each worker renders them once per
    # language for its own sockets.
    manager = TargetedRedisManager(settings.redis_url, channel=f"{settings.channel_prefix}:socketio",
                                   prefix=settings.channel_prefix, worker_id=worker_id,
                                   targeted=settings.bus_targeted, timeout=settings.redis_timeout)
    return WorkerServer(
        worker_id=worker_id,
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=allowed_origins(settings.cors_origins),
        # Sockets authenticate with tokens, never with cookies: no origin may send credentials.
        cors_credentials=False,
        json=FastJson,
        logger=False,
        engineio_logger=False,
    )


async def _listen(runtime: Runtime, hub: Hub, presence: Presence, worker_id: str, ready: asyncio.Event,
                  check_now: asyncio.Event) -> None:
    async for event in runtime.bus.listen(worker_id, ready=ready):
        if isinstance(event, Gap):
            # Redis may be back empty: the leases first, so that every commit from now on finds
            # this worker; the position check (hub.handle) then finds those that came before.
            await _renew_leases(presence, hub)
        try:
            await hub.handle(event)
        except Exception:
            # Never a silent loss: what this event carried is in MongoDB; check positions now.
            logger.exception("failed to handle a bus event; checking every socket's position")
            check_now.set()


async def _check_positions(hub: Hub, check_now: asyncio.Event, every: float) -> None:
    # Catches what the bus lost while subscribed (a failed publish): at the latest one period and
    # the grace after it was committed, or at once after a failure above.
    backoff = 0.5
    while True:
        grace = 0.0
        try:
            async with asyncio.timeout(every):
                await check_now.wait()
        except TimeoutError:
            # A routine check: what is missing may still be on its way (hub.py, rule 5).
            grace = min(CHECK_GRACE_SECONDS, every / 2)
        check_now.clear()
        try:
            await hub.check(grace=grace)
            backoff = 0.5
        except Exception as exc:
            logger.warning("position check failed (%s); trying again in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, every)
            check_now.set()


async def _freeze_old_objects(every: float, thaw_every: int) -> None:
    # Thousands of long-lived connections make every full collection of the cyclic garbage
    # collector a pause of hundreds of milliseconds for all sockets of the worker (measured at
    # 2,500 sockets: 0.3-0.5 s, each time connections are added). What has lived this long is
    # moved out of the collector's sight; once in a while everything is looked at again, so
    # that cycles left by closed connections are freed after all. A full collection also waits
    # for ten times as many younger ones as CPython's default (new connections still reach it).
    gc.set_threshold(700, 10, 100)
    rounds = 0
    while True:
        await asyncio.sleep(every)
        rounds += 1
        if rounds % thaw_every == 0:
            gc.unfreeze()
        else:
            gc.freeze()


async def _close_idle_sessions(sio: WorkerServer, timeout: float) -> None:
    # An Engine.IO session that never joins /notifications costs the worker a socket, a queue and
    # its tasks for nothing (python-socketio keeps it until the client leaves): closed after
    # `timeout` seconds, checked twice as often.
    first_seen: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(timeout / 2)
        now = loop.time()
        # One pass: sessions that left or joined drop out of the record by themselves.
        unjoined = {eio_sid: socket for eio_sid, socket in list(sio.eio.sockets.items())
                    if not socket.closed and sio.manager.sid_from_eio_sid(eio_sid, NAMESPACE) is None}
        first_seen = {eio_sid: first_seen.get(eio_sid, now) for eio_sid in unjoined}
        for eio_sid, since in first_seen.items():
            if now - since >= timeout:
                metrics.IDLE_SESSIONS_CLOSED.inc()
                await unjoined[eio_sid].close(wait=False, reason=sio.eio.reason.SERVER_DISCONNECT)


async def _renew_leases(presence: Presence, hub: Hub) -> bool:
    """Extend the leases of this worker's sockets, writing again those that were gone; whether
    any was (its socket may have missed commits whose lookup did not find it: check positions).

    A socket that closed while its lease was written again is forgotten once more."""
    try:
        restored = await presence.refresh(hub.sockets())
        closed = [(user, sid) for user, sid in restored if hub.connection(sid) is None]
        await presence.forget(closed)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("could not refresh socket leases: %s", exc)
        return False
    if len(restored) > len(closed):
        logger.info("wrote the missing leases of %d sockets again", len(restored) - len(closed))
        return True
    return False


async def _refresh_presence(presence: Presence, hub: Hub, check_now: asyncio.Event) -> None:
    while True:
        await asyncio.sleep(LEASE_SECONDS / 3)
        if await _renew_leases(presence, hub):
            check_now.set()


def create_app(settings: Settings, *, worker_id: str) -> web.Application:
    """The worker's aiohttp application with Socket.IO at /socket.io/."""
    app = web.Application()
    sio = create_sio(settings, worker_id=worker_id)
    sio.attach(app)
    app[SIO] = sio
    app[BUS_READY] = asyncio.Event()
    renderer = Renderer(default_lang=settings.default_lang)

    def open_sockets() -> list[str]:
        hub = app.get(HUB)
        return [sid for _, sid in hub.sockets()] if hub is not None else []

    # Draining for rolling deploys; __main__ makes SIGTERM start it (drain.py).
    app[DRAINER] = Drainer(seconds=settings.drain_seconds, sockets=open_sockets,
                           close=functools.partial(reconnect, sio),
                           close_rest=functools.partial(close_sessions, sio.eio))
    app.middlewares.append(app[DRAINER].middleware)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, app_name=f"notihub-socket-{worker_id}") as runtime:
            app[RUNTIME] = runtime

            def backlog(sid: str) -> int:
                socket = engine_socket(sio, sid, NAMESPACE)
                return socket.queue.qsize() if socket is not None else 0

            async def settle(sid: str) -> None:
                # A socket's writer takes its whole queue whenever it runs (engineio marks each
                # packet done as it takes it), unless it is stuck sending to a client that does
                # not read.
                socket = engine_socket(sio, sid, NAMESPACE)
                if socket is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(SETTLE_SECONDS):
                            await socket.queue.join()

            async def emit(event: str, data: object, sid: str) -> None:
                socket = engine_socket(sio, sid, NAMESPACE)
                if socket is None:
                    return  # gone meanwhile
                # No bound here: the hub judges a socket before each bus message (hub.py, rule 7),
                # and what it sends otherwise is bounded by itself (init, a replay, held events).
                # Local only (the bus already reached every worker), and straight to the socket's
                # queue: the packet sio.emit(event, data, to=sid) would send, without its task
                # and wait per recipient. What the hub sends is JSON (from the bus or MongoDB),
                # never bytes: no search for binary attachments in every packet.
                packet = sio.packet_class(EVENT, namespace=NAMESPACE, data=[event, data], binary=False)
                await sio.eio.send(socket.sid, packet.encode())

            async def drop(sid: str) -> None:
                await reconnect(sio, sid)

            hub = Hub(service=runtime.service, renderer=renderer, emit=emit, drop=drop,
                      backlog=backlog, settle=settle, max_queue=settings.max_socket_queue,
                      init_limit=settings.init_limit, replay_limit=settings.replay_limit,
                      throttle=LocalLimiter(Rate(settings.user_max_per_minute, 60), clock=time.time))
            app[HUB] = hub
            presence = Presence(redis=runtime.redis, prefix=settings.channel_prefix,
                                limit=settings.max_connections_per_user)
            sio.register_namespace(NotificationsNamespace(
                hub=hub, service=runtime.service, verifier=TokenVerifier(settings=settings),
                renderer=renderer, presence=presence, default_lang=renderer.default_lang,
                limits=SocketLimits(
                    handshakes_per_address=RedisLimiter(
                        redis=runtime.redis, prefix=settings.channel_prefix, name="handshake_address",
                        rate=settings.handshake_rate_per_address, timeout=settings.redis_timeout),
                    handshakes_per_user=RedisLimiter(
                        redis=runtime.redis, prefix=settings.channel_prefix, name="handshake_user",
                        rate=settings.handshake_rate_per_user, timeout=settings.redis_timeout),
                    events=LocalLimiter(settings.socket_event_rate),
                    trusted_proxies=settings.trusted_proxies),
            ))
            try:
                check_now = asyncio.Event()
                async with shared_web.essential_tasks(
                    bus_listener=_listen(runtime, hub, presence, worker_id, app[BUS_READY], check_now),
                    position_check=_check_positions(hub, check_now, settings.position_check_seconds),
                    presence_refresh=_refresh_presence(presence, hub, check_now),
                    gc_freeze=_freeze_old_objects(every=30, thaw_every=20),
                    idle_sessions=_close_idle_sessions(sio, settings.namespace_timeout_seconds),
                    metrics_share=metrics.share(runtime.redis, prefix=settings.channel_prefix, process=worker_id),
                ):
                    # Serve only once live events can reach us.
                    await asyncio.wait_for(app[BUS_READY].wait(), 10)
                    yield
            finally:
                await hub.close()
                await sio.shutdown()

    app.cleanup_ctx.append(runtime_ctx)
    app.router.add_get("/healthz", shared_web.healthz)
    app.router.add_get("/metrics", shared_web.metrics(settings))
    return app
