"""The notification repository: one document per recipient."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

from ..models import Notification, utcnow

_DUPLICATE_KEY = 11000
_INDEX_OPTIONS_CONFLICT = 85
_INSERT_BATCH = 1000
# A deleted notification that came from a request or an event is remembered this long (as long
# as an idempotency key is kept), so that a repeat of the one or a redelivery of the other does
# not bring it back.
TOMBSTONE_SECONDS = 24 * 3600


class NotificationStore:
    """Reads and writes the ``notifications`` collection; every query is served by an index."""

    def __init__(self, *, db: AsyncDatabase, retention: dt.timedelta, max_per_user: int) -> None:
        self._db = db
        self._coll = db["notifications"]
        self._tombstones = db["notification_tombstones"]
        self._retention = retention
        self.max_per_user = max_per_user

    async def ensure_indexes(self) -> None:
        """Create the indexes every query below relies on (idempotent)."""
        await self._coll.create_indexes(
            [
                # Inbox pages, replay after `since`, deletes: newest first per recipient.
                IndexModel([("recipient", ASCENDING), ("_id", DESCENDING)], name="recipient_id"),
                # Unread badge and unread-only pages.
                IndexModel(
                    [("recipient", ASCENDING), ("read", ASCENDING), ("_id", DESCENDING)],
                    name="recipient_read_id",
                ),
                # A repeated request or event stores nothing twice.
                IndexModel(
                    [("source", ASCENDING), ("recipient", ASCENDING)],
                    name="source_recipient",
                    unique=True,
                    partialFilterExpression={"source": {"$exists": True}},
                ),
            ]
        )
        await self._tombstones.create_index([("at", ASCENDING)], name="expiry", expireAfterSeconds=TOMBSTONE_SECONDS)
        await self._ensure_retention()

    async def _ensure_retention(self) -> None:
        # MongoDB's TTL monitor deletes notifications older than the retention period.
        expire = int(self._retention.total_seconds())
        try:
            await self._coll.create_index([("created_at", ASCENDING)], name="retention", expireAfterSeconds=expire)
        except OperationFailure as exc:
            if exc.code != _INDEX_OPTIONS_CONFLICT:
                raise
            # The retention setting changed since the index was made: update it in place.
            await self._db.command(
                "collMod", self._coll.name, index={"name": "retention", "expireAfterSeconds": expire}
            )

    async def retention_seconds(self) -> int | None:
        """The TTL of the retention index as MongoDB has it."""
        info = await self._coll.index_information()
        return info.get("retention", {}).get("expireAfterSeconds")

    async def insert(self, notifications: Sequence[Notification]) -> list[Notification]:
        """Store notifications in batches; return those that were new (repeats are skipped)."""
        inserted: list[Notification] = []
        for start in range(0, len(notifications), _INSERT_BATCH):
            batch = await self._not_deleted(notifications[start : start + _INSERT_BATCH])
            if not batch:
                continue
            try:
                await self._coll.insert_many([n.to_document() for n in batch], ordered=False)
                inserted.extend(batch)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                    raise
                duplicates = {e["index"] for e in errors}
                inserted.extend(n for i, n in enumerate(batch) if i not in duplicates)
        return inserted

    async def _not_deleted(self, batch: Sequence[Notification]) -> Sequence[Notification]:
        # One indexed read per batch, and only for notifications of a request or an event.
        keys = [_tombstone(n.source, n.recipient) for n in batch if n.source is not None]
        if not keys:
            return batch
        deleted = {doc["_id"] async for doc in self._tombstones.find({"_id": {"$in": keys}}, {"_id": 1})}
        if not deleted:
            return batch
        return [n for n in batch if n.source is None or _tombstone(n.source, n.recipient) not in deleted]

    async def by_source(self, source: str) -> list[tuple[ObjectId, str]]:
        """Ids and recipients stored for one idempotency source."""
        cursor = self._coll.find({"source": source}, {"_id": 1, "recipient": 1}).sort("_id", ASCENDING)
        return [(doc["_id"], doc["recipient"]) async for doc in cursor]

    async def page(
        self, recipient: str, *, before: ObjectId | None, limit: int, unread_only: bool
    ) -> list[Notification]:
        """Up to ``limit`` notifications older than ``before``, newest first."""
        query: dict[str, Any] = {"recipient": recipient}
        if unread_only:
            query["read"] = False
        if before is not None:
            query["_id"] = {"$lt": before}
        cursor = self._coll.find(query).sort("_id", DESCENDING).limit(limit)
        return [Notification.from_document(doc) async for doc in cursor]

    async def after(self, recipient: str, after: ObjectId, *, limit: int) -> list[Notification]:
        """Up to ``limit`` notifications newer than ``after``, oldest first."""
        cursor = (
            self._coll.find({"recipient": recipient, "_id": {"$gt": after}})
            .sort("_id", ASCENDING)
            .limit(limit)
        )
        return [Notification.from_document(doc) async for doc in cursor]

    async def unread_count(self, recipient: str) -> int:
        """How many unread notifications a recipient has."""
        return await self._coll.count_documents({"recipient": recipient, "read": False})

    async def unread_counts(self, recipients: Sequence[str]) -> dict[str, int]:
        """Unread counts of several recipients in one round trip (0 for those with none)."""
        pipeline = [
            {"$match": {"recipient": {"$in": list(recipients)}, "read": False}},
            {"$group": {"_id": "$recipient", "n": {"$sum": 1}}},
        ]
        counts = dict.fromkeys(recipients, 0)
        async for doc in await self._coll.aggregate(pipeline):
            counts[doc["_id"]] = doc["n"]
        return counts

    async def trim(self, recipients: Sequence[str]) -> int:
        """Keep only the newest ``max_per_user`` notifications of each recipient; return how many went."""
        cap = self.max_per_user
        over = self._coll.aggregate([
            {"$match": {"recipient": {"$in": list(recipients)}}},
            {"$group": {"_id": "$recipient", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": cap}}},
        ])
        removed = 0
        async for doc in await over:
            # The newest notification that falls outside the cap, and everything older.
            boundary = await self._coll.find({"recipient": doc["_id"]}, {"_id": 1}).sort(
                "_id", DESCENDING).skip(cap).limit(1).to_list(1)
            if boundary:
                result = await self._coll.delete_many({"recipient": doc["_id"], "_id": {"$lte": boundary[0]["_id"]}})
                removed += result.deleted_count
        return removed

    async def mark_read(self, recipient: str, ids: Sequence[ObjectId]) -> list[ObjectId]:
        """Mark some of a recipient's notifications read; return the ids that changed."""
        query = {"recipient": recipient, "_id": {"$in": list(ids)}, "read": False}
        changed = [doc["_id"] async for doc in self._coll.find(query, {"_id": 1})]
        if changed:
            await self._coll.update_many(
                {"recipient": recipient, "_id": {"$in": changed}, "read": False}, {"$set": {"read": True}}
            )
        return changed

    async def mark_all_read(self, recipient: str) -> int:
        """Mark every notification of a recipient read; return how many changed."""
        result = await self._coll.update_many({"recipient": recipient, "read": False}, {"$set": {"read": True}})
        return result.modified_count

    async def delete(self, recipient: str, id_: ObjectId) -> bool:
        """Delete one of a recipient's notifications; False when there is no such one."""
        doc = await self._coll.find_one({"recipient": recipient, "_id": id_}, {"source": 1})
        if doc is None:
            return False
        if doc.get("source") is not None:
            # First the tombstone, then the deletion: never a moment when a redelivery could
            # store it again.
            await self._tombstones.update_one(
                {"_id": _tombstone(doc["source"], recipient)}, {"$setOnInsert": {"at": utcnow()}}, upsert=True
            )
        result = await self._coll.delete_one({"recipient": recipient, "_id": id_})
        return result.deleted_count == 1


def _tombstone(source: str, recipient: str) -> str:
    # User ids hold no space, so the pair reads back unambiguously.
    return f"{recipient} {source}"
