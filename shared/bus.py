"""The event bus: one Redis pub/sub channel that carries what socket workers must push.

Serialisation is kept apart from the Redis calls (encode/decode below), so the same
messages can be tested without a server and carried by another broker later.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .models import Notification

logger = logging.getLogger(__name__)

# Messages hold at most this many notifications, so one huge fan-out never becomes one
# multi-megabyte message that stalls every worker's listener.
CHUNK = 500


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """New notifications to push to their recipients' sockets."""

    notifications: list[Notification]


@dataclasses.dataclass(frozen=True, slots=True)
class ReadChanged:
    """A user's read state changed."""

    user: str
    ids: list[str]
    all: bool
    unread_count: int


@dataclasses.dataclass(frozen=True, slots=True)
class Deleted:
    """Some of a user's notifications were deleted."""

    user: str
    ids: list[str]
    unread_count: int


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    """The subscription was lost and is back: events in between may be missing."""


Event = Delivered | ReadChanged | Deleted


def encode(event: Event) -> bytes:
    """One event as a JSON message."""
    if isinstance(event, Delivered):
        body: dict[str, Any] = {"kind": "delivered", "items": [n.to_wire() for n in event.notifications]}
    elif isinstance(event, ReadChanged):
        body = {"kind": "read", **dataclasses.asdict(event)}
    else:
        body = {"kind": "deleted", **dataclasses.asdict(event)}
    return orjson.dumps(body)


def decode(message: bytes | str) -> Event:
    """Parse a message made by encode; raises ValueError on anything else."""
    try:
        body = orjson.loads(message)
        kind = body.pop("kind")
        if kind == "delivered":
            return Delivered([Notification.from_wire(item) for item in body["items"]])
        if kind == "read":
            return ReadChanged(**body)
        if kind == "deleted":
            return Deleted(**body)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed bus message: {exc}") from exc
    raise ValueError(f"unknown bus message kind {kind!r}")


class EventBus:
    """Publishes events on one channel; every socket worker listens to all of it."""

    def __init__(self, *, redis: aioredis.Redis, channel: str) -> None:
        self._redis = redis
        self.channel = channel

    async def publish(self, event: Event) -> None:
        """Send one event to every listening worker."""
        await self._redis.publish(self.channel, encode(event))

    async def deliver(self, notifications: Sequence[Notification]) -> int:
        """Publish new notifications in chunks; return how many messages were sent."""
        sent = 0
        for start in range(0, len(notifications), CHUNK):
            await self.publish(Delivered(list(notifications[start : start + CHUNK])))
            sent += 1
        return sent

    async def listen(
        self, *, ready: asyncio.Event | None = None, max_backoff: float = 5.0
    ) -> AsyncIterator[Event | Gap]:
        """Yield events forever; reconnects with capped backoff and then yields a Gap."""
        backoff = 0.1
        lost = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if ready is not None:
                    ready.set()
                backoff = 0.1
                if lost:
                    # Pub/sub does not keep what was sent while we were away: let the
                    # listener catch its sockets up from MongoDB.
                    lost = False
                    yield Gap()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        yield decode(message["data"])
                    except ValueError:
                        logger.exception("dropping a malformed message on %s", self.channel)
            except (RedisError, OSError) as exc:
                lost = True
                logger.warning("event bus connection lost (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
            finally:
                try:
                    await pubsub.aclose()
                except RedisError:
                    pass
