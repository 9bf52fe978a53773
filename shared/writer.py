"""Group commit: the notifications of concurrent requests and events share one transaction.

One writing task per process takes everything queued since its last commit and commits it
as one batch (one majority transaction for many requests, preferences read with the inboxes),
then hands the batch to the announcing task, which publishes it on the bus (one message for
many notifications, each content once) while the next commit is already under way. A request
waits only for the commit it is part of; while a commit is in flight the next batch gathers, so
batches grow with load and cost nothing when idle.

Invariants:

1. Batches are announced in commit order (one announcing task, a FIFO): a worker gets a
   user's notifications in position order, as MongoDB gave the positions.
2. At most ANNOUNCE_BACKLOG committed batches wait for their announcement; past that the next
   commit waits, so a slow Redis slows writers down instead of holding batches in memory.

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


class GroupWriter:
    """Commits queued notifications in batches and announces them."""

    def __init__(self, *, store: NotificationStore, bus: EventBus, after_commit: AfterCommit | None = None,
                 max_batch: int = COMMIT_BATCH) -> None:
        self._store = store
        self._bus = bus
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._queue: deque[tuple[Sequence[Notification], asyncio.Future[list[Stored]]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._alone = 0
        self._announcements: asyncio.Queue[Sequence[Stored]] = asyncio.Queue(ANNOUNCE_BACKLOG)
        self._announcer: asyncio.Task[None] | None = None

    async def write(self, notifications: Sequence[Notification]) -> list[Stored]:
        """Commit notifications (with others queued meanwhile); what was new, as stored."""
        if not notifications:
            return []
        future: asyncio.Future[list[Stored]] = asyncio.get_running_loop().create_future()
        self._queue.append((notifications, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[Sequence[Notification], asyncio.Future[list[Stored]]]]:
        # After a batch failed for its data, its requests are committed one at a time.
        alone = self._alone > 0
        self._alone -= alone
        taken, size = [], 0
        while self._queue and not (taken and (alone or size + len(self._queue[0][0]) > self._max_batch)):
            entry = self._queue.popleft()
            if entry[1].done():  # its request went away
                continue
            taken.append(entry)
            size += len(entry[0])
        return taken

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            if not batch:
                continue
            try:
                aligned = await self._store.commit([n for notifications, _ in batch for n in notifications])
            except Exception as exc:
                if len(batch) > 1 and not (isinstance(exc, PyMongoError) and transient(exc)):
                    # One request's data may be what MongoDB refuses: commit each on its own,
                    # so that it fails alone.
                    self._queue.extendleft(reversed(batch))
                    self._alone = len(batch)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            stored = [s for s in aligned if s is not None]
            metrics.NOTIFICATIONS_STORED.inc(len(stored))
            metrics.COMMIT_BATCH.observe(len(stored))
            start = 0
            for notifications, future in batch:
                own = [s for s in aligned[start : start + len(notifications)] if s is not None]
                start += len(notifications)
                if not future.done():
                    future.set_result(own)
            if stored:
                await self._announcements.put(stored)
                if self._announcer is None or self._announcer.done():
                    self._announcer = asyncio.create_task(self._announce())

    async def close(self, timeout: float = 5.0) -> None:
        """Finish the commit and the announcements under way (within ``timeout`` seconds), then
        stop, before the clients they use are closed. What is still queued then fails, and its
        producer retries; nothing committed is lost (workers find it in MongoDB)."""
        tasks = [t for t in (self._task, self._announcer) if t is not None and not t.done()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        if late:
            for task in late:
                task.cancel()
            # A cancelled transaction is aborted, which may wait for a server that is gone: not for long.
            await asyncio.wait(late, timeout=1.0)

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
