"""Benchmark: a rolling restart of every socket worker while a producer publishes.

    python -m bench.rolling [--sockets 2000] [--workers 2] [--drain 10] [--rate 10]

Starts its own stack on free ports (like the test suite) and connects N real socket.io-client
sockets (Node, tests/js), each of its own user, that reconnect by themselves and keep `since` at
the newest notification they hold, as the README asks clients to. Then, worker after worker:
SIGTERM (the worker drains over --drain seconds and exits), start it again, wait until every
socket is back. The reference, in the same run, is the same roll with SIGKILL: every socket of
the worker drops at once, as a deploy without draining (or a crash) does. Meanwhile a producer
publishes --rate requests a second, each to --fanout random users.

Prints, per roll: the peak of handshakes per second (successful reconnections seen by the
clients, in 1-second buckets), the time each worker took (signal to exit, start to healthy,
signal to every socket back), and (socket, notification) pairs lost or duplicated, counted after
a final notification to everyone has arrived everywhere.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import tempfile
import time
import uuid

import aiohttp

from devstack.ports import free_port_run
from devstack.stack import Stack
from shared.settings import LOCAL_SERVICE_KEY, Settings
from shared.tokens import mint
from tests.jsclient import JsBridge, JsSocket


def worker_of(sock: JsSocket) -> str:
    return (sock.engine_id or "?.").split(".", 1)[0]


class Producer:
    """Publishes to random users until stopped; remembers which user got which id."""

    def __init__(self, http: aiohttp.ClientSession, url: str, users: list[str], rate: float, fanout: int) -> None:
        self.http, self.url, self.users, self.rate, self.fanout = http, url, users, rate, fanout
        self.sent: dict[str, list[str]] = collections.defaultdict(list)
        self.requests = 0
        self.failures = 0

    async def publish(self, recipients: list[str]) -> dict[str, str]:
        async with self.http.post(self.url + "/v1/notifications",
                                  headers={"Authorization": f"Bearer {LOCAL_SERVICE_KEY}"},
                                  json={"recipients": recipients, "type": "post.liked",
                                        "actor": {"id": "bench", "name": "Bench"},
                                        "data": {"post_title": "rolling"}}) as resp:
            body = await resp.json()
            assert resp.status == 201, body
        ids = {n["recipient"]: n["id"] for n in body["notifications"]}
        for user, note_id in ids.items():
            self.sent[user].append(note_id)
        return ids

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            self.requests += 1
            try:
                await self.publish(random.sample(self.users, self.fanout))
            except (aiohttp.ClientError, AssertionError) as exc:
                # A refused request stores nothing: not a loss, but worth reporting.
                self.failures += 1
                print(f"publish failed: {exc!r}")
            await asyncio.sleep(max(0.0, began + self.requests / self.rate - loop.time()))


async def back_on_their_feet(moved: list[JsSocket], timeout: float) -> None:
    """Every socket in moved was disconnected, reconnected and given init again (cursors were
    moved to the end of each log before the signal)."""
    async def one(sock: JsSocket) -> None:
        await sock.wait_for("disconnect", timeout=timeout)
        await sock.wait_for("init", timeout=timeout)
    await asyncio.gather(*(one(sock) for sock in moved))


def peak_per_second(times: list[float]) -> int:
    buckets = collections.Counter(int(t) for t in times)
    return max(buckets.values(), default=0)


async def roll(stack: Stack, socks: list[JsSocket], how: str, drain: float) -> tuple[int, list[str]]:
    """Restart every worker in turn (by SIGTERM or SIGKILL); the peak handshakes/s and a report per worker."""
    began = time.time()
    lines = []
    moved_total = 0
    for wid in stack.worker_ids:
        # Asked of the clients now: what this process has read of their events may lag behind.
        engines = await asyncio.gather(*(s.status() for s in socks))
        moved = [s for s, st in zip(socks, engines)
                 if st["connected"] and (st.get("engine_id") or "").startswith(f"{wid}.")]
        moved_total += len(moved)
        for sock in moved:
            sock.skip()
        process = stack.socket_workers[wid].process
        t0 = time.monotonic()
        if how == "SIGTERM":
            stack.terminate_worker(wid)
        else:
            stack.kill_worker(wid)
        exited = await asyncio.to_thread(process.wait, drain + 30)
        t_exit = time.monotonic()
        await asyncio.to_thread(stack.restart_worker, wid)
        t_up = time.monotonic()
        await back_on_their_feet(moved, timeout=drain + 180)
        t_back = time.monotonic()
        lines.append(f"  {wid}: {len(moved)} sockets; {'exited' if exited else 'still running'} "
                     f"{t_exit - t0:5.1f}s after {how}, healthy again {t_up - t_exit:4.1f}s later, "
                     f"every socket back {t_back - t0:5.1f}s after {how}")
    # Stamped by the clients (Node), not when this process got round to reading them.
    handshakes = [ev.ts / 1000 for s in socks for ev in s.records("connect") if ev.ts / 1000 >= began]
    closed = sum(1 for s in socks for ev in s.records("disconnect") if ev.ts / 1000 >= began)
    # A socket closed by a worker that stayed up (one that fell behind, say) counts here.
    lines.append(f"  sockets closed: {closed}, of which {closed - moved_total} by a worker that was not restarting")
    return peak_per_second(handshakes), lines


async def run(stack: Stack, settings: Settings, n: int, drain: float, rate: float, fanout: int) -> None:
    run_id = uuid.uuid4().hex[:6]
    users = [f"roll-{run_id}-{i}" for i in range(n)]
    async with aiohttp.ClientSession() as http, JsBridge(request_timeout=60) as js:
        socket_url = f"{stack.public_url}/notifications"

        async def open_one(i: int, user: str) -> JsSocket:
            sock = await js.connect(f"s{i}", socket_url, transports=["websocket"], connect_timeout=60,
                                    auth={"token": mint(settings, sub=user), "lang": "en"},
                                    options={"trackSince": True})
            await sock.wait_for("connect", timeout=60)
            await sock.wait_for("init", timeout=60)
            return sock

        t0 = time.perf_counter()
        socks: list[JsSocket] = []
        for start in range(0, n, 100):
            socks += await asyncio.gather(*(open_one(i, users[i]) for i in range(start, min(n, start + 100))))
        print(f"connected {n} sockets in {time.perf_counter() - t0:.1f}s: "
              + ", ".join(f"{w} {sum(1 for s in socks if worker_of(s) == w)}" for w in stack.worker_ids))

        producer = Producer(http, stack.public_url, users, rate, fanout)
        # Every socket holds a `since` before the first roll, as a client that has been up a while.
        first = await producer.publish(users)
        await asyncio.gather(*(s.wait_for("notification", timeout=60, predicate=lambda d, i=first[u]: d["id"] == i)
                               for s, u in zip(socks, users)))
        producing = asyncio.create_task(producer.run())
        try:
            reference = await roll(stack, socks, "SIGKILL", drain)
            drained = await roll(stack, socks, "SIGTERM", drain)
        finally:
            producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producing
        # The fence: once this one has arrived everywhere, any duplicate of an earlier one has too.
        last = await producer.publish(users)
        await asyncio.gather(*(s.wait_for("notification", timeout=120, predicate=lambda d, i=last[u]: d["id"] == i)
                               for s, u in zip(socks, users)))

        lost = duplicated = 0
        for sock, user in zip(socks, users):
            got = collections.Counter(d["id"] for d in sock.events("notification"))
            lost += sum(1 for note_id in producer.sent[user] if got[note_id] == 0)
            duplicated += sum(count - 1 for count in got.values() if count > 1)
        pairs = sum(len(ids) for ids in producer.sent.values())

        print(f"\nnotihub rolling-restart benchmark ({n} sockets over {len(stack.worker_ids)} workers, "
              f"NOTIHUB_DRAIN_SECONDS={drain:g}, {os.cpu_count()} cores)")
        print(f"{'reference: SIGKILL, every socket at once':<44} peak {reference[0]:5d} handshakes/s")
        print("\n".join(reference[1]))
        print(f"{'SIGTERM, drained':<44} peak {drained[0]:5d} handshakes/s")
        print("\n".join(drained[1]))
        print(f"published: {producer.requests} requests of {fanout} recipients "
              f"({producer.failures} failed), {pairs} (socket, notification) pairs")
        print(f"lost: {lost}   duplicated: {duplicated}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rolling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=2000, help="sockets, one user each (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="socket workers of the stack it starts (default 2)")
    parser.add_argument("--drain", type=int, default=10, help="NOTIHUB_DRAIN_SECONDS of the workers (default 10)")
    parser.add_argument("--rate", type=float, default=10, help="producer requests per second (default 10)")
    parser.add_argument("--fanout", type=int, default=20, help="recipients per request (default 20)")
    parser.add_argument("--state-dir", help="keep the stack's data and logs here (default: a temporary folder)")
    args = parser.parse_args()
    ports = free_port_run(6 + args.workers)
    env = {"NOTIHUB_PUBLIC_PORT": str(ports), "NOTIHUB_API_PORT": str(ports + 1),
           "NOTIHUB_REDIS_PORT": str(ports + 2), "NOTIHUB_MONGO_BASE_PORT": str(ports + 3),
           "NOTIHUB_SOCKET_BASE_PORT": str(ports + 6), "NOTIHUB_SOCKET_WORKERS": str(args.workers),
           "NOTIHUB_DRAIN_SECONDS": str(args.drain), "NOTIHUB_LOG_LEVEL": "WARNING", "NOTIHUB_KAFKA": "off",
           # Thousands of clients from one address, as no real address has: not a flood.
           "NOTIHUB_HANDSHAKE_RATE_LIMIT_PER_ADDRESS": "off"}
    with contextlib.ExitStack() as stack_ctx:
        state_dir = args.state_dir or stack_ctx.enter_context(tempfile.TemporaryDirectory(prefix="notihub-bench-"))
        stack = stack_ctx.enter_context(Stack(state_dir=state_dir, env=env))
        settings = Settings.from_env(stack.child_env())
        asyncio.run(run(stack, settings, args.sockets, args.drain, args.rate, min(args.fanout, args.sockets)))


if __name__ == "__main__":
    main()
