"""Topic subscriptions: which users a topic fans out to."""
from __future__ import annotations

from collections.abc import AsyncIterator

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase


class TopicStore:
    """The ``topic_subscribers`` collection: one document per (topic, user)."""

    def __init__(self, *, db: AsyncDatabase) -> None:
        self._coll = db["topic_subscribers"]

    async def ensure_indexes(self) -> None:
        """Subscribers of a topic in user order; one document per pair."""
        await self._coll.create_indexes(
            [IndexModel([("topic", ASCENDING), ("user", ASCENDING)], name="topic_user", unique=True),
             IndexModel([("user", ASCENDING)], name="user")]
        )

    async def subscribe(self, topic: str, user: str) -> None:
        """Add a subscriber (idempotent)."""
        await self._coll.update_one({"topic": topic, "user": user},
                                    {"$setOnInsert": {"topic": topic, "user": user}}, upsert=True)

    async def unsubscribe(self, topic: str, user: str) -> None:
        """Remove a subscriber (idempotent)."""
        await self._coll.delete_one({"topic": topic, "user": user})

    async def page(self, topic: str, *, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` subscribers after ``after``, in user order."""
        query: dict = {"topic": topic}
        if after is not None:
            query["user"] = {"$gt": after}
        cursor = self._coll.find(query, {"_id": 0, "user": 1}).sort("user", ASCENDING).limit(limit)
        return [doc["user"] async for doc in cursor]

    async def batches(self, topic: str, *, size: int) -> AsyncIterator[list[str]]:
        """Every subscriber, ``size`` at a time, holding at most one batch in memory."""
        after = None
        while True:
            batch = await self.page(topic, after=after, limit=size)
            if not batch:
                return
            yield batch
            if len(batch) < size:
                return
            after = batch[-1]
