"""The hub's ordering rules, driven directly against the real MongoDB: the races between a
socket's sync and live delivery, made to happen deterministically."""
import uuid

from bson import ObjectId

from shared.bus import Delivered, ReadChanged
from shared.i18n import Renderer
from shared.models import Notification, utcnow
from socket_server.hub import Hub


class Recorder:
    """Stands in for Socket.IO's emit: records (event, data, sid)."""

    def __init__(self):
        self.sent = []

    async def __call__(self, event, data, sid):
        self.sent.append((event, data, sid))

    def ids(self, event="notification"):
        return [d["id"] for e, d, _ in self.sent if e == event]


def make_hub(runtime, emit):
    return Hub(service=runtime.service, renderer=Renderer(default_lang="en"), emit=emit, init_limit=20, replay_limit=500)


def note(user):
    return Notification(id=ObjectId(), type="post.liked", recipient=user, actor=None, created_at=utcnow())


async def test_a_replayed_notification_whose_live_copy_comes_later_is_sent_once(runtime):
    user = f"hub-{uuid.uuid4().hex[:8]}"
    emit = Recorder()
    hub = make_hub(runtime, emit)
    before = ObjectId()
    committed = note(user)
    # Committed but not yet announced on the bus.
    await runtime.service.store.insert([committed])
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=before)
    assert emit.ids() == [str(committed.id)]
    # Now its announcement arrives, after the sync has finished: no second copy.
    await hub.handle(Delivered([committed]))
    later = note(user)
    await runtime.service.store.insert([later])
    await hub.handle(Delivered([later]))
    assert emit.ids() == [str(committed.id), str(later.id)]


async def test_without_since_what_init_showed_is_not_sent_again(runtime):
    user = f"hub-{uuid.uuid4().hex[:8]}"
    emit = Recorder()
    hub = make_hub(runtime, emit)
    committed = note(user)
    await runtime.service.store.insert([committed])
    conn = hub.attach("sid1", user=user, lang="ko")
    await hub.sync(conn, since=None)
    [(event, init, _)] = emit.sent
    assert event == "init" and [n["id"] for n in init["notifications"]] == [str(committed.id)]
    await hub.handle(Delivered([committed]))
    assert emit.ids() == []


async def test_events_held_during_sync_follow_init_with_a_fresh_count(runtime):
    user = f"hub-{uuid.uuid4().hex[:8]}"
    emit = Recorder()
    hub = make_hub(runtime, emit)
    conn = hub.attach("sid1", user=user, lang="en")
    # Arrive while the socket is still syncing: held back.
    first, second = note(user), note(user)
    await runtime.service.store.insert([first, second])
    await hub.handle(Delivered([first, second]))
    await hub.handle(ReadChanged(user=user, ids=[str(first.id)], all=False, unread_count=99))
    assert emit.sent == []
    await hub.sync(conn, since=None)
    events = [e for e, _, _ in emit.sent]
    assert events[0] == "init"
    # Both were already in init, so only the read-state event follows, with the real count.
    assert events[1:] == ["notifications_read"]
    assert emit.sent[1][1]["unread_count"] == 2


async def test_live_counts_are_read_when_sent(runtime):
    user = f"hub-{uuid.uuid4().hex[:8]}"
    emit = Recorder()
    hub = make_hub(runtime, emit)
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=None)
    notes = [note(user) for _ in range(3)]
    await runtime.service.store.insert(notes)
    # Announced one at a time, but all three were committed first: each says 3.
    for n in notes:
        await hub.handle(Delivered([n]))
    assert [d["unread_count"] for e, d, _ in emit.sent if e == "notification"] == [3, 3, 3]
    await runtime.service.store.mark_read(user, [notes[0].id])
    await hub.handle(ReadChanged(user=user, ids=[str(notes[0].id)], all=False, unread_count=0))
    assert emit.sent[-1][1]["unread_count"] == 2
