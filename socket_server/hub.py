"""The hub: this worker's open sockets, and what each of them holds.

Events come in from the bus through ``handle``; the hub never talks to Redis itself, and reads
MongoDB only to sync a socket (init, replay) or to catch one up, never per delivered message:
positions and badge counts travel with the bus messages (see storage/notifications.py).

Invariants, each proven in tests/socket_server/test_hub.py:

1. A socket gets a user's notifications in commit order, each once. It remembers the position
   (``seq``) and id (``since``) of the newest it holds. A live notification at or below
   ``since`` is skipped; the one at the next position is sent; any other means the bus lost or
   reordered something, and the socket catches up from MongoDB before it goes on.
2. A socket that syncs (init, replay) or catches up holds live events meanwhile, then releases
   them in order under rule 1. It holds at most ``max_held``: a client that far behind is
   closed, reconnects with ``since`` and replays.
3. A sync or catch-up that fails never lets the socket go live: it is closed, so that its client
   reconnects with ``since`` (which was never moved past what it was not sent).
4. Every event that carries a badge carries the count of the highest inbox version the socket
   has seen, so the latest count a client holds is always exact, whatever order the bus kept.
5. After a lost bus subscription (a Gap) and at every position check, the inboxes of all local
   users are read (one query per CHECK_BATCH users) and only sockets behind them catch up,
   a bounded number at a time, after a random delay so that workers do not stampede MongoDB.
   A periodic check gives the bus ``grace`` seconds to bring what was committed before its read
   (announcements in flight, a burst the worker is still handling): only a socket still behind
   the position it read after that catches up, so that a check never turns a socket that is
   merely busy into a replay (or, past the replay limit, a ``resync_required``). It ends as
   soon as every such socket has moved up. A Gap's check, where the loss is certain, has none.
   Before a Gap reaches the hub, the worker has written its sockets' leases again (app.py): the
   bus sends a user's events only to workers with a lease (shared/bus.py), so every commit is
   either announced here or older than the check.

6. At most NOTIHUB_USER_MAX_PER_MINUTE notifications of one type per recipient are pushed live
   (by their creation time, so every worker decides alike); the excess is stored, counted and
   moves ``since`` without being sent: the inbox (``list``, ``init``) shows it, and the next event
   that carries a badge brings the exact count.
7. Whether a socket's client stopped reading is judged once per bus message, before any of the
   message's packets for it: if ``max_queue`` packets still wait in its queue, it is closed (its
   client replays from ``since``); otherwise the message's packets for it are queued whole.
   Messages handled back to back give the sockets' writers no turn in between, so before the
   first such verdict of a message the hub lets writers take their queues (``settle``, briefly):
   only a socket whose writer cannot take them (its client does not read) stays over. A
   commit brings one user at most COMMIT_BATCH notifications (a request notifies a user once, an
   ingest poll holds that many events), so a commit never closes a socket that reads, however
   many of its notifications are for one user. A queue then holds at most ``max_queue`` plus
   one message, or a sync's ``init``, replay and held events on top of that.

States of a socket: attached (syncing) → live; live → catching up (syncing) on a gap, or when a
check finds it behind (a routine check: still behind after its grace) → live; any state → closed
when a MongoDB read fails, ``held`` overflows or a bus message finds its queue full (rule 7).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId

from shared import metrics
from shared.bus import Deleted, Delivered, Event, Gap, Item, ReadChanged
from shared.i18n import Renderer
from shared.ratelimit import LocalLimiter, Rate
from shared.models import Inbox
from shared.service import NotificationService

logger = logging.getLogger(__name__)

Emit = Callable[[str, Any, str], Awaitable[None]]
Drop = Callable[[str], Awaitable[None]]
# Packets queued for a socket and not yet sent (0 for a socket gone meanwhile).
Backlog = Callable[[str], int]
# Waits (briefly) until a socket's writer has taken its queue.
Settle = Callable[[str], Awaitable[None]]


async def _no_wait(sid: str) -> None:
    return None

# Sockets caught up at once (each is two MongoDB reads).
CATCH_UP_CONCURRENCY = 16
# Sockets synced at once. A burst of reconnections (a worker restarted, all its clients moved
# here) queues here instead of exhausting MongoDB's connection pool, where a read would time out
# and its socket be closed, only to reconnect and add to the burst.
SYNC_CONCURRENCY = 32
# Users whose inboxes one position check reads in one query.
CHECK_BATCH = 1000
# How long a periodic position check waits for the bus to bring what it found missing (rule 5).
CHECK_GRACE_SECONDS = 2.0
# Live events a syncing socket holds before its client is deemed too far behind.
MAX_HELD = 1000
# Unsent packets a socket may have when a bus message reaches it (rule 7).
MAX_QUEUE = 1000
_ZERO = ObjectId(bytes(12))

# A held notification (the message it came in, its item, whether it is throttled), or a held
# badge event.
_HeldNote = tuple[Delivered, Item, bool]
_HeldBadge = tuple[str, dict[str, Any], int, int]  # event, data, unread, ver


@dataclasses.dataclass(eq=False)
class Connection:
    """One open socket of one user."""

    sid: str
    user: str
    lang: str
    since: ObjectId = _ZERO
    seq: int = 0
    ver: int = 0
    unread: int = 0
    syncing: bool = True
    # Must read MongoDB before going (back) live: a gap, or a check found it behind.
    behind: bool = False
    held: deque[_HeldNote | _HeldBadge] = dataclasses.field(default_factory=deque)
    # Fires when the socket's token expires (see namespace.py).
    expiry: asyncio.TimerHandle | None = None


@dataclasses.dataclass(eq=False)
class _Verdicts:
    """Rule 7's verdicts during one bus message."""

    of: dict[Connection, bool] = dataclasses.field(default_factory=dict)
    settled: bool = False


class Hub:
    """Local sockets by user; renders each notification content once per language."""

    def __init__(self, *, service: NotificationService, renderer: Renderer, emit: Emit, drop: Drop,
                 init_limit: int, replay_limit: int, max_held: int = MAX_HELD, jitter: float = 1.0,
                 throttle: LocalLimiter | None = None, backlog: Backlog = lambda sid: 0,
                 settle: Settle = _no_wait, max_queue: int = MAX_QUEUE) -> None:
        self._service = service
        self._renderer = renderer
        self._emit = emit
        self._drop = drop
        self._init_limit = init_limit
        self._replay_limit = replay_limit
        self._max_held = max_held
        self._jitter = jitter
        self._throttle = throttle or LocalLimiter(Rate(0, 60))
        self._backlog = backlog
        self._settle = settle
        self._max_queue = max_queue
        self._by_sid: dict[str, Connection] = {}
        self._by_user: dict[str, set[Connection]] = defaultdict(set)
        self._slots = asyncio.Semaphore(CATCH_UP_CONCURRENCY)
        self._sync_slots = asyncio.Semaphore(SYNC_CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        # Set after each bus event while a position check waits for sockets to move up (rule 5).
        self._moved = asyncio.Event()
        self._watching = 0

    def __len__(self) -> int:
        return len(self._by_sid)

    def sockets(self) -> list[tuple[str, str]]:
        """(user, sid) of every open socket."""
        return [(c.user, c.sid) for c in self._by_sid.values()]

    def attach(self, sid: str, *, user: str, lang: str) -> Connection:
        """Register a socket that passed authentication; it holds live events until synced."""
        conn = Connection(sid=sid, user=user, lang=lang)
        self._by_sid[sid] = conn
        self._by_user[user].add(conn)
        metrics.SOCKETS.set(len(self._by_sid))
        return conn

    def detach(self, sid: str) -> Connection | None:
        """Forget a closed socket."""
        conn = self._by_sid.pop(sid, None)
        if conn is not None:
            peers = self._by_user[conn.user]
            peers.discard(conn)
            if not peers:
                del self._by_user[conn.user]
            conn.held.clear()
            if conn.expiry is not None:
                conn.expiry.cancel()
        metrics.SOCKETS.set(len(self._by_sid))
        return conn

    def connection(self, sid: str) -> Connection | None:
        """The connection of a socket id, if it is open here."""
        return self._by_sid.get(sid)

    # -- syncing ---------------------------------------------------------------------------

    async def sync(self, conn: Connection, *, since: ObjectId | None, since_error: str | None = None) -> None:
        """Send ``init``, then what was missed since ``since``, then whatever was held.

        Raises when MongoDB fails; the socket then stays out of live delivery (rule 3) and the
        caller closes it.
        """
        async with self._sync_slots:
            if conn.sid not in self._by_sid:
                return  # gone while it waited
            snapshot = await self._service.snapshot(conn.user, limit=self._init_limit)
            inbox = snapshot.inbox
            await self._emit("init", {
                "user_id": conn.user,
                "lang": conn.lang,
                "unread_count": inbox.unread,
                "notifications": [self._renderer.render(n, conn.lang) for n in snapshot.notifications],
            }, conn.sid)
            self._count(conn, inbox.unread, inbox.ver)
            if since_error is not None:
                await self._emit("resync_required", {"reason": since_error}, conn.sid)
            elif since is not None:
                await self._replay(conn, since, inbox)
            self._adopt(conn, inbox)
        await self._go_live(conn)

    async def _replay(self, conn: Connection, since: ObjectId, inbox: Inbox) -> None:
        missed = await self._service.missed(conn.user, since, upto=inbox.last, limit=self._replay_limit)
        if missed is None:
            await self._emit("resync_required", {"reason": "too_many_missed"}, conn.sid)
            return
        count = self._count(conn, inbox.unread, inbox.ver)
        for notification in missed:
            await self._emit("notification", {**self._renderer.render(notification, conn.lang),
                                              "unread_count": count}, conn.sid)
            metrics.DELIVERED.labels("replay").inc()

    @staticmethod
    def _adopt(conn: Connection, inbox: Inbox) -> None:
        # Everything up to the inbox's position was sent, or was before the client's state.
        conn.seq = max(conn.seq, inbox.seq)
        if inbox.last is not None and inbox.last > conn.since:
            conn.since = inbox.last

    async def _catch_up(self, conn: Connection) -> None:
        inbox = await self._service.inbox(conn.user)
        await self._replay(conn, conn.since, inbox)
        self._adopt(conn, inbox)

    async def _go_live(self, conn: Connection) -> None:
        # Release what was held, in order; catch up first whenever a gap was found. Going live
        # happens with no await after the last check, so nothing can slip in between.
        while True:
            if conn.sid not in self._by_sid:
                return
            if conn.behind:
                conn.behind = False
                await self._catch_up(conn)
                continue
            if not conn.held:
                conn.syncing = False
                return
            entry = conn.held.popleft()
            if len(entry) == 3:
                await self._offer(conn, entry[0], entry[1], {}, "live", quiet=entry[2])
            else:
                event, data, unread, ver = entry
                await self._emit(event, {**data, "unread_count": self._count(conn, unread, ver)}, conn.sid)

    def _hold(self, conn: Connection, entry: _HeldNote | _HeldBadge) -> None:
        if len(conn.held) >= self._max_held:
            # Rule 2: too far behind; its client replays from `since` after reconnecting.
            self._spawn(self._close_slow(conn))
            return
        conn.held.append(entry)

    def _close_slow(self, conn: Connection) -> Awaitable[None]:
        metrics.DROPPED_SLOW.inc()
        conn.held.clear()
        return self._drop(conn.sid)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up_later(self, conn: Connection, reason: str) -> None:
        metrics.CATCH_UPS.labels(reason).inc()
        try:
            async with self._slots:
                await self._go_live(conn)
        except Exception:
            logger.exception("catching up socket %s failed; closing it so that it replays", conn.sid)
            await self._drop(conn.sid)

    def _fall_behind(self, conn: Connection, reason: str) -> None:
        if conn.syncing:
            # Its running sync or catch-up reads MongoDB once more before going live.
            conn.behind = True
            return
        conn.syncing = conn.behind = True
        self._spawn(self._catch_up_later(conn, reason))

    # -- live delivery ---------------------------------------------------------------------

    @staticmethod
    def _count(conn: Connection, unread: int, ver: int) -> int:
        # Rule 4: the newest version's count wins.
        if ver >= conn.ver:
            conn.ver, conn.unread = ver, unread
        return conn.unread

    async def _offer(self, conn: Connection, delivered: Delivered, item: Item,
                     rendered: dict[tuple[int, str], dict[str, Any]], path: str, *, quiet: bool = False) -> None:
        if item.id <= conn.since:
            return  # it has this one already (rule 1)
        if item.seq != conn.seq + 1:
            # A gap, or an announcement repeated after a failure: MongoDB knows what is missing.
            conn.held.appendleft((delivered, item, quiet))
            self._fall_behind(conn, "gap")
            return
        if quiet:
            # Rule 6: stored, counted, not pushed.
            self._count(conn, item.unread, item.ver)
            conn.seq, conn.since = item.seq, item.id
            metrics.THROTTLED.inc()
            return
        key = (item.content, conn.lang)
        base = rendered.get(key)
        if base is None:
            base = rendered[key] = self._renderer.render(delivered.contents[item.content], conn.lang)
        count = self._count(conn, item.unread, item.ver)
        conn.seq, conn.since = item.seq, item.id
        await self._emit("notification", {**base, "id": str(item.id), "recipient": item.recipient,
                                          "unread_count": count}, conn.sid)
        metrics.DELIVERED.labels(path).inc()

    async def handle(self, event: Event | Gap) -> None:
        """Apply one bus event to the local sockets."""
        if isinstance(event, Delivered):
            metrics.BUS_MESSAGES.labels("delivered").inc()
            await self._deliver(event)
        elif isinstance(event, ReadChanged):
            metrics.BUS_MESSAGES.labels("read").inc()
            await self._broadcast(event.user, "notifications_read", {"ids": event.ids, "all": event.all},
                                  event.unread_count, event.ver)
        elif isinstance(event, Deleted):
            metrics.BUS_MESSAGES.labels("deleted").inc()
            await self._broadcast(event.user, "notifications_deleted", {"ids": event.ids},
                                  event.unread_count, event.ver)
        elif isinstance(event, Gap):
            metrics.BUS_MESSAGES.labels("gap").inc()
            await self.check(reason="gap", jitter=self._jitter)
        if self._watching:
            self._moved.set()

    async def _judge(self, conn: Connection, judged: "_Verdicts") -> bool:
        # Rule 7: whether the socket takes this message, at its first packet for it (the callers
        # look up the verdict first, so that later packets cost no await).
        if self._backlog(conn.sid) >= self._max_queue and not judged.settled:
            # Once per message: the other writers get their turns meanwhile too.
            judged.settled = True
            await self._settle(conn.sid)
        reading = judged.of[conn] = self._backlog(conn.sid) < self._max_queue
        if not reading:
            await self._close_slow(conn)
        return reading

    async def _deliver(self, delivered: Delivered) -> None:
        rendered: dict[tuple[int, str], dict[str, Any]] = {}
        judged = _Verdicts()
        now = time.time()
        for item in delivered.items:
            conns = self._by_user.get(item.recipient)
            if not conns:
                continue
            content = delivered.contents[item.content]
            created = content.created_at.timestamp()
            metrics.DELIVERY_SECONDS.observe(max(0.0, now - created))
            # Rule 6, decided once per notification, by its creation time: the same on every worker.
            quiet = not self._throttle.hit((item.recipient, content.type), at=created).allowed
            for conn in list(conns):
                reading = judged.of.get(conn)
                if not (await self._judge(conn, judged) if reading is None else reading):
                    continue
                if conn.syncing:
                    self._hold(conn, (delivered, item, quiet))
                else:
                    await self._offer(conn, delivered, item, rendered, "live", quiet=quiet)

    async def _broadcast(self, user: str, event: str, data: dict[str, Any], unread: int, ver: int) -> None:
        judged = _Verdicts()
        for conn in list(self._by_user.get(user, ())):
            if not await self._judge(conn, judged):  # (one packet per socket)
                continue
            if conn.syncing:
                # After init, so the count it carries is never overwritten by an older one.
                self._hold(conn, (event, data, unread, ver))
            else:
                await self._emit(event, {**data, "unread_count": self._count(conn, unread, ver)}, conn.sid)

    async def check(self, *, reason: str = "check", jitter: float = 0.0, grace: float = 0.0) -> None:
        """Compare every local user's inbox with what its sockets hold; catch up those behind,
        after waiting up to ``grace`` seconds for the bus to bring them up (rule 5)."""
        if jitter:
            await asyncio.sleep(random.uniform(0, jitter))
        self._throttle.prune()
        users = list(self._by_user)
        found: list[tuple[Connection, Inbox]] = []
        for start in range(0, len(users), CHECK_BATCH):
            inboxes = await self._service.inboxes(users[start : start + CHECK_BATCH])
            found += [(conn, inbox) for user, inbox in inboxes.items()
                      for conn in self._by_user.get(user, ()) if _behind(conn, inbox)]
        if grace and found:
            found = await self._moved_up(found, grace)
        for conn, inbox in found:
            if self._by_sid.get(conn.sid) is not conn:
                continue  # closed meanwhile
            if _lacks_notifications(conn, inbox):
                self._fall_behind(conn, reason)
            elif inbox.ver > conn.ver and not conn.syncing:
                # Only the badge moved (a read-state event was lost): send the count.
                await self._emit("notifications_read", {"ids": [], "all": False,
                                                        "unread_count": self._count(conn, inbox.unread,
                                                                                    inbox.ver)}, conn.sid)

    async def _moved_up(self, found: list[tuple[Connection, Inbox]],
                        grace: float) -> list[tuple[Connection, Inbox]]:
        """Wait until the bus has brought these sockets up to the inboxes read, for at most
        ``grace`` seconds; those still behind (and open) then."""
        self._watching += 1
        try:
            async with asyncio.timeout(grace):
                while True:
                    self._moved.clear()
                    found = [(c, i) for c, i in found if self._by_sid.get(c.sid) is c and _behind(c, i)]
                    if not found:
                        break
                    await self._moved.wait()
        except TimeoutError:
            pass
        finally:
            self._watching -= 1
        return found

    async def close(self) -> None:
        """Cancel catch-ups still running (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _lacks_notifications(conn: Connection, inbox: Inbox) -> bool:
    """Whether ``inbox`` has notifications the socket was not sent."""
    return inbox.seq > conn.seq or (inbox.last is not None and inbox.last > conn.since)


def _behind(conn: Connection, inbox: Inbox) -> bool:
    """Whether a socket lacks notifications or a badge change that ``inbox`` has."""
    return _lacks_notifications(conn, inbox) or inbox.ver > conn.ver
