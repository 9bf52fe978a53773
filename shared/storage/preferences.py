"""What each user does not want to be notified of."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

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

    async def opted_out_of(self, wanted: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (user, type) pairs a user disabled, in one query for any number of pairs."""
        pairs = set(wanted)
        users = list({user for user, _ in pairs})
        types = list({type_ for _, type_ in pairs})
        cursor = self._coll.find({"_id": {"$in": users}, "disabled_types": {"$in": types}}, {"disabled_types": 1})
        refused = {(doc["_id"], t) async for doc in cursor for t in doc.get("disabled_types", [])}
        return pairs & refused
