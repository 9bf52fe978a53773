"""The namespace's edge cases, in-process against the real MongoDB and Redis: a client that leaves
while the handshake awaits Redis, Redis failing during the handshake, and a socket the server
closes so that its (real JavaScript) client reconnects."""
import asyncio
import contextlib
import uuid

import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.i18n import Renderer
from shared.presence import Presence
from shared.ratelimit import LocalLimiter, RedisLimiter
from shared.tokens import TokenVerifier, mint
from socket_server.hub import Hub
from socket_server.namespace import NAMESPACE, NotificationsNamespace, SocketLimits, reconnect


class LeavesDuringAdmit(Presence):
    """Real presence in Redis; the client's transport is closed while admit is in flight
    (a timing no real client can be made to hit on cue)."""

    sio: socketio.AsyncServer

    async def admit(self, user, sid):
        admitted = await super().admit(user, sid)
        await self.sio.eio.disconnect(self.sio.manager.eio_sid_from_sid(sid, NAMESPACE))
        return admitted


class RedisDown(Presence):
    """A fake, named as such: Redis failing for this one call."""

    async def admit(self, user, sid):
        raise RedisConnectionError("Redis went away")


@contextlib.asynccontextmanager
async def worker(runtime, settings, presence_class):
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)

    async def emit(event, data, sid):
        await sio.emit(event, data, to=sid, namespace=NAMESPACE)

    async def drop(sid):
        await reconnect(sio, sid)

    hub = Hub(service=runtime.service, renderer=Renderer(default_lang="en"), emit=emit, drop=drop,
              init_limit=20, replay_limit=500)
    prefix = f"nstest-{uuid.uuid4().hex[:6]}"
    presence = presence_class(redis=runtime.redis, prefix=prefix, limit=5)
    presence.sio = sio
    sio.register_namespace(NotificationsNamespace(
        hub=hub, service=runtime.service, verifier=TokenVerifier(settings=settings),
        renderer=Renderer(default_lang="en"), presence=presence, default_lang="en",
        limits=SocketLimits(
            handshakes_per_address=RedisLimiter(redis=runtime.redis, prefix=prefix, name="a",
                                                rate=settings.handshake_rate_per_address, timeout=1),
            handshakes_per_user=RedisLimiter(redis=runtime.redis, prefix=prefix, name="u",
                                             rate=settings.handshake_rate_per_user, timeout=1),
            events=LocalLimiter(settings.socket_event_rate), trusted_proxies=settings.trusted_proxies)))
    async with TestServer(app, host="127.0.0.1") as server:
        server.sio = sio
        yield server, hub, presence


async def _connect(server, auth, wait_timeout=10):
    """A python-socketio client; returns it and a queue of its connect_error data."""
    client = socketio.AsyncClient(reconnection=False)
    errors = asyncio.Queue()
    client.on("connect_error", errors.put_nowait, namespace=NAMESPACE)
    with contextlib.suppress(socketio.exceptions.ConnectionError):
        await client.connect(str(server.make_url("/")), namespaces=[NAMESPACE], transports=["websocket"],
                             auth=auth, wait_timeout=wait_timeout)
    return client, errors


async def test_a_client_that_leaves_during_the_handshake_leaves_nothing_behind(runtime, settings):
    user = f"ns-{uuid.uuid4().hex[:8]}"
    async with worker(runtime, settings, LeavesDuringAdmit) as (server, hub, presence):
        # The transport is gone: the client would wait for the handshake's answer in vain.
        client, _ = await _connect(server, {"token": mint(settings, sub=user), "lang": "en"}, wait_timeout=1)
        await client.disconnect()
        # No ghost socket in the hub, none in the manager, and its lease is gone from Redis.
        assert len(hub) == 0
        assert await runtime.redis.zcard(presence.key(user)) == 0


async def test_redis_failing_during_the_handshake_admits_the_socket_uncounted(runtime, settings):
    # A refusal would be final for socket.io-client; Redis may be back in a moment.
    user = f"ns-{uuid.uuid4().hex[:8]}"
    async with worker(runtime, settings, RedisDown) as (server, hub, presence):
        client = socketio.AsyncClient(reconnection=False)
        inits = asyncio.Queue()
        client.on("init", inits.put_nowait, namespace=NAMESPACE)
        await client.connect(str(server.make_url("/")), namespaces=[NAMESPACE], transports=["websocket"],
                             auth={"token": mint(settings, sub=user), "lang": "en"}, wait_timeout=10)
        init = await asyncio.wait_for(inits.get(), 10)
        assert init["user_id"] == user and len(hub) == 1
        assert await runtime.redis.zcard(presence.key(user)) == 0
        await client.disconnect()


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], ["polling", "websocket"]])
async def test_a_socket_closed_by_the_server_reconnects_with_the_javascript_client(runtime, settings, js, transports):
    # What the hub does to a socket whose catch-up failed: the client must come back by itself.
    user = f"ns-{uuid.uuid4().hex[:8]}"
    async with worker(runtime, settings, Presence) as (server, hub, _):
        sock = await js.connect("tab", str(server.make_url(NAMESPACE)), transports=transports,
                                query={"token": mint(settings, sub=user), "content-language": "en"},
                                reconnection_delay=50, reconnection_delay_max=100)
        await sock.wait_for("init", timeout=10)
        [sid] = [conn.sid for conn in hub._by_sid.values()]
        await reconnect(server.sio, sid)
        gone = await sock.wait_for("disconnect", timeout=10)
        await sock.wait_for("init", timeout=10)
        # Not "io server disconnect", after which socket.io-client would not reconnect.
        assert gone["reason"] in ("transport close", "transport error"), gone
        assert [conn.sid for conn in hub._by_sid.values()] != [sid] and len(hub) == 1
        await sock.disconnect()


@pytest.mark.parametrize("auth", [{"token": 5}, {"token": ["a"], "lang": {"x": 1}}, {"lang": 7, "since": 3}])
async def test_odd_auth_objects_are_refused_as_unauthorized(runtime, settings, auth):
    async with worker(runtime, settings, Presence) as (server, hub, _):
        client, errors = await _connect(server, auth)
        error = await asyncio.wait_for(errors.get(), 10)
        await client.disconnect()
    assert error["data"]["code"] == "unauthorized" and len(hub) == 0
