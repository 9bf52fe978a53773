"""The hub: this worker's open sockets, and what each of them has been sent.

Events come in from the bus through ``handle``; the hub never talks to Redis itself.
Every event that changes a badge (``init``, ``notification``, ``notifications_read``,
``notifications_deleted``) carries the ``unread_count`` read when the worker sends it, in the
order the socket receives them: the latest one a client holds is always exact.
Each socket is first *synced* (``init``, then what it missed since ``since``) while
live notifications for it are held back; the held ones are then sent unless the sync
already sent them. That is how a reconnecting client loses nothing and sees nothing twice.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from bson import ObjectId

from shared import metrics
from shared.bus import Deleted, Delivered, Event, Gap, ReadChanged
from shared.i18n import Renderer
from shared.ids import first_id_at
from shared.models import Notification, utcnow
from shared.service import NotificationService

logger = logging.getLogger(__name__)

Emit = Callable[[str, Any, str], Awaitable[None]]
Drop = Callable[[str], Awaitable[None]]

# How long a connection remembers what init or a replay gave it.
GIVEN_HORIZON = datetime.timedelta(minutes=10)
# Sockets caught up at once after a bus gap (each is a MongoDB read).
CATCH_UP_CONCURRENCY = 16


@dataclasses.dataclass(eq=False)
class Connection:
    """One open socket of one user."""

    sid: str
    user: str
    lang: str
    since: ObjectId
    syncing: bool = True
    # A bus gap happened while this socket was syncing: replay once more before going live.
    gap: bool = False
    # Ids the client already has from init or a replay. A notification is committed before it is
    # announced, so a replay can find one whose live copy is still on its way: skip that copy.
    given: set[ObjectId] = dataclasses.field(default_factory=set)
    # Live events that arrived while syncing: notifications, and (event, data) pairs.
    held: deque[Notification | tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=deque)


class Hub:
    """Local sockets by user; renders each notification in each socket's language."""

    def __init__(self, *, service: NotificationService, renderer: Renderer, emit: Emit, drop: Drop,
                 init_limit: int, replay_limit: int) -> None:
        self._service = service
        self._renderer = renderer
        self._emit = emit
        self._drop = drop
        self._init_limit = init_limit
        self._replay_limit = replay_limit
        self._by_sid: dict[str, Connection] = {}
        self._by_user: dict[str, set[Connection]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._by_sid)

    def sockets(self) -> list[tuple[str, str]]:
        """(user, sid) of every open socket."""
        return [(c.user, c.sid) for c in self._by_sid.values()]

    def attach(self, sid: str, *, user: str, lang: str) -> Connection:
        """Register a socket that passed authentication; it holds live events until synced."""
        # Until a sync says otherwise, this socket has everything up to its connect time.
        conn = Connection(sid=sid, user=user, lang=lang, since=first_id_at(utcnow()))
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
        metrics.SOCKETS.set(len(self._by_sid))
        return conn

    def connection(self, sid: str) -> Connection | None:
        """The connection of a socket id, if it is open here."""
        return self._by_sid.get(sid)

    async def sync(self, conn: Connection, *, since: ObjectId | None, since_error: str | None = None) -> None:
        """Send ``init``, then what was missed since ``since``, then whatever was held."""
        sent = conn.given
        try:
            snapshot = await self._service.snapshot(conn.user, limit=self._init_limit)
            await self._emit("init", {
                "user_id": conn.user,
                "lang": conn.lang,
                "unread_count": snapshot.unread_count,
                "notifications": [self._renderer.render(n, conn.lang) for n in snapshot.notifications],
            }, conn.sid)
            if since_error is not None:
                await self._emit("resync_required", {"reason": since_error}, conn.sid)
            elif since is not None:
                await self._replay(conn, since, sent)
            else:
                # Without `since`, init is the client's state: held ones already in it are not new.
                sent.update(n.id for n in snapshot.notifications)
            while conn.gap:
                # The bus lost events while this sync ran: what they carried is in MongoDB.
                conn.gap = False
                await self._replay(conn, conn.since, sent)
        finally:
            await self._release(conn, sent)

    async def catch_up(self) -> None:
        """After a bus gap, send every socket what it may have missed meanwhile.

        Sockets are caught up concurrently (a bounded number at a time); one still syncing
        replays once more when its sync ends; one whose replay fails is disconnected, so that
        its client reconnects with ``since`` and loses nothing.
        """
        slots = asyncio.Semaphore(CATCH_UP_CONCURRENCY)

        async def one(conn: Connection) -> None:
            async with slots:
                if conn.sid not in self._by_sid:
                    return
                if conn.syncing:
                    conn.gap = True
                    return
                conn.syncing = True
                sent = conn.given
                try:
                    try:
                        await self._replay(conn, conn.since, sent)
                    finally:
                        await self._release(conn, sent)
                except Exception:
                    logger.exception("catch-up failed for socket %s; disconnecting it", conn.sid)
                    await self._drop(conn.sid)

        await asyncio.gather(*(one(conn) for conn in list(self._by_sid.values())))

    async def _replay(self, conn: Connection, since: ObjectId, sent: set[ObjectId]) -> None:
        missed = await self._service.missed(conn.user, since, limit=self._replay_limit)
        if missed is None:
            await self._emit("resync_required", {"reason": "too_many_missed"}, conn.sid)
            return
        missed = [n for n in missed if n.id not in sent]
        count = await self._service.unread_count(conn.user) if missed else 0
        for notification in missed:
            await self._send(conn, notification, "replay", count)
            sent.add(notification.id)

    async def _release(self, conn: Connection, sent: set[ObjectId]) -> None:
        # Live copies come within moments of their commit: older entries can go.
        horizon = ObjectId.from_datetime(datetime.datetime.now(datetime.timezone.utc) - GIVEN_HORIZON)
        conn.given.difference_update([i for i in conn.given if i < horizon])
        # Held notifications may grow while we send: drain until empty, then go live
        # without an await in between so nothing can slip past.
        while conn.held:
            # One fresh count covers everything released in this round.
            count = await self._service.unread_count(conn.user)
            while conn.held:
                item = conn.held.popleft()
                if conn.sid not in self._by_sid:
                    continue
                if isinstance(item, Notification):
                    if item.id not in sent:
                        await self._send(conn, item, "live", count)
                else:
                    await self._emit(item[0], {**item[1], "unread_count": count}, conn.sid)
        conn.syncing = False

    async def _send(self, conn: Connection, notification: Notification, path: str, count: int,
                    rendered: dict[str, Any] | None = None) -> None:
        payload = rendered or self._renderer.render(notification, conn.lang)
        await self._emit("notification", {**payload, "unread_count": count}, conn.sid)
        if notification.id > conn.since:
            conn.since = notification.id
        metrics.DELIVERED.labels(path).inc()

    async def handle(self, event: Event | Gap) -> None:
        """Apply one bus event to the local sockets."""
        if isinstance(event, Delivered):
            metrics.BUS_MESSAGES.labels("delivered").inc()
            await self._deliver(event.notifications)
        elif isinstance(event, ReadChanged):
            metrics.BUS_MESSAGES.labels("read").inc()
            await self._broadcast(event.user, "notifications_read",
                                  {"ids": event.ids, "all": event.all, "unread_count": event.unread_count})
        elif isinstance(event, Deleted):
            metrics.BUS_MESSAGES.labels("deleted").inc()
            await self._broadcast(event.user, "notifications_deleted",
                                  {"ids": event.ids, "unread_count": event.unread_count})
        elif isinstance(event, Gap):
            metrics.BUS_MESSAGES.labels("gap").inc()
            await self.catch_up()

    async def _deliver(self, notifications: Iterable[Notification]) -> None:
        # One producer request yields many notifications with the same texts: render
        # each text once per language, then only swap in the per-recipient fields.
        texts: dict[tuple[bytes, str], tuple[str, str | None]] = {}
        local = [n for n in notifications if n.recipient in self._by_user]
        if not local:
            return
        counts = await self._service.unread_counts(list({n.recipient for n in local}))
        for notification in local:
            conns = self._by_user.get(notification.recipient)
            if not conns:
                continue
            metrics.DELIVERY_SECONDS.observe(max(0.0, time.time() - notification.created_at.timestamp()))
            content = orjson.dumps([notification.type, notification.actor and notification.actor.to_dict(),
                                    notification.title, notification.body, notification.params],
                                   option=orjson.OPT_SORT_KEYS)
            for conn in list(conns):
                if conn.syncing:
                    conn.held.append(notification)
                    continue
                if notification.id in conn.given:
                    conn.given.discard(notification.id)
                    continue
                key = (content, conn.lang)
                if key not in texts:
                    texts[key] = self._renderer.texts(notification, conn.lang)
                rendered = self._renderer.render(notification, conn.lang, texts=texts[key])
                await self._send(conn, notification, "live", counts[notification.recipient], rendered)

    async def _broadcast(self, user: str, event: str, data: dict[str, Any]) -> None:
        if user not in self._by_user:
            return
        data = {**data, "unread_count": await self._service.unread_count(user)}
        for conn in list(self._by_user.get(user, ())):
            if conn.syncing:
                # After init, so the count it carries is never overwritten by an older one.
                conn.held.append((event, data))
            else:
                await self._emit(event, data, conn.sid)
