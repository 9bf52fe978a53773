"""The event bus: Redis pub/sub channels that carry what socket workers must push.

Serialisation is kept apart from the Redis calls (encode/decode below), so the same
messages can be tested without a server and carried by another broker later.

Targeted delivery: every socket worker listens on a channel of its own,
``<prefix>:bus:<worker id>``. After a commit, the announcer looks up which workers hold each
recipient (one script over the recipients' presence keys, shared/presence.py), and publishes to
each worker only its recipients' items and the contents they need; a recipient with no socket
anywhere costs no publish. A read-state change or a deletion goes to the workers of its user.
With NOTIHUB_BUS_TARGETED=0 the announcer publishes everything on the shared channel
``<prefix>:events`` instead, which every worker listens to as well (so processes with either
setting, as during a rolling upgrade, still reach every worker).

Why targeting loses nothing (tests/socket_server/test_targeted.py):

1. A socket's lease is written (presence admit) before its sync reads the inbox snapshot from
   the primary, and the lookup of a commit's recipients happens after the commit. So a commit
   either precedes the snapshot (the socket gets it in ``init`` or the replay), or its lookup
   sees the new lease and the worker gets it live (held until the sync is done, see
   socket_server/hub.py). Should it reach the worker before the socket is attached to the hub,
   the snapshot, read after the attachment, has it.
2. When the lookup or a publish fails, ``announce`` still never raises: the commit stands, and
   the workers find it in MongoDB at their position check.
3. After a Redis restart, leases and subscriptions are gone: the listener subscribes again and
   yields a Gap, and the worker writes its sockets' leases again *before* its position check.
   A commit whose lookup came before the leases were back is found by that check; any later
   commit finds the leases.

On a single Redis, the lookup and the publishes of a small commit (at most ROUTE_MAX_ITEMS
items, one message's worth) are one script, ``_ROUTE``: one round trip instead of two, the same
messages byte for byte (``route_args``), and the lookup still after the commit. A change of one
user's inbox is routed the same way (``_FORWARD``). Larger commits, and a cluster (whose presence
keys and channels live on several shards), look up first and then publish.

On a Redis Cluster the channels are shard channels (shared/redisconn.py): a worker's channel
lives on one master; when that master fails over, the subscription fails and comes back as in 3.

The bus is a fast path only: what it loses, workers find again from MongoDB (every message
carries positions, see storage/notifications.py). A subscription that hears nothing, not even
the heartbeat every listener publishes on its own channel, for ``deaf_after`` seconds is treated
as lost: the listener subscribes again and yields a Gap.
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
from bson import ObjectId
from redis.exceptions import RedisError

from . import metrics, redisconn
from .models import Actor, Notification, Stored, iso
from .presence import WORKERS_OF_LUA, Presence

logger = logging.getLogger(__name__)

# A message stays below this many bytes (split by size, not by count), far below Redis's
# pub/sub output-buffer limits, so one huge fan-out never stalls or drops a subscriber.
MAX_MESSAGE_BYTES = 256 * 1024
# What one recipient adds to a message besides the content: [content, recipient, id, seq, unread, ver].
_ITEM_BYTES = 120
_PING = orjson.dumps({"kind": "ping"})
# A commit of at most this many items is looked up and published by one script (single Redis).
ROUTE_MAX_ITEMS = 64

# KEYS: the presence keys of a commit's users. ARGV: now, the channel prefix, the number of
# contents C, the C encoded contents, then per item its user (index into KEYS), its content
# (index into the contents) and the rest of its JSON after the content index. Publishes to each
# worker holding a user its message, as delivered_messages would make it; returns how many.
_ROUTE = WORKERS_OF_LUA + """
local now, prefix, ncontents = ARGV[1], ARGV[2], tonumber(ARGV[3])
local holders = {}
for i, key in ipairs(KEYS) do holders[i] = workers_of(key, now) end
local order, messages = {}, {}
for j = 4 + ncontents, #ARGV, 3 do
  local content = tonumber(ARGV[j + 1])
  for _, worker in ipairs(holders[tonumber(ARGV[j])]) do
    local m = messages[worker]
    if not m then
      m = {contents = {}, index = {}, items = {}}
      messages[worker] = m
      order[#order + 1] = worker
    end
    local at = m.index[content]
    if not at then
      at = #m.contents
      m.index[content] = at
      m.contents[at + 1] = ARGV[4 + content]
    end
    m.items[#m.items + 1] = '[' .. at .. ',' .. ARGV[j + 2]
  end
end
for _, worker in ipairs(order) do
  local m = messages[worker]
  redis.call('PUBLISH', prefix .. worker, '{"kind":"delivered","contents":[' .. table.concat(m.contents, ',')
    .. '],"items":[' .. table.concat(m.items, ',') .. ']}')
end
return #order
"""

# KEYS[1]: one user's presence key. ARGV: now, the channel prefix, the message for each worker
# holding the user. Returns how many workers got it.
_FORWARD = WORKERS_OF_LUA + """
local workers = workers_of(KEYS[1], ARGV[1])
for _, worker in ipairs(workers) do redis.call('PUBLISH', ARGV[2] .. worker, ARGV[3]) end
return #workers
"""


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


def _encoded(n: Notification, encoded: dict[tuple[Any, ...], bytes]) -> tuple[tuple[Any, ...], bytes]:
    key = _content_key(n)
    body = encoded.get(key)
    if body is None:
        body = encoded[key] = orjson.dumps(_content_wire(n))
    return key, body


def route_args(stored: Sequence[Stored]) -> tuple[list[str], list[bytes | str]] | None:
    """The users and the arguments of ``_ROUTE`` (after ``now`` and the prefix) for a commit, or
    None when its items and contents would not fit in one message."""
    users: dict[str, int] = {}
    index: dict[tuple[Any, ...], int] = {}
    contents: list[bytes] = []
    items: list[bytes | str] = []
    size = 64
    encoded: dict[tuple[Any, ...], bytes] = {}
    for s in stored:
        n = s.notification
        key, body = _encoded(n, encoded)
        at = index.get(key)
        if at is None:
            at = index[key] = len(contents)
            contents.append(body)
            size += len(body) + 1
        rest = orjson.dumps([n.recipient, str(n.id), s.seq, s.unread, s.ver])[1:]
        size += len(rest) + 8
        items += (str(users.setdefault(n.recipient, len(users) + 1)), str(at), rest)
    if size > MAX_MESSAGE_BYTES:
        return None
    return list(users), [str(len(contents)), *contents, *items]


def delivered_messages(stored: Sequence[Stored], encoded: dict[tuple[Any, ...], bytes] | None = None) -> list[bytes]:
    """New notifications as bus messages of at most MAX_MESSAGE_BYTES (unless one content alone is
    larger). ``encoded`` keeps each content's JSON for the next call (the other workers' messages
    of one commit), so that a content is encoded once however many workers get it."""
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

    encoded = {} if encoded is None else encoded
    for s in stored:
        n = s.notification
        key, body = _encoded(n, encoded)
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
    """Publishes events to the workers that hold their users; each worker listens to its own channel."""

    def __init__(self, *, redis: redisconn.Client, prefix: str, presence: Presence | None = None,
                 heartbeat: float = 1.0, deaf_after: float = 3.0, timeout: float = 5.0) -> None:
        self._redis = redis
        self._prefix = prefix
        # None: every event on the shared channel, for every worker (NOTIHUB_BUS_TARGETED=0).
        self._presence = presence
        self.channel = f"{prefix}:events"
        self.heartbeat = heartbeat
        self.deaf_after = deaf_after
        self.timeout = timeout
        # Lookup and publish in one script: on a single Redis only (see the module's docstring).
        self.route_max_items = 0 if presence is None or redisconn.is_cluster(redis) else ROUTE_MAX_ITEMS
        self._route = redis.register_script(_ROUTE)
        self._forward = redis.register_script(_FORWARD)

    def channel_of(self, worker: str) -> str:
        """The channel only ``worker`` listens to."""
        return f"{self._prefix}:bus:{worker}"

    async def _send(self, messages: Sequence[tuple[str, bytes]]) -> None:
        # Every message of one announcement in one round trip, in order per channel.
        if not messages:
            return
        async with asyncio.timeout(self.timeout):
            await redisconn.publish(self._redis, messages)

    async def publish(self, event: Change) -> None:
        """Send one change to the workers of its user (within the bus's deadline)."""
        message = encode(event)
        if self._presence is None:
            await self._send([(self.channel, message)])
            return
        async with asyncio.timeout(self.timeout):
            if self.route_max_items:
                await self._forward(keys=[self._presence.key(event.user)],
                                    args=[time.time(), self.channel_of(""), message])
                return
            workers = (await self._presence.workers([event.user])).get(event.user, ())
        await self._send([(self.channel_of(w), message) for w in sorted(workers)])

    async def deliver(self, stored: Sequence[Stored]) -> int:
        """Publish committed notifications, in as few messages as fit; return how many were sent."""
        routed = route_args(stored) if len(stored) <= self.route_max_items else None
        if routed is not None:
            users, args = routed
            async with asyncio.timeout(self.timeout):
                return await self._route(keys=[self._presence.key(u) for u in users],
                                         args=[time.time(), self.channel_of(""), *args])
        if self._presence is None:
            messages = [(self.channel, m) for m in delivered_messages(stored)]
        else:
            async with asyncio.timeout(self.timeout):
                holders = await self._presence.workers([s.notification.recipient for s in stored])
            encoded: dict[tuple[Any, ...], bytes] = {}
            messages = [(self.channel_of(worker), m) for worker, own in _by_worker(stored, holders).items()
                        for m in delivered_messages(own, encoded)]
        await self._send(messages)
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
            logger.warning("could not announce a committed change (%s); workers will find it in MongoDB", exc)

    async def listen(
        self, worker: str, *, ready: asyncio.Event | None = None, max_backoff: float = 5.0
    ) -> AsyncIterator[Event | Gap]:
        """Yield the events of ``worker`` (its own channel and the shared one) forever; after a
        lost (or silent) subscription, subscribe again and yield a Gap."""
        own = self.channel_of(worker)
        # Received bytes and messages are counted by channel (heartbeats are not counted).
        labels = {own.encode(): "worker", self.channel.encode(): "shared"}
        backoff = 0.1
        lost = False
        while True:
            pinger: asyncio.Task[None] | None = None
            try:
                async with redisconn.subscribe(self._redis, [own, self.channel], timeout=self.timeout) as subscription:
                    pinger = asyncio.create_task(self._ping(own))
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
                        message = await subscription.get(timeout=self.heartbeat)
                        now = time.monotonic()
                        if message is None:
                            if now - heard > self.deaf_after:
                                raise TimeoutError(f"nothing heard on {own} for {now - heard:.1f}s")
                            continue
                        heard = now
                        channel, data = message
                        if data == _PING:
                            continue
                        label = labels.get(channel, "shared")
                        metrics.BUS_RECEIVED_BYTES.labels(label).inc(len(data))
                        metrics.BUS_RECEIVED_MESSAGES.labels(label).inc()
                        try:
                            event = decode(data)
                        except ValueError:
                            logger.exception("dropping a malformed message on %s", channel)
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

    async def _ping(self, channel: str) -> None:
        # Heard by this listener only: silence means a deaf subscription.
        while True:
            try:
                await self._send([(channel, _PING)])
            except (RedisError, OSError, TimeoutError) as exc:
                logger.debug("bus heartbeat not sent: %s", exc)
            await asyncio.sleep(self.heartbeat)


def _by_worker(stored: Sequence[Stored], holders: dict[str, set[str]]) -> dict[str, list[Stored]]:
    """The notifications each worker must get, in commit order: those of the users it holds."""
    grouped: dict[str, list[Stored]] = {}
    for s in stored:
        for worker in holders.get(s.notification.recipient, ()):
            grouped.setdefault(worker, []).append(s)
    return grouped
