"""Group commit against the real replica set: concurrent requests share transactions, each gets
its own notifications back, and one request MongoDB refuses fails alone."""
import asyncio
import uuid

import orjson
import pytest
from bson.errors import InvalidDocument
from pymongo.errors import OperationFailure

from shared.ids import new_id
from shared.models import Draft, Notification, utcnow
from shared.presence import Presence
from shared.writer import ANNOUNCE_BACKLOG, GroupWriter

from ..conftest import fail_point


def user():
    return f"gc-{uuid.uuid4().hex[:8]}"


def note(recipient):
    now = utcnow()
    return Notification(id=new_id(now), type="post.liked", recipient=recipient, actor=None, created_at=now)


async def committed_transactions(runtime):
    status = await runtime.mongo.admin.command("serverStatus")
    return status["transactions"]["totalCommitted"]


async def test_concurrent_requests_share_transactions_and_get_their_own_answers(runtime):
    users = [user() for _ in range(40)]
    before = await committed_transactions(runtime)
    results = await asyncio.gather(*(runtime.service.publish(Draft(type="post.liked", recipients=(u,)))
                                     for u in users))
    used = await committed_transactions(runtime) - before
    assert [r.notifications[0][1] for r in results] == users
    # The first request commits alone; the 39 queued meanwhile share what follows.
    assert used < 10, used
    inboxes = await runtime.service.inboxes(users)
    assert all(i.seq == 1 and i.unread == 1 for i in inboxes.values())


async def test_a_request_mongodb_refuses_fails_alone(runtime):
    good = [user() for _ in range(5)]
    poisoned = Draft(type="post.liked", recipients=(user(),), data={"a\x00b": 1})
    results = await asyncio.gather(
        *(runtime.service.publish(Draft(type="post.liked", recipients=(u,))) for u in good[:3]),
        runtime.service.publish(poisoned),
        *(runtime.service.publish(Draft(type="post.liked", recipients=(u,))) for u in good[3:]),
        return_exceptions=True)
    assert isinstance(results[3], InvalidDocument), results[3]
    assert [r.notifications[0][1] for r in results[:3] + results[4:]] == good
    assert (await runtime.service.inbox(poisoned.recipients[0])).seq == 0


async def test_a_repeat_announces_again_what_an_earlier_attempt_stored(runtime):
    """A first attempt stored, then its answer or its announcement was lost: the producer's
    retry under the same key must announce it again, with the recipient's current badge."""
    recipient = user()
    # The recipient has a socket on a worker of its own: the bus announces to that worker only.
    worker = f"wt{uuid.uuid4().hex[:8]}"
    presence = Presence(redis=runtime.redis, prefix=runtime.settings.channel_prefix, limit=5)
    await presence.admit(recipient, f"{worker}.s1")
    draft = Draft(type="post.liked", recipients=(recipient,), source=f"key:{uuid.uuid4().hex}", fingerprint="f")
    first = await runtime.service.publish(draft)
    pubsub = runtime.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(runtime.service.bus.channel_of(worker))
    try:
        again = await runtime.service.publish(draft)
        async with asyncio.timeout(10):
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None and orjson.loads(message["data"])["kind"] == "delivered":
                    body = orjson.loads(message["data"])
                    if body["items"][0][1] == recipient:
                        break
    finally:
        await pubsub.aclose()
    assert again.created is False and again.notifications == first.notifications
    [[_, rcpt, id_, seq, unread, _]] = body["items"]
    # Position 0: workers send it only to a socket that lacks it (found by a replay).
    assert (rcpt, id_, seq, unread) == (recipient, first.notifications[0][0], 0, 1)


async def test_a_fan_out_whose_batch_fails_midway_fails_and_its_retry_stores_each_once(runtime):
    """Batches of one request wait at the writer together (service.PIPELINE): when MongoDB
    refuses one, the request fails, what committed stays, and the producer's retry under the
    same key stores the rest, each recipient once."""
    users = [user() for _ in range(3500)]  # four batches
    draft = Draft(type="post.liked", recipients=tuple(users), source=f"key:{uuid.uuid4().hex}", fingerprint="f")
    # The real server takes the idempotency claim and the first batch (its source pairs and its
    # notifications: three inserts), then refuses every insert of this test's client.
    async with fail_point(runtime, ["insert"], {"skip": 3}, errorCode=2):
        with pytest.raises(OperationFailure):
            await runtime.service.publish(draft, report=False)
    assert await runtime.db["notification_sources"].count_documents({"source": draft.source}) == 1000
    again = await runtime.service.publish(draft, report=False)
    assert again.count == len(users)
    stored = runtime.db["notification_sources"].find({"source": draft.source}, {"recipient": 1})
    recipients = [doc["recipient"] async for doc in stored]
    assert sorted(recipients) == sorted(users)


async def test_a_paused_redis_holds_back_commits_past_the_backlog_not_the_answers(runtime):
    writer = GroupWriter(store=runtime.service.store, bus=runtime.service.bus)
    users = [user() for _ in range(ANNOUNCE_BACKLOG + 3)]
    await runtime.redis.execute_command("CLIENT", "PAUSE", 4000, "WRITE")  # lifted by itself after 4 s
    try:
        # The first announcement waits for Redis, ANNOUNCE_BACKLOG more wait behind it (and their
        # requests have their answers), and the request of the commit after those is answered
        # before its writer waits for room: a slow Redis holds commits back, not answers.
        for u in users[:-1]:
            assert len(await asyncio.wait_for(writer.write([note(u)]), 3)) == 1
        assert writer._announcements.full()
        held = asyncio.create_task(writer.write([note(users[-1])]))
    finally:
        await runtime.redis.execute_command("CLIENT", "UNPAUSE")
    # Once Redis is back, the commit that waited is made and every announcement goes out.
    assert len(await asyncio.wait_for(held, 10)) == 1
    await writer.close()
    assert writer._announcements.empty()
    assert all(i.seq == 1 for i in (await runtime.service.inboxes(users)).values())
