"""Fixtures for ingest tests: a raw Kafka producer, event builders, and event-driven waits on
MongoDB (change streams) and on the dead-letter topic."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo.read_concern import ReadConcern

from shared.kafka import DLQ_TOPIC

from ..conftest import Events, make_event  # noqa: F401  (re-exported for the ingest tests)


class Inserts:
    """A change stream of notifications inserted for some recipients, opened before acting."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.seen: list[dict] = []

    async def until(self, predicate, timeout: float = 30) -> dict:
        """The first inserted notification (seen before or arriving now) matching ``predicate``."""
        for doc in self.seen:
            if predicate(doc):
                return doc
        async with asyncio.timeout(timeout):
            while True:
                change = await self._stream.try_next()
                if change is None:
                    continue
                doc = change["fullDocument"]
                self.seen.append(doc)
                if predicate(doc):
                    return doc

    async def count(self, n: int, timeout: float = 60) -> list[dict]:
        """Wait until ``n`` notifications have been inserted in all."""
        async with asyncio.timeout(timeout):
            while len(self.seen) < n:
                change = await self._stream.try_next()
                if change is not None:
                    self.seen.append(change["fullDocument"])
        return self.seen


@pytest.fixture
def inserts(runtime):
    """``async with inserts(recipients) as seen:`` watches notifications inserted for them
    (or, with ``source=``, those stored for one event or idempotency key)."""

    @contextlib.asynccontextmanager
    async def watch(recipients=(), *, source: str | None = None) -> AsyncIterator[Inserts]:
        match = {"fullDocument.source": source} if source else {"fullDocument.recipient": {"$in": list(recipients)}}
        pipeline = [{"$match": {"operationType": "insert", **match}}]
        # Change streams read majority-committed data only.
        notifications = runtime.db.get_collection("notifications", read_concern=ReadConcern("majority"))
        async with await notifications.watch(pipeline, max_await_time_ms=200) as stream:
            yield Inserts(stream)

    return watch


async def fence(events: Events, inserts_ctx: Inserts, meta, recipient: str) -> None:
    """Send a notification.requested for ``recipient`` to the same partition as ``meta`` and
    wait until it is stored: everything before it on that partition has been handled."""
    event = make_event("notification.requested", recipients=[recipient],
                       notification={"type": "fence.passed", "title": "fence"})
    await events.send(event, partition=meta.partition)
    await inserts_ctx.until(lambda d: d["recipient"] == recipient and d["type"] == "fence.passed")


@pytest.fixture
async def dlq(stack) -> AsyncIterator[AIOKafkaConsumer]:
    """A reader of the dead-letter topic positioned at its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(DLQ_TOPIC, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    yield consumer
    await consumer.stop()


async def ask_kafka_until(question, timeout: float = 30) -> None:
    """Ask Kafka ``question()`` until it answers yes, within ``timeout`` seconds. Kafka tells
    nobody outside a group when the group commits or settles: there is no event to wait for, so
    the questions are paced, a tenth of a second apart."""
    async with asyncio.timeout(timeout):
        while not await question():
            await asyncio.sleep(0.1)


@pytest.fixture
async def kafka_admin(stack) -> AsyncIterator[AIOKafkaAdminClient]:
    """Kafka's admin API, to ask what Kafka tells nobody (a group's offsets and members)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    yield admin
    await admin.close()
