"""A Redis Cluster master dies while notifications are published: its replica takes over, the
workers subscribe again on the new master and catch up from MongoDB, and no tab loses or repeats
a notification. The killed node then comes back as a replica, and the next fault starts from a
healthy cluster.

The same harness as tests/faults/test_faults.py, on the cluster stack (tests/conftest.py)."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from shared import redisconn

from .harness import Fault, FaultRun, Profile, wait_stack_healthy

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PROFILE = Profile.from_env()


def _channel_slots(run: FaultRun) -> dict[str, int]:
    """The hash slot of each worker's bus channel, the busiest worker first."""
    counts = Counter(t.sock.engine_id.split(".", 1)[0] for t in run.tabs if t.sock.engine_id)
    workers = sorted(run.stack.worker_ids, key=lambda w: -counts[w])
    return {w: redisconn.slot(f"{run.hub.settings.channel_prefix}:bus:{w}") for w in workers}


async def _kill(run: FaultRun, slot: int) -> None:
    run.state["port"] = await asyncio.to_thread(run.stack.kill_redis_master, slot)
    await asyncio.sleep(run.profile.hold_s)  # holding the fault for a fixed time


async def _kill_master_of_a_worker_channel(run: FaultRun) -> None:
    worker, slot = next(iter(_channel_slots(run).items()))
    run.state["worker"] = worker
    await _kill(run, slot)


async def _kill_master_of_no_worker_channel(run: FaultRun) -> None:
    # The master serving the fewest workers' channels (none, when there is one): what dies is
    # presence leases, rate-limit state and the shared channels, not a worker's subscription.
    cluster = run.stack.redis_cluster
    masters = cluster.masters()
    owned = Counter(cluster.master_of(slot) for slot in _channel_slots(run).values())
    port = min(masters, key=lambda p: owned[p])
    await _kill(run, masters[port][0][0])


async def _start_killed_node(run: FaultRun) -> None:
    await asyncio.to_thread(run.stack.start_redis_node, run.state["port"])


FAULTS = [
    Fault("redis cluster: master of a worker's channel SIGKILL", _kill_master_of_a_worker_channel,
          _start_killed_node),
    Fault("redis cluster: master of no worker's channel SIGKILL", _kill_master_of_no_worker_channel,
          _start_killed_node),
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS, ids=["worker-channel-master", "other-master"])
async def test_no_tab_loses_or_repeats_a_notification_when_a_cluster_master_dies(
        fault, cluster_stack, cluster_hub, cluster_runtime, js, fault_report):
    await wait_stack_healthy(cluster_stack)
    async with FaultRun(stack=cluster_stack, hub=cluster_hub, js=js, db=cluster_runtime.db, profile=PROFILE) as run:
        outcome = await run.execute(fault)
    fault_report.add(outcome)
    print("\n" + " | ".join(outcome.row()))
    assert not (problems := outcome.problems(PROFILE)), f"{fault.name}: " + "; ".join(problems)
