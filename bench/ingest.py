"""Benchmark: domain events per second through one or more ingest workers, end to end
(event produced to Kafka -> notification delivered on a socket).

    python -m bench.ingest [--events 3000] [--ingest-workers 1] [--users 1]

Starts its own stack on free ports. The reference, measured in the same run on the same
records, is a bare aiokafka consumer in its own group: how fast Kafka alone hands them out.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid

import orjson
import socketio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from devstack.ports import free_port_run
from devstack.stack import Stack
from shared.kafka import EVENTS_TOPIC
from shared.settings import Settings
from shared.tokens import mint

from .delivery import pct


async def run(stack: Stack, settings: Settings, n: int, workers: int, users: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    recipients = [f"{prefix}-{i}" for i in range(users)]
    received: dict[str, float] = {}
    done = asyncio.Event()
    stopped: list[str] = []
    clients = [socketio.AsyncClient(reconnection=False) for _ in recipients]

    async def on_note(data: dict) -> None:
        received[data["title"]] = time.perf_counter()
        if len(received) >= n:
            done.set()

    def on_stop(user: str, what: str):
        async def handler(data: object = None) -> None:
            # A socket the hub closes (a client that fell a queue behind: socket_server/hub.py,
            # rule 7), or tells to resync, would replay from `since` or read its inbox again;
            # these clients do neither, so the run ends here with the reason instead of waiting
            # for what can no longer come.
            if not done.is_set():
                stopped.append(f"{user}: {what} {data or ''}".strip())
                done.set()
        return handler

    for client, user in zip(clients, recipients):
        client.on("notification", on_note, namespace="/notifications")
        client.on("disconnect", on_stop(user, "disconnected"), namespace="/notifications")
        client.on("resync_required", on_stop(user, "resync_required"), namespace="/notifications")
        await client.connect(stack.public_url, namespaces=["/notifications"], transports=["websocket"],
                             auth={"token": mint(settings, sub=user)}, wait_timeout=20)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=5)
    reference = AIOKafkaConsumer(EVENTS_TOPIC, bootstrap_servers=stack.kafka_bootstrap,
                                 group_id=f"bench-reference-{uuid.uuid4().hex[:6]}", auto_offset_reset="latest")
    await producer.start()
    await reference.start()
    await reference.getmany(timeout_ms=2000)  # joined and positioned at the end
    # Warm-up: the ingest group's first fetches and the socket path.
    sent_at: dict[str, float] = {}
    mongo = AsyncMongoClient(settings.mongo_url)
    inboxes = mongo[settings.mongo_db]["inboxes"]

    async def all_stored() -> float:
        # The users' inbox positions count what is stored: read from the primary every 20 ms.
        while sum([doc.get("seq", 0) async for doc in inboxes.find({"_id": {"$in": recipients}}, {"seq": 1})]) < n:
            await asyncio.sleep(0.02)
        return time.perf_counter()

    try:
        t0 = time.perf_counter()
        stored_at = asyncio.create_task(all_stored())
        for i in range(n):
            event = {"event_id": f"b-{uuid.uuid4().hex}", "type": "notification.requested",
                     "occurred_at": "2026-11-22T00:00:00Z", "actor": {"id": "bench"},
                     "recipients": [recipients[i % users]], "notification": {"type": "bench.event", "title": str(i)}}
            sent_at[str(i)] = time.perf_counter()
            await producer.send(EVENTS_TOPIC, orjson.dumps(event), key=event["event_id"].encode())
        await producer.flush()
        produced_s = time.perf_counter() - t0

        seen = 0
        ref_t0 = t0
        while seen < n:
            batch = await reference.getmany(timeout_ms=1000)
            seen += sum(len(records) for records in batch.values())
        kafka_s = time.perf_counter() - ref_t0

        await asyncio.wait_for(done.wait(), 300)
        if stopped:
            raise SystemExit(f"a socket stopped after {len(received)} of {n} notifications "
                             f"({'; '.join(stopped)})")
        hub_s = max(received.values()) - t0
        stored_s = await stored_at - t0
        latencies = [(received[k] - sent_at[k]) * 1000 for k in sent_at]
        print(f"\nnotihub ingest benchmark ({n} events to {users} user(s), {workers} ingest worker(s), 3 partitions, "
              f"{os.cpu_count()} cores)")
        print(f"{'produced (acks=all)':<46} {produced_s * 1000:8.0f}ms  {n / produced_s:8,.0f} events/s")
        print(f"{'reference: bare consumer has them all':<46} {kafka_s * 1000:8.0f}ms  {n / kafka_s:8,.0f} events/s")
        print(f"{'stored: the last notification in MongoDB':<46} {stored_s * 1000:8.0f}ms  {n / stored_s:8,.0f} events/s")
        print(f"{'end to end: last notification on the socket':<46} {hub_s * 1000:8.0f}ms  {n / hub_s:8,.0f} events/s")
        print(f"{'per event, produce -> socket':<46} p50={pct(latencies, 50):.0f}ms p95={pct(latencies, 95):.0f}ms "
              f"p99={pct(latencies, 99):.0f}ms (includes queueing behind the burst)")
    finally:
        await mongo.close()
        await reference.stop()
        await producer.stop()
        await asyncio.gather(*(client.disconnect() for client in clients))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000, help="events in the burst (default 3000)")
    parser.add_argument("--ingest-workers", type=int, default=1, help="ingest workers (default 1)")
    parser.add_argument("--users", type=int, default=1,
                        help="recipients, one socket each, the events going to them in turn (default 1: every "
                             "event to one user, who goes over the per-user cap, so each commit is followed by a trim)")
    args = parser.parse_args()
    if args.events < 1 or args.users < 1:
        parser.error("--events and --users must be at least 1")
    base = free_port_run(16)
    env = {"NOTIHUB_PUBLIC_PORT": str(base), "NOTIHUB_API_PORT": str(base + 1), "NOTIHUB_REDIS_PORT": str(base + 2),
           "NOTIHUB_MONGO_BASE_PORT": str(base + 3), "NOTIHUB_SOCKET_BASE_PORT": str(base + 6),
           "NOTIHUB_SOCKET_WORKERS": "1", "NOTIHUB_KAFKA_PORT": str(base + 8),
           "NOTIHUB_KAFKA_CONTROLLER_PORT": str(base + 9), "NOTIHUB_INGEST_BASE_PORT": str(base + 10),
           "NOTIHUB_INGEST_WORKERS": str(args.ingest_workers), "NOTIHUB_LOG_LEVEL": "WARNING",
           # Every event goes to a few users: past the per-recipient throttle they would be stored
           # and not pushed, and the sockets that count them would wait for ever.
           "NOTIHUB_USER_MAX_PER_MINUTE": "0"}
    with tempfile.TemporaryDirectory(prefix="notihub-bench-") as tmp, Stack(state_dir=tmp, env=env) as stack:
        asyncio.run(run(stack, Settings.from_env(stack.child_env()), args.events, args.ingest_workers, args.users))


if __name__ == "__main__":
    main()
