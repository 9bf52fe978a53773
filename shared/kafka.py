"""Kafka clients (aiokafka): the producer of domain events and dead letters, and topic names."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from .settings import Settings

EVENTS_TOPIC = "notihub.events"
DLQ_TOPIC = "notihub.events.dlq"
CONSUMER_GROUP = "notihub-ingest"

logger = logging.getLogger(__name__)


def _producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=10_000,
    )


@contextlib.asynccontextmanager
async def open_producer(settings: Settings, *, client_id: str) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer that waits for every in-sync replica and never writes a record twice."""
    producer = _producer(settings, client_id)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


class ProducerLink:
    """A producer started in the background, retrying with capped backoff: the process starts
    (and reports Kafka as down on /readyz) even while the brokers are away."""

    def __init__(self, *, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self.producer: AIOKafkaProducer | None = None

    async def run(self, max_backoff: float = 10.0) -> None:
        """Start the producer, retrying until it is connected."""
        backoff = 0.5
        while self.producer is None:
            producer = _producer(self._settings, self._client_id)
            try:
                await producer.start()
                self.producer = producer
            except (KafkaError, OSError) as exc:
                await producer.stop()
                logger.warning("Kafka is not reachable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)

    async def close(self) -> None:
        """Flush and stop the producer, if it ever started."""
        if self.producer is not None:
            await self.producer.stop()


async def kafka_answers(producer: AIOKafkaProducer, timeout: float = 2.0) -> bool:
    """Whether the brokers answer a metadata request now (not from a cache)."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
        return True
    except (asyncio.TimeoutError, KafkaError, OSError):
        return False
