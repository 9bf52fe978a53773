"""The notification service: the domain operations behind HTTP, sockets and Kafka.

It takes and returns plain dataclasses; it knows MongoDB and Redis only through the
stores and the bus, and nothing of aiohttp or Socket.IO.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence

import orjson
from bson import ObjectId

from . import metrics
from .bus import Deleted, EventBus, ReadChanged
from .errors import Conflict, InvalidRequest, NotFound
from .ids import decode_cursor, encode_cursor, new_id
from .models import Draft, Notification, Page, Published, Snapshot, utcnow
from .storage.idempotency import IdempotencyStore
from .storage.notifications import NotificationStore
from .storage.preferences import PreferenceStore
from .storage.topics import TopicStore

logger = logging.getLogger(__name__)

# Recipients are resolved, filtered, stored and announced this many at a time, so a topic
# of any size is handled in bounded memory.
BATCH = 1000


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

        With ``report=False`` the answer lists only what this call stored (no extra read).
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
                    # Finished before: store and deliver nothing, even to a topic's new subscribers.
                    stored = await self.store.by_source(draft.source) if report else []
                    return Published(created=False, notifications=[(str(i), r) for i, r in stored])
        result: list[tuple[str, str]] = []
        async for batch in self._audience(draft):
            # A recipient who disabled this type gets nothing, whichever path produced it.
            opted_out = await self.preferences.opted_out(batch, draft.type)
            now = utcnow()
            notifications = [
                Notification(
                    id=new_id(now),
                    type=draft.type,
                    recipient=recipient,
                    actor=draft.actor,
                    created_at=now,
                    title=draft.title,
                    body=draft.body,
                    url=draft.url,
                    params=draft.params,
                    data=draft.data,
                    source=draft.source,
                )
                for recipient in batch
                if recipient not in opted_out
            ]
            # A repeat stores nothing twice: the unique (source, recipient) index skips what a
            # first attempt stored, so only what it never stored (if it died midway) is new.
            new = await self.store.insert(notifications)
            metrics.NOTIFICATIONS_STORED.inc(len(new))
            if new:
                await self.bus.deliver(new)
                await self.store.trim([n.recipient for n in new])
            if draft.source is None or not report:
                result.extend((str(n.id), n.recipient) for n in (notifications if draft.source is None else new))
        if claimed:
            await self.idempotency.complete(draft.source)
        if draft.source is not None and report:
            result = [(str(i), r) for i, r in await self.store.by_source(draft.source)]
        return Published(created=not repeat, notifications=result)

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
        return await self.store.unread_count(user)

    async def unread_counts(self, users: Sequence[str]) -> dict[str, int]:
        """Exact unread counts of several users, in one query."""
        return await self.store.unread_counts(users)

    async def snapshot(self, user: str, *, limit: int) -> Snapshot:
        """Unread count and newest unread notifications, for a socket's init."""
        items = await self.store.page(user, before=None, limit=limit, unread_only=True)
        return Snapshot(await self.store.unread_count(user), items)

    async def missed(self, user: str, since: ObjectId, *, limit: int) -> list[Notification] | None:
        """Notifications newer than ``since``, oldest first; None when more than ``limit``."""
        items = await self.store.after(user, since, limit=limit + 1)
        return None if len(items) > limit else items

    async def mark_read(self, user: str, ids: Sequence[ObjectId]) -> int:
        """Mark some of the user's notifications read and tell all of the user's sockets."""
        changed = await self.store.mark_read(user, ids)
        count = await self.store.unread_count(user)
        if changed:
            await self.bus.publish(ReadChanged(user=user, ids=[str(i) for i in changed], all=False, unread_count=count))
        return count

    async def mark_all_read(self, user: str) -> int:
        """Mark all of the user's notifications read and tell all of the user's sockets."""
        changed = await self.store.mark_all_read(user)
        count = await self.store.unread_count(user)
        if changed:
            await self.bus.publish(ReadChanged(user=user, ids=[], all=True, unread_count=count))
        return count

    async def delete(self, user: str, id_: ObjectId) -> int:
        """Delete one of the user's notifications; NotFound when it is not theirs."""
        if not await self.store.delete(user, id_):
            raise NotFound("no such notification")
        count = await self.store.unread_count(user)
        await self.bus.publish(Deleted(user=user, ids=[str(id_)], unread_count=count))
        return count

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
