"""One user's commit moves the inbox's counters in the round trip that reads them (``_claim``);
whenever the batch turns out otherwise, the exact positions are written over them. Each case
against the real replica set, checked against what the notifications stored say."""
import datetime as dt
import uuid

from bson import ObjectId

from shared.ids import new_id
from shared.models import Notification, utcnow
from shared.storage.notifications import NotificationStore
from shared.storage.preferences import PreferenceStore


def user():
    return f"commit-{uuid.uuid4().hex[:8]}"


def note(recipient, type_="post.liked", id_=None):
    now = utcnow()
    return Notification(id=id_ or new_id(now), type=type_, recipient=recipient, actor=None, created_at=now)


async def stores(scratch_db):
    store = NotificationStore(db=scratch_db, retention=dt.timedelta(days=7), max_per_user=1000)
    preferences = PreferenceStore(db=scratch_db)
    for indexed in (store, preferences):
        await indexed.ensure_indexes()
    return store, preferences


async def assert_exact(store, scratch_db, u, *, ver):
    """The inbox says what the stored notifications say (invariants 1-4 of the store)."""
    inbox = await store.inbox(u)
    docs = [d async for d in scratch_db["notifications"].find({"recipient": u}).sort("_id", 1)]
    assert (inbox.total, inbox.unread, inbox.seq) == (len(docs), sum(not d["read"] for d in docs), len(docs))
    assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1))
    assert inbox.last == (docs[-1]["_id"] if docs else None)
    assert inbox.ver == ver
    return docs


async def test_a_users_first_and_next_commits_keep_the_inbox_exact(scratch_db):
    store, _ = await stores(scratch_db)
    u = user()
    await store.commit([note(u)])  # no inbox yet: the general path creates it
    await assert_exact(store, scratch_db, u, ver=1)
    await store.commit([note(u), note(u), note(u)])  # claimed in one round trip
    await assert_exact(store, scratch_db, u, ver=4)


async def test_a_disabled_type_in_a_claimed_batch_is_left_out_and_counted_out(scratch_db):
    store, preferences = await stores(scratch_db)
    u = user()
    await store.commit([note(u)])
    await preferences.put(u, ["post.liked"])
    stored = await store.commit([note(u, "comment.created"), note(u, "post.liked"), note(u, "comment.created")])
    assert [s is not None for s in stored] == [True, False, True]
    docs = await assert_exact(store, scratch_db, u, ver=3)
    assert [d["type"] for d in docs] == ["post.liked", "comment.created", "comment.created"]
    # A batch of nothing but disabled types changes nothing at all.
    assert await store.commit([note(u, "post.liked")]) == [None]
    await assert_exact(store, scratch_db, u, ver=3)


async def test_an_id_below_the_inbox_last_moves_past_it_in_a_claimed_batch(scratch_db):
    store, _ = await stores(scratch_db)
    u = user()
    await store.commit([note(u)])
    # A notification made on a host whose clock is behind: its id is older than the inbox's last.
    behind = note(u, id_=ObjectId.from_datetime(utcnow() - dt.timedelta(minutes=5)))
    [stored] = await store.commit([behind])
    docs = await assert_exact(store, scratch_db, u, ver=2)
    assert stored.notification.id == docs[-1]["_id"] > docs[0]["_id"]


async def test_a_user_with_preferences_but_no_positions_gets_them_from_the_general_path(scratch_db):
    store, preferences = await stores(scratch_db)
    u = user()
    await preferences.put(u, ["user.followed"])  # an inbox document without positions
    await store.commit([note(u), note(u)])
    await assert_exact(store, scratch_db, u, ver=2)
