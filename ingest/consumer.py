"""The ingest loop: consume domain events, handle them through the service, then commit.

At-least-once and idempotent: an offset is committed only after its event's notifications are
stored (or the record is in the dead-letter topic), and the service stores nothing twice for
one event_id, so a crash, a redelivery or a rebalance notifies nobody twice and loses nothing.
Records with the same key are handled in order; different keys, in a batch and across
partitions, proceed concurrently (up to NOTIHUB_INGEST_CONCURRENCY at a time). The records of a
poll that are alone under their key and only notify a list of users (most events) are handled
together: one group-commit entry for all their notifications, instead of one per event.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from shared.events.handler import EventHandler
from shared.events.models import Event, InvalidEvent, parse_event
from shared.kafka import CONSUMER_GROUP, DLQ_TOPIC, EVENTS_TOPIC
from shared.runtime import services_fault
from shared.settings import Settings
from shared.storage.notifications import COMMIT_BATCH

from . import metrics

logger = logging.getLogger(__name__)

# Tries before a record that keeps raising an unexpected error is dead-lettered.
UNEXPECTED_ATTEMPTS = 3
# Records per poll: a commit's worth, so that the events of one poll bring a user at most as many
# notifications as one commit does (which a socket that reads always takes whole: see
# socket_server/hub.py, rule 7).
POLL_RECORDS = COMMIT_BATCH


class _DrainOnRevoke(ConsumerRebalanceListener):
    """Lets the batch in hand finish (and commit) before partitions move to another worker."""

    def __init__(self, consumer: "EventConsumer") -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.drained()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class EventConsumer:
    """One member of the ingest consumer group."""

    def __init__(self, *, settings: Settings, handler: EventHandler, dlq: AIOKafkaProducer, worker_id: str,
                 topic: str = EVENTS_TOPIC,
                 group_id: str = CONSUMER_GROUP) -> None:
        self._settings = settings
        self._handler = handler
        self._dlq = dlq
        self._worker_id = worker_id
        self._idle = asyncio.Event()
        self._idle.set()
        # The offset commit of the last poll, under way while the next poll is handled.
        self._committing: asyncio.Task[None] | None = None
        self._lag_partitions: set[str] = set()
        self._slots = asyncio.Semaphore(settings.ingest_concurrency)
        self._topic = topic
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            client_id=f"notihub-ingest-{worker_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=POLL_RECORDS,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    async def start(self) -> None:
        """Join the group."""
        await self.consumer.start()
        self.consumer.subscribe([self._topic], listener=_DrainOnRevoke(self))

    async def stop(self) -> None:
        """Commit what was handled, then leave the group (its partitions move to the other
        members at once)."""
        if self._committing is not None:
            await asyncio.wait([self._committing], timeout=5)
            self._committing.cancel()  # (done by then, unless Kafka is gone)
        await self.consumer.stop()

    async def drained(self) -> None:
        """Wait until the batch in hand is handled and its offsets are committed."""
        await self._idle.wait()
        await self._committed()

    async def run(self) -> None:
        """Consume until cancelled.

        The offsets of a poll are committed once every record of it is stored (or
        dead-lettered), in one request for all its partitions; the next poll is handled while
        that commit is under way, and its own commit waits for it, so offsets move forward in
        order and never past a record that is not stored."""
        while True:
            batches = await self.consumer.getmany(timeout_ms=500, max_records=POLL_RECORDS)
            if batches:
                self._idle.clear()
                try:
                    await asyncio.gather(*(self._partition(records) for records in batches.values()))
                    await self._committed()
                    offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
                    self._committing = asyncio.create_task(self._commit(offsets))
                finally:
                    self._idle.set()
            await self._report_lag()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError:
            # The partitions moved to another worker meanwhile; it will see these records again
            # and skip what was already stored.
            logger.warning("could not commit %s after a rebalance", offsets)
        except KafkaError as exc:
            # Offsets are cumulative: the next commit covers these, and until then a restart
            # sees these records again and stores nothing twice.
            logger.warning("could not commit %s (%s); the next commit covers them", offsets, exc)

    async def _committed(self) -> None:
        """Wait for the offset commit under way; a cancelled caller does not cancel it."""
        if self._committing is not None:
            await asyncio.shield(self._committing)
            self._committing = None

    async def _partition(self, records: list[ConsumerRecord]) -> None:
        # Same key, same chain: handled one after another, in offset order.
        chains: dict[bytes | None, list[ConsumerRecord]] = defaultdict(list)
        for record in records:
            chains[record.key].append(record)
        # A record alone under its key whose event only notifies a list of users joins the
        # batch: their notifications are stored together. Everything else goes one by one.
        batch: list[tuple[ConsumerRecord, Event]] = []
        alone: list[list[tuple[ConsumerRecord, Event | None]]] = []
        for items in chains.values():
            if len(items) == 1:
                try:
                    event = parse_event(items[0].value)
                except InvalidEvent:
                    event = None  # dead-lettered by _one, with the reason
                if event is not None and self._handler.batchable(event):
                    batch.append((items[0], event))
                else:
                    alone.append([(items[0], event)])
                continue
            alone.append([(record, None) for record in items])

        async def chain(items: list[tuple[ConsumerRecord, Event | None]]) -> None:
            for record, event in items:
                await self._slotted(record, event)

        await asyncio.gather(self._many(batch), *(chain(items) for items in alone))

    async def _many(self, batch: list[tuple[ConsumerRecord, Event]]) -> None:
        """Handle batchable events together; after an error that is not a service's fault (one
        event MongoDB refuses), each one alone, so that it fails (and is dead-lettered) alone."""
        if not batch:
            return
        backoff = 0.2
        while True:
            try:
                await self._handler.handle_many([event for _, event in batch])
                for _, event in batch:
                    metrics.EVENTS.labels(event.type, "handled").inc()
                return
            except Exception as exc:
                if not services_fault(exc):
                    logger.warning("a batch of %d events failed (%s); handling each alone", len(batch), exc)
                    await asyncio.gather(*(self._slotted(record, event) for record, event in batch))
                    return
                metrics.EVENTS.labels("unknown", "retried").inc(len(batch))
                logger.warning("handling a batch of %d events failed (%s); retrying in %.1fs", len(batch), exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _slotted(self, record: ConsumerRecord, event: Event | None = None) -> None:
        async with self._slots:
            await self._one(record, event)

    async def _one(self, record: ConsumerRecord, parsed: Event | None = None) -> None:
        """Handle one record (``parsed``: its event, when the caller parsed it already)."""
        backoff = 0.2
        failures = 0
        while True:
            try:
                event = parsed if parsed is not None else parse_event(record.value)
                await self._handler.handle(event)
                metrics.EVENTS.labels(event.type, "handled").inc()
                return
            except InvalidEvent as exc:
                await self._dead_letter(record, exc.message)
                return
            except Exception as exc:
                if services_fault(exc):
                    # Not the event's fault: keep it and try again, without committing past it.
                    metrics.EVENTS.labels("unknown", "retried").inc()
                    logger.warning("handling %s@%d failed (%s); retrying in %.1fs", record.topic, record.offset,
                                   exc, backoff)
                else:
                    # A defect met by this record (or an error MongoDB gives it every time): retry
                    # a little in case it passes, then park the record instead of stopping the
                    # partition (or the worker) behind it for good.
                    failures += 1
                    if await self._gave_up(record, exc, failures):
                        return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _gave_up(self, record: ConsumerRecord, exc: Exception, failures: int) -> bool:
        """Log a defect met by a record; after UNEXPECTED_ATTEMPTS, dead-letter the record."""
        logger.error("handling %s/%d/%d failed (attempt %d of %d)", record.topic, record.partition,
                     record.offset, failures, UNEXPECTED_ATTEMPTS, exc_info=exc)
        if failures < UNEXPECTED_ATTEMPTS:
            return False
        metrics.EVENTS.labels("unknown", "failed").inc()
        await self._dead_letter(record, f"could not be handled: {type(exc).__name__}: {exc}"[:500])
        return True

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        """Park a record that can never be handled, with the reason, and go on."""
        headers = [
            ("notihub.reason", reason.encode()),
            ("notihub.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ("notihub.worker", self._worker_id.encode()),
        ]
        backoff = 0.2
        while True:
            try:
                await self._dlq.send_and_wait(DLQ_TOPIC, value=record.value, key=record.key, headers=headers)
                break
            except KafkaError as exc:
                logger.warning("dead-letter write failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        metrics.EVENTS.labels("invalid", "dead_lettered").inc()
        logger.info("dead-lettered %s/%d/%d: %s", record.topic, record.partition, record.offset, reason)

    async def _report_lag(self) -> None:
        assigned = self.consumer.assignment()
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                position = await self.consumer.position(tp)
                metrics.LAG.labels(str(tp.partition)).set(max(0, highwater - position))
        # Partitions that moved to another worker are no longer this worker's lag.
        current = {str(tp.partition) for tp in assigned}
        for partition in self._lag_partitions - current:
            metrics.LAG.remove(partition)
        self._lag_partitions = current
