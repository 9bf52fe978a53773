"""Retention: the sweep deletes expired notifications and each user keeps at most a bounded
number, keeping the inbox counts exact and telling open sockets. Runs against the session's
real replica set and Redis, in databases and channels of its own."""
import asyncio
import datetime as dt
import uuid

import orjson

from shared.bus import EventBus
from shared.ids import new_id
from shared.models import Draft, Notification, utcnow
from shared.service import NotificationService
from shared.storage.idempotency import IdempotencyStore
from shared.storage.notifications import TTL_BACKSTOP_SECONDS, NotificationStore
from shared.storage.preferences import PreferenceStore
from shared.storage.topics import TopicStore


def note(user, created_at=None):
    created = created_at or utcnow()
    return Notification(id=new_id(created), type="post.liked", recipient=user, actor=None, created_at=created)


async def make_service(runtime, db, *, max_per_user=1000):
    store = NotificationStore(db=db, retention=dt.timedelta(days=7), max_per_user=max_per_user)
    await store.ensure_indexes()
    # Every event on the shared channel of a prefix of its own (NOTIHUB_BUS_TARGETED=0).
    prefix = f"scratch:{uuid.uuid4().hex[:8]}"
    return NotificationService(store=store, idempotency=IdempotencyStore(db=db, keep_hours=24),
                               topics=TopicStore(db=db), preferences=PreferenceStore(db=db),
                               bus=EventBus(redis=runtime.redis, prefix=prefix))


async def listen(runtime, channel):
    pubsub = runtime.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    return pubsub


async def next_message(pubsub, kind, timeout=10):
    async with asyncio.timeout(timeout):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                body = orjson.loads(message["data"])
                if body["kind"] == kind:
                    return body


async def test_the_ttl_backstop_follows_the_setting(scratch_db):
    store = NotificationStore(db=scratch_db, retention=dt.timedelta(days=7), max_per_user=1000)
    await store.ensure_indexes()
    assert await store.retention_seconds() == 7 * 86400 + TTL_BACKSTOP_SECONDS
    # Changing the setting updates the existing index in place.
    changed = NotificationStore(db=scratch_db, retention=dt.timedelta(days=2), max_per_user=1000)
    await changed.ensure_indexes()
    assert await changed.retention_seconds() == 2 * 86400 + TTL_BACKSTOP_SECONDS


async def test_the_sweep_removes_expired_notifications_and_tells_sockets(scratch_db, runtime):
    service = await make_service(runtime, scratch_db)
    # Past the 7-day retention, not yet at the TTL backstop a day later (MongoDB's TTL monitor
    # runs every second in the test stack and would otherwise race the sweep).
    old = note("u", utcnow() - dt.timedelta(days=7, hours=12))
    await service.store.commit([old, note("u"), note("v")])
    pubsub = await listen(runtime, service.bus.channel)
    try:
        assert await service.expire() == 1
        deleted = await next_message(pubsub, "deleted")
    finally:
        await pubsub.aclose()
    assert deleted["user"] == "u" and deleted["ids"] == [str(old.id)] and deleted["unread_count"] == 1
    inbox = await service.inbox("u")
    assert (inbox.unread, inbox.total) == (1, 1)
    assert await scratch_db["notifications"].count_documents({}) == 2
    assert await service.expire() == 0


async def test_each_user_keeps_only_the_newest(scratch_db, runtime):
    service = await make_service(runtime, scratch_db, max_per_user=5)
    store = service.store
    mine = [note("heavy") for _ in range(8)]
    theirs = [note("light") for _ in range(3)]
    await store.commit(mine + theirs)
    await store.mark_read("heavy", [mine[0].id])
    changed = await store.trim("heavy")
    assert changed.count == 3 and changed.inbox.total == 5 and changed.inbox.unread == 5
    assert await store.trim("light") is None
    kept = await store.page("heavy", before=None, limit=100, unread_only=False)
    assert [n.id for n in kept] == [n.id for n in mine[::-1][:5]]
    assert len(await store.page("light", before=None, limit=100, unread_only=False)) == 3


async def test_publishing_over_the_cap_trims_after_the_commit_and_tells_sockets(scratch_db, runtime):
    service = await make_service(runtime, scratch_db, max_per_user=3)
    first = await service.publish(Draft(type="post.liked", recipients=("cap",)))
    for _ in range(2):
        await service.publish(Draft(type="post.liked", recipients=("cap",)))
    pubsub = await listen(runtime, service.bus.channel)
    try:
        await service.publish(Draft(type="post.liked", recipients=("cap",)))
        deleted = await next_message(pubsub, "deleted")
    finally:
        await pubsub.aclose()
    assert deleted["ids"] == [first.notifications[0][0]] and deleted["unread_count"] == 3
    inbox = await service.inbox("cap")
    assert (inbox.total, inbox.unread, inbox.seq) == (3, 3, 4)


async def test_a_redelivered_event_whose_notification_was_trimmed_is_not_stored_again(scratch_db, runtime):
    service = await make_service(runtime, scratch_db, max_per_user=2)
    events = [Draft(type="post.liked", recipients=("cap",), source=f"event:{i}") for i in range(3)]
    for event in events[:2]:
        assert await service.publish_many([event]) == 1
    pubsub = await listen(runtime, service.bus.channel)
    try:
        assert await service.publish_many([events[2]]) == 1
        deleted = await next_message(pubsub, "deleted")  # the trim after that commit
    finally:
        await pubsub.aclose()
    assert len(deleted["ids"]) == 1
    # The first event comes again (a redelivery after a crash): its notification was trimmed,
    # and stays so.
    assert await service.publish_many([events[0]]) == 0
    published = await service.publish(events[0], report=True)
    assert (published.count, published.notifications) == (0, [])
    inbox = await service.inbox("cap")
    assert (inbox.total, inbox.unread, inbox.seq) == (2, 2, 3)
    assert await scratch_db["notifications"].count_documents({"recipient": "cap"}) == 2


async def test_a_trim_after_many_trims_deletes_only_what_is_past_the_cap(scratch_db, runtime):
    service = await make_service(runtime, scratch_db, max_per_user=4)
    store = service.store
    for _ in range(5):
        batch = [note("heavy") for _ in range(6)]
        await store.commit(batch)
        await store.mark_read("heavy", [batch[-1].id])
        changed = await store.trim("heavy")
        # The newest of each batch is read and kept; the read one of the batch before goes.
        assert changed.inbox.total == 4 and changed.ids == sorted(changed.ids, reverse=True)
    kept = await store.page("heavy", before=None, limit=100, unread_only=False)
    assert [n.id for n in kept] == [n.id for n in batch[::-1][:4]]
    inbox = await store.inbox("heavy")
    assert (inbox.total, inbox.unread, inbox.seq) == (4, 3, 30)
    assert await scratch_db["notifications"].count_documents({"recipient": "heavy"}) == 4
