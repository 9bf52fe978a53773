"""The event bus: message size, content sent once, and a deaf subscription noticed within its
deadline, against the session's real Redis."""
import asyncio
import uuid

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bus import MAX_MESSAGE_BYTES, Delivered, EventBus, Gap, decode, delivered_messages
from shared.ids import new_id
from shared.models import Actor, Notification, Stored, utcnow


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
    bus = EventBus(redis=runtime.redis, channel=f"bus-test:{uuid.uuid4().hex[:8]}", heartbeat=0.2,
                   deaf_after=1.0, timeout=2.0)
    ready = asyncio.Event()
    seen = []

    async def listen():
        async for event in bus.listen(ready=ready, max_backoff=0.2):
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
