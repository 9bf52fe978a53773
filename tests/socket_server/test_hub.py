"""The hub's ordering rules, driven directly against the real MongoDB: the races between a
socket's sync and live delivery, made to happen deterministically."""
import uuid

from shared.bus import Delivered, Gap, ReadChanged
from shared.i18n import Renderer
from shared.ids import first_id_at, new_id
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


class Dropped(list):
    """Stands in for disconnecting a socket: records the sids."""

    async def __call__(self, sid):
        self.append(sid)


def make_hub(runtime, emit, drop=None, service=None):
    return Hub(service=service or runtime.service, renderer=Renderer(default_lang="en"), emit=emit,
               drop=Dropped() if drop is None else drop, init_limit=20, replay_limit=500)


def note(user):
    now = utcnow()
    return Notification(id=new_id(now), type="post.liked", recipient=user, actor=None, created_at=now)


async def test_a_replayed_notification_whose_live_copy_comes_later_is_sent_once(runtime):
    user = f"hub-{uuid.uuid4().hex[:8]}"
    emit = Recorder()
    hub = make_hub(runtime, emit)
    before = first_id_at(utcnow())
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


async def test_after_a_bus_gap_live_sockets_get_what_the_gap_swallowed(runtime):
    users = [f"hub-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    emit = Recorder()
    hub = make_hub(runtime, emit)
    for i, user in enumerate(users):
        await hub.sync(hub.attach(f"sid{i}", user=user, lang="en"), since=None)
    swallowed = [note(user) for user in users]
    await runtime.service.store.insert(swallowed)  # stored, but its announcement was lost
    await hub.handle(Gap())
    assert sorted(emit.ids()) == sorted(str(n.id) for n in swallowed)
    assert {sid for e, _, sid in emit.sent if e == "notification"} == {"sid0", "sid1", "sid2"}
    await hub.handle(Gap())  # nothing new: nothing sent twice
    assert len(emit.ids()) == 3


async def test_a_gap_during_a_sync_is_caught_up_before_going_live(runtime):
    user = f"hub-{uuid.uuid4().hex[:8]}"
    hub = None
    swallowed = note(user)

    class GapDuringInit(Recorder):
        async def __call__(self, event, data, sid):
            await super().__call__(event, data, sid)
            if event == "init":
                # After the sync read MongoDB: a notification is stored and its announcement lost.
                await runtime.service.store.insert([swallowed])
                await hub.handle(Gap())

    emit = GapDuringInit()
    hub = make_hub(runtime, emit)
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=None)
    assert emit.ids() == [str(swallowed.id)] and not conn.syncing


async def test_a_socket_whose_catch_up_fails_is_disconnected(runtime):
    user = f"hub-{uuid.uuid4().hex[:8]}"

    class FailingReads:
        """A fake service, named as such: MongoDB failing for one read on cue."""

        def __init__(self, real):
            self.real, self.fail = real, False

        def __getattr__(self, name):
            return getattr(self.real, name)

        async def missed(self, *args, **kwargs):
            if self.fail:
                raise OSError("MongoDB went away")
            return await self.real.missed(*args, **kwargs)

    service, emit, dropped = FailingReads(runtime.service), Recorder(), Dropped()
    hub = make_hub(runtime, emit, drop=dropped, service=service)
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=None)
    service.fail = True
    await hub.handle(Gap())
    assert dropped == ["sid1"] and not conn.syncing
