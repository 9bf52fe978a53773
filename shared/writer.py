"""Group commit: the notifications of concurrent requests and events share one transaction.

Writing tasks take what is queued and commit it as one batch (one majority transaction for many
requests, preferences read with the inboxes), then hand the batch to the announcing task, which
publishes it on the bus (one message for many notifications, each content once) while the next
commits are already under way. Up to COMMIT_LANES batches are in flight at once, as long as
they share no recipient: a request arriving while a commit is in flight starts its own instead
of waiting for it, and under load batches still grow. A request waits only for the commit it is
part of.

Invariants:

1. Batches that share a recipient are committed one after the other, in the order they were
   queued, and each is handed to the announcer before the next of them starts; the announcer is
   one task and a FIFO. So a worker gets a user's notifications in position order, as MongoDB
   gave the positions. Batches in flight at once have no recipient in common, so their
   transactions never touch the same inbox and never conflict.
2. At most ANNOUNCE_BACKLOG committed batches wait for their announcement; past that the next
   commit waits, so a slow Redis slows writers down instead of holding batches in memory.
3. A queued request is passed over only for a recipient in flight or in a request passed over
   before it; when no batch is in flight, the oldest request is always taken, so every request
   is committed.

Failure behaviour: a commit that fails fails every request in its batch (each answers 503 and
its producer retries, with the same idempotency key). A publish that fails after the commit
does not fail the requests: the notifications are stored and have positions, so socket workers
find them from MongoDB (at the recipient's next notification, the position check, or a bus gap).

On a sharded cluster a batch stays one transaction (MongoDB 4.2+ commits a transaction across
shards): when its recipients' notifications, their inbox documents or their source pairs live on
several shards, which is the rule for a batch of many users, it is a multi-shard transaction,
committed by MongoDB's two-phase commit and as atomic as on one replica set; it costs a round
of that commit, not a round trip per notification (see storage/notifications.py).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from pymongo.errors import PyMongoError

from . import metrics
from .bus import EventBus
from .models import Notification, Stored
from .storage.mongo import transient
from .storage.notifications import COMMIT_BATCH, NotificationStore

logger = logging.getLogger(__name__)

AfterCommit = Callable[[Sequence[Stored]], Awaitable[None]]

# Committed batches waiting for their announcement (invariant 2).
ANNOUNCE_BACKLOG = 4
# Batches of disjoint recipients committed at once (invariant 1).
COMMIT_LANES = 2
# Queued requests looked at for one batch, at most (the queue is short but for a burst).
_SCAN = 256


class _Entry:
    """One request's notifications, waiting to be committed."""

    __slots__ = ("notifications", "future", "users")

    def __init__(self, notifications: Sequence[Notification], future: asyncio.Future[list[Stored]]) -> None:
        self.notifications = notifications
        self.future = future
        self.users = {n.recipient for n in notifications}


class GroupWriter:
    """Commits queued notifications in batches and announces them."""

    def __init__(self, *, store: NotificationStore, bus: EventBus, after_commit: AfterCommit | None = None,
                 max_batch: int = COMMIT_BATCH, lanes: int = COMMIT_LANES) -> None:
        self._store = store
        self._bus = bus
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._lanes = lanes
        self._queue: deque[_Entry] = deque()
        # Recipients of the batches in flight, and those batches' tasks.
        self._busy: set[str] = set()
        self._commits: set[asyncio.Task[None]] = set()
        self._alone = 0
        self._announcements: asyncio.Queue[Sequence[Stored]] = asyncio.Queue(ANNOUNCE_BACKLOG)
        self._announcer: asyncio.Task[None] | None = None

    async def write(self, notifications: Sequence[Notification]) -> list[Stored]:
        """Commit notifications (with others queued meanwhile); what was new, as stored."""
        if not notifications:
            return []
        future: asyncio.Future[list[Stored]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Entry(notifications, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        # Start commits while a lane is free and a request can go (invariants 1 and 3).
        while len(self._commits) < self._lanes and self._queue:
            batch = self._take()
            if not batch:
                return
            users = set().union(*(entry.users for entry in batch))
            self._busy |= users
            task = asyncio.create_task(self._commit(batch, users))
            self._commits.add(task)

    def _take(self) -> list[_Entry]:
        # After a batch failed for its data, its requests are committed one at a time.
        alone = self._alone > 0
        taken: list[_Entry] = []
        passed: list[_Entry] = []
        blocked = set(self._busy)
        size = 0
        while self._queue and len(passed) < _SCAN:
            entry = self._queue.popleft()
            if entry.future.done():  # its request went away
                continue
            if taken and (alone or size + len(entry.notifications) > self._max_batch):
                self._queue.appendleft(entry)
                break
            if not blocked.isdisjoint(entry.users):
                # A recipient in flight, or in a request passed over: after them (invariant 1).
                passed.append(entry)
                blocked |= entry.users
                continue
            taken.append(entry)
            blocked |= entry.users
            size += len(entry.notifications)
        self._queue.extendleft(reversed(passed))
        self._alone -= bool(taken) and alone
        return taken

    async def _commit(self, batch: list[_Entry], users: set[str]) -> None:
        try:
            await self._commit_batch(batch)
        finally:
            self._busy -= users
            self._commits.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._dispatch()

    async def _commit_batch(self, batch: list[_Entry]) -> None:
        try:
            aligned = await self._store.commit([n for entry in batch for n in entry.notifications])
        except Exception as exc:
            if len(batch) > 1 and not (isinstance(exc, PyMongoError) and transient(exc)):
                # One request's data may be what MongoDB refuses: commit each on its own, so
                # that it fails alone (first in line again, before their users are free).
                self._queue.extendleft(reversed(batch))
                self._alone = len(batch)
                return
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        stored = [s for s in aligned if s is not None]
        metrics.NOTIFICATIONS_STORED.inc(len(stored))
        metrics.COMMIT_BATCH.observe(len(stored))
        start = 0
        for entry in batch:
            own = [s for s in aligned[start : start + len(entry.notifications)] if s is not None]
            start += len(entry.notifications)
            if not entry.future.done():
                entry.future.set_result(own)
        if stored:
            # Before the users are free for their next batch (invariant 1).
            await self._announcements.put(stored)
            if self._announcer is None or self._announcer.done():
                self._announcer = asyncio.create_task(self._announce())

    async def _announce(self) -> None:
        while not self._announcements.empty():
            stored = self._announcements.get_nowait()
            try:
                await self._bus.announce(stored)
            except Exception:
                # Never raised by design; whatever it was, the batch is found in MongoDB.
                logger.exception("announcing a committed batch failed")
            if self._after_commit is not None:
                try:
                    await self._after_commit(stored)
                except Exception:
                    logger.exception("after-commit work failed")
