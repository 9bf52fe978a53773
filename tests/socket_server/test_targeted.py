"""Targeted delivery through the running stack: a worker receives only what concerns the users
whose sockets it holds (on the bus and through the Socket.IO manager), and nothing is lost for a
socket that connects while notifications are published, nor after Redis restarts empty."""
import asyncio

import orjson
import pytest
import redis as sync_redis
from redis.exceptions import RedisError

from devstack.process import wait_until
from shared.bus import decode
from shared.presence import Presence
from socket_server.manager import TargetedRedisManager
from socket_server.namespace import NAMESPACE

from ..channels import Channels


def worker_of(sock) -> str:
    return sock.engine_id.split(".", 1)[0]


async def on_other_workers(hub, js, users):
    """One socket per user, each on a worker of its own (new handshakes spread over the workers)."""
    socks, taken = [], set()
    for user in users:
        for attempt in range(12):
            sock = await hub.connect(js, f"{user}-{attempt}", user)
            await sock.wait_for("init")
            if worker_of(sock) not in taken:
                taken.add(worker_of(sock))
                socks.append(sock)
                break
            await sock.disconnect()
        else:
            raise AssertionError("handshakes did not spread over the workers")
    return socks


def bus_channels(hub, workers):
    prefix = hub.settings.channel_prefix
    return {f"{prefix}:bus:{w}": w for w in workers} | {f"{prefix}:events": "shared"}


def carries(recipient, note_id=None):
    def found(data):
        event = decode(data)
        return event is not None and any(i.recipient == recipient and (note_id is None or str(i.id) == note_id)
                                         for i in getattr(event, "items", ()))
    return found


async def test_a_worker_gets_only_the_items_of_the_users_it_holds(hub, js, runtime):
    alice, bob, nobody = hub.new_user("alice"), hub.new_user("bob"), hub.new_user("off")
    a_sock, b_sock = await on_other_workers(hub, js, [alice, bob])
    wa, wb = worker_of(a_sock), worker_of(b_sock)
    async with Channels(runtime.redis, bus_channels(hub, [wa, wb])) as seen:
        _, both = await hub.publish([alice, nobody, bob], "post.liked")
        ids = {n["recipient"]: n["id"] for n in both["notifications"]}
        _, only = await hub.publish([alice], "user.followed")
        alone = only["notifications"][0]["id"]
        # A fence on bob's worker: anything for alice sent there would have come before it.
        _, fence = await hub.publish([bob], "user.followed")
        await seen.until(wa, carries(alice, alone))
        await seen.until(wb, carries(bob, fence["notifications"][0]["id"]))
    assert seen.items(wa) == [(alice, ids[alice]), (alice, alone)]
    assert seen.items(wb) == [(bob, ids[bob]), (bob, fence["notifications"][0]["id"])]
    assert seen.got["shared"] == []
    assert [n["id"] for n in [await a_sock.wait_for("notification") for _ in range(2)]] == [ids[alice], alone]
    assert (await b_sock.wait_for("notification"))["id"] == ids[bob]


async def test_read_state_changes_go_to_the_workers_of_their_user(hub, js, runtime):
    alice, bob = hub.new_user("alice"), hub.new_user("bob")
    a_sock, b_sock = await on_other_workers(hub, js, [alice, bob])
    wa, wb = worker_of(a_sock), worker_of(b_sock)
    await hub.publish([alice, bob], "post.liked")
    await a_sock.wait_for("notification")
    await b_sock.wait_for("notification")
    async with Channels(runtime.redis, bus_channels(hub, [wa, wb])) as seen:
        assert (await a_sock.emit_ack("mark_all_read", {}))["ok"] is True
        await seen.until(wa, lambda data: orjson.loads(data)["kind"] == "read")
        _, fence = await hub.publish([bob], "user.followed")
        await seen.until(wb, carries(bob, fence["notifications"][0]["id"]))
    assert all(orjson.loads(m)["kind"] in ("delivered", "ping") for m in seen.got[wb])
    assert (await a_sock.wait_for("notifications_read"))["unread_count"] == 0


async def _round(hub, js, index: int, count: int = 8) -> tuple[list[str], list[str], list[str]]:
    """Publish ``count`` notifications to a new user while its first socket connects (after a
    varying number of them); return what was published, what init showed and what came live."""
    user = hub.new_user("race")
    published: list[str] = []
    go = asyncio.Event()
    connect_after = index % (count + 1)

    async def produce():
        for i in range(count):
            if i == connect_after:
                go.set()
            _, body = await hub.publish([user], "post.liked", data={"n": i})
            published.append(body["notifications"][0]["id"])
        go.set()

    producer = asyncio.create_task(produce())
    await go.wait()
    sock = await hub.connect(js, f"race-{index}", user)
    init = await sock.wait_for("init", timeout=20)
    await producer
    # A fence: once it is here live, everything published before it is here too.
    _, fence = await hub.publish([user], "user.followed")
    fence_id = fence["notifications"][0]["id"]
    await sock.wait_for("notification", predicate=lambda n: n["id"] == fence_id, timeout=20)
    live = [n["id"] for n in sock.events("notification") if n["id"] != fence_id]
    await sock.disconnect()
    return published, [n["id"] for n in init["notifications"]], live


async def test_a_socket_connecting_while_notifications_are_published_loses_nothing(hub, js):
    """The lease is written before the sync reads its snapshot; the lookup happens after the
    commit: whichever comes first, each notification arrives once, in init or live."""
    rounds = await asyncio.gather(*(_round(hub, js, i) for i in range(24)))
    for published, shown, live in rounds:
        assert sorted(shown + live) == sorted(published), (published, shown, live)
        assert len(set(shown + live)) == len(shown) + len(live)


async def test_a_targeted_emit_to_a_user_reaches_only_the_worker_holding_it(hub, js, runtime):
    alice, bob = hub.new_user("alice"), hub.new_user("bob")
    a_sock, b_sock = await on_other_workers(hub, js, [alice, bob])
    wa, wb = worker_of(a_sock), worker_of(b_sock)
    prefix = hub.settings.channel_prefix
    channel = f"{prefix}:socketio"
    # As another process would: a write-only manager, no server of its own.
    manager = TargetedRedisManager(hub.settings.redis_url, channel=channel, prefix=prefix, write_only=True)
    async with Channels(runtime.redis, {channel: "shared", f"{channel}:{wa}": wa, f"{channel}:{wb}": wb}) as seen:
        try:
            await manager.emit("announcement", {"to": alice}, room=f"user:{alice}", namespace=NAMESPACE)
            await manager.emit("announcement", {"to": bob}, room=f"user:{bob}", namespace=NAMESPACE)
            await seen.until(wb, lambda data: orjson.loads(data).get("room") == f"user:{bob}")
            # Not a user's room: on the shared channel, as before.
            await manager.emit("announcement", {"to": "all"}, namespace=NAMESPACE)
            await seen.until("shared", lambda data: orjson.loads(data).get("event") == "announcement")
        finally:
            await manager.redis.aclose()
    emits = {name: [orjson.loads(m) for m in messages] for name, messages in seen.got.items()}
    rooms = {name: [m["room"] for m in found if m.get("method") == "emit"] for name, found in emits.items()}
    assert rooms == {wa: [f"user:{alice}"], wb: [f"user:{bob}"], "shared": [None]}
    assert [e["to"] for e in [await a_sock.wait_for("announcement") for _ in range(2)]] == [alice, "all"]
    assert [e["to"] for e in [await b_sock.wait_for("announcement") for _ in range(2)]] == [bob, "all"]


@pytest.mark.timeout(180)
async def test_after_redis_restarts_empty_leases_are_back_and_delivery_is_live(hub, js, runtime, stack):
    user = hub.new_user("restart")
    [sock] = await on_other_workers(hub, js, [user])
    worker = worker_of(sock)
    key = Presence(redis=runtime.redis, prefix=hub.settings.channel_prefix).key(user)
    client = sync_redis.Redis.from_url(hub.settings.redis_url, socket_timeout=2, socket_connect_timeout=2)

    def leased() -> bool:
        try:
            return client.zscore(key, sock.sid) is not None
        except RedisError:
            return False

    try:
        await asyncio.to_thread(stack.kill_redis)
        await asyncio.to_thread(stack.start_redis)
        # Back empty; the worker notices its lost subscription, subscribes again and writes its leases.
        await asyncio.to_thread(wait_until, leased, 30, "the worker to write its socket's lease again")
        async with Channels(runtime.redis, bus_channels(hub, [worker])) as seen:
            _, body = await hub.publish([user], "post.liked")
            note_id = body["notifications"][0]["id"]
            # Announced to the worker (not found later by its position check): live.
            await seen.until(worker, carries(user, note_id))
        assert (await sock.wait_for("notification", timeout=20))["id"] == note_id
    finally:
        client.close()
        if not stack.redis.ping():
            await asyncio.to_thread(stack.start_redis)
