"""The notification service: the domain operations behind HTTP, sockets and Kafka.

It takes and returns plain dataclasses; it knows MongoDB and Redis only through the
stores and the bus, and nothing of aiohttp or Socket.IO.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence

import orjson
from bson import ObjectId
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from .bus import Deleted, EventBus, ReadChanged
from .errors import Conflict, InvalidRequest, NotFound
from .ids import decode_cursor, encode_cursor, new_id
from .models import Changed, Draft, Inbox, Notification, Page, Published, Snapshot, Stored, utcnow
from .storage.idempotency import IdempotencyStore
from .storage.notifications import NotificationStore
from .storage.preferences import PreferenceStore
from .storage.topics import TopicStore
from .writer import GroupWriter

logger = logging.getLogger(__name__)

# Recipients are resolved, filtered, stored and announced this many at a time, so a topic
# of any size is handled in bounded memory.
BATCH = 1000
# Batches of one request queued at the group writer at once: its commits follow each other
# without waiting for the next batch to be read and built, and memory stays bounded.
PIPELINE = 3


def fingerprint(payload: object) -> str:
    """A stable digest of a request, to tell a true repeat from a reused key."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class NotificationService:
    """Publishes, lists and changes the read state of notifications."""

    def __init__(
        self,
        *,
        store: NotificationStore,
        idempotency: IdempotencyStore,
        topics: TopicStore,
        preferences: PreferenceStore,
        bus: EventBus,
        max_page: int = 100,
        default_page: int = 20,
    ) -> None:
        self.store = store
        self.idempotency = idempotency
        self.topics = topics
        self.preferences = preferences
        self.bus = bus
        self.max_page = max_page
        self.default_page = default_page
        self.writer = GroupWriter(store=store, bus=bus, after_commit=self._after_commit)
        # Users over the per-user cap, trimmed off the hot path by one task at a time.
        self._over_cap: set[str] = set()
        self._trimmer: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Finish the writes under way, before the stores' clients close (at shutdown)."""
        await self.writer.close()
        if self._trimmer is not None:
            self._trimmer.cancel()
            await asyncio.wait([self._trimmer], timeout=1.0)

    async def _audience(self, draft: Draft) -> AsyncIterator[list[str]]:
        if draft.topic is not None:
            async for batch in self.topics.batches(draft.topic, size=BATCH):
                yield batch
            return
        recipients = list(dict.fromkeys(draft.recipients))
        for start in range(0, len(recipients), BATCH):
            yield recipients[start : start + BATCH]

    async def publish(self, draft: Draft, *, report: bool = True) -> Published:
        """Store one notification per wanting recipient (majority-acknowledged), then deliver the new ones.

        A repeat (same idempotency key or event id) stores nothing twice and announces again
        whatever an earlier attempt stored, so a producer's retry after a failure in between
        always ends with everything stored announced. With ``report=False`` the answer gives only
        how many notifications there are, and nothing of any size is held in memory: a topic of
        any audience streams through in batches.
        """
        repeat = False
        # A fingerprint asks for a claim: the first request under a key is recorded, so that a
        # repeat answers 200 with the first result, whatever its body says. Only a different
        # request under the key of one still unfinished is a conflict: it can neither finish the
        # first one nor report its result yet.
        # Without one (domain events), the (source, recipient) index alone makes repeats no-ops.
        claimed = draft.source is not None and draft.fingerprint is not None
        if claimed:
            first = await self.idempotency.claim(draft.source, draft.fingerprint)
            if first is not None:
                fingerprint, done = first
                if fingerprint != draft.fingerprint and not done:
                    raise Conflict("a different request with this idempotency key has not finished yet")
                repeat = True
                if done:
                    # Finished before: store nothing, even for a topic's new subscribers; announce
                    # again what was stored (workers skip what their sockets already have).
                    count, listed = await self._announce_again(draft.source, report=report)
                    return Published(created=False, notifications=listed, count=count)
        listed: list[tuple[str, str]] = []
        count = 0
        async for new in self._store_audience(draft):
            count += len(new)
            if report:
                listed.extend((str(s.notification.id), s.notification.recipient) for s in new)
        if draft.source is not None and (repeat or not count):
            # A repeat of an attempt that stored part or all of it before failing: what that
            # attempt stored may never have been announced.
            count, listed = await self._announce_again(draft.source, report=report)
        elif draft.source is not None and report and not claimed:
            # An event delivered again after a crash midway: report all that its id stored.
            listed = [(str(n.id), n.recipient) for n in await self.store.by_source(draft.source)]
            count = len(listed)
        if claimed:
            await self.idempotency.complete(draft.source)
        return Published(created=not repeat, notifications=listed, count=count)

    async def publish_many(self, drafts: Sequence[Draft]) -> int:
        """Publish drafts of explicit recipients (at most BATCH each), each with its own source and
        no fingerprint (domain events), as one entry of the group writer; how many notifications
        were new. Each draft behaves as ``publish(draft, report=False)``: a repeat stores nothing
        twice, and a draft that stored nothing new announces again what an earlier attempt stored."""
        notifications: list[Notification] = []
        for draft in drafts:
            if draft.topic is not None or draft.source is None or draft.fingerprint is not None \
                    or len(draft.recipients) > BATCH:
                raise ValueError("publish_many takes sourced drafts of at most BATCH explicit recipients")
            notifications += self._drafted(draft, list(dict.fromkeys(draft.recipients)))
        new = await self.writer.write(notifications)
        stored = {s.notification.source for s in new}
        for source in {d.source for d in drafts} - stored:
            await self._announce_again(source, report=False)
        return len(new)

    @staticmethod
    def _drafted(draft: Draft, recipients: Sequence[str]) -> list[Notification]:
        """The notifications of one batch of a draft's audience; they share their content objects,
        so that the bus sends the content once."""
        now = utcnow()
        return [Notification(id=new_id(now), type=draft.type, recipient=recipient, actor=draft.actor,
                             created_at=now, title=draft.title, body=draft.body, url=draft.url,
                             params=draft.params, data=draft.data, source=draft.source)
                for recipient in recipients]

    async def _store_audience(self, draft: Draft) -> AsyncIterator[list[Stored]]:
        """The new notifications of each batch of the audience, in audience order, once committed.

        Up to PIPELINE batches wait at the group writer at once. Should one fail, the others are
        withdrawn: what was committed stays (and is announced), the request fails, and the
        producer's retry stores the rest and nothing twice."""
        pending: deque[asyncio.Task[list[Stored]]] = deque()
        try:
            async for batch in self._audience(draft):
                notifications = self._drafted(draft, batch)
                # Filtered by preferences, committed with other requests' notifications, then
                # announced (see writer.py).
                if draft.topic is None and len(draft.recipients) <= BATCH:
                    yield await self.writer.write(notifications)  # the only batch: no task
                    continue
                pending.append(asyncio.create_task(self.writer.write(notifications)))
                if len(pending) >= PIPELINE:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _announce_again(self, source: str, *, report: bool) -> tuple[int, list[tuple[str, str]]]:
        """Announce again everything stored under ``source``, with the recipients' current badges;
        how many there are, and (with ``report``) their ids and recipients, oldest first."""
        count = 0
        listed: list[tuple[str, str]] = []
        async for notifications in self.store.by_source_batches(source):
            inboxes = await self.store.inboxes(list({n.recipient for n in notifications}))
            # Position 0 is below any socket's: a worker sends it only to a socket that has not
            # seen it, which it finds by a replay from MongoDB (see socket_server/hub.py).
            await self.bus.announce([Stored(n, seq=0, unread=inboxes[n.recipient].unread, ver=inboxes[n.recipient].ver)
                                     for n in notifications])
            count += len(notifications)
            if report:
                listed.extend((str(n.id), n.recipient) for n in notifications)
        return count, sorted(listed)

    async def _after_commit(self, stored: Sequence[Stored]) -> None:
        # The per-user cap is kept off the hot path: trimmed after the commit, by one task.
        cap = self.store.max_per_user
        over = {s.notification.recipient for s in stored if s.total > cap}
        if not over:
            return
        self._over_cap.update(over)
        if self._trimmer is None or self._trimmer.done():
            self._trimmer = asyncio.create_task(self._trim())

    async def _trim(self) -> None:
        while self._over_cap:
            user = self._over_cap.pop()
            try:
                await self._removed(user, await self.store.trim(user))
            except (PyMongoError, RedisError, OSError, TimeoutError) as exc:
                # Its next notification puts it back in the set.
                logger.warning("could not trim the inbox of %s: %s", user, exc)

    async def _removed(self, user: str, changed: Changed | None) -> None:
        if changed is not None and changed.count:
            await self.bus.announce(Deleted(user=user, ids=[str(i) for i in changed.ids],
                                     unread_count=changed.inbox.unread, ver=changed.inbox.ver))

    async def expire(self, *, limit: int = 1000) -> int:
        """Delete notifications past the retention period, telling open sockets; how many users had some."""
        users = await self.store.expired_recipients(limit=limit)
        for user in users:
            await self._removed(user, await self.store.expire(user))
        return len(users)

    async def page(
        self, user: str, *, cursor: str | None = None, limit: int | None = None, unread_only: bool = False
    ) -> Page:
        """One page of a user's inbox, newest first."""
        limit = self.default_page if limit is None else limit
        if not 1 <= limit <= self.max_page:
            raise InvalidRequest(f"limit must be between 1 and {self.max_page}")
        # No cursor, or an empty one (as forms and query strings send it): the first page.
        before = decode_cursor(cursor) if cursor else None
        items = await self.store.page(user, before=before, limit=limit + 1, unread_only=unread_only)
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor(items[-1].id) if more else None)

    async def unread_count(self, user: str) -> int:
        """The user's exact unread count."""
        return (await self.store.inbox(user)).unread

    async def inbox(self, user: str) -> Inbox:
        """The user's inbox position and badge."""
        return await self.store.inbox(user)

    async def inboxes(self, users: Sequence[str]) -> dict[str, Inbox]:
        """Inbox positions and badges of several users, in one query."""
        return await self.store.inboxes(users)

    async def snapshot(self, user: str, *, limit: int) -> Snapshot:
        """The inbox and its newest unread notifications, consistent with each other, for a socket's init."""
        inbox = await self.store.inbox(user)
        # Nothing newer than the inbox's position: what came after arrives live, or by a replay.
        items = await self.store.page(user, before=None, limit=limit, unread_only=True, upto=inbox.last) \
            if inbox.last is not None else []
        return Snapshot(inbox, items)

    async def missed(self, user: str, since: ObjectId, *, upto: ObjectId | None, limit: int) -> list[Notification] | None:
        """Notifications newer than ``since`` up to ``upto``, oldest first; None when more than ``limit``."""
        if upto is None:
            return []
        items = await self.store.after(user, since, upto=upto, limit=limit + 1)
        return None if len(items) > limit else items

    async def mark_read(self, user: str, ids: Sequence[ObjectId]) -> int:
        """Mark some of the user's notifications read and tell all of the user's sockets."""
        changed = await self.store.mark_read(user, ids)
        if changed.count:
            await self.bus.announce(ReadChanged(user=user, ids=[str(i) for i in changed.ids], all=False,
                                                unread_count=changed.inbox.unread, ver=changed.inbox.ver))
        return changed.inbox.unread

    async def mark_all_read(self, user: str) -> int:
        """Mark all of the user's notifications read and tell all of the user's sockets."""
        changed = await self.store.mark_all_read(user)
        if changed.count:
            await self.bus.announce(ReadChanged(user=user, ids=[], all=True, unread_count=changed.inbox.unread,
                                                ver=changed.inbox.ver))
        return changed.inbox.unread

    async def delete(self, user: str, id_: ObjectId) -> int:
        """Delete one of the user's notifications; NotFound when it is not theirs."""
        changed = await self.store.delete(user, id_)
        if changed is None:
            raise NotFound("no such notification")
        await self._removed(user, changed)
        return changed.inbox.unread

    async def subscribe(self, topic: str, user: str) -> None:
        """Make ``user`` a subscriber of ``topic``."""
        await self.topics.subscribe(topic, user)

    async def unsubscribe(self, topic: str, user: str) -> None:
        """Remove ``user`` from ``topic``."""
        await self.topics.unsubscribe(topic, user)

    async def subscribers(self, topic: str, *, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """One page of a topic's subscribers, in user order, and the cursor of the next."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be between 1 and 1000")
        users = await self.topics.page(topic, after=cursor, limit=limit + 1)
        more = len(users) > limit
        users = users[:limit]
        return users, (users[-1] if more else None)

    async def disabled_types(self, user: str) -> list[str]:
        """The types ``user`` does not want."""
        return await self.preferences.get(user)

    async def set_disabled_types(self, user: str, types: Sequence[str]) -> list[str]:
        """Replace the types ``user`` does not want."""
        return await self.preferences.put(user, types)


async def sweep_expired(service: NotificationService, *, every: float) -> None:
    """Delete expired notifications every ``every`` seconds, telling open sockets (runs in the API)."""
    # Several API processes may sweep at once: their transactions conflict and one retries.
    while True:
        try:
            while await service.expire() > 0:
                pass
        except (PyMongoError, RedisError, OSError, TimeoutError) as exc:
            logger.warning("retention sweep failed (%s); trying again in %ss", exc, every)
        await asyncio.sleep(every)
