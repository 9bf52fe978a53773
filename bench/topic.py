"""Benchmark: one notification to a whole topic, as the API handles it, at growing audiences.

    python -m bench.topic [--sizes 10000,100000] [--online 40] [--rounds 2]

It starts its own stack on free ports (no Kafka), seeds each topic's subscribers straight into
MongoDB (so that the figure is the fan-out, not the subscription calls), connects ``--online``
of them through the load balancer, then POSTs one notification to the topic through the public
port, each size ``--rounds`` times (a fresh topic each time), asking for the short answer
(``Prefer: return=minimal``). Per run it prints how long the API took to answer 201 (everything
stored, majority-acknowledged), when the last online subscriber had it, the answer's size, and
the API process's peak memory growth (VmHWM of /proc/<pid>/status): a fan-out held in memory
grows with the audience, one that streams in batches does not.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid

import aiohttp

from devstack.ports import free_port_run
from devstack.stack import Stack
from shared.runtime import open_runtime
from shared.settings import Settings
from shared.tokens import mint

from .targeted import Receiver

SEED_CHUNK = 20_000


def peak_kib(pid: int) -> int:
    """VmHWM (peak RSS) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key == "VmHWM":
                return int(value.split()[0])
    raise LookupError(f"no VmHWM for process {pid}")


async def one_run(stack: Stack, settings: Settings, http: aiohttp.ClientSession, runtime, *, size: int,
                  online: int, key: str) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    users = [f"{topic}-u{i:07d}" for i in range(size)]
    for start in range(0, size, SEED_CHUNK):
        await runtime.db["topic_subscribers"].insert_many(
            [{"topic": topic, "user": u} for u in users[start:start + SEED_CHUNK]], ordered=False)
    step = max(1, size // online)
    receivers = [Receiver(stack.public_url, mint(settings, sub=u)) for u in users[::step][:online]]
    await asyncio.gather(*(r.connect() for r in receivers))
    await asyncio.gather(*(asyncio.wait_for(r.synced.wait(), 30) for r in receivers))
    for r in receivers:
        r.expect(1)
    pid = stack.api.process.pid
    before = peak_kib(pid)
    started = time.perf_counter()
    async with http.post(f"{stack.public_url}/v1/notifications",
                         json={"topic": topic, "type": "post.created", "actor": {"id": "star", "name": "Star"},
                               "data": {"post_title": "New"}},
                         headers={"Authorization": f"Bearer {key}", "Prefer": "return=minimal"}) as resp:
        body = await resp.read()
        status = resp.status
    answered = time.perf_counter() - started
    await asyncio.gather(*(asyncio.wait_for(r.done.wait(), 120) for r in receivers))
    delivered = time.perf_counter() - started
    after = peak_kib(pid)
    stored = await runtime.db["notifications"].count_documents({"recipient": {"$in": users[::step][:online]}})
    await asyncio.gather(*(r.client.disconnect() for r in receivers))
    if status != 201 or stored != len(receivers):
        raise RuntimeError(f"topic of {size}: status {status}, {stored} of {len(receivers)} online subscribers stored")
    return {"answered": answered, "delivered": delivered, "answer_bytes": len(body),
            "peak_growth_mib": (after - before) / 1024}


async def measure(stack: Stack, settings: Settings, *, sizes: list[int], online: int, rounds: int) -> None:
    key = settings.service_keys[0]
    async with open_runtime(settings, app_name="notihub-bench-topic") as runtime, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        for size in sizes:
            for _ in range(rounds):
                row = await one_run(stack, settings, http, runtime, size=size, online=online, key=key)
                print(f"  {size:>7} subscribers: 201 after {row['answered']:.2f} s, last online had it after "
                      f"{row['delivered']:.2f} s, answer {row['answer_bytes']:,} bytes, API peak +"
                      f"{row['peak_growth_mib']:.1f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.topic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="topic audiences (default 10000,100000)")
    parser.add_argument("--online", type=int, default=40, help="subscribers connected during the fan-out (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per size (default 2)")
    args = parser.parse_args()
    ports = free_port_run(8)
    env = {"NOTIHUB_PUBLIC_PORT": str(ports), "NOTIHUB_API_PORT": str(ports + 1),
           "NOTIHUB_REDIS_PORT": str(ports + 2), "NOTIHUB_MONGO_BASE_PORT": str(ports + 3),
           "NOTIHUB_SOCKET_BASE_PORT": str(ports + 6), "NOTIHUB_SOCKET_WORKERS": "2",
           "NOTIHUB_LOG_LEVEL": "WARNING", "NOTIHUB_KAFKA": "off",
           "NOTIHUB_HANDSHAKE_RATE_LIMIT_PER_ADDRESS": "off"}
    with tempfile.TemporaryDirectory(prefix="notihub-bench-") as tmp, contextlib.ExitStack() as ctx:
        stack = ctx.enter_context(Stack(state_dir=tmp, env=env))
        settings = Settings.from_env(stack.child_env())
        asyncio.run(measure(stack, settings, sizes=[int(s) for s in args.sizes.split(",")],
                            online=args.online, rounds=args.rounds))


if __name__ == "__main__":
    main()
