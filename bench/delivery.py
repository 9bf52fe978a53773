"""Benchmark: end-to-end delivery latency, fan-out throughput and memory per connection.

    python -m bench.delivery [--sockets 1000] [--samples 300]

Starts its own stack on free ports (like the test suite) unless --url is given, and prints
figures next to references measured in the same run: a bare Redis PUBLISH->message round trip
(the floor of any cross-worker hop) and an HTTP round trip through the load balancer.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import time
import uuid

import aiohttp
import redis.asyncio as aioredis
import socketio

from devstack.ports import free_port_run
from devstack.stack import Stack
from shared.settings import LOCAL_SERVICE_KEY, Settings
from shared.tokens import mint


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def row(name: str, values_ms: list[float]) -> str:
    return (f"{name:<44} n={len(values_ms):<5} p50={pct(values_ms, 50):7.2f}ms "
            f"p95={pct(values_ms, 95):7.2f}ms p99={pct(values_ms, 99):7.2f}ms")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Receiver:
    """A python-socketio client that timestamps every notification it receives."""

    def __init__(self, url: str, token: str, lang: str) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.url, self.token, self.lang = url, token, lang
        self.arrivals: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}
        self.client.on("notification", self._on_note, namespace="/notifications")

    async def _on_note(self, data: dict) -> None:
        now = time.perf_counter()
        self.arrivals[data["id"]] = now
        fut = self.waiters.pop(data["id"], None)
        if fut and not fut.done():
            fut.set_result(now)

    def wait(self, note_id: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if note_id in self.arrivals:
            fut.set_result(self.arrivals[note_id])
        else:
            self.waiters[note_id] = fut
        return fut

    async def connect(self) -> None:
        await self.client.connect(self.url, namespaces=["/notifications"], transports=["websocket"],
                                  socketio_path="/socket.io",
                                  auth={"token": self.token, "lang": self.lang}, wait_timeout=20)


async def run(url: str, settings: Settings, service_key: str, sockets: int, samples: int,
              worker_pids: list[int], redis_url: str) -> None:
    http = aiohttp.ClientSession()
    headers = {"Authorization": f"Bearer {service_key}"}
    run_id = uuid.uuid4().hex[:6]
    try:
        # Reference 1: a bare Redis pub/sub round trip.
        r = aioredis.from_url(redis_url)
        pubsub = r.pubsub()
        await pubsub.subscribe("bench:ref")
        await pubsub.get_message(timeout=1)
        redis_rt = []
        for i in range(samples):
            t0 = time.perf_counter()
            await r.publish("bench:ref", str(i))
            while (await pubsub.get_message(timeout=1)) is None:
                pass
            redis_rt.append((time.perf_counter() - t0) * 1000)
        await pubsub.aclose()
        await r.aclose()
        # Reference 2: an HTTP round trip through the load balancer.
        http_rt = []
        for _ in range(samples):
            t0 = time.perf_counter()
            async with http.get(url + "/healthz") as resp:
                await resp.read()
            http_rt.append((time.perf_counter() - t0) * 1000)

        rss_before = {pid: rss_kib(pid) for pid in worker_pids}
        receivers = [Receiver(url, mint(settings, sub=f"bench-{run_id}-{i}"), ("en", "ko")[i % 2])
                     for i in range(sockets)]
        t0 = time.perf_counter()
        for start in range(0, sockets, 50):
            await asyncio.gather(*(rc.connect() for rc in receivers[start:start + 50]))
        connect_s = time.perf_counter() - t0
        rss_after = {pid: rss_kib(pid) for pid in worker_pids}
        per_conn_kib = (sum(rss_after.values()) - sum(rss_before.values())) / sockets

        async def publish(recipients: list[str]) -> tuple[float, list[dict]]:
            t = time.perf_counter()
            async with http.post(url + "/v1/notifications", headers=headers,
                                 json={"recipients": recipients, "type": "post.liked",
                                       "actor": {"id": "bench", "name": "Bench"}, "data": {"post_title": "x"}}) as resp:
                body = await resp.json()
                assert resp.status == 201, body
            return t, body["notifications"]

        # End-to-end latency: POST to one online recipient until its socket has it.
        one = []
        for _ in range(samples):
            rc = random.choice(receivers)
            t, notes = await publish([f"bench-{run_id}-{receivers.index(rc)}"])
            arrived = await asyncio.wait_for(rc.wait(notes[0]["id"]), 10)
            one.append((arrived - t) * 1000)

        # Fan-out: one request to every online recipient, until the last socket has it.
        fan = []
        everyone = [f"bench-{run_id}-{i}" for i in range(sockets)]
        for _ in range(5):
            t, notes = await publish(everyone)
            by_user = {n["recipient"]: n["id"] for n in notes}
            arrivals = await asyncio.wait_for(asyncio.gather(
                *(rc.wait(by_user[f"bench-{run_id}-{i}"]) for i, rc in enumerate(receivers))), 60)
            fan.append((max(arrivals) - t) * 1000)

        # A 10,000-recipient request with the online sockets among them.
        big = everyone + [f"bench-{run_id}-off-{i}" for i in range(10_000 - sockets)]
        t, notes = await publish(big)
        stored_s = time.perf_counter() - t
        by_user = {n["recipient"]: n["id"] for n in notes}
        arrivals = await asyncio.wait_for(asyncio.gather(
            *(rc.wait(by_user[f"bench-{run_id}-{i}"]) for i, rc in enumerate(receivers))), 120)
        big_ms = (max(arrivals) - t) * 1000

        print(f"\nnotihub delivery benchmark ({sockets} sockets over {len(worker_pids)} workers, {os.cpu_count()} cores)")
        print(row("reference: Redis PUBLISH -> message", redis_rt))
        print(row("reference: HTTP GET /healthz via nginx", http_rt))
        print(row("POST -> notification on the socket", one))
        print(row(f"POST to {sockets} online -> last socket has it", fan))
        print(f"{'10,000 recipients: stored (201)':<44} {stored_s * 1000:9.0f}ms "
              f"({10_000 / stored_s:,.0f} notifications/s)")
        print(f"{'10,000 recipients: last online socket has it':<44} {big_ms:9.0f}ms")
        print(f"{'connect ' + str(sockets) + ' sockets':<44} {connect_s * 1000:9.0f}ms "
              f"({sockets / connect_s:,.0f}/s)")
        print(f"{'worker memory per connection':<44} {per_conn_kib:9.1f}KiB "
              f"(RSS {sum(rss_before.values()) // 1024} -> {sum(rss_after.values()) // 1024} MiB)")
        for rc in receivers:
            await rc.client.disconnect()
    finally:
        await http.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000, help="online sockets (default 1000)")
    parser.add_argument("--samples", type=int, default=300, help="latency samples (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="socket workers of the stack it starts (default 2)")
    args = parser.parse_args()
    ports = free_port_run(6 + args.workers)
    env = {"NOTIHUB_PUBLIC_PORT": str(ports), "NOTIHUB_API_PORT": str(ports + 1),
           "NOTIHUB_REDIS_PORT": str(ports + 2), "NOTIHUB_MONGO_BASE_PORT": str(ports + 3),
           "NOTIHUB_SOCKET_BASE_PORT": str(ports + 6), "NOTIHUB_SOCKET_WORKERS": str(args.workers),
           "NOTIHUB_MAX_CONNECTIONS_PER_USER": "5", "NOTIHUB_LOG_LEVEL": "WARNING", "NOTIHUB_KAFKA": "off",
           # Thousands of clients from one address, as no real address has: not a flood.
           "NOTIHUB_HANDSHAKE_RATE_LIMIT_PER_ADDRESS": "off"}
    with tempfile.TemporaryDirectory(prefix="notihub-bench-") as tmp, contextlib.ExitStack() as stack_ctx:
        stack = stack_ctx.enter_context(Stack(state_dir=tmp, env=env))
        settings = Settings.from_env(stack.child_env())
        pids = [p.pid for p in stack.workers.values()]
        asyncio.run(run(stack.public_url, settings, LOCAL_SERVICE_KEY, args.sockets, args.samples,
                        pids, stack.redis_url))


if __name__ == "__main__":
    main()
