"""The MongoDB client: PyMongo's native async API, reading from the primary."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from pymongo import AsyncMongoClient, ReadPreference
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from ..settings import Settings

logger = logging.getLogger(__name__)

# Tries of a store's index creation at start-up, a transient failure between two.
INDEX_ATTEMPTS = 5


def connect(settings: Settings, *, app_name: str) -> AsyncMongoClient:
    """A client whose reads go to the primary and whose writes wait for a majority."""
    # Primary reads: a notification written a moment ago must never be missed through
    # replica lag when a socket (re)connects.
    return AsyncMongoClient(
        settings.mongo_url,
        appname=app_name,
        read_preference=ReadPreference.PRIMARY,
        w="majority",
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=3000,
        # A deadline on every operation (client-side operation timeout), transactions included:
        # long enough to ride out an election, short enough that a caller hears of a failure.
        timeoutMS=settings.mongo_timeout_ms,
        tz_aware=True,
    )


def database(client: AsyncMongoClient, settings: Settings) -> AsyncDatabase:
    """The notihub database with the read/write guarantees the service relies on."""
    return client.get_database(
        settings.mongo_db,
        read_preference=ReadPreference.PRIMARY,
        write_concern=WriteConcern(w="majority"),
        read_concern=ReadConcern("local"),
    )


def transient(exc: PyMongoError) -> bool:
    """Whether trying the same operation again later may succeed (an election, a lost connection,
    a deadline), as opposed to an error the same input meets every time."""
    return (isinstance(exc, (ConnectionFailure, ExecutionTimeout, WTimeoutError)) or exc.timeout
            or exc.has_error_label("TransientTransactionError") or exc.has_error_label("RetryableWriteError"))


class Indexed(Protocol):
    async def ensure_indexes(self) -> None: ...


async def ensure_indexes(stores: Iterable[Indexed]) -> None:
    """Every store's indexes (idempotent), each tried again after a transient failure: start-up
    rides out an election or a connection reset in the middle of an index build."""
    for store in stores:
        for attempt in range(1, INDEX_ATTEMPTS + 1):
            try:
                await store.ensure_indexes()
                break
            except PyMongoError as exc:
                if not transient(exc) or attempt == INDEX_ATTEMPTS:
                    raise
                logger.warning("creating the indexes of %s failed (%s); trying again", type(store).__name__, exc)
                await asyncio.sleep(0.5 * attempt)  # pacing the tries, not waiting for an event
