"""What each user does not want to be notified of."""
from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase


class PreferenceStore:
    """The ``preferences`` collection: ``{_id: user, disabled_types: [...]}``."""

    def __init__(self, *, db: AsyncDatabase) -> None:
        self._coll = db["preferences"]

    async def get(self, user: str) -> list[str]:
        """The types a user disabled."""
        doc = await self._coll.find_one({"_id": user})
        return list(doc.get("disabled_types", [])) if doc else []

    async def put(self, user: str, disabled_types: Sequence[str]) -> list[str]:
        """Replace a user's disabled types."""
        types = sorted(set(disabled_types))
        await self._coll.update_one({"_id": user}, {"$set": {"disabled_types": types}}, upsert=True)
        return types

    async def opted_out(self, users: Sequence[str], type_: str) -> set[str]:
        """Which of ``users`` disabled ``type_`` (one query per batch)."""
        cursor = self._coll.find({"_id": {"$in": list(users)}, "disabled_types": type_}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}
