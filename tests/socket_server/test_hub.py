"""The hub's invariants (see socket_server/hub.py), driven directly against the real MongoDB:
the races between commits, a socket's sync and live delivery, made to happen deterministically."""
import asyncio
import datetime as dt
import uuid

import pytest

from shared.bus import Delivered, Gap, ReadChanged, decode, delivered_messages
from shared.i18n import Renderer
from shared.ids import new_id
from shared.models import Notification, utcnow
from socket_server.hub import Hub


class Recorder:
    """Stands in for Socket.IO's emit: records (event, data, sid)."""

    def __init__(self):
        self.sent = []

    async def __call__(self, event, data, sid):
        self.sent.append((event, data, sid))

    def ids(self, event="notification", sid=None):
        return [d["id"] for e, d, s in self.sent if e == event and (sid is None or s == sid)]

    def counts(self):
        return [d["unread_count"] for e, d, _ in self.sent if "unread_count" in d]


class Dropped(list):
    """Stands in for closing a socket's transport: records the sids."""

    async def __call__(self, sid):
        self.append(sid)


class Queues:
    """Stands in for the sockets' packet queues: what was emitted to a socket and its client has
    not read yet (a real queue cannot be read from in the middle of one bus message either)."""

    def __init__(self, emit):
        self.emit, self.read = emit, {}

    def _sent(self, sid):
        return sum(1 for _, _, s in self.emit.sent if s == sid)

    def __call__(self, sid):
        return self._sent(sid) - self.read.get(sid, 0)

    def drain(self, sid):
        self.read[sid] = self._sent(sid)

    def drain_all(self):
        for _, _, sid in self.emit.sent:
            self.drain(sid)


class Reads:
    """A fake service, named as such: counts MongoDB reads, and fails them on cue (a failure
    a real replica set cannot be made to show at one exact read)."""

    def __init__(self, real):
        self.real, self.fail, self.calls = real, False, 0

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def read(*args, **kwargs):
            self.calls += 1
            if self.fail:
                raise OSError("MongoDB went away")
            return await attr(*args, **kwargs)

        return read


def make_hub(runtime, emit, drop=None, service=None):
    return Hub(service=service or runtime.service, renderer=Renderer(default_lang="en"), emit=emit,
               drop=Dropped() if drop is None else drop, init_limit=20, replay_limit=500, jitter=0)


def note(user, at=None):
    now = at or utcnow()
    return Notification(id=new_id(now), type="post.liked", recipient=user, actor=None, created_at=now)


def new_user():
    return f"hub-{uuid.uuid4().hex[:8]}"


async def commit(runtime, *notes):
    """Commit as the API does, without announcing; the bus messages that would announce it."""
    stored = [s for s in await runtime.service.store.commit(list(notes)) if s is not None]
    return stored, [decode(m) for m in delivered_messages(stored)]


async def announce(hub, messages):
    for message in messages:
        await hub.handle(message)


async def test_commit_assigns_positions_and_ids_in_commit_order(runtime):
    user = new_user()
    # Created first, committed last: an election held this write back.
    late = note(user, utcnow() - dt.timedelta(seconds=5))
    early_stored, _ = await commit(runtime, note(user), note(user))
    [late_stored], _ = await commit(runtime, late)
    assert [s.seq for s in early_stored] == [1, 2] and late_stored.seq == 3
    # Its id was taken anew inside the commit: it sorts after everything committed before it.
    assert late_stored.notification.id > early_stored[-1].notification.id > early_stored[0].notification.id
    inbox = await runtime.service.inbox(user)
    assert (inbox.seq, inbox.unread, inbox.total, inbox.last) == (3, 3, 3, late_stored.notification.id)


async def test_a_write_held_back_during_a_reconnect_is_replayed_not_skipped(runtime):
    """The out-of-order commit: a later write commits and is delivered, the client reconnects
    with `since` = that one, then the earlier write commits: the replay must find it."""
    user = new_user()
    emit = Recorder()
    hub = make_hub(runtime, emit)
    await hub.sync(hub.attach("sid1", user=user, lang="en"), since=None)
    held_back = note(user)  # its id is taken now ...
    later = note(user)
    _, messages = await commit(runtime, later)  # ... but this one commits first
    await announce(hub, messages)
    since = emit.ids()[-1]
    assert since == str(later.id)
    hub.detach("sid1")  # the client goes away
    [stored], messages = await commit(runtime, held_back)
    await announce(hub, messages)  # nobody to send it to on this worker
    conn = hub.attach("sid2", user=user, lang="en")
    from bson import ObjectId
    await hub.sync(conn, since=ObjectId(since))
    assert emit.ids(sid="sid2") == [str(stored.notification.id)]


async def test_a_replayed_notification_whose_live_copy_comes_later_is_sent_once(runtime):
    user = new_user()
    emit = Recorder()
    hub = make_hub(runtime, emit)
    before, _ = await commit(runtime, note(user))
    # Committed but not yet announced on the bus.
    [committed], messages = await commit(runtime, note(user))
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=before[0].notification.id)
    assert emit.ids() == [str(committed.notification.id)]
    # Now its announcement arrives, after the sync has finished: no second copy.
    await announce(hub, messages)
    [later], messages = await commit(runtime, note(user))
    await announce(hub, messages)
    assert emit.ids() == [str(committed.notification.id), str(later.notification.id)]


async def test_without_since_what_init_showed_is_not_sent_again(runtime):
    user = new_user()
    emit = Recorder()
    hub = make_hub(runtime, emit)
    [committed], messages = await commit(runtime, note(user))
    conn = hub.attach("sid1", user=user, lang="ko")
    await hub.sync(conn, since=None)
    [(event, init, _)] = emit.sent
    assert event == "init" and [n["id"] for n in init["notifications"]] == [str(committed.notification.id)]
    await announce(hub, messages)
    assert emit.ids() == []


async def test_events_held_during_sync_follow_init_with_the_newest_count(runtime):
    user = new_user()
    emit = Recorder()
    hub = make_hub(runtime, emit)
    conn = hub.attach("sid1", user=user, lang="en")
    # Arrive while the socket is still syncing: held back.
    stored, messages = await commit(runtime, note(user), note(user))
    await announce(hub, messages)
    changed = await runtime.service.store.mark_read(user, [stored[0].notification.id])
    await hub.handle(ReadChanged(user=user, ids=[str(stored[0].notification.id)], all=False,
                                 unread_count=changed.inbox.unread, ver=changed.inbox.ver))
    assert emit.sent == []
    await hub.sync(conn, since=None)
    events = [e for e, _, _ in emit.sent]
    assert events[0] == "init" and emit.sent[0][1]["unread_count"] == 1
    # Both were already in init, so only the read-state event follows, with the real count.
    assert events[1:] == ["notifications_read"]
    assert emit.sent[1][1]["unread_count"] == 1


async def test_live_delivery_reads_nothing_from_mongodb_and_counts_follow_versions(runtime):
    user = new_user()
    emit = Recorder()
    reads = Reads(runtime.service)
    hub = make_hub(runtime, emit, service=reads)
    await hub.sync(hub.attach("sid1", user=user, lang="en"), since=None)
    stored, messages = await commit(runtime, note(user), note(user), note(user))
    calls, reads.fail = reads.calls, True
    await announce(hub, messages)
    # Each says the count after its own commit, carried by the message.
    assert [d["unread_count"] for e, d, _ in emit.sent if e == "notification"] == [1, 2, 3]
    changed = await runtime.service.store.mark_read(user, [stored[0].notification.id])
    read_event = ReadChanged(user=user, ids=[str(stored[0].notification.id)], all=False,
                             unread_count=changed.inbox.unread, ver=changed.inbox.ver)
    await hub.handle(read_event)
    assert emit.sent[-1][1]["unread_count"] == 2
    # An older count arriving late never overwrites a newer one.
    [fourth], messages = await commit(runtime, note(user))
    stale = ReadChanged(user=user, ids=[], all=False, unread_count=99, ver=1)
    await announce(hub, messages)
    await hub.handle(stale)
    assert emit.counts()[-2:] == [3, 3]
    assert reads.calls == calls


async def test_a_lost_announcement_is_found_at_the_next_one(runtime):
    user = new_user()
    emit = Recorder()
    hub = make_hub(runtime, emit)
    await hub.sync(hub.attach("sid1", user=user, lang="en"), since=None)
    [lost], _ = await commit(runtime, note(user))  # announced to nobody
    [next_], messages = await commit(runtime, note(user))
    await announce(hub, messages)
    for _ in range(100):  # the catch-up runs in the background
        if len(emit.ids()) == 2:
            break
        await asyncio.sleep(0.02)
    assert emit.ids() == [str(lost.notification.id), str(next_.notification.id)]


async def test_a_repeated_announcement_sends_nothing_twice(runtime):
    user = new_user()
    emit = Recorder()
    hub = make_hub(runtime, emit)
    await hub.sync(hub.attach("sid1", user=user, lang="en"), since=None)
    _, messages = await commit(runtime, note(user), note(user))
    await announce(hub, messages)
    await announce(hub, messages)
    assert len(emit.ids()) == 2


async def test_after_a_bus_gap_live_sockets_get_what_the_gap_swallowed(runtime):
    users = [new_user() for _ in range(3)]
    emit = Recorder()
    hub = make_hub(runtime, emit)
    for i, user in enumerate(users):
        await hub.sync(hub.attach(f"sid{i}", user=user, lang="en"), since=None)
    swallowed, _ = await commit(runtime, *(note(user) for user in users))  # announcements lost
    await hub.handle(Gap())
    await asyncio.gather(*hub._tasks)
    assert sorted(emit.ids()) == sorted(str(s.notification.id) for s in swallowed)
    assert {sid for e, _, sid in emit.sent if e == "notification"} == {"sid0", "sid1", "sid2"}
    await hub.handle(Gap())  # nothing new: nothing sent twice
    await asyncio.gather(*hub._tasks)
    assert len(emit.ids()) == 3


class Meanwhile(Reads):
    """Reads (a fake service, counting), which starts ``meanwhile`` right after a position check
    has read the inboxes: what the bus brings while the check looks at what it read."""

    meanwhile = None

    async def inboxes(self, users):
        self.calls += 1
        found = await self.real.inboxes(users)
        if self.meanwhile is not None:
            asyncio.ensure_future(self.meanwhile())
        return found


async def test_a_position_check_lets_the_bus_bring_what_is_on_its_way(runtime):
    """A burst committed just before a check and still on the bus: more than the replay limit
    (500) behind at the check's read, the socket gets all of it live, once, and the check reads
    nothing more and ends as soon as the socket has it (long before its grace)."""
    user = new_user()
    emit = Recorder()
    service = Meanwhile(runtime.service)
    hub = make_hub(runtime, emit, service=service)
    await hub.sync(hub.attach("sid1", user=user, lang="en"), since=None)
    stored, messages = await commit(runtime, *(note(user) for _ in range(600)))
    service.meanwhile = lambda: announce(hub, messages)
    reads = service.calls
    await asyncio.wait_for(hub.check(grace=60), 10)
    assert service.calls == reads + 1  # the check's own read, no catch-up
    assert not hub._tasks
    assert emit.ids() == [str(s.notification.id) for s in stored]
    assert [e for e, _, _ in emit.sent if e not in ("init", "notification")] == []


async def test_a_position_check_catches_up_what_the_bus_did_not_bring_within_its_grace(runtime):
    user, other = new_user(), new_user()
    emit = Recorder()
    service = Meanwhile(runtime.service)
    hub = make_hub(runtime, emit, service=service)
    await hub.sync(hub.attach("sid1", user=user, lang="en"), since=None)
    await hub.sync(hub.attach("sid2", user=other, lang="en"), since=None)
    lost, _ = await commit(runtime, note(user), note(user))  # announcements lost
    brought, messages = await commit(runtime, note(other))  # on its way
    service.meanwhile = lambda: announce(hub, messages)
    await hub.check(grace=0.05)
    await asyncio.gather(*hub._tasks)
    assert emit.ids(sid="sid1") == [str(s.notification.id) for s in lost]
    assert emit.ids(sid="sid2") == [str(s.notification.id) for s in brought]


async def test_a_routine_check_gives_the_bus_its_grace_and_a_prompted_one_does_not():
    """The worker's check loop (socket_server/app.py): a check prompted by a failure (a bus event
    not handled, leases written again) knows something is missing; a routine one does not."""
    from socket_server.app import _check_positions

    class Checks:
        """Stands in for the hub: records the grace of each check."""

        def __init__(self):
            self.graces = asyncio.Queue()

        async def check(self, *, grace=0.0):
            await self.graces.put(grace)

    hub, prompt = Checks(), asyncio.Event()
    prompt.set()
    loop = asyncio.create_task(_check_positions(hub, prompt, every=0.5))
    try:
        assert await asyncio.wait_for(hub.graces.get(), 5) == 0.0
        assert await asyncio.wait_for(hub.graces.get(), 5) == 0.25  # half the period, under 2 s
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_gap_during_a_sync_is_caught_up_before_going_live(runtime):
    user = new_user()
    hub = None
    swallowed = []

    class GapDuringInit(Recorder):
        async def __call__(self, event, data, sid):
            await super().__call__(event, data, sid)
            if event == "init":
                # After the sync read MongoDB: a notification is committed and its announcement lost.
                stored, _ = await commit(runtime, note(user))
                swallowed.extend(stored)
                await hub.handle(Gap())

    emit = GapDuringInit()
    hub = make_hub(runtime, emit)
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=None)
    assert emit.ids() == [str(swallowed[0].notification.id)] and not conn.syncing


async def test_a_failed_sync_never_goes_live(runtime):
    user = new_user()
    emit = Recorder()
    reads = Reads(runtime.service)
    hub = make_hub(runtime, emit, service=reads)
    conn = hub.attach("sid1", user=user, lang="en")
    _, messages = await commit(runtime, note(user))
    await announce(hub, messages)  # held: the socket is syncing
    reads.fail = True
    with pytest.raises(OSError):
        await hub.sync(conn, since=None)
    # Nothing was released: the client's `since` did not move past what it was never sent.
    assert emit.sent == [] and conn.syncing


async def test_a_socket_whose_catch_up_fails_is_closed(runtime):
    user = new_user()
    reads, emit, dropped = Reads(runtime.service), Recorder(), Dropped()
    hub = make_hub(runtime, emit, drop=dropped, service=reads)
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=None)
    await commit(runtime, note(user))
    _, messages = await commit(runtime, note(user))
    reads.fail = True
    await announce(hub, messages)  # a gap: it must read MongoDB, which fails
    await asyncio.gather(*hub._tasks)
    assert dropped == ["sid1"] and conn.syncing and emit.ids() == []


async def test_a_socket_too_far_behind_is_closed(runtime):
    user = new_user()
    emit, dropped = Recorder(), Dropped()
    hub = Hub(service=runtime.service, renderer=Renderer(default_lang="en"), emit=emit, drop=dropped,
              init_limit=20, replay_limit=500, max_held=3, jitter=0)
    hub.attach("sid1", user=user, lang="en")  # syncing: everything is held
    _, messages = await commit(runtime, *(note(user) for _ in range(5)))
    for message in messages:
        for item in message.items:
            await hub.handle(Delivered(message.contents, [item]))
    await asyncio.gather(*hub._tasks)
    assert dropped == ["sid1"]


async def test_a_message_is_queued_whole_and_a_socket_still_full_at_the_next_is_closed(runtime):
    user = new_user()
    emit, dropped = Recorder(), Dropped()
    queues = Queues(emit)
    hub = Hub(service=runtime.service, renderer=Renderer(default_lang="en"), emit=emit, drop=dropped,
              init_limit=20, replay_limit=500, jitter=0, backlog=queues, max_queue=3)
    conn = hub.attach("sid1", user=user, lang="en")
    await hub.sync(conn, since=None)
    queues.drain("sid1")
    # One commit of more notifications than the bound: the socket reads, so it gets them all.
    stored, messages = await commit(runtime, *(note(user) for _ in range(5)))
    await announce(hub, messages)
    assert emit.ids() == [str(s.notification.id) for s in stored] and dropped == []
    # Its client reads none of them: the next message finds the queue full and closes it.
    _, messages = await commit(runtime, note(user))
    await announce(hub, messages)
    assert dropped == ["sid1"] and len(emit.ids()) == 5
    # A read-state change is judged the same way, for each socket of the user.
    reader = hub.attach("sid2", user=user, lang="en")
    reader.syncing = False
    await hub.handle(ReadChanged(user=user, ids=[], all=True, unread_count=0, ver=99))
    assert dropped == ["sid1", "sid1"] and emit.sent[-1][2] == "sid2"


async def test_sockets_whose_writers_take_their_queues_when_given_a_turn_stay(runtime):
    """Bus messages handled back to back give the writers no turn in between: the first socket
    found over the bound makes the hub wait for the writers once per message (rule 7)."""
    user = new_user()
    emit, dropped, settled = Recorder(), Dropped(), []
    queues = Queues(emit)

    async def settle(sid):
        settled.append(sid)
        queues.drain_all()  # every writer runs while the delivery waits

    hub = Hub(service=runtime.service, renderer=Renderer(default_lang="en"), emit=emit, drop=dropped,
              init_limit=20, replay_limit=500, jitter=0, backlog=queues, settle=settle, max_queue=3)
    for sid in ("sid1", "sid2"):
        await hub.sync(hub.attach(sid, user=user, lang="en"), since=None)
    stored, first = await commit(runtime, *(note(user) for _ in range(5)))
    more, second = await commit(runtime, note(user))
    await announce(hub, first)
    await announce(hub, second)  # before any writer ran: 5 packets (and init) wait in each queue
    assert dropped == [] and len(settled) == 1
    ids = [str(s.notification.id) for s in stored + more]
    assert emit.ids(sid="sid1") == ids and emit.ids(sid="sid2") == ids
