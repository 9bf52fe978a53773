"""The notification repository: one document per recipient, and one inbox document per user.

Invariants, kept by every write below (each one a MongoDB transaction that changes the
notifications and the recipient's inbox document together):

1. ``inboxes.{user}.unread`` and ``.total`` equal the user's unread and stored notifications.
2. ``seq`` grows by one per notification stored for the user, in commit order; the
   notification carries its ``seq``. A socket worker that sees positions 5 then 7 knows that it
   missed 6 and reads it from MongoDB (it is committed: 7 committed after it).
3. One user's ids increase in commit order: the id is chosen inside the transaction, after
   ``last`` (the newest id stored for the user). So when a client holds id X, every
   notification of that user with an id below X was committed before X, and a replay of
   ``_id > since`` can never skip one that committed late (a write held up by an election).
4. ``ver`` grows with every change of the inbox (stored, read, deleted, expired), so of two
   badge counts the one with the higher ``ver`` is the newer.
5. A notification of a request or an event (its ``source``) is stored at most once per
   recipient, however often the source comes again, concurrent repeats included. The pair lives
   in ``notification_sources`` (``{_id: the notification's id, source, recipient, created_at}``,
   unique on ``{source, recipient}``), written in the same transaction as the notification (and
   removed in the one that deletes it, except a trim, below): of two transactions that store
   one pair, one fails on that index (at once, or after a write conflict when the driver does it
   again) and ``commit`` does it again without the repeat. A notification the user deleted
   leaves a tombstone for as long as an idempotency key is kept, so that a repeat does not bring
   it back. One trimmed by the per-user cap keeps its pair, so that a redelivery does not bring
   it back either; one expired may be stored again. A pair expires with its notification, or
   (trimmed) on its own, by the same TTL backstop (retention plus a day).

The transaction reads the inbox documents and writes them back; two transactions that touch
the same user conflict and one is retried by the driver, which is what serialises a user's
positions. A user's first notification creates the inbox document (from the notifications
already stored, for data written before inboxes existed). A commit of one user's notifications
(the rule at low rates) reads and moves that user's counters in one round trip instead of two
(``_claim``: ``$inc`` by the batch's size, returning the document as it was); when the batch
turns out otherwise (a type the user disabled, an id that must move past ``last``), the same
transaction writes the exact positions over it, as for several users.

Sharding: every index and query here works with the collections sharded by ``SHARD_KEYS``
(``storage/__init__.py``): ``notifications`` by ``{recipient: 1, _id: 1}``, ``inboxes`` and
``notification_tombstones`` by hashed ``_id``, ``notification_sources`` by ``{source: 1,
recipient: 1}``. A unique index of a sharded collection must start with its shard key, which is
why the source pairs are not a unique index of ``notifications`` (they were, until
``ensure_indexes`` moved them) but a collection of their own, source first, so that what one
source stored (read again by a repeat) is one targeted query followed by reads of
``notifications`` by recipient and id. Every query of ``notifications`` names the recipient
(equality or ``$in``), so that a router sends it only to the shards owning those recipients;
those of ``inboxes`` and of the tombstones name ``_id``, those of the pairs the source. The
exception is the retention sweep's ``expired_recipients``, a scatter-gather on purpose: each
shard answers it from its ``retention`` index, over what just passed the retention period, once
per sweep; the deletions that follow (``expire``) are per recipient. Transactions span shards
(MongoDB 4.2+): a commit whose recipients, inboxes or sources live on several shards is a
multi-shard transaction, and so, usually, is a change of one user (its notifications, its inbox
document and its pairs are placed independently); no invariant above depends on placement.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pymongo
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from ..ids import new_id_after
from ..models import Changed, Inbox, Notification, Stored, utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")

_INDEX_OPTIONS_CONFLICT = 85
_DUPLICATE_KEY = 11000
# The unique index of earlier versions, on `notifications`, replaced by `notification_sources`.
_LEGACY_SOURCE_INDEX = "source_recipient"
# How long ensure_indexes may take, in seconds.
INDEX_DEADLINE_SECONDS = 300
# At most this many notifications in one transaction.
COMMIT_BATCH = 1000
# A deleted notification that came from a request or an event is remembered this long (as long
# as an idempotency key is kept), so that a repeat of the one or a redelivery of the other does
# not bring it back.
TOMBSTONE_SECONDS = 24 * 3600
# MongoDB's TTL monitor is only a backstop behind the retention sweep (which keeps the inbox
# counts and open badges right): it deletes what the sweep did not get to within a day.
TTL_BACKSTOP_SECONDS = 24 * 3600
# A repeat committed concurrently makes a commit fail on the unique index: done again without it.
_REPEAT_RACES = 5


@dataclasses.dataclass(slots=True)
class _Position:
    """An inbox being changed inside a transaction."""

    seq: int = 0
    last: ObjectId | None = None
    unread: int = 0
    total: int = 0
    ver: int = 0
    disabled: frozenset[str] = frozenset()

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "_Position":
        return cls(seq=doc.get("seq", 0), last=doc.get("last"), unread=doc.get("unread", 0),
                   total=doc.get("total", 0), ver=doc.get("ver", 0),
                   disabled=frozenset(doc.get("disabled_types", ())))

    def inbox(self, user: str) -> Inbox:
        return Inbox(user=user, seq=self.seq, last=self.last, unread=self.unread, total=self.total, ver=self.ver)

    def document(self) -> dict[str, Any]:
        return {"seq": self.seq, "last": self.last, "unread": self.unread, "total": self.total, "ver": self.ver}


class NotificationStore:
    """Reads and writes ``notifications``, ``inboxes``, the source pairs and the tombstones; every
    query is served by an index and names its collection's shard key (one exception, above)."""

    def __init__(self, *, db: AsyncDatabase, retention: dt.timedelta, max_per_user: int) -> None:
        self._db = db
        self._coll = db["notifications"]
        self._inboxes = db["inboxes"]
        self._tombstones = db["notification_tombstones"]
        self._sources = db["notification_sources"]
        self._retention = retention
        self.max_per_user = max_per_user

    async def ensure_indexes(self) -> None:
        """Create the indexes every query below relies on, and move an earlier version's source
        index to the source pairs (idempotent)."""
        # Start-up work, not a request: index builds (each waits for a majority of the replica
        # set) and the migration get minutes, not the per-operation deadline.
        with pymongo.timeout(INDEX_DEADLINE_SECONDS):
            await self._coll.create_indexes(
                [
                    # Inbox pages, replay after `since`, deletes: newest first per recipient.
                    IndexModel([("recipient", ASCENDING), ("_id", DESCENDING)], name="recipient_id"),
                    # Unread-only pages and the newest unread of `init`.
                    IndexModel(
                        [("recipient", ASCENDING), ("read", ASCENDING), ("_id", DESCENDING)],
                        name="recipient_read_id",
                    ),
                ]
            )
            # A repeated request or event stores nothing twice (invariant 5); the index is the
            # collection's shard key.
            await self._sources.create_index([("source", ASCENDING), ("recipient", ASCENDING)],
                                             name="source_recipient", unique=True)
            await self._tombstones.create_index([("at", ASCENDING)], name="expiry", expireAfterSeconds=TOMBSTONE_SECONDS)
            await self._ensure_retention()
            await self._move_source_index()

    async def _move_source_index(self) -> None:
        # Databases of earlier versions kept the uniqueness as a partial unique index of
        # `notifications`: copy its pairs, then drop it (a unique index that does not start
        # with the shard key would keep the collection from being sharded). The copy runs in the
        # server, streaming through that index, and is safe to run again if stopped midway.
        # Writers of an earlier version record no pairs: none may still run once this has.
        pipeline = [
            {"$match": {"source": {"$exists": True}}},
            {"$project": {"source": 1, "recipient": 1, "created_at": 1}},
            {"$merge": {"into": self._sources.name, "on": ["source", "recipient"],
                        "whenMatched": "keepExisting", "whenNotMatched": "insert"}},
        ]
        for attempt in range(_REPEAT_RACES):
            if _LEGACY_SOURCE_INDEX not in await self._coll.index_information():
                return
            try:
                await (await self._coll.aggregate(pipeline, hint=_LEGACY_SOURCE_INDEX)).to_list(None)
                await self._coll.drop_index(_LEGACY_SOURCE_INDEX)
            except OperationFailure:
                # Processes starting together move it together: another one may have copied a
                # pair or dropped the index meanwhile. Look again.
                if attempt == _REPEAT_RACES - 1:
                    raise
                continue
            logger.info("moved the source uniqueness of notifications to %s", self._sources.name)
            return

    async def _ensure_retention(self) -> None:
        # The retention sweep finds expired notifications by this index; MongoDB's TTL monitor
        # removes, a day later, whatever the sweep did not (and the source pairs with them).
        expire = int(self._retention.total_seconds()) + TTL_BACKSTOP_SECONDS
        for coll in (self._coll, self._sources):
            try:
                await coll.create_index([("created_at", ASCENDING)], name="retention", expireAfterSeconds=expire)
            except OperationFailure as exc:
                if exc.code != _INDEX_OPTIONS_CONFLICT:
                    raise
                # The retention setting changed since the index was made: update it in place.
                await self._db.command(
                    "collMod", coll.name, index={"name": "retention", "expireAfterSeconds": expire}
                )

    async def retention_seconds(self) -> int | None:
        """How long the TTL backstop keeps a notification, as MongoDB has it."""
        info = await self._coll.index_information()
        return info.get("retention", {}).get("expireAfterSeconds")

    # -- transactions ----------------------------------------------------------------------

    async def _transaction(self, work: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        # with_transaction retries the whole of `work` on a write conflict (two writers of one
        # inbox, or two first writes creating it) and on transient errors (an election), within
        # the client's timeoutMS.
        async with self._db.client.start_session() as session:
            return await session.with_transaction(work)

    async def _positions(self, session: AsyncClientSession, users: Sequence[str]) -> dict[str, _Position]:
        """The inboxes of ``users`` as this transaction sees them."""
        docs = {doc["_id"]: doc async for doc in self._inboxes.find({"_id": {"$in": list(users)}}, session=session)}
        # A document that holds only preferences has no positions yet.
        missing = [u for u in users if "seq" not in docs.get(u, ())]
        positions = {u: _Position.from_document(doc) for u, doc in docs.items()}
        if missing:
            # First write of these users: start from what is already stored (if anything).
            pipeline = [
                {"$match": {"recipient": {"$in": missing}}},
                {"$group": {"_id": "$recipient", "total": {"$sum": 1},
                            "unread": {"$sum": {"$cond": [{"$eq": ["$read", False]}, 1, 0]}},
                            "last": {"$max": "$_id"}}},
            ]
            async for doc in await self._coll.aggregate(pipeline, session=session):
                p = positions.setdefault(doc["_id"], _Position())
                p.seq, p.last, p.unread, p.total = doc["total"], doc["last"], doc["unread"], doc["total"]
            for user in missing:
                positions.setdefault(user, _Position())
        return positions

    async def _save(self, session: AsyncClientSession, positions: dict[str, _Position]) -> None:
        await self._inboxes.bulk_write(
            [UpdateOne({"_id": user}, {"$set": p.document()}, upsert=True) for user, p in positions.items()],
            ordered=False, session=session,
        )

    # -- writes ----------------------------------------------------------------------------

    async def commit(self, notifications: Sequence[Notification]) -> list[Stored | None]:
        """Store new notifications, with their positions and ids chosen in commit order.

        The answer is aligned with ``notifications``: None for one left out, because its
        recipient disabled its type, or it repeats one stored before (same source and recipient)
        or one the user deleted. If a repeat commits concurrently, the transaction fails on the
        unique index of ``notification_sources`` and is done again without it.
        """
        result: list[Stored | None] = []
        for start in range(0, len(notifications), COMMIT_BATCH):
            batch = notifications[start : start + COMMIT_BATCH]
            stored: dict[int, Stored] = {}
            for attempt in range(_REPEAT_RACES):
                fresh = await self._fresh(batch)
                if not fresh:
                    break
                try:
                    committed = await self._transaction(lambda s: self._commit(s, [n for _, n in fresh]))
                    stored = {i: c for (i, _), c in zip(fresh, committed)}
                    break
                except (DuplicateKeyError, BulkWriteError) as exc:
                    if not _repeated(exc) or attempt == _REPEAT_RACES - 1:
                        raise
            result.extend(stored.get(i) for i in range(len(batch)))
        return result

    async def _commit(self, session: AsyncClientSession, batch: Sequence[Notification]) -> list[Stored | None]:
        users = list(dict.fromkeys(n.recipient for n in batch))
        claimed = await self._claim(session, users[0], batch) if len(users) == 1 else None
        positions = {users[0]: claimed[0]} if claimed is not None else await self._positions(session, users)
        stored: list[Stored | None] = []
        for n in batch:
            p = positions[n.recipient]
            if n.type in p.disabled:
                # The recipient does not want this type, whichever path produced it.
                stored.append(None)
                continue
            if p.last is not None and n.id <= p.last:
                n = dataclasses.replace(n, id=new_id_after(p.last, n.created_at))
            p.seq, p.last, p.unread, p.total, p.ver = p.seq + 1, n.id, p.unread + 1, p.total + 1, p.ver + 1
            stored.append(Stored(n, seq=p.seq, unread=p.unread, ver=p.ver, total=p.total))
        new = [s for s in stored if s is not None]
        sourced = [s.notification for s in new if s.notification.source is not None]
        if sourced:
            # First, so that a repeat committed concurrently fails the transaction early.
            await self._sources.insert_many(
                [{"_id": n.id, "source": n.source, "recipient": n.recipient, "created_at": n.created_at}
                 for n in sourced], session=session)
        if new:
            await self._coll.insert_many([{**s.notification.to_document(), "seq": s.seq} for s in new],
                                         session=session)
        if claimed is not None:
            if positions[users[0]].document() != claimed[1]:
                await self._save(session, positions)  # the exact positions over the claimed ones
        elif new:
            await self._save(session, {s.notification.recipient: positions[s.notification.recipient] for s in new})
        return stored

    async def _claim(self, session: AsyncClientSession, user: str,
                     batch: Sequence[Notification]) -> tuple[_Position, dict[str, Any]] | None:
        """Move one user's counters as if the whole batch were stored, in the round trip that
        reads them: the positions before, and the inbox document as it is now. None (nothing
        written) when the user has no positions yet."""
        k, newest = len(batch), max(n.id for n in batch)
        before = await self._inboxes.find_one_and_update(
            {"_id": user, "seq": {"$exists": True}},
            {"$inc": {"seq": k, "unread": k, "total": k, "ver": k}, "$max": {"last": newest}},
            session=session)
        if before is None:
            return None
        p = _Position.from_document(before)
        now = _Position(seq=p.seq + k, last=newest if p.last is None else max(p.last, newest),
                        unread=p.unread + k, total=p.total + k, ver=p.ver + k)
        return p, now.document()

    async def _fresh(self, batch: Sequence[Notification]) -> list[tuple[int, Notification]]:
        # One indexed read each, and only for notifications of a request or an event: what a
        # first attempt stored, and what a user deleted, is not stored again; nor is a pair twice
        # in one batch (two deliveries of an event queued together), which would fail it whole.
        sourced = [n for n in batch if n.source is not None]
        if not sourced:
            return list(enumerate(batch))
        sources = list({n.source for n in sourced})
        recipients = list({n.recipient for n in sourced})
        taken = {(doc["source"], doc["recipient"]) async for doc in self._sources.find(
            {"source": {"$in": sources}, "recipient": {"$in": recipients}}, {"_id": 0, "source": 1, "recipient": 1})}
        keys = [_tombstone(n.source, n.recipient) for n in sourced]
        deleted = {doc["_id"] async for doc in self._tombstones.find({"_id": {"$in": keys}}, {"_id": 1})}
        fresh = []
        for i, n in enumerate(batch):
            if n.source is not None:
                if (n.source, n.recipient) in taken or _tombstone(n.source, n.recipient) in deleted:
                    continue
                taken.add((n.source, n.recipient))
            fresh.append((i, n))
        return fresh

    async def mark_read(self, recipient: str, ids: Sequence[ObjectId]) -> Changed:
        """Mark some of a recipient's notifications read; the ids that changed and the inbox after."""

        async def work(session: AsyncClientSession) -> Changed:
            query = {"recipient": recipient, "_id": {"$in": list(ids)}, "read": False}
            changed = [doc["_id"] async for doc in self._coll.find(query, {"_id": 1}, session=session)]
            positions = await self._positions(session, [recipient])
            p = positions[recipient]
            if changed:
                await self._coll.update_many({"recipient": recipient, "_id": {"$in": changed}},
                                             {"$set": {"read": True}}, session=session)
                p.unread, p.ver = max(0, p.unread - len(changed)), p.ver + 1
                await self._save(session, positions)
            return Changed(ids=changed, inbox=p.inbox(recipient), count=len(changed))

        return await self._transaction(work)

    async def mark_all_read(self, recipient: str) -> Changed:
        """Mark every notification of a recipient read; the inbox after (``ids`` stays empty)."""

        async def work(session: AsyncClientSession) -> Changed:
            positions = await self._positions(session, [recipient])
            p = positions[recipient]
            result = await self._coll.update_many({"recipient": recipient, "read": False},
                                                  {"$set": {"read": True}}, session=session)
            if result.modified_count:
                p.unread, p.ver = 0, p.ver + 1
                await self._save(session, positions)
            return Changed(ids=[], inbox=p.inbox(recipient), count=result.modified_count)

        return await self._transaction(work)

    async def delete(self, recipient: str, id_: ObjectId) -> Changed | None:
        """Delete one of a recipient's notifications; None when there is no such one."""

        async def work(session: AsyncClientSession) -> Changed | None:
            doc = await self._coll.find_one({"recipient": recipient, "_id": id_}, _REMOVED, session=session)
            if doc is None:
                return None
            if doc.get("source") is not None:
                # In the same transaction as the deletion: a redelivery never stores it again.
                await self._tombstones.update_one(
                    {"_id": _tombstone(doc["source"], recipient)}, {"$setOnInsert": {"at": utcnow()}},
                    upsert=True, session=session)
            return await self._remove(session, recipient, [doc])

        return await self._transaction(work)

    async def _remove(self, session: AsyncClientSession, recipient: str, docs: Sequence[dict[str, Any]]) -> Changed:
        # `docs` were read in this transaction: each {_id, read, source}.
        positions = await self._positions(session, [recipient])
        ids = [doc["_id"] for doc in docs]
        await self._coll.delete_many({"recipient": recipient, "_id": {"$in": ids}}, session=session)
        sources = list({doc["source"] for doc in docs if doc.get("source") is not None})
        if sources:
            # Its source may store it again (after a deletion, the tombstone says otherwise).
            await self._sources.delete_many({"source": {"$in": sources}, "recipient": recipient}, session=session)
        return await self._counted_out(session, positions, recipient, ids,
                                       unread=sum(1 for doc in docs if not doc.get("read")))

    async def _counted_out(self, session: AsyncClientSession, positions: dict[str, _Position], recipient: str,
                           ids: list[ObjectId], *, unread: int) -> Changed:
        # The inbox after removing ``ids`` (``unread`` of them unread), saved in the same transaction.
        p = positions[recipient]
        p.unread, p.total, p.ver = max(0, p.unread - unread), max(0, p.total - len(ids)), p.ver + 1
        await self._save(session, positions)
        return Changed(ids=ids, inbox=p.inbox(recipient), count=len(ids))

    async def trim(self, recipient: str) -> Changed | None:
        """Keep only the newest ``max_per_user`` notifications of a recipient; None when under the cap."""

        async def work(session: AsyncClientSession) -> Changed | None:
            positions = await self._positions(session, [recipient])
            p = positions[recipient]
            if p.total <= self.max_per_user:
                return None
            # The ids past the cap, from the index alone, and no further than the inbox's count:
            # what earlier trims deleted lies beyond them, and a scan to the end of the user's
            # range would walk those deleted entries again until MongoDB cleans them up.
            ids = [doc["_id"] async for doc in self._coll.find(
                {"recipient": recipient}, {"_id": 1}, session=session).sort("_id", DESCENDING).skip(
                self.max_per_user).limit(p.total - self.max_per_user)]
            if not ids:
                return None
            trimmed = {"recipient": recipient, "_id": {"$lte": ids[0], "$gte": ids[-1]}}
            unread = await self._coll.count_documents({**trimmed, "read": False}, session=session)
            await self._coll.delete_many(trimmed, session=session)
            # The source pairs stay (invariant 5): a redelivery does not bring a trimmed one back.
            return await self._counted_out(session, positions, recipient, ids, unread=unread)

        return await self._transaction(work)

    async def expired_recipients(self, *, limit: int = 1000) -> list[str]:
        """Recipients with notifications older than the retention period.

        The one query of ``notifications`` without a recipient: on a sharded cluster, a
        scatter-gather that every shard answers from its ``retention`` index.
        """
        cutoff = utcnow() - self._retention
        pipeline = [{"$match": {"created_at": {"$lt": cutoff}}}, {"$group": {"_id": "$recipient"}},
                    {"$limit": limit}]
        return [doc["_id"] async for doc in await self._coll.aggregate(pipeline)]

    async def expire(self, recipient: str) -> Changed | None:
        """Delete a recipient's notifications older than the retention period; None when none were."""
        cutoff = utcnow() - self._retention

        async def work(session: AsyncClientSession) -> Changed | None:
            docs = await self._coll.find({"recipient": recipient, "created_at": {"$lt": cutoff}},
                                         _REMOVED, session=session).to_list(None)
            return await self._remove(session, recipient, docs) if docs else None

        return await self._transaction(work)

    # -- reads -----------------------------------------------------------------------------

    async def inboxes(self, users: Sequence[str]) -> dict[str, Inbox]:
        """The inboxes of several users in one round trip (empty ones for users with none)."""
        found = {doc["_id"]: _Position.from_document(doc).inbox(doc["_id"])
                 async for doc in self._inboxes.find({"_id": {"$in": list(users)}})}
        return {user: found.get(user) or Inbox(user=user) for user in users}

    async def inbox(self, user: str) -> Inbox:
        """One user's inbox position and badge."""
        return (await self.inboxes([user]))[user]

    async def by_source(self, source: str) -> list[Notification]:
        """What was stored for one idempotency source, oldest first."""
        found = [n async for batch in self.by_source_batches(source) for n in batch]
        return sorted(found, key=lambda n: n.id)

    async def by_source_batches(self, source: str) -> AsyncIterator[list[Notification]]:
        """What was stored for one idempotency source, COMMIT_BATCH at a time (in recipient
        order), holding one batch in memory whatever the audience."""
        pairs = self._sources.find({"source": source}, {"recipient": 1})
        while chunk := await pairs.to_list(COMMIT_BATCH):
            # By recipient and id: each read goes to the shards that own these recipients.
            query = {"recipient": {"$in": list({doc["recipient"] for doc in chunk})},
                     "_id": {"$in": [doc["_id"] for doc in chunk]}}
            found = [Notification.from_document(doc) async for doc in self._coll.find(query)]
            if found:  # (the pairs of trimmed notifications stay)
                yield found

    async def page(
        self, recipient: str, *, before: ObjectId | None, limit: int, unread_only: bool,
        upto: ObjectId | None = None,
    ) -> list[Notification]:
        """Up to ``limit`` notifications older than ``before`` (and not newer than ``upto``), newest first."""
        query: dict[str, Any] = {"recipient": recipient}
        if unread_only:
            query["read"] = False
        bounds: dict[str, ObjectId] = {}
        if before is not None:
            bounds["$lt"] = before
        if upto is not None:
            bounds["$lte"] = upto
        if bounds:
            query["_id"] = bounds
        cursor = self._coll.find(query).sort("_id", DESCENDING).limit(limit)
        return [Notification.from_document(doc) async for doc in cursor]

    async def after(self, recipient: str, after: ObjectId, *, upto: ObjectId | None = None,
                    limit: int) -> list[Notification]:
        """Up to ``limit`` notifications newer than ``after`` (and not newer than ``upto``), oldest first."""
        bounds: dict[str, ObjectId] = {"$gt": after}
        if upto is not None:
            bounds["$lte"] = upto
        cursor = self._coll.find({"recipient": recipient, "_id": bounds}).sort("_id", ASCENDING).limit(limit)
        return [Notification.from_document(doc) async for doc in cursor]


# What a removal reads of each notification.
_REMOVED = {"_id": 1, "read": 1, "source": 1}


def _repeated(exc: DuplicateKeyError | BulkWriteError) -> bool:
    """Whether a write failed only on a unique key: a repeat committed concurrently."""
    if isinstance(exc, DuplicateKeyError):
        return True
    errors = exc.details.get("writeErrors", [])
    return bool(errors) and all(error.get("code") == _DUPLICATE_KEY for error in errors)


def _tombstone(source: str, recipient: str) -> str:
    # User ids hold no space, so the pair reads back unambiguously.
    return f"{recipient} {source}"
