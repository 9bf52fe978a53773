"""Group commit against the real replica set: concurrent requests share transactions, each gets
its own notifications back, and one request MongoDB refuses fails alone."""
import asyncio
import uuid

from bson.errors import InvalidDocument

from shared.models import Draft


def user():
    return f"gc-{uuid.uuid4().hex[:8]}"


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
