"""Ready for a sharded cluster (shard keys in ``shared.storage.SHARD_KEYS``): every unique index
starts with its collection's shard key, and every query of the store names the key's first
field, so that a router sends it only to the shards that own it. The real operations run with
MongoDB's profiler on, and none of them may be a collection scan either. A source is stored once per recipient under concurrent repeats, and a
database of an earlier version moves its unique index of ``notifications`` to the source pairs."""
import asyncio
import datetime as dt
import uuid

import pytest
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING

from shared.bus import EventBus
from shared.ids import new_id
from shared.models import Draft, Notification, utcnow
from shared.service import NotificationService
from shared.storage import SHARD_KEYS
from shared.storage.idempotency import IdempotencyStore
from shared.storage.mongo import ensure_indexes
from shared.storage.notifications import TTL_BACKSTOP_SECONDS, NotificationStore
from shared.storage.preferences import PreferenceStore
from shared.storage.topics import TopicStore

RETENTION = dt.timedelta(days=7)


async def make_service(runtime, db, *, retention=RETENTION) -> NotificationService:
    store = NotificationStore(db=db, retention=retention, max_per_user=1000)
    topics, idem, preferences = TopicStore(db=db), IdempotencyStore(db=db, keep_hours=24), PreferenceStore(db=db)
    await ensure_indexes((store, topics, idem, preferences))
    return NotificationService(store=store, idempotency=idem, topics=topics, preferences=preferences,
                               bus=EventBus(redis=runtime.redis, prefix=f"shard:{db.name}"))


def note(user, *, source=None, created_at=None):
    created = created_at or utcnow()
    return Notification(id=new_id(created), type="post.liked", recipient=user, actor=None, created_at=created,
                        source=source)


async def pairs(db):
    """(source, recipient, id) of every source pair, and of every sourced notification."""
    kept = {(d["source"], d["recipient"], d["_id"]) async for d in db["notification_sources"].find()}
    stored = {(d["source"], d["recipient"], d["_id"])
              async for d in db["notifications"].find({"source": {"$exists": True}})}
    return kept, stored


async def test_every_unique_index_starts_with_the_shard_key(scratch_db, runtime):
    service = await make_service(runtime, scratch_db)
    await service.subscribe("t", "u1")
    await service.set_disabled_types("u2", ["x.y"])
    await service.publish(Draft(type="a.b", topic="t", source="key:1", fingerprint="f"))
    await service.delete("u1", (await service.store.page("u1", before=None, limit=1, unread_only=False))[0].id)
    names = {n for n in await scratch_db.list_collection_names() if not n.startswith("system.")}
    assert names <= set(SHARD_KEYS), names - set(SHARD_KEYS)
    assert {"notifications", "notification_sources", "notification_tombstones", "inboxes", "topic_subscribers",
            "idempotency_keys"} <= names
    for name in names:
        key = SHARD_KEYS[name]
        for index, info in (await scratch_db[name].index_information()).items():
            if index == "_id_" or not info.get("unique"):
                continue
            assert "hashed" not in key.values(), (name, index)
            assert [field for field, _ in info["key"][: len(key)]] == list(key), (name, index, key)
    # The pairs expire with their notifications, whatever the retention setting.
    for days in (7, 2):
        await NotificationStore(db=scratch_db, retention=dt.timedelta(days=days), max_per_user=10).ensure_indexes()
        for name in ("notifications", "notification_sources"):
            info = await scratch_db[name].index_information()
            assert info["retention"]["expireAfterSeconds"] == days * 86400 + TTL_BACKSTOP_SECONDS, name


def _match(pipeline):
    return pipeline[0].get("$match", {}) if pipeline else {}


def _filter(entry):
    """The filter a profiled read or write of a collection had (None for an insert)."""
    op, cmd = entry["op"], entry["command"]
    if op == "insert":
        return None  # routed by each document's own shard key
    if op == "getmore":
        cmd = entry["originatingCommand"]
    if op in ("update", "remove"):
        return cmd["q"]
    if "filter" in cmd or "find" in cmd:
        return cmd.get("filter", {})
    if "aggregate" in cmd:
        return _match(cmd["pipeline"])
    if "findAndModify" in cmd or "count" in cmd or "distinct" in cmd:
        return cmd.get("query", {})
    raise AssertionError(f"a command this test does not know: {entry}")


def _targeted(query, field):
    """Whether ``query`` names ``field`` by equality or ``$in`` (what a router targets)."""
    value = query.get(field, ...)
    if value is ...:
        return False
    return not isinstance(value, dict) or set(value) <= {"$eq", "$in"}


@pytest.fixture
async def profiled(runtime, scratch_db):
    service = await make_service(runtime, scratch_db)
    await scratch_db.command("profile", 2)
    yield scratch_db, service
    await scratch_db.command("profile", 0)


async def _every_operation(db, service) -> list[dict]:
    """Run every store and service operation with the profiler on; the profile's entries."""
    store = service.store
    await service.subscribe("t", "u1")
    await service.subscribe("t", "u2")
    await service.subscribe("t", "gone")
    await service.unsubscribe("t", "gone")
    await service.set_disabled_types("u2", ["x.y"])
    # A request under an idempotency key to a topic; its repeat announces again what it stored.
    first = await service.publish(Draft(type="a.b", topic="t", source="key:1", fingerprint="f"))
    again = await service.publish(Draft(type="a.b", topic="t", source="key:1", fingerprint="f"))
    assert len(first.notifications) == 2 and sorted(again.notifications) == sorted(first.notifications)
    # An event (a source without a claim), its redelivery, and plain requests.
    event = await service.publish(Draft(type="a.b", recipients=("u1", "u3"), source="event:e1"))
    again = await service.publish(Draft(type="a.b", recipients=("u1", "u3"), source="event:e1"))
    assert len(event.notifications) == 2 and sorted(again.notifications) == sorted(event.notifications)
    for _ in range(4):
        await service.publish(Draft(type="a.b", recipients=("u1", "u3")))
    page = await service.page("u1", limit=2)
    await service.page("u1", cursor=page.next_cursor, limit=2, unread_only=True)
    ids = [n.id for n in page.notifications]
    await service.missed("u1", ObjectId("000000000000000000000000"), upto=ids[0], limit=10)
    await service.snapshot("u1", limit=20)
    await service.inboxes(["u1", "u3"])
    await service.unread_count("u3")
    await service.mark_read("u1", ids[:1])
    await service.mark_all_read("u3")
    await service.delete("u1", ids[1])
    # A deleted notification of an event stays deleted when the event comes again.
    await service.delete("u3", ObjectId(dict((r, i) for i, r in event.notifications)["u3"]))
    again = await service.publish(Draft(type="a.b", recipients=("u3",), source="event:e1"))
    assert [r for _, r in again.notifications] == ["u1"]
    # Over the cap: the oldest go, sourced ones included (their source pairs stay).
    store.max_per_user = 3
    assert (await store.trim("u1")).count > 0
    store.max_per_user = 1000
    # The retention sweep.
    old = utcnow() - RETENTION - dt.timedelta(days=1)
    await store.commit([note("u4", source="event:old", created_at=old), note("u4", created_at=old), note("u4")])
    assert await service.expire() == 1
    await service.subscribers("t", cursor=None, limit=10)
    await service.disabled_types("u2")
    await db.command("profile", 0)
    return [doc async for doc in db["system.profile"].find({"ns": {"$ne": f"{db.name}.system.profile"}})]


async def test_no_query_scans_a_collection(profiled):
    # Every query of the inbox is served by an index.
    plans = [(doc["ns"], doc["op"], doc.get("planSummary", ""), doc.get("command", {}))
             for doc in await _every_operation(*profiled)]
    queried = [p for p in plans if p[1] in ("query", "command", "update", "remove", "getmore") and p[2]]
    assert len(queried) >= 15, plans
    scans = [p for p in queried if "COLLSCAN" in p[2]]
    assert not scans, scans


async def test_every_query_names_the_shard_key(profiled):
    db, _ = profiled
    profile = await _every_operation(*profiled)
    entries = [doc for doc in profile if doc["ns"] in {f"{db.name}.{n}" for n in SHARD_KEYS}]
    seen, untargeted, scatter = set(), [], []
    for entry in entries:
        name = entry["ns"].split(".", 1)[1]
        seen.add((name, entry["op"]))
        query = _filter(entry)
        if query is None or _targeted(query, next(iter(SHARD_KEYS[name]))):
            continue
        if name == "notifications" and set(query) == {"created_at"}:
            scatter.append(entry)  # the retention sweep's expired_recipients, on purpose
            continue
        untargeted.append((name, entry["op"], entry["command"]))
    assert not untargeted, untargeted
    assert scatter and all(entry["command"]["pipeline"][1] == {"$group": {"_id": "$recipient"}} for entry in scatter)
    for name, ops in {"notifications": {"query", "update", "remove", "insert", "command"},
                      "inboxes": {"query", "update"},
                      "notification_sources": {"query", "remove", "insert"},
                      "notification_tombstones": {"query", "update"},
                      "topic_subscribers": {"query", "update", "remove"},
                      "idempotency_keys": {"insert", "query", "update"}}.items():
        assert ops <= {op for n, op in seen if n == name}, (name, seen)
    # The pairs are the sourced notifications still stored, and those trimmed from u1's inbox (a
    # redelivery does not bring them back); one deleted or expired leaves none.
    kept, stored = await pairs(db)
    oldest = await db["notifications"].find_one({"recipient": "u1"}, sort=[("_id", 1)])
    trimmed = kept - stored
    assert stored <= kept and {("key:1", "u1"), ("event:e1", "u1")} == {(s, r) for s, r, _ in trimmed}
    assert all(id_ < oldest["_id"] for _, _, id_ in trimmed)
    assert ("event:e1", "u3") not in {(s, r) for s, r, _ in kept}
    assert not any(s == "event:old" for s, _, _ in kept)


async def test_concurrent_repeats_store_each_notification_once(scratch_db, runtime):
    # Two processes' stores, committing the same sources in parallel transactions.
    stores = [NotificationStore(db=scratch_db, retention=RETENTION, max_per_user=1000) for _ in range(2)]
    await stores[0].ensure_indexes()
    users = [f"r{i}" for i in range(6)]
    for round_ in range(15):
        source = f"event:{uuid.uuid4().hex}"
        # Overlapping audiences, one of them with a notification of no source.
        batches = [[note(u, source=source) for u in users[i : i + 4]] + [note(users[0])] for i in range(3)]
        answers = await asyncio.gather(*(stores[i % 2].commit(batch) for i, batch in enumerate(batches)))
        stored = [s for answer in answers for s in answer if s is not None and s.notification.source == source]
        assert sorted(s.notification.recipient for s in stored) == users, round_
        assert all(answer[-1] is not None for answer in answers)  # no source: always stored
    kept, notes = await pairs(scratch_db)
    assert kept == notes and len(kept) == 15 * len(users)
    inboxes = await stores[0].inboxes(users)
    assert inboxes[users[0]].total == 15 * 4 and all(inboxes[u].total == 15 for u in users[1:])


async def test_a_pair_twice_in_one_batch_is_stored_once(scratch_db):
    store = NotificationStore(db=scratch_db, retention=RETENTION, max_per_user=1000)
    await store.ensure_indexes()
    answer = await store.commit([note("a", source="event:x"), note("b", source="event:x"),
                                 note("a", source="event:x")])
    assert [s is not None for s in answer] == [True, True, False]
    assert (await store.inbox("a")).total == 1


async def test_a_database_of_an_earlier_version_moves_its_unique_index(scratch_db, runtime):
    coll = scratch_db["notifications"]
    # As earlier versions had it: the source pairs as a partial unique index of notifications.
    await coll.create_index([("recipient", ASCENDING), ("_id", DESCENDING)], name="recipient_id")
    await coll.create_index([("source", ASCENDING), ("recipient", ASCENDING)], name="source_recipient", unique=True,
                            partialFilterExpression={"source": {"$exists": True}})
    earlier = [note(u, source=f"event:{i}") for i in range(3) for u in ("a", "b")] + [note("a")]
    await coll.insert_many([n.to_document() for n in earlier])
    # A first run stopped between the copy and the drop had copied one pair already.
    await scratch_db["notification_sources"].insert_one(
        {"_id": earlier[0].id, "source": "event:0", "recipient": "a", "created_at": earlier[0].created_at})

    # Every process runs it as it starts, several at once.
    await asyncio.gather(*(NotificationStore(db=scratch_db, retention=RETENTION, max_per_user=10).ensure_indexes()
                           for _ in range(3)))
    service = await make_service(runtime, scratch_db)
    assert "source_recipient" not in await coll.index_information()
    kept, stored = await pairs(scratch_db)
    assert kept == stored and len(kept) == 6
    assert {d["created_at"] async for d in scratch_db["notification_sources"].find()} \
        == {n.created_at for n in earlier if n.source}
    # Their sources still store nothing twice, and what they stored is found by source.
    again = await service.store.commit([note("a", source="event:1"), note("b", source="event:2"),
                                        note("c", source="event:2")])
    assert again[:2] == [None, None] and again[2] is not None
    assert [n.recipient for n in await service.store.by_source("event:2")] == ["a", "b", "c"]
    assert await coll.count_documents({"source": "event:1"}) == 2
    # Running it again changes nothing.
    before = await pairs(scratch_db)
    await service.store.ensure_indexes()
    assert await pairs(scratch_db) == before and len(before[0]) == 7
