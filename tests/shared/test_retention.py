"""Retention: a TTL index expires old notifications, and each user keeps at most a bounded number.
Runs against the session's real replica set, in databases of its own."""
import datetime as dt
import uuid

import pytest
from bson import ObjectId

from shared.models import Notification, utcnow
from shared.storage.mongo import database
from shared.storage.notifications import NotificationStore


@pytest.fixture
async def scratch_db(runtime, settings):
    name = f"notihub_scratch_{uuid.uuid4().hex[:8]}"
    db = runtime.mongo.get_database(name, write_concern=database(runtime.mongo, settings).write_concern)
    yield db
    await runtime.mongo.drop_database(name)


def note(user, created_at=None):
    created = created_at or utcnow()
    return Notification(id=ObjectId.from_datetime(created) if created_at else ObjectId(), type="post.liked",
                        recipient=user, actor=None, created_at=created)


async def test_the_retention_index_follows_the_setting(scratch_db):
    store = NotificationStore(db=scratch_db, retention=dt.timedelta(days=7), max_per_user=1000)
    await store.ensure_indexes()
    assert await store.retention_seconds() == 7 * 86400
    # Changing the setting updates the existing index in place.
    changed = NotificationStore(db=scratch_db, retention=dt.timedelta(days=2), max_per_user=1000)
    await changed.ensure_indexes()
    assert await changed.retention_seconds() == 2 * 86400


async def test_the_ttl_monitor_removes_expired_notifications(scratch_db, runtime):
    store = NotificationStore(db=scratch_db, retention=dt.timedelta(days=7), max_per_user=1000)
    await store.ensure_indexes()
    old = note("u", utcnow() - dt.timedelta(days=8))
    fresh = note("u")
    # The session's mongod wakes its TTL monitor every second; watch for the monitor's delete.
    params = await runtime.mongo.admin.command("getParameter", 1, ttlMonitorSleepSecs=1)
    assert params["ttlMonitorSleepSecs"] == 1
    async with await scratch_db["notifications"].watch([{"$match": {"operationType": "delete"}}],
                                                        max_await_time_ms=1000) as stream:
        await store.insert([old, fresh])
        deadline = dt.datetime.now() + dt.timedelta(seconds=30)
        deleted = None
        while deleted is None and dt.datetime.now() < deadline:
            change = await stream.try_next()
            if change is not None:
                deleted = change["documentKey"]["_id"]
    assert deleted == old.id
    assert await scratch_db["notifications"].count_documents({}) == 1


async def test_each_user_keeps_only_the_newest(scratch_db):
    store = NotificationStore(db=scratch_db, retention=dt.timedelta(days=7), max_per_user=5)
    await store.ensure_indexes()
    mine = [note("heavy") for _ in range(8)]
    theirs = [note("light") for _ in range(3)]
    await store.insert(mine + theirs)
    assert await store.trim(["heavy", "light"]) == 3
    kept = await store.page("heavy", before=None, limit=100, unread_only=False)
    assert [n.id for n in kept] == [n.id for n in mine[::-1][:5]]
    assert len(await store.page("light", before=None, limit=100, unread_only=False)) == 3
