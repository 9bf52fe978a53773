"""Redis or Redis Cluster, behind the few calls notihub makes: connect, publish, subscribe.

``NOTIHUB_REDIS_URL`` names one server (``redis://``, ``rediss://``, ``unix://``) or a cluster:
``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS),
every host a seed from which the client learns the cluster's layout.

On a cluster:

- Pub/sub is sharded (SPUBLISH/SSUBSCRIBE): a channel lives on the shard that owns its hash slot,
  so each worker's channel costs one shard, not the whole cluster (plain PUBLISH is copied to
  every node). A subscription to channels of several shards holds one connection per shard, read
  concurrently; when a shard fails over or its slot moves, the subscription ends with an error
  (Redis sends ``sunsubscribe``, or the connection drops) and its owner subscribes again and
  catches up from MongoDB, exactly as after a restart of a single Redis.
- A key that must sit with others in one script or one multi-key command names the same hash tag
  (``{...}``): see ``tag``. Every other key is one key per command and goes where it hashes.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, ClusterPubSub, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.cluster import key_slot
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

Client = aioredis.Redis | RedisCluster

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# Messages a cluster subscription holds before it stops reading: a consumer this far behind
# leaves the rest in Redis, whose output-buffer limit then cuts it off (a gap, caught up from
# MongoDB) instead of this process's memory growing.
_BACKLOG = 64


class ClusterUnavailable(RedisConnectionError):
    """The cluster cannot serve a command now: no node reachable, or a slot not served (during a
    failover). A connection error, as the same moment is on a single Redis, so that every
    caller's handling of a Redis outage applies (redis-py raises RedisClusterException, which
    is no RedisError)."""


class _Guarded:
    """A connection that reports writing on a closed socket as a connection error.

    uvloop raises RuntimeError for a write on a closed transport (asyncio's own loop drops the
    write), and redis-py's cluster client closes the free connections of a node after an error
    while other commands may already have taken them, leaving no writer at all (AttributeError).
    Neither is a RedisError, so no retry or fallback of a Redis outage would apply; as a
    ConnectionError, redis-py's own retry reconnects and sends the command (it was never sent)."""

    _writer: Any

    async def _send_packed_command(self, command: Any) -> None:
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            raise RedisConnectionError("the connection was closed before the command was sent")
        writer.writelines(command)
        await writer.drain()


class _Connection(_Guarded, aioredis.Connection):
    pass


class _SSLConnection(_Guarded, aioredis.SSLConnection):
    pass


# unix:// keeps redis-py's own (a local socket).
_GUARDED_BY_SCHEME = {"redis": {"connection_class": _Connection}, "rediss": {"connection_class": _SSLConnection}}


class _Cluster(RedisCluster):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # RedisCluster takes no connection class: its nodes, the ones known now and the ones it
        # finds later, make theirs from these options.
        guarded = _SSLConnection if kwargs.get("ssl") else _Connection
        self.connection_kwargs["connection_class"] = guarded  # the options its nodes manager holds too
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = guarded

    async def initialize(self, *args: Any, **kwargs: Any) -> "_Cluster":
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("shard_hint is not used on a cluster")
        return _ClusterPipeline(self, transaction)


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            return await super().execute(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes of a cluster URL and the connection options it carries (user, password, TLS)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    seeds = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"a Redis Cluster seed must be host:port, got {host!r}")
        seeds.append((name.strip("[]"), int(port)))
    if not seeds:
        raise ValueError("a Redis Cluster URL names at least one host:port")
    options: dict[str, Any] = {"ssl": parts.scheme.lower() == "rediss+cluster"}
    if credentials:
        user, _, password = credentials.partition(":")
        options.update(username=unquote(user) or None, password=unquote(password) or None)
    return seeds, options


def connect(url: str, *, timeout: float, max_connections: int = 256) -> Client:
    """A client with deadlines that retries a command once its connection broke.

    A single server's pool blocks (up to ``timeout``) when all ``max_connections`` are busy, so a
    burst of commands waits instead of failing; a cluster client keeps up to four times as many
    per node (redis-py's cluster pool does not wait, it refuses)."""
    # After a Redis restart every pooled connection is dead; without retries each one fails
    # once on first use, long after the restart.
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)
    if is_cluster_url(url):
        seeds, options = cluster_seeds(url)
        return _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            max_connections=max_connections * 4,
            socket_connect_timeout=3,
            socket_timeout=timeout,
            retry=retry,
            **options,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        health_check_interval=10,
        socket_connect_timeout=3,
        socket_timeout=timeout,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        # What CLIENT SETINFO tells the server, resolved once: a connection that resolves it
        # itself reads the package's metadata from disk (about 0.3 ms of CPU), and a burst of
        # handshakes or disconnections opens hundreds of connections at once.
        driver_info=DriverInfo(),
        **_GUARDED_BY_SCHEME.get(urlsplit(url).scheme.lower(), {}),
    )
    return aioredis.Redis(connection_pool=pool)


def is_cluster(client: Client) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def tag(name: str) -> str:
    """``name`` as a hash tag: keys that start with it share one slot of a cluster."""
    return "{" + name + "}"


def slot(key: str) -> int:
    """The cluster hash slot of ``key`` (hash tags honoured)."""
    return key_slot(key.encode())


async def publish(client: Client, messages: Sequence[tuple[str, bytes | str]]) -> list[int]:
    """Publish (channel, message) pairs in one round trip per shard, in order per channel;
    return how many subscribers got each."""
    if not messages:
        return []
    sharded = is_cluster(client)
    async with client.pipeline(transaction=False) as pipe:
        for channel, message in messages:
            if sharded:
                pipe.spublish(channel, message)
            else:
                pipe.publish(channel, message)
        return list(await pipe.execute())


class Subscription:
    """Messages of a few channels; ``get`` raises once the subscription is lost."""

    async def get(self, timeout: float) -> tuple[bytes, bytes] | None:
        """The next (channel, data), or None when nothing came within ``timeout`` seconds."""
        raise NotImplementedError


class _Plain(Subscription):
    def __init__(self, pubsub: aioredis.client.PubSub) -> None:
        self._pubsub = pubsub

    async def get(self, timeout: float) -> tuple[bytes, bytes] | None:
        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if message is None or message.get("type") != "message":
            return None
        return message["channel"], message["data"]


class _Sharded(Subscription):
    """One sharded pub/sub connection per hash slot, each read by a task of its own."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[bytes, bytes] | BaseException] = asyncio.Queue(_BACKLOG)
        self._failed: BaseException | None = None

    async def read(self, pubsub: ClusterPubSub) -> None:
        try:
            while True:
                message = await pubsub.get_sharded_message(timeout=1.0)
                if message is None:
                    continue
                kind = message["type"]
                if kind in (b"smessage", "smessage"):
                    await self._queue.put((message["channel"], message["data"]))
                elif kind in (b"sunsubscribe", "sunsubscribe"):
                    # The slot moved (a failover, a resharding): what is published now goes
                    # to its new owner, which this connection does not hear.
                    raise RedisConnectionError(f"shard channel {message['channel']!r} moved")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the reader, who decides
            self._failed = exc
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(exc)

    async def get(self, timeout: float) -> tuple[bytes, bytes] | None:
        if self._failed is not None and self._queue.empty():
            raise self._failed
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item


@contextlib.asynccontextmanager
async def subscribe(client: Client, channels: Sequence[str], *, timeout: float) -> AsyncIterator[Subscription]:
    """Subscribe to ``channels`` (within ``timeout``), yield the subscription, unsubscribe at the end."""
    if not is_cluster(client):
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(timeout):
                await pubsub.subscribe(*channels)
            yield _Plain(pubsub)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await pubsub.aclose()
        return
    by_slot: dict[int, list[str]] = defaultdict(list)
    for channel in channels:
        by_slot[slot(channel)].append(channel)
    subscription = _Sharded()
    pubsubs: list[ClusterPubSub] = []
    readers: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(timeout):
            await client.initialize()
            for group in by_slot.values():
                pubsub = client.pubsub()
                pubsubs.append(pubsub)
                try:
                    await pubsub.ssubscribe(*group)
                except RedisClusterException as exc:
                    raise ClusterUnavailable(str(exc)) from exc
        readers = [asyncio.create_task(subscription.read(p)) for p in pubsubs]
        yield subscription
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for pubsub in pubsubs:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await pubsub.aclose()
