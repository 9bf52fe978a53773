"""The event bus: message size, content sent once, a deaf subscription noticed within its
deadline, and targeted delivery (each worker gets only its users' items), against the session's
real Redis."""
import asyncio
import time
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import metrics
from shared.bus import (MAX_MESSAGE_BYTES, ROUTE_MAX_ITEMS, Deleted, Delivered, EventBus, Gap, ReadChanged, decode,
                        delivered_messages, route_args)
from shared.ids import new_id
from shared.models import Actor, Notification, Stored, utcnow
from shared.presence import LEASE_SECONDS, Presence
from shared.settings import Settings, SettingsError

from ..channels import Channels


def batch(recipients, *, data=None, contents=1):
    now = utcnow()
    shared = [dict(data or {"post": i}) for i in range(contents)]
    actor, params = Actor(id="a", name="Kim"), {}
    # As the service makes them: the notifications of one request share their content objects.
    return [Stored(Notification(id=new_id(now), type="post.liked", recipient=r, actor=actor, created_at=now,
                                params=params, data=shared[i % contents]), seq=i + 1, unread=i + 1, ver=i + 1)
            for i, r in enumerate(recipients)]


def test_a_content_travels_once_with_its_recipients():
    stored = batch([f"user-{i}" for i in range(500)], data={"blob": "x" * 16_000})
    [message] = delivered_messages(stored)
    # One 16 KiB content, not 500 copies of it.
    assert len(message) < 16_000 + 500 * 60
    event = decode(message)
    assert isinstance(event, Delivered) and len(event.contents) == 1
    assert [(n.recipient, n.id, n.data) for n in event.notifications()] == \
        [(s.notification.recipient, s.notification.id, s.notification.data) for s in stored]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 40), st.integers(0, 40_000))
def test_messages_stay_under_the_size_limit_and_lose_nothing(count, contents, size):
    stored = batch([f"u{i}" for i in range(count)], data={"blob": "x" * size}, contents=contents)
    messages = delivered_messages(stored)
    assert all(len(m) <= MAX_MESSAGE_BYTES for m in messages)
    items = [(i.recipient, i.id, i.seq) for m in messages for i in decode(m).items]
    assert items == [(s.notification.recipient, s.notification.id, s.seq) for s in stored]
    for m in messages:
        event = decode(m)
        for n, item in zip(event.notifications(), event.items):
            assert n.data == stored[item.seq - 1].notification.data


async def test_a_silent_subscription_is_noticed_and_resubscribed(runtime):
    """CLIENT PAUSE WRITE holds every PUBLISH (the heartbeat too), as a half-open connection
    would: the listener must notice the silence within its deadline and report a Gap."""
    bus = EventBus(redis=runtime.redis, prefix=f"bus-test:{uuid.uuid4().hex[:8]}", heartbeat=0.2,
                   deaf_after=1.0, timeout=2.0)
    ready = asyncio.Event()
    seen = []

    async def listen():
        async for event in bus.listen("w1", ready=ready, max_backoff=0.2):
            seen.append(event)
            if isinstance(event, Gap):
                return

    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(ready.wait(), 5)
        await runtime.redis.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(task, 10)
        # Silence for deaf_after, then a new subscription once the pause is over.
        assert isinstance(seen[-1], Gap)
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        task.cancel()
        await runtime.redis.execute_command("CLIENT", "UNPAUSE")


def test_a_heartbeat_is_no_event():
    assert decode(orjson.dumps({"kind": "ping"})) is None


# -- targeted delivery ----------------------------------------------------------------------------

async def targeted(runtime):
    """A bus and presence of a prefix of their own, as the API's and the workers' are."""
    prefix = f"bus-test:{uuid.uuid4().hex[:8]}"
    presence = Presence(redis=runtime.redis, prefix=prefix, limit=10)
    return EventBus(redis=runtime.redis, prefix=prefix, presence=presence, timeout=2.0), presence


async def heard(runtime, bus, workers, send):
    """Every message ``send`` makes the bus publish, by worker ("shared": the shared channel)."""
    channels = {bus.channel_of(w): w for w in workers} | {bus.channel: "shared"}
    async with Channels(runtime.redis, channels) as seen:
        await send()
        return await seen.fenced()


async def test_each_worker_gets_only_the_items_of_the_users_it_holds(runtime):
    bus, presence = await targeted(runtime)
    await presence.admit("a", "w1.s1")
    await presence.admit("b", "w2.s1")
    await presence.admit("both", "w1.s2")
    await presence.admit("both", "w2.s2")
    await presence.admit("twice", "w1.s3")
    await presence.admit("twice", "w1.s4")
    # A lease that ran out (a dead worker's): no publish for it.
    await runtime.redis.zadd(presence.key("gone"), {"w3.s1": time.time() - 1})
    stored = batch(["a", "offline", "b", "both", "gone", "twice", "a"])
    got = await heard(runtime, bus, ["w1", "w2", "w3"], lambda: bus.deliver(stored))
    items = {w: [(i.recipient, i.seq) for m in messages for i in decode(m).items] for w, messages in got.items()}
    assert items == {"w1": [("a", 1), ("both", 4), ("twice", 6), ("a", 7)], "w2": [("b", 3), ("both", 4)],
                     "w3": [], "shared": []}
    # Each worker's message carries the content its items need, once.
    assert all(len(decode(m).contents) == 1 for m in got["w1"] + got["w2"])


@pytest.mark.parametrize("contents, blob", [(1, 10), (3, 10), (2, 200_000)])
async def test_one_script_routes_as_lookup_then_publish_would(runtime, contents, blob):
    """A small commit is looked up and published by one script: each worker gets the very bytes
    the two round trips send (and a commit too big for one message takes those two)."""
    bus, presence = await targeted(runtime)
    for user, sid in [("a", "w1.s1"), ("b", "w2.s1"), ("both", "w1.s2"), ("both", "w2.s2"), ("c", "w3.s1")]:
        await presence.admit(user, sid)
    stored = batch(["a", "offline", "b", "both", "c", "a", "both", "b"], data={"blob": "x" * blob}, contents=contents)
    sent = {}

    async def send(max_items):
        bus.route_max_items = max_items
        sent[max_items] = await bus.deliver(stored)

    routed = await heard(runtime, bus, ["w1", "w2", "w3"], lambda: send(ROUTE_MAX_ITEMS))
    two_trips = await heard(runtime, bus, ["w1", "w2", "w3"], lambda: send(0))
    assert routed == two_trips
    assert sent[ROUTE_MAX_ITEMS] == sent[0] == sum(len(m) for m in routed.values())
    assert {w: [i.recipient for m in got for i in decode(m).items] for w, got in routed.items()} == \
        {"w1": ["a", "both", "a", "both"], "w2": ["b", "both", "both", "b"], "w3": ["c"], "shared": []}
    assert (route_args(stored) is None) == (blob * contents > MAX_MESSAGE_BYTES)


async def test_a_batch_of_offline_recipients_costs_no_publish(runtime):
    bus, _ = await targeted(runtime)
    sent = []

    async def send():
        sent.append(await bus.deliver(batch([f"off-{i}" for i in range(2000)])))

    got = await heard(runtime, bus, ["w1"], send)
    assert sent == [0] and got == {"w1": [], "shared": []}


async def test_a_change_goes_to_the_workers_of_its_user(runtime):
    bus, presence = await targeted(runtime)
    await presence.admit("u", "w1.s1")
    await presence.admit("u", "w2.s1")
    await presence.admit("other", "w3.s1")

    async def send():
        await bus.announce(ReadChanged(user="u", ids=[], all=True, unread_count=0, ver=3))
        await bus.announce(Deleted(user="offline", ids=["x"], unread_count=0, ver=1))

    got = await heard(runtime, bus, ["w1", "w2", "w3"], send)
    assert [decode(m) for m in got["w1"]] == [decode(m) for m in got["w2"]] == \
        [ReadChanged(user="u", ids=[], all=True, unread_count=0, ver=3)]
    assert got["w3"] == got["shared"] == []


async def test_without_presence_everything_goes_on_the_shared_channel(runtime):
    bus = EventBus(redis=runtime.redis, prefix=f"bus-test:{uuid.uuid4().hex[:8]}", timeout=2.0)
    got = await heard(runtime, bus, ["w1"], lambda: bus.deliver(batch(["a", "b"])))
    assert got["w1"] == [] and [i.recipient for m in got["shared"] for i in decode(m).items] == ["a", "b"]


async def test_a_worker_counts_what_it_receives_and_not_its_heartbeat(runtime):
    bus, presence = await targeted(runtime)
    bus.heartbeat = 0.05
    await presence.admit("a", "w1.s1")
    ready, events = asyncio.Event(), asyncio.Queue()

    async def listen():
        async for event in bus.listen("w1", ready=ready):
            events.put_nowait(event)

    before_bytes = metrics.BUS_RECEIVED_BYTES.labels("worker")._value.get()
    before_messages = metrics.BUS_RECEIVED_MESSAGES.labels("worker")._value.get()
    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(ready.wait(), 5)
        stored = batch(["a", "b"])
        [message] = delivered_messages(stored[:1])
        await bus.deliver(stored)
        event = await asyncio.wait_for(events.get(), 5)
        assert [i.recipient for i in event.items] == ["a"]
        # Heartbeats went by meanwhile (every 50 ms); only the message counts.
        assert metrics.BUS_RECEIVED_BYTES.labels("worker")._value.get() - before_bytes == len(message)
        assert metrics.BUS_RECEIVED_MESSAGES.labels("worker")._value.get() - before_messages == 1
    finally:
        task.cancel()


async def test_a_failed_lookup_is_counted_and_never_raised(runtime):
    # A Redis nobody listens on: the lookup fails as after a crash (refused connections).
    down = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        bus = EventBus(redis=down, prefix="bus-test", presence=Presence(redis=down, prefix="bus-test"), timeout=2.0)
        before = metrics.BUS_PUBLISH_FAILURES._value.get()
        await bus.announce(batch(["a"]))
        await bus.announce(ReadChanged(user="a", ids=[], all=True, unread_count=0, ver=1))
        assert metrics.BUS_PUBLISH_FAILURES._value.get() - before == 2
    finally:
        await down.aclose()


async def test_presence_finds_workers_and_writes_missing_leases_again(runtime):
    prefix = f"presence-test:{uuid.uuid4().hex[:8]}"
    presence = Presence(redis=runtime.redis, prefix=prefix, limit=10)
    await presence.admit("a", "w1.x.y")  # the worker is the part before the first "."
    await presence.admit("a", "w2.s")
    await presence.admit("b", "w2.t")
    assert await presence.workers(["a", "b", "c", "a"]) == {"a": {"w1", "w2"}, "b": {"w2"}}
    mine = [("a", "w2.s"), ("b", "w2.t")]
    assert await presence.refresh(mine) == []
    # Redis came back empty (or the lease ran out): the refresh writes it again, and says so.
    await runtime.redis.delete(presence.key("b"))
    assert await presence.refresh(mine) == [("b", "w2.t")]
    assert await presence.workers(["b"]) == {"b": {"w2"}}
    expiry = await runtime.redis.zscore(presence.key("b"), "w2.t")
    assert expiry > time.time() + LEASE_SECONDS - 5
    await presence.forget([("a", "w1.x.y")])
    assert await presence.workers(["a"]) == {"a": {"w2"}}


@pytest.mark.parametrize(("raw", "targeted"), [(None, True), ("1", True), ("on", True), ("0", False), ("off", False)])
def test_the_switch_reads_as_documented(raw, targeted):
    env = {} if raw is None else {"NOTIHUB_BUS_TARGETED": raw}
    assert Settings.from_env(env).bus_targeted is targeted


def test_a_switch_that_is_neither_on_nor_off_is_refused():
    with pytest.raises(SettingsError, match="NOTIHUB_BUS_TARGETED"):
        Settings.from_env({"NOTIHUB_BUS_TARGETED": "maybe"})
