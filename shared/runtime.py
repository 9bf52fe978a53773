"""Opening and closing the resources every notihub process shares."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import redisconn
from .bus import EventBus
from .presence import Presence
from .service import NotificationService
from .settings import Settings
from .storage.idempotency import IdempotencyStore
from .storage.mongo import connect, database, ensure_indexes, transient
from .storage.notifications import NotificationStore
from .storage.preferences import PreferenceStore
from .storage.topics import TopicStore


@dataclasses.dataclass(frozen=True, slots=True)
class Runtime:
    """Live clients and the service built on them."""

    settings: Settings
    mongo: AsyncMongoClient
    db: AsyncDatabase
    redis: redisconn.Client
    bus: EventBus
    service: NotificationService

    async def health(self, timeout: float = 2.0) -> dict[str, bool]:
        """Whether each backing service answers, within ``timeout`` seconds."""

        async def mongo_ok() -> bool:
            await self.mongo.admin.command("ping")
            return True

        async def redis_ok() -> bool:
            return bool(await self.redis.ping())

        checks = {"mongodb": mongo_ok(), "redis": redis_ok()}
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                results[name] = await asyncio.wait_for(check, timeout)
            except (asyncio.TimeoutError, PyMongoError, RedisError, OSError):
                results[name] = False
        return results


def services_fault(exc: BaseException) -> bool:
    """Whether an error came from a backing service that may be back soon (an election, a
    deadline, a lost connection), so that the same call later may succeed; otherwise it is a
    defect, or an error the same input meets every time."""
    if isinstance(exc, PyMongoError):
        return transient(exc)
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)


def connect_redis(settings: Settings, *, max_connections: int = 256) -> redisconn.Client:
    """A Redis (or Redis Cluster) client with deadlines, that retries a command once its
    connection broke (shared/redisconn.py)."""
    return redisconn.connect(settings.redis_url, timeout=settings.redis_timeout, max_connections=max_connections)


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, *, app_name: str) -> AsyncIterator[Runtime]:
    """Connect to MongoDB and Redis, make sure the indexes exist, and close both at the end."""
    mongo = connect(settings, app_name=app_name)
    redis = connect_redis(settings)
    service: NotificationService | None = None
    try:
        db = database(mongo, settings)
        store = NotificationStore(db=db, retention=settings.retention, max_per_user=settings.max_per_user)
        idempotency = IdempotencyStore(db=db, keep_hours=settings.idempotency_hours)
        topics = TopicStore(db=db)
        preferences = PreferenceStore(db=db)
        await ensure_indexes((store, idempotency, topics, preferences))
        presence = Presence(redis=redis, prefix=settings.channel_prefix) if settings.bus_targeted else None
        bus = EventBus(redis=redis, prefix=settings.channel_prefix, presence=presence, timeout=settings.redis_timeout)
        service = NotificationService(store=store, idempotency=idempotency, topics=topics,
                                      preferences=preferences, bus=bus)
        yield Runtime(settings=settings, mongo=mongo, db=db, redis=redis, bus=bus, service=service)
    finally:
        if service is not None:
            await service.close()
        await redis.aclose()
        await mongo.close()
