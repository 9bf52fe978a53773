"""Benchmark: what each socket worker receives and spends per notification, targeted or broadcast.

    python -m bench.targeted [--workers 2,4,8] [--sockets 400] [--users 2000] [--notifications 2000]

For each worker count it starts its own stack on free ports (no Kafka), opens a fixed population
of sockets through the load balancer (which spreads them over the workers), and then, for each
mode, publishes N notifications, each to one user drawn at random from the population (online or
not), and waits until every online recipient has its notification. The publisher is this
process's own NotificationService, the code the API runs, built once with NOTIHUB_BUS_TARGETED=1
(each worker gets only its users' items) and once with 0 (every worker gets everything, on the
shared channel): both modes run against the same workers, which listen to both channels.

Per worker and per notification it prints the bus bytes and messages the worker received (its
notihub_bus_received_* counters, heartbeats left out) and the CPU time it spent (utime + stime of
/proc/<pid>/stat, less what it spends idle over as long, measured before). Targeted, the sum over
the workers stays flat as workers are added and each worker's share falls; broadcast, each worker
pays for every notification and the sum grows with the number of workers.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import statistics
import tempfile
import time
import uuid

import aiohttp
import socketio
from prometheus_client.parser import text_string_to_metric_families

from devstack.ports import free_port_run
from devstack.stack import Stack
from shared.models import Actor, Draft
from shared.runtime import open_runtime
from shared.settings import Settings
from shared.tokens import mint

NAMESPACE = "/notifications"
TICKS = os.sysconf("SC_CLK_TCK")
IDLE_SECONDS = 3.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


class Receiver:
    """A python-socketio client that counts the notifications it receives."""

    def __init__(self, url: str, token: str) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.url, self.token = url, token
        self.count = 0
        self.expected = 0
        self.synced = asyncio.Event()
        self.done = asyncio.Event()
        self.client.on("init", self._on_init, namespace=NAMESPACE)
        self.client.on("notification", self._on_note, namespace=NAMESPACE)

    async def _on_init(self, data: dict) -> None:
        self.synced.set()

    async def _on_note(self, data: dict) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()

    def expect(self, more: int) -> None:
        self.expected = self.count + more
        if more == 0:
            self.done.set()
        else:
            self.done.clear()

    async def connect(self) -> None:
        await self.client.connect(self.url, namespaces=[NAMESPACE], transports=["websocket"],
                                  socketio_path="/socket.io", auth={"token": self.token}, wait_timeout=20)


@dataclasses.dataclass
class Sample:
    """One worker's counters at one moment."""

    bus_bytes: float
    bus_messages: float
    cpu: float
    sockets: float


async def sample(http: aiohttp.ClientSession, url: str, pid: int) -> Sample:
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    values = {"notihub_bus_received_bytes": 0.0, "notihub_bus_received_messages": 0.0,
              "notihub_sockets_connected": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name in values:
            values[family.name] = sum(s.value for s in family.samples if not s.name.endswith("_created"))
    return Sample(values["notihub_bus_received_bytes"], values["notihub_bus_received_messages"], cpu_seconds(pid),
                  values["notihub_sockets_connected"])


async def samples(http: aiohttp.ClientSession, stack: Stack) -> dict[str, Sample]:
    pids = {wid: p.pid for wid, p in stack.workers.items()}
    return {wid: await sample(http, url, pids[wid]) for wid, url in stack.worker_urls.items()}


@dataclasses.dataclass
class Row:
    """The figures of one worker count and one mode, per notification."""

    workers: int
    mode: str
    sockets: list[int]
    bus_bytes: list[float]  # each per worker
    messages: list[float]
    cpu_us: list[float]
    seconds: float


async def measure(stack: Stack, settings: Settings, *, sockets: int, users: int, notifications: int,
                  concurrency: int, seed: int) -> list[Row]:
    run_id = uuid.uuid4().hex[:6]
    population = [f"tb-{run_id}-{i}" for i in range(users)]
    receivers = {u: Receiver(stack.public_url, mint(settings, sub=u)) for u in population[:sockets]}
    rows: list[Row] = []
    async with aiohttp.ClientSession() as http:
        for start in range(0, sockets, 50):
            batch = list(receivers.values())[start:start + 50]
            await asyncio.gather(*(r.connect() for r in batch))
            await asyncio.wait_for(asyncio.gather(*(r.synced.wait() for r in batch)), 30)
        # What the workers spend doing nothing (heartbeats, leases, position checks), per second.
        before = await samples(http, stack)
        await asyncio.sleep(IDLE_SECONDS)  # a fixed idle window, not waiting for anything
        after = await samples(http, stack)
        idle = {w: (after[w].cpu - before[w].cpu) / IDLE_SECONDS for w in after}
        rng = random.Random(seed)
        for mode, targeted in (("targeted", True), ("broadcast", False)):
            picks = [rng.choice(population) for _ in range(notifications)]
            async with open_runtime(dataclasses.replace(settings, bus_targeted=targeted),
                                    app_name=f"bench-targeted-{mode}") as runtime:
                wanted = collections.Counter(picks)
                for user, receiver in receivers.items():
                    receiver.expect(wanted[user])
                queue = list(picks)

                async def publisher() -> None:
                    while queue:
                        user = queue.pop()
                        await runtime.service.publish(Draft(type="post.liked", recipients=(user,),
                                                            actor=Actor(id="bench", name="Bench"),
                                                            data={"post_title": "Measured"}), report=False)

                before = await samples(http, stack)
                began = time.monotonic()
                await asyncio.gather(*(publisher() for _ in range(concurrency)))
                await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in receivers.values())), 120)
                seconds = time.monotonic() - began
                after = await samples(http, stack)
            workers = sorted(after)
            rows.append(Row(
                workers=len(workers), mode=mode, seconds=seconds,
                sockets=[int(after[w].sockets) for w in workers],
                bus_bytes=[(after[w].bus_bytes - before[w].bus_bytes) / notifications for w in workers],
                messages=[(after[w].bus_messages - before[w].bus_messages) / notifications for w in workers],
                cpu_us=[max(0.0, after[w].cpu - before[w].cpu - idle[w] * seconds) * 1e6 / notifications
                        for w in workers],
            ))
        await asyncio.gather(*(r.client.disconnect() for r in receivers.values()))
    return rows


def table(rows: list[Row], *, sockets: int, users: int, notifications: int) -> str:
    head = (f"{'workers':>7} {'mode':<9} {'sockets/worker':>14} | {'bus bytes per notification':^31} | "
            f"{'bus msgs':>8} | {'worker CPU µs per notification':^31} | {'publish s':>9}")
    sub = (f"{'':>7} {'':<9} {'':>14} | {'per worker':>10} {'max':>9} {'all':>10} | {'/worker':>8} | "
           f"{'per worker':>10} {'max':>9} {'all':>10} | {'':>9}")
    lines = [f"notihub targeted delivery: {sockets} sockets of {users} users, {notifications} notifications "
             f"to random users, {os.cpu_count()} cores", head, sub, "-" * len(head)]
    for r in rows:
        kib, cpu = r.bus_bytes, r.cpu_us
        lines.append(
            f"{r.workers:>7} {r.mode:<9} {f'{min(r.sockets)}-{max(r.sockets)}':>14} | "
            f"{statistics.mean(kib):>10.1f} {max(kib):>9.1f} {sum(kib):>10.1f} | "
            f"{statistics.mean(r.messages):>8.3f} | "
            f"{statistics.mean(cpu):>10.1f} {max(cpu):>9.1f} {sum(cpu):>10.1f} | {r.seconds:>9.1f}")
    lines.append("per worker: mean over the workers; all: sum over the workers; CPU: utime+stime less the "
                 "worker's idle rate")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.targeted", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="2,4,8", help="socket worker counts, one stack each (default 2,4,8)")
    parser.add_argument("--sockets", type=int, default=400, help="online sockets, one per user (default 400)")
    parser.add_argument("--users", type=int, default=2000, help="users notifications are drawn from (default 2000)")
    parser.add_argument("--notifications", type=int, default=2000, help="notifications per mode (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent publish calls (default 32)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the recipients (default 1)")
    args = parser.parse_args()
    if not 0 < args.sockets <= args.users:
        parser.error("--sockets must be between 1 and --users")
    rows: list[Row] = []
    for count in (int(w) for w in args.workers.split(",")):
        ports = free_port_run(6 + count)
        env = {"NOTIHUB_PUBLIC_PORT": str(ports), "NOTIHUB_API_PORT": str(ports + 1),
               "NOTIHUB_REDIS_PORT": str(ports + 2), "NOTIHUB_MONGO_BASE_PORT": str(ports + 3),
               "NOTIHUB_SOCKET_BASE_PORT": str(ports + 6), "NOTIHUB_SOCKET_WORKERS": str(count),
               "NOTIHUB_LOG_LEVEL": "WARNING", "NOTIHUB_KAFKA": "off",
               # Hundreds of clients from one address, as no real address has: not a flood.
               "NOTIHUB_HANDSHAKE_RATE_LIMIT_PER_ADDRESS": "off"}
        with tempfile.TemporaryDirectory(prefix="notihub-bench-") as tmp, contextlib.ExitStack() as stack_ctx:
            stack = stack_ctx.enter_context(Stack(state_dir=tmp, env=env))
            settings = Settings.from_env(stack.child_env())
            rows += asyncio.run(measure(stack, settings, sockets=args.sockets, users=args.users,
                                        notifications=args.notifications, concurrency=args.concurrency,
                                        seed=args.seed))
        print(f"{count} workers measured", flush=True)
    print(table(rows, sockets=args.sockets, users=args.users, notifications=args.notifications))


if __name__ == "__main__":
    main()
