"""Every fault the service must survive without losing or repeating a notification on any tab.

The faults run one after another on the session's stack; each one is undone at its end, even on
failure, and the next starts from a healthy stack. FAULT_PROFILE=long (make faults) runs the same
faults with more clients and longer windows. The table lands in test-output/faults.md."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter

import pytest

from .harness import BASELINE, Fault, FaultRun, Profile, nothing, wait_stack_healthy

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PROFILE = Profile.from_env()
INGEST = "i0"


async def _hold(run: FaultRun) -> None:
    await asyncio.sleep(run.profile.hold_s)  # holding the fault for a fixed time


# -- a socket worker dies -------------------------------------------------------------------------

async def _kill_worker(run: FaultRun) -> None:
    # The worker holding the most tabs, so that the most clients move.
    counts = Counter(t.sock.engine_id.split(".", 1)[0] for t in run.tabs if t.sock.engine_id)
    wid = counts.most_common(1)[0][0] if counts else run.stack.worker_ids[0]
    run.state["worker"] = wid
    await asyncio.to_thread(run.stack.kill_worker, wid)
    await _hold(run)


async def _restart_dead_workers(run: FaultRun) -> None:
    for wid, worker in run.stack.socket_workers.items():
        if not worker.alive:
            await asyncio.to_thread(run.stack.restart_worker, wid)


# -- Redis dies and comes back empty --------------------------------------------------------------

async def _kill_redis(run: FaultRun) -> None:
    await asyncio.to_thread(run.stack.kill_redis)
    await _hold(run)


async def _start_redis(run: FaultRun) -> None:
    await asyncio.to_thread(run.stack.start_redis)


# -- the MongoDB primary steps down ---------------------------------------------------------------

async def _step_down_primary(run: FaultRun) -> None:
    mongo = run.stack.mongo
    assert mongo is not None
    step_down = int(max(5, 2 * run.profile.hold_s))
    old = await asyncio.to_thread(mongo.step_down_primary, step_down_secs=step_down, catch_up_secs=1)
    run.state["new_primary"] = await asyncio.to_thread(mongo.wait_for_primary, 30, other_than=old)


async def _restore_primary(run: FaultRun) -> None:
    # Member 0 takes over again once its step-down period is over: a second failover, inside the window.
    assert run.stack.mongo is not None
    await asyncio.to_thread(run.stack.mongo.restore_preferred_primary)


# -- the Kafka broker restarts --------------------------------------------------------------------

async def _stop_kafka(run: FaultRun) -> None:
    await asyncio.to_thread(run.stack.stop_kafka)
    await _hold(run)


async def _start_kafka(run: FaultRun) -> None:
    await asyncio.to_thread(run.stack.start_kafka)


# -- an ingest worker dies mid-stream -------------------------------------------------------------

async def _kill_ingest(run: FaultRun) -> None:
    await asyncio.to_thread(run.stack.kill_ingest_worker, INGEST)
    await _hold(run)


async def _restart_ingest(run: FaultRun) -> None:
    if not run.stack.ingest_workers[INGEST].alive:
        await asyncio.to_thread(run.stack.restart_ingest_worker, INGEST)


# -- every client reconnects at once --------------------------------------------------------------

async def _drop_every_transport(run: FaultRun) -> None:
    await asyncio.gather(*(t.sock.drop() for t in run.tabs))


FAULTS = [
    BASELINE,
    Fault("socket worker SIGKILL", _kill_worker, _restart_dead_workers),
    Fault(f"redis killed, back {PROFILE.hold_s:g}s later", _kill_redis, _start_redis),
    Fault("mongo primary stepped down", _step_down_primary, _restore_primary),
    Fault("kafka broker restart", _stop_kafka, _start_kafka),
    Fault("ingest worker SIGKILL", _kill_ingest, _restart_ingest),
    Fault("all clients reconnect at once", _drop_every_transport, nothing),
]


# -- the harness checks itself --------------------------------------------------------------------

async def _misbehave(run: FaultRun) -> None:
    """One tab forgets its `since` over a gap, another rewinds it to its first notification."""
    forgets, rewinds = run.tabs[0], run.tabs[1]
    run.state.update(forgets=forgets.sock.id, rewinds=rewinds.sock.id)
    # Disconnected first, so that trackSince cannot move `since` again before the reconnection.
    await asyncio.gather(forgets.sock.disconnect(), rewinds.sock.disconnect())
    await run.answered(forgets.user, 2, after=time.monotonic())
    await forgets.sock.set_auth({"token": run.hub.token(forgets.user), "lang": "en"})
    await rewinds.sock.set_auth({"since": rewinds.received()[0]}, merge=True)
    await asyncio.gather(forgets.sock.open(), rewinds.sock.open())


async def test_the_harness_counts_what_misbehaving_clients_lose_and_repeat(stack, hub, runtime, js):
    """A negative control: without it, a harness that counted nothing would pass every fault."""
    await wait_stack_healthy(stack)
    profile = dataclasses.replace(PROFILE, users=2, before_s=2, after_s=1)
    async with FaultRun(stack=stack, hub=hub, js=js, db=runtime.db, profile=profile) as run:
        outcome = await run.execute(Fault("misbehaving clients", _misbehave, nothing))
    print(f"\nharness self-check: lost {outcome.lost_by_tab}, duplicates {outcome.duplicates_by_tab}")
    assert list(outcome.lost_by_tab) == [run.state["forgets"]] and outcome.lost >= 2, outcome
    assert list(outcome.duplicates_by_tab) == [run.state["rewinds"]] and outcome.duplicates >= 1, outcome


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name.split(",")[0].replace(" ", "-") for f in FAULTS])
async def test_no_tab_loses_or_repeats_a_notification(fault, stack, hub, runtime, js, fault_report):
    await wait_stack_healthy(stack)
    async with FaultRun(stack=stack, hub=hub, js=js, db=runtime.db, profile=PROFILE) as run:
        outcome = await run.execute(fault)
    fault_report.add(outcome)
    print("\n" + " | ".join(outcome.row()))

    problems = outcome.problems(PROFILE)
    if fault.inject is _drop_every_transport and (outcome.caught_up_after is None
                                                  or outcome.caught_up_after > PROFILE.caught_up_s):
        problems.append(f"not every tab had caught up within {PROFILE.caught_up_s} s: {outcome.caught_up_after}")
    assert not problems, f"{fault.name}: " + "; ".join(problems)
