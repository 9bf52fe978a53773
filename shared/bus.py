"""The event bus: one Redis pub/sub channel that carries what socket workers must push.

Serialisation is kept apart from the Redis calls (encode/decode below), so the same
messages can be tested without a server and carried by another broker later.

The bus is a fast path only: what it loses, workers find again from MongoDB (every message
carries positions, see storage/notifications.py). A subscription that hears nothing, not even
the heartbeat every listener publishes, for ``deaf_after`` seconds is treated as lost: the
listener subscribes again and yields a Gap.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from bson import ObjectId
from redis.exceptions import RedisError

from . import metrics
from .models import Actor, Notification, Stored, iso

logger = logging.getLogger(__name__)

# A message stays below this many bytes (split by size, not by count), far below Redis's
# pub/sub output-buffer limits, so one huge fan-out never stalls or drops a subscriber.
MAX_MESSAGE_BYTES = 256 * 1024
# What one recipient adds to a message besides the content: [content, recipient, id, seq, unread, ver].
_ITEM_BYTES = 120
_PING = orjson.dumps({"kind": "ping"})


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One notification of one recipient: its content is ``Delivered.contents[content]``."""

    content: int
    recipient: str
    id: ObjectId
    seq: int
    unread: int
    ver: int


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """New notifications: each content once, with the recipients that got it."""

    contents: list[Notification]
    items: list[Item]

    def notifications(self) -> list[Notification]:
        """Each item as a full notification of its recipient."""
        return [dataclasses.replace(self.contents[i.content], id=i.id, recipient=i.recipient) for i in self.items]


@dataclasses.dataclass(frozen=True, slots=True)
class ReadChanged:
    """A user's read state changed."""

    user: str
    ids: list[str]
    all: bool
    unread_count: int
    ver: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Deleted:
    """Some of a user's notifications were deleted."""

    user: str
    ids: list[str]
    unread_count: int
    ver: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    """The subscription was lost and is back: events in between may be missing."""


Change = ReadChanged | Deleted
Event = Delivered | Change


def _content_key(n: Notification) -> tuple[Any, ...]:
    # The notifications of one request share their texts and data objects: identity finds them.
    return (n.type, n.created_at, n.url, id(n.actor), id(n.title), id(n.body), id(n.params), id(n.data))


def _content_wire(n: Notification) -> dict[str, Any]:
    return {"type": n.type, "actor": n.actor.to_dict() if n.actor else None, "title": n.title, "body": n.body,
            "url": n.url, "params": n.params, "data": n.data, "created_at": iso(n.created_at)}


def _content_from_wire(wire: dict[str, Any]) -> Notification:
    actor = wire.get("actor")
    return Notification(
        id=ObjectId(b"\0" * 12), type=wire["type"], recipient="",
        actor=Actor(id=actor["id"], name=actor.get("name")) if actor else None,
        created_at=dt.datetime.fromisoformat(wire["created_at"].replace("Z", "+00:00")),
        title=wire.get("title"), body=wire.get("body"), url=wire.get("url"),
        params=wire.get("params") or {}, data=wire.get("data") or {},
    )


def delivered_messages(stored: Sequence[Stored]) -> list[bytes]:
    """New notifications as bus messages of at most MAX_MESSAGE_BYTES (unless one content alone is larger)."""
    messages: list[bytes] = []
    contents: list[bytes] = []
    index: dict[tuple[Any, ...], int] = {}
    items: list[list[Any]] = []
    size = 0

    def flush() -> None:
        nonlocal contents, index, items, size
        if items:
            messages.append(b'{"kind":"delivered","contents":[' + b",".join(contents) + b'],"items":'
                            + orjson.dumps(items) + b"}")
        contents, index, items, size = [], {}, [], 0

    encoded: dict[tuple[Any, ...], bytes] = {}
    for s in stored:
        n = s.notification
        key = _content_key(n)
        body = encoded.get(key)
        if body is None:
            body = encoded[key] = orjson.dumps(_content_wire(n))
        item = _ITEM_BYTES + len(n.recipient)
        if items and size + item + (0 if key in index else len(body)) > MAX_MESSAGE_BYTES:
            flush()
        need = item + (0 if key in index else len(body))
        if key not in index:
            index[key] = len(contents)
            contents.append(body)
        items.append([index[key], n.recipient, str(n.id), s.seq, s.unread, s.ver])
        size += need
    flush()
    return messages


def encode(event: Change) -> bytes:
    """A change of one user's inbox as a JSON message (new notifications: delivered_messages)."""
    kind = "read" if isinstance(event, ReadChanged) else "deleted"
    return orjson.dumps({"kind": kind, **dataclasses.asdict(event)})


def decode(message: bytes | str) -> Event | None:
    """Parse a message made by encode (None for a heartbeat); raises ValueError on anything else."""
    try:
        body = orjson.loads(message)
        kind = body.pop("kind")
        if kind == "delivered":
            contents = [_content_from_wire(c) for c in body["contents"]]
            items = [Item(content=c, recipient=r, id=ObjectId(i), seq=s, unread=u, ver=v)
                     for c, r, i, s, u, v in body["items"]]
            if any(not 0 <= i.content < len(contents) for i in items):
                raise ValueError("an item names no content")
            return Delivered(contents, items)
        if kind == "read":
            return ReadChanged(**body)
        if kind == "deleted":
            return Deleted(**body)
        if kind == "ping":
            return None
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"malformed bus message: {exc}") from exc
    raise ValueError(f"unknown bus message kind {kind!r}")


class EventBus:
    """Publishes events on one channel; every socket worker listens to all of it."""

    def __init__(self, *, redis: aioredis.Redis, channel: str, heartbeat: float = 1.0, deaf_after: float = 3.0,
                 timeout: float = 5.0) -> None:
        self._redis = redis
        self.channel = channel
        self.heartbeat = heartbeat
        self.deaf_after = deaf_after
        self.timeout = timeout

    async def _send(self, message: bytes) -> None:
        async with asyncio.timeout(self.timeout):
            await self._redis.publish(self.channel, message)

    async def publish(self, event: Change) -> None:
        """Send one change to every listening worker (within the bus's deadline)."""
        await self._send(encode(event))

    async def deliver(self, stored: Sequence[Stored]) -> int:
        """Publish committed notifications, in as few messages as fit; return how many were sent."""
        messages = delivered_messages(stored)
        for message in messages:
            await self._send(message)
        return len(messages)

    async def announce(self, what: Change | Sequence[Stored]) -> None:
        """Publish what is already committed: a failure is counted and logged, never raised.

        Nothing is lost by it: workers find what the bus did not carry in MongoDB, at the
        recipient's next notification, at their position check or after a bus gap."""
        try:
            if isinstance(what, ReadChanged | Deleted):
                await self.publish(what)
            elif what:
                await self.deliver(what)
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.BUS_PUBLISH_FAILURES.inc()
            logger.warning("could not announce a committed change on %s (%s); workers will find it in MongoDB",
                           self.channel, exc)

    async def listen(
        self, *, ready: asyncio.Event | None = None, max_backoff: float = 5.0
    ) -> AsyncIterator[Event | Gap]:
        """Yield events forever; after a lost (or silent) subscription, subscribe again and yield a Gap."""
        backoff = 0.1
        lost = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            pinger: asyncio.Task[None] | None = None
            try:
                async with asyncio.timeout(self.timeout):
                    await pubsub.subscribe(self.channel)
                pinger = asyncio.create_task(self._ping())
                if ready is not None:
                    ready.set()
                backoff = 0.1
                if lost:
                    # Pub/sub does not keep what was sent while we were away: let the
                    # listener catch its sockets up from MongoDB.
                    lost = False
                    yield Gap()
                heard = time.monotonic()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.heartbeat)
                    now = time.monotonic()
                    if message is None or message.get("type") != "message":
                        if now - heard > self.deaf_after:
                            raise TimeoutError(f"nothing heard on {self.channel} for {now - heard:.1f}s")
                        continue
                    heard = now
                    try:
                        event = decode(message["data"])
                    except ValueError:
                        logger.exception("dropping a malformed message on %s", self.channel)
                        continue
                    if event is not None:
                        yield event
            except (RedisError, OSError, TimeoutError) as exc:
                lost = True
                logger.warning("event bus subscription lost (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
            finally:
                if pinger is not None:
                    pinger.cancel()
                try:
                    async with asyncio.timeout(1):
                        await pubsub.aclose()
                except (RedisError, OSError, TimeoutError):
                    pass

    async def _ping(self) -> None:
        # Heard by every listener, this one included: silence means a deaf subscription.
        while True:
            try:
                await self._send(_PING)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.debug("bus heartbeat not sent: %s", exc)
            await asyncio.sleep(self.heartbeat)
