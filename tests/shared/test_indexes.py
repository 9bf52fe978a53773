"""Every query of the inbox is served by an index: the real queries run with MongoDB's profiler
on, and none of them may be a collection scan."""
import uuid

import pytest
from bson import ObjectId

from shared.bus import EventBus
from shared.models import Draft
from shared.service import NotificationService
from shared.storage.idempotency import IdempotencyStore
from shared.storage.mongo import database
from shared.storage.notifications import NotificationStore
from shared.storage.preferences import PreferenceStore
from shared.storage.topics import TopicStore


@pytest.fixture
async def profiled(runtime, settings):
    name = f"notihub_profile_{uuid.uuid4().hex[:8]}"
    db = runtime.mongo.get_database(name, write_concern=database(runtime.mongo, settings).write_concern)
    store = NotificationStore(db=db, retention=settings.retention, max_per_user=3)
    topics = TopicStore(db=db)
    idem = IdempotencyStore(db=db, keep_hours=24)
    for indexed in (store, topics, idem):
        await indexed.ensure_indexes()
    service = NotificationService(store=store, idempotency=idem, topics=topics, preferences=PreferenceStore(db=db),
                                  bus=EventBus(redis=runtime.redis, prefix=f"profile:{name}"))
    await db.command("profile", 2)
    yield db, service
    await db.command("profile", 0)
    await runtime.mongo.drop_database(name)


async def test_no_inbox_query_scans_a_collection(profiled):
    db, service = profiled
    await service.subscribe("t", "u1")
    await service.subscribe("t", "u2")
    await service.set_disabled_types("u2", ["x.y"])
    await service.publish(Draft(type="a.b", topic="t", source="key:1", fingerprint="f"))
    for _ in range(4):
        await service.publish(Draft(type="a.b", recipients=("u1", "u3")))
    page = await service.page("u1", limit=2)
    await service.page("u1", cursor=page.next_cursor, limit=2, unread_only=True)
    ids = [n.id for n in page.notifications]
    await service.missed("u1", ObjectId("000000000000000000000000"), upto=ids[0], limit=10)
    await service.snapshot("u1", limit=20)
    await service.inboxes(["u1", "u3"])
    await service.expire()
    await service.mark_read("u1", ids[:1])
    await service.mark_all_read("u3")
    await service.delete("u1", ids[1])
    # A deleted notification of an event stays deleted when the event comes again.
    sourced = await service.publish(Draft(type="a.b", recipients=("u1",), source="event:e1"))
    await service.delete("u1", ObjectId(sourced.notifications[0][0]))
    assert (await service.publish(Draft(type="a.b", recipients=("u1",), source="event:e1"))).notifications == []
    await service.subscribers("t", cursor=None, limit=10)
    await service.disabled_types("u2")

    plans = [(doc["ns"], doc["op"], doc.get("planSummary", ""), doc.get("command", {}))
             async for doc in db["system.profile"].find({"ns": {"$regex": r"\.(notifications|notification_tombstones|notification_sources|topic_subscribers|preferences|idempotency_keys|inboxes)$"}})]
    queried = [p for p in plans if p[1] in ("query", "command", "update", "remove", "getmore") and p[2]]
    assert len(queried) >= 15, plans
    scans = [p for p in queried if "COLLSCAN" in p[2]]
    assert not scans, scans
