"""Preferences live in the inbox documents, where the commit reads them; those kept by earlier
versions in a collection of their own are moved there at start-up. Real replica set."""
import datetime as dt

from shared.ids import new_id
from shared.models import Notification, utcnow
from shared.storage.notifications import NotificationStore
from shared.storage.preferences import PreferenceStore


def note(user, type_):
    now = utcnow()
    return Notification(id=new_id(now), type=type_, recipient=user, actor=None, created_at=now)


async def test_earlier_preferences_are_moved_and_the_commit_honours_them(scratch_db):
    await scratch_db["preferences"].insert_one({"_id": "old", "disabled_types": ["post.liked"]})
    preferences = PreferenceStore(db=scratch_db)
    await preferences.ensure_indexes()
    assert await preferences.get("old") == ["post.liked"]
    assert "preferences" not in await scratch_db.list_collection_names()
    store = NotificationStore(db=scratch_db, retention=dt.timedelta(days=7), max_per_user=100)
    await store.ensure_indexes()
    liked, followed = note("old", "post.liked"), note("old", "user.followed")
    stored = await store.commit([liked, followed])
    assert stored[0] is None and stored[1].notification.type == "user.followed" and stored[1].seq == 1
    # Preferences alone do not make an inbox: positions start from what is stored.
    await preferences.put("fresh", ["x.y"])
    [first] = await store.commit([note("fresh", "post.liked")])
    assert first.seq == 1 and first.unread == 1
    assert await preferences.get("fresh") == ["x.y"]
