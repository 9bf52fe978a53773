"""Idempotency claims: the first use of a key records what the request was."""
from __future__ import annotations

import datetime as dt

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..models import utcnow


class IdempotencyStore:
    """The ``idempotency_keys`` collection; claims expire after a configured time."""

    def __init__(self, *, db: AsyncDatabase, keep_hours: int) -> None:
        self._coll = db["idempotency_keys"]
        self._keep = dt.timedelta(hours=keep_hours)

    async def ensure_indexes(self) -> None:
        """TTL index so claims are kept for the configured time."""
        await self._coll.create_indexes(
            [IndexModel([("created_at", ASCENDING)], name="expiry", expireAfterSeconds=int(self._keep.total_seconds()))]
        )

    async def claim(self, key: str, fingerprint: str) -> tuple[str, bool] | None:
        """Claim a key; None when it is new, else its first request's fingerprint and whether
        that request finished."""
        try:
            await self._coll.insert_one({"_id": key, "fingerprint": fingerprint, "done": False, "created_at": utcnow()})
            return None
        except DuplicateKeyError:
            doc = await self._coll.find_one({"_id": key})
            # The claim may have expired between the insert and the read: treat it as ours.
            return (doc["fingerprint"], bool(doc.get("done"))) if doc else (fingerprint, False)

    async def complete(self, key: str) -> None:
        """Record that the request under ``key`` stored everything it had to."""
        await self._coll.update_one({"_id": key}, {"$set": {"done": True}})
