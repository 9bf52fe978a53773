"""Prometheus metrics of every notihub process, and their sharing through Redis.

Each worker (socket, ingest) puts a snapshot of its metrics in Redis every few seconds; the API's
``/metrics`` answers its own metrics and every live worker's, each sample labelled with the
``process`` it came from, so that one scrape of the public port sees the whole hub.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from . import redisconn

logger = logging.getLogger(__name__)

# "_created" series would be parsed back as families of their own: leave them out.
prometheus_client.disable_created_metrics()

HTTP_REQUESTS = Counter(
    "notihub_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
NOTIFICATIONS_STORED = Counter("notihub_notifications_stored_total", "Notifications written to MongoDB")
COMMIT_BATCH = Histogram(
    "notihub_commit_batch_notifications", "Notifications committed in one transaction (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
BUS_PUBLISH_FAILURES = Counter(
    "notihub_bus_publish_failures_total", "Committed batches whose bus announcement failed (found again from MongoDB)"
)
CATCH_UPS = Counter(
    "notihub_catch_ups_total", "Sockets caught up from MongoDB, by reason", ["reason"]
)
IDLE_SESSIONS_CLOSED = Counter(
    "notihub_idle_sessions_closed_total", "Engine.IO sessions closed for never joining /notifications"
)
SESSIONS_EXPIRED = Counter("notihub_sessions_expired_total", "Sockets disconnected when their token expired")
DROPPED_SLOW = Counter(
    "notihub_sockets_dropped_slow_total", "Sockets closed because their client stopped reading (they replay)"
)
BUS_MESSAGES = Counter("notihub_bus_messages_total", "Messages received from the event bus", ["kind"])
# What targeted delivery saves shows here: per worker, bytes and messages of the bus, by channel
# (the worker's own, or the shared one of NOTIHUB_BUS_TARGETED=0); heartbeats are not counted.
BUS_RECEIVED_BYTES = Counter(
    "notihub_bus_received_bytes_total", "Bytes received from the event bus, by channel", ["channel"]
)
BUS_RECEIVED_MESSAGES = Counter(
    "notihub_bus_received_messages_total", "Messages received from the event bus, by channel", ["channel"]
)
RATE_LIMITED = Counter("notihub_rate_limited_total", "Requests, events and handshakes refused by a rate limit",
                       ["limit"])
RATE_LIMIT_FAILURES = Counter(
    "notihub_rate_limit_failures_total", "Requests let through unchecked because Redis did not answer", ["limit"]
)
FLOODERS_DISCONNECTED = Counter(
    "notihub_flooding_sockets_disconnected_total", "Sockets disconnected for going on sending past their limit"
)
PACKETS_REFUSED = Counter(
    "notihub_socket_packets_refused_total",
    "Socket.IO packets a worker would not read (malformed, or binary past its bounds); each closed its connection",
    ["reason"],
)
THROTTLED = Counter(
    "notihub_notifications_throttled_total",
    "Notifications stored but not pushed live: past NOTIHUB_USER_MAX_PER_MINUTE for their recipient and type",
)
SOCKETS = Gauge("notihub_sockets_connected", "Sockets connected to this worker")
CONNECTS_REFUSED = Counter("notihub_connects_refused_total", "Socket handshakes refused", ["code"])
DELIVERED = Counter("notihub_notifications_delivered_total", "Notifications emitted to sockets", ["path"])
DELIVERY_SECONDS = Histogram(
    "notihub_delivery_seconds",
    "From a notification's creation to its emit on a socket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

GC_PAUSE_SECONDS = Histogram(
    "notihub_gc_pause_seconds", "Pauses of Python's cyclic garbage collector, by generation", ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


def watch_gc() -> None:
    """Time every collection of the cyclic garbage collector (a pause of the whole event loop)."""
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - started[0]
            GC_PAUSE_SECONDS.labels(str(info["generation"])).observe(pause)
            if pause > 0.05:
                logger.info("garbage collection of generation %d paused the process %.0f ms",
                            info["generation"], pause * 1000)

    gc.callbacks.append(callback)


# A worker's snapshot is refreshed this often and outlives it by two periods (then it is gone).
SNAPSHOT_SECONDS = 5


def _key(prefix: str, process: str) -> str:
    return f"{_index(prefix)}:{process}"


def _index(prefix: str) -> str:
    # Which processes have a snapshot, scored by when it expires: reading needs no SCAN of the
    # whole keyspace (which holds a presence key per online user). One hash tag for the index
    # and every snapshot: a single MGET reads them all, on a Redis Cluster too.
    return redisconn.tag(f"{prefix}:metrics")


async def put_snapshot(redis: redisconn.Client, *, prefix: str, process: str, text: bytes, ttl: int) -> None:
    """Store a process's metrics (Prometheus text) for ``ttl`` seconds, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(_key(prefix, process), text, ex=ttl)
        pipe.zadd(_index(prefix), {process: time.time() + ttl})
        await pipe.execute()


async def share(redis: redisconn.Client, *, prefix: str, process: str, every: float = SNAPSHOT_SECONDS) -> None:
    """Put this process's metrics in Redis every ``every`` seconds, until cancelled."""
    try:
        while True:
            try:
                await put_snapshot(redis, prefix=prefix, process=process, text=generate_latest(), ttl=int(every * 3))
            except (RedisError, OSError) as exc:
                logger.warning("could not share metrics: %s", exc)
            await asyncio.sleep(every)
    finally:
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zrem(_index(prefix), process)
                pipe.delete(_key(prefix, process))
                await asyncio.shield(pipe.execute())
        except (RedisError, OSError, asyncio.CancelledError):
            pass  # both expire by themselves


class _Families:
    """A collector of already merged families, for generate_latest."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


async def combined(redis: redisconn.Client, *, prefix: str, process: str) -> bytes:
    """This process's metrics and every live worker's, one family per metric name."""
    sources: list[tuple[str, list[Metric]]] = [(process, list(prometheus_client.REGISTRY.collect()))]
    try:
        now = time.time()
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(_index(prefix), "-inf", now)  # processes gone without a word
            pipe.zrangebyscore(_index(prefix), now, "+inf")
            _, live = await pipe.execute()
        names = sorted(n.decode() for n in live)
        texts = await redis.mget([_key(prefix, name) for name in names]) if names else []
    except (RedisError, OSError) as exc:
        logger.warning("could not read the workers' metrics: %s", exc)
        names, texts = [], []
    for name, text in zip(names, texts):
        if text is None:
            continue  # expired between the two reads
        try:
            sources.append((name, list(text_string_to_metric_families(text.decode()))))
        except ValueError as exc:
            logger.warning("skipping unreadable metrics of %s: %s", name, exc)
    merged: dict[str, Metric] = {}
    for source, families in sources:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            into.samples.extend(s._replace(labels={**s.labels, "process": source}) for s in family.samples)
    return generate_latest(_Families(list(merged.values())))  # type: ignore[arg-type]
