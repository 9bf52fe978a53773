"""What each user does not want to be notified of."""
from __future__ import annotations

from collections.abc import Sequence

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase


class PreferenceStore:
    """``disabled_types`` of each user, kept in the user's inbox document (``inboxes``).

    There, the transaction that stores notifications reads them with the inbox positions, at no
    extra cost, and a change of preferences conflicts with a commit in flight for that user
    instead of racing it (see storage/notifications.py).
    """

    def __init__(self, *, db: AsyncDatabase) -> None:
        self._coll = db["inboxes"]
        self._legacy = db["preferences"]

    async def ensure_indexes(self) -> None:
        """Move preferences kept by earlier versions (a collection of their own) into the inboxes."""
        moved = [UpdateOne({"_id": doc["_id"]}, {"$set": {"disabled_types": doc.get("disabled_types", [])}},
                           upsert=True) async for doc in self._legacy.find()]
        if moved:
            await self._coll.bulk_write(moved, ordered=False)
            await self._legacy.drop()

    async def get(self, user: str) -> list[str]:
        """The types a user disabled."""
        doc = await self._coll.find_one({"_id": user}, {"disabled_types": 1})
        return list(doc.get("disabled_types", [])) if doc else []

    async def put(self, user: str, disabled_types: Sequence[str]) -> list[str]:
        """Replace a user's disabled types."""
        types = sorted(set(disabled_types))
        await self._coll.update_one({"_id": user}, {"$set": {"disabled_types": types}}, upsert=True)
        return types
