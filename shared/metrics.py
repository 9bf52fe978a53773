"""Prometheus metrics of every notihub process, and their sharing through Redis.

Each worker (socket, ingest) puts a snapshot of its metrics in Redis every few seconds; the API's
``/metrics`` answers its own metrics and every live worker's, each sample labelled with the
``process`` it came from, so that one scrape of the public port sees the whole hub.
"""
from __future__ import annotations

import asyncio
import logging

import prometheus_client
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# "_created" series would be parsed back as families of their own: leave them out.
prometheus_client.disable_created_metrics()

HTTP_REQUESTS = Counter(
    "notihub_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
NOTIFICATIONS_STORED = Counter("notihub_notifications_stored_total", "Notifications written to MongoDB")
BUS_MESSAGES = Counter("notihub_bus_messages_total", "Messages received from the event bus", ["kind"])
SOCKETS = Gauge("notihub_sockets_connected", "Sockets connected to this worker")
CONNECTS_REFUSED = Counter("notihub_connects_refused_total", "Socket handshakes refused", ["code"])
DELIVERED = Counter("notihub_notifications_delivered_total", "Notifications emitted to sockets", ["path"])
DELIVERY_SECONDS = Histogram(
    "notihub_delivery_seconds",
    "From a notification's creation to its emit on a socket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# A worker's snapshot is refreshed this often and outlives it by two periods (then it is gone).
SNAPSHOT_SECONDS = 5


def _key(prefix: str, process: str = "*") -> str:
    return f"{prefix}:metrics:{process}"


async def share(redis: aioredis.Redis, *, prefix: str, process: str, every: float = SNAPSHOT_SECONDS) -> None:
    """Put this process's metrics in Redis every ``every`` seconds, until cancelled."""
    key = _key(prefix, process)
    try:
        while True:
            try:
                await redis.set(key, generate_latest(), ex=int(every * 3))
            except (RedisError, OSError) as exc:
                logger.warning("could not share metrics: %s", exc)
            await asyncio.sleep(every)
    finally:
        try:
            await asyncio.shield(redis.delete(key))
        except (RedisError, OSError, asyncio.CancelledError):
            pass  # it expires by itself


class _Families:
    """A collector of already merged families, for generate_latest."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


async def combined(redis: aioredis.Redis, *, prefix: str, process: str) -> bytes:
    """This process's metrics and every live worker's, one family per metric name."""
    sources: list[tuple[str, list[Metric]]] = [(process, list(prometheus_client.REGISTRY.collect()))]
    try:
        keys = sorted([key async for key in redis.scan_iter(match=_key(prefix), count=100)])
        texts = await redis.mget(keys) if keys else []
    except (RedisError, OSError) as exc:
        logger.warning("could not read the workers' metrics: %s", exc)
        keys, texts = [], []
    for key, text in zip(keys, texts):
        if text is None:
            continue  # expired between the scan and the read
        name = (key.decode() if isinstance(key, bytes) else key).rsplit(":", 1)[-1]
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
