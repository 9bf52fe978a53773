"""The fault-injection harness: users with three tabs of the real socket.io-client each, producers
over HTTP and Kafka at a fixed rate, one fault in the middle, and a count of what each tab missed
or saw twice.

One run (``FaultRun.execute``) goes:

1. every tab connects through nginx (``reconnection: true``, small delays, ``auth`` with
   ``trackSince`` so that the client keeps ``auth.since`` at the newest id it holds), and a first
   notification per user reaches every tab, so every reconnection during the run asks for a replay;
2. producers start: ``POST /v1/notifications`` at a fixed rate, each request with its own
   ``idempotency_key`` and retried under the same key on a 5xx or a connection error; and
   ``notification.requested`` events written to Kafka with ``acks=all``, retried on error;
3. a quiet stretch gives the producer's latency before the fault; then the fault is injected and
   always undone (``finally``), and the stack must become healthy again (every worker's /healthz,
   the API's /readyz);
4. traffic goes on until the producer's latency is back to its level before the fault (at most
   10 s), then stops; every event Kafka acknowledged must be stored;
5. the fence: one last notification per user, which every tab must receive; then a short wait
   for stragglers, and the comparison per (tab, notification): expected is everything stored for
   the tab's user (and every id an HTTP answer named), received is what the tab saw.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern

from devstack.hub import healthy
from devstack.process import wait_until
from devstack.stack import Stack
from shared.kafka import EVENTS_TOPIC

from ..conftest import SERVICE_KEY, Hub, make_event
from ..jsclient import JsBridge, JsSocket

log = logging.getLogger(__name__)

PROFILE_VAR = "FAULT_PROFILE"
REPORT_PATH = Path(__file__).resolve().parents[2] / "test-output" / "faults.md"

# The producer's latency counts as recovered once a run of this many consecutive requests, each
# answered at the first attempt, has a median back at the level before the fault: within twice
# that median, or 50 ms of it, or under that stretch's 90th percentile, whichever is highest (the
# machine is shared with the whole stack and the Node clients: the level before is noisy too).
RECOVERY_RUN = 10
RECOVERY_FACTOR = 2.0
RECOVERY_SLACK_S = 0.050


def recovery_threshold(before: list[float]) -> float:
    """The median latency that counts as back to the level of ``before`` (latencies before the fault)."""
    p50, p90 = percentile(before, 50) or 0.0, percentile(before, 90) or 0.0
    return max(p50 * RECOVERY_FACTOR, p50 + RECOVERY_SLACK_S, p90)


@dataclasses.dataclass(frozen=True)
class Profile:
    """How big and how long a run is."""

    name: str
    users: int
    http_rate: float  # producer requests per second, over all users
    kafka_rate: float  # events per second, over all users
    before_s: float  # traffic before the fault: the producer latency's reference
    hold_s: float  # how long a killed service stays down (Redis: 2 s in the short profile)
    after_s: float  # traffic goes on at least this long after the fault ends
    tabs: int = 3
    recovery_s: float = 10.0  # the producer's latency must be back within this after the fault
    caught_up_s: float = 5.0  # after everyone reconnects at once, everyone has caught up within this
    request_deadline_s: float = 45.0  # a producer retries one request (or event) this long at most
    settle_s: float = 5.0  # after the fence, how long stragglers may still arrive

    @classmethod
    def from_env(cls) -> "Profile":
        """The profile named by $FAULT_PROFILE (short when unset).

        Not a NOTIHUB_* variable: the suite's conftest removes those, so that a developer's
        settings never reach the services it starts."""
        name = os.environ.get(PROFILE_VAR, "").strip() or "short"
        try:
            return PROFILES[name]
        except KeyError:
            raise ValueError(f"{PROFILE_VAR} must be one of {sorted(PROFILES)}, got {name!r}") from None


PROFILES = {
    # The CI budget: every fault of tests/faults in about four minutes on two cores.
    "short": Profile(name="short", users=4, http_rate=20, kafka_rate=5, before_s=3, hold_s=2, after_s=2),
    # make faults: 300 tabs (100 users × 3), as an operator's staging test would have them.
    "long": Profile(name="long", users=100, http_rate=25, kafka_rate=10, before_s=10, hold_s=5, after_s=15,
                    settle_s=10),
}


async def paced(rate: float, stop: asyncio.Event) -> AsyncIterator[int]:
    """0, 1, 2, … at ``rate`` per second until ``stop`` is set (ten minutes at the most)."""
    began = time.monotonic()
    # Bounded in count as well as by stop(): no run lasts ten minutes.
    for n in range(int(rate * 600)):
        if stop.is_set():
            return
        delay = began + n / rate - time.monotonic()
        if delay > 0:
            # Pacing the send rate, not waiting for anything.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
        yield n


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- producers --------------------------------------------------------------------------------


@dataclasses.dataclass
class Request:
    """One producer request, however many attempts it took."""

    seq: int
    user: str
    key: str
    started: float
    latency: float | None = None  # first attempt to success, as the producer saw it
    attempts: int = 0
    ids: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None  # why it failed in the end, if it did

    @property
    def first_try(self) -> bool:
        return self.latency is not None and self.attempts == 1


class PacedProducer:
    """Sends at a fixed rate (open loop: a slow answer never delays the next send), round robin
    over the users, until stop(); a subclass says what one send is (``_send_one``)."""

    name = "producer"

    def __init__(self, *, users: list[str], rate: float, deadline_s: float) -> None:
        self.users = users
        self.rate = rate
        self.deadline_s = deadline_s
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()

    def _send_one(self, n: int, user: str) -> Awaitable[object]:
        raise NotImplementedError

    def start(self) -> None:
        """Start sending at the fixed rate until stop()."""
        self._loop_task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Send nothing more, and wait for the sends under way (each bounded by its deadline)."""
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
        await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def _cancel(self) -> None:
        self._stop.set()
        tasks = [t for t in [self._loop_task, *self._inflight] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        async for n in paced(self.rate, self._stop):
            task = asyncio.create_task(self._send_one(n, self.users[n % len(self.users)]))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)


class HttpProducer(PacedProducer):
    """POST /v1/notifications at a fixed rate, every request retried under its idempotency key."""

    name = "http-producer"

    def __init__(self, *, url: str, users: list[str], rate: float, deadline_s: float, run_id: str) -> None:
        super().__init__(users=users, rate=rate, deadline_s=deadline_s)
        self.url = f"{url}/v1/notifications"
        self.run_id = run_id
        self.requests: list[Request] = []  # the fixed-rate traffic
        self.others: list[Request] = []  # warm-up and fence
        self.changed = asyncio.Condition()
        self._session: aiohttp.ClientSession | None = None
        self._seq = itertools.count()

    def _send_one(self, n: int, user: str) -> Awaitable[object]:
        return self.send(user, "fault.http")

    async def __aenter__(self) -> "HttpProducer":
        # Each attempt has its own deadline; a timed-out attempt is retried like a 5xx.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cancel()
        if self._session is not None:
            await self._session.close()

    async def send(self, user: str, type_: str) -> Request:
        """One request to one user, retried under the same key until it succeeds or its deadline passes."""
        seq = next(self._seq)
        req = Request(seq=seq, user=user, key=f"{self.run_id}-{seq}", started=time.monotonic())
        (self.requests if type_ == "fault.http" else self.others).append(req)
        body = {"recipients": [user], "type": type_, "actor": {"id": "producer", "name": "Producer"},
                "title": f"{type_} #{seq}", "data": {"seq": seq}, "idempotency_key": req.key}
        headers = {"Authorization": f"Bearer {SERVICE_KEY}"}
        deadline = req.started + self.deadline_s
        assert self._session is not None
        while True:
            req.attempts += 1
            try:
                async with self._session.post(self.url, json=body, headers=headers) as resp:
                    answer = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, answer, req.error = None, b"", f"{type(exc).__name__}: {exc}"
            if status in (200, 201):
                req.latency = time.monotonic() - req.started
                req.ids = [n["id"] for n in orjson.loads(answer)["notifications"]]
                req.error = None
                break
            if status is not None:
                req.error = f"HTTP {status}: {answer[:200].decode('utf-8', 'replace')}"
                if status < 500 and status != 429:
                    break  # a refusal that no retry changes
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)  # pacing the retries
        async with self.changed:
            self.changed.notify_all()
        return req


@dataclasses.dataclass
class SentEvent:
    """One event written to Kafka."""

    event_id: str
    user: str
    started: float
    acked: bool = False
    attempts: int = 0
    error: str | None = None

    @property
    def source(self) -> str:
        return f"event:{self.event_id}"


class KafkaProducer(PacedProducer):
    """notification.requested events at a fixed rate, acks=all, each retried until acknowledged;
    none at all on a stack without Kafka (bootstrap None)."""

    name = "kafka-producer"

    def __init__(self, *, bootstrap: str | None, users: list[str], rate: float, deadline_s: float) -> None:
        super().__init__(users=users, rate=rate, deadline_s=deadline_s)
        self.bootstrap = bootstrap
        self.events: list[SentEvent] = []
        self._producer: AIOKafkaProducer | None = None

    def _send_one(self, n: int, user: str) -> Awaitable[object]:
        return self._send(n, user)

    def start(self) -> None:
        if self.bootstrap is not None:
            super().start()

    async def __aenter__(self) -> "KafkaProducer":
        if self.bootstrap is None:
            return self
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", request_timeout_ms=5000,
                                          retry_backoff_ms=200, client_id="notihub-faults")
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cancel()
        if self._producer is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(self._producer.stop(), 10)

    async def _send(self, n: int, user: str) -> None:
        event = make_event("notification.requested", actor="producer", actor_name="Producer", recipients=[user],
                           notification={"type": "fault.kafka", "title": f"fault.kafka #{n}", "data": {"seq": n}})
        sent = SentEvent(event_id=event["event_id"], user=user, started=time.monotonic())
        self.events.append(sent)
        value, key = orjson.dumps(event), event["event_id"].encode()
        assert self._producer is not None
        while True:
            sent.attempts += 1
            try:
                # The same event again after a failure: ingestion is idempotent on event_id.
                pending = await asyncio.wait_for(self._producer.send(EVENTS_TOPIC, value=value, key=key), 5)
                await asyncio.wait_for(asyncio.shield(pending), 10)
                sent.acked, sent.error = True, None
                return
            except (KafkaError, TimeoutError) as exc:
                sent.error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - sent.started >= self.deadline_s:
                return
            await asyncio.sleep(0.2)  # pacing the retries


# -- what MongoDB stored ------------------------------------------------------------------------


class Stored:
    """Notifications inserted for the run's users, from a change stream opened before the producers."""

    def __init__(self, db, users: list[str]) -> None:
        self._coll = db.get_collection("notifications", read_concern=ReadConcern("majority"))
        self._plain = db["notifications"]
        self.users = users
        self.seen: dict[str, tuple[str, str | None, float]] = {}  # id -> (recipient, source, seen at)
        self.sources: set[str] = set()
        self.changed = asyncio.Condition()
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.stream_errors = 0

    async def __aenter__(self) -> "Stored":
        self._task = asyncio.create_task(self._watch(), name="stored-watch")
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        pipeline = [{"$match": {"operationType": "insert", "fullDocument.recipient": {"$in": self.users}}}]
        resume = None
        # A failover may break the stream more than once: reopen it where it stopped, a bounded
        # number of times.
        for _ in range(100):
            try:
                async with await self._coll.watch(pipeline, max_await_time_ms=200, resume_after=resume) as stream:
                    self._ready.set()
                    while True:
                        change = await stream.try_next()
                        if change is None:
                            continue
                        resume = change["_id"]
                        doc = change["fullDocument"]
                        self.seen[str(doc["_id"])] = (doc["recipient"], doc.get("source"), time.monotonic())
                        if doc.get("source"):
                            self.sources.add(doc["source"])
                        async with self.changed:
                            self.changed.notify_all()
            except PyMongoError as exc:
                self.stream_errors += 1
                log.info("change stream broke (%s); reopening", exc)
                await asyncio.sleep(0.2)  # pacing the reopening

    async def until_sources(self, sources: set[str], timeout: float) -> set[str]:
        """Wait until every source is stored; return the ones still missing after timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async with self.changed:
                    await self.changed.wait_for(lambda: sources <= self.sources)
        return sources - self.sources

    async def all_docs(self, attempts: int = 20) -> list[dict]:
        """Everything stored now for the run's users, read from the primary (retried across a failover)."""
        for attempt in range(attempts):
            try:
                cursor = self._plain.find({"recipient": {"$in": self.users}}, {"_id": 1, "recipient": 1, "source": 1, "type": 1})
                return await cursor.to_list(None)
            except PyMongoError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5)  # pacing the retries
        return []


# -- tabs ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tab:
    user: str
    sock: JsSocket

    def received(self, until: float | None = None) -> list[str]:
        """Ids this tab holds, in arrival order: every `notification`, and the items of an
        `init` that came while the client had no `since` yet (it then shows init's list)."""
        ids: list[str] = []
        has_since = False
        for ev in self.sock.log:
            if until is not None and ev.received > until:
                break
            if ev.name == "notification" and isinstance(ev.data, dict) and "id" in ev.data:
                ids.append(ev.data["id"])
                has_since = True  # trackSince: auth.since is now set
            elif ev.name == "init" and not has_since and isinstance(ev.data, dict):
                ids.extend(n["id"] for n in ev.data.get("notifications") or [])
        return ids

    def back_at(self, after: float) -> tuple[bool, float | None]:
        """(dropped?, when it had its `init` again) for the last disconnect after ``after``."""
        drops = [ev for ev in self.sock.log if ev.name == "disconnect" and ev.received >= after]
        if not drops:
            return False, None
        last = drops[-1].received
        inits = [ev.received for ev in self.sock.log if ev.name == "init" and ev.received > last]
        return True, (inits[0] if inits else None)

    def caught_up_at(self, after: float, needed: set[str]) -> float | None:
        """When, after its last reconnection since ``after`` (or ``after`` itself if it never
        dropped), the tab was connected and held every id of ``needed``."""
        dropped, back = self.back_at(after)
        if dropped and back is None:
            return None
        start = back if dropped else after
        held: set[str] = set()
        has_since = False
        for ev in [None, *self.sock.log]:
            if ev is not None:
                if ev.name == "notification" and isinstance(ev.data, dict) and "id" in ev.data:
                    held.add(ev.data["id"])
                    has_since = True
                elif ev.name == "init" and not has_since and isinstance(ev.data, dict):
                    held.update(n["id"] for n in ev.data.get("notifications") or [])
            # What a tab holds only grows: the first moment it holds them all is the answer.
            if needed <= held:
                return start if ev is None else max(ev.received, start)
        return None


# -- the outcome --------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What one fault did to the clients and the producer."""

    fault: str
    profile: str
    tabs: int
    pairs: int  # (tab, notification) pairs expected
    lost: int
    duplicates: int
    foreign: int  # pairs a tab received that were not its user's
    not_back: int  # tabs not connected at the end
    dropped: int  # tabs that lost their connection during the run
    back_after: float | None  # seconds from the fault until the last dropped tab was back
    caught_up_after: float | None  # seconds from the fault until every tab held all stored before it
    p50: float | None  # producer latency in the fault window
    p99: float | None
    baseline_p50: float | None
    recovery_threshold: float
    recovered_after: float | None  # seconds from the end of the fault until the latency was back
    http_sent: int
    http_retried: int
    http_failed: int
    kafka_sent: int
    kafka_failed: int  # never acknowledged by Kafka within the deadline
    kafka_unstored: int  # acknowledged by Kafka, never stored
    stored_twice: int  # (source, recipient) stored more than once
    resyncs: int  # resync_required events
    examples: list[str] = dataclasses.field(default_factory=list)
    lost_by_tab: dict[str, int] = dataclasses.field(default_factory=dict)
    # Producer latency after the fault, per second: (second, p50, requests, retried), to explain a slow recovery.
    latency_after: list[tuple[int, float | None, int, int]] = dataclasses.field(default_factory=list)
    duplicates_by_tab: dict[str, int] = dataclasses.field(default_factory=dict)

    def problems(self, profile: Profile) -> list[str]:
        """What went wrong for clients or producers (empty: the fault was survived)."""
        problems = []
        if self.lost or self.duplicates or self.foreign:
            problems.append(f"{self.lost} lost and {self.duplicates} duplicate pairs of {self.pairs}"
                            f" ({self.foreign} foreign), e.g. {self.examples}")
        if self.not_back:
            problems.append(f"{self.not_back} of {self.tabs} tabs never came back")
        if self.recovered_after is None or self.recovered_after > profile.recovery_s:
            problems.append(f"the producer's latency was not back to its level before the fault "
                            f"(p50 {(self.baseline_p50 or 0) * 1000:.0f} ms, back below "
                            f"{self.recovery_threshold * 1000:.0f} ms) within {profile.recovery_s} s; after the fault, "
                            f"per second (p50 ms, requests, retried): "
                            + ", ".join(f"{s}s: {'-' if m is None else round(m * 1000)}/{n}/{r}"
                                        for s, m, n, r in self.latency_after))
        if self.http_failed or self.kafka_failed or self.kafka_unstored or self.stored_twice:
            problems.append(f"{self.http_failed} HTTP requests failed, {self.kafka_failed} events never "
                            f"acknowledged, {self.kafka_unstored} acknowledged but never stored, "
                            f"{self.stored_twice} stored twice")
        return problems

    def row(self) -> list[str]:
        def s(x: float | None, unit: str = " s") -> str:
            return "never" if x is None else f"{x:.2f}{unit}"

        back = "no drop" if self.dropped == 0 else (
            s(self.back_after) + (f" ({self.not_back} never)" if self.not_back else "") + f", {self.dropped} dropped")
        latency = "-" if self.p50 is None else f"{self.p50 * 1000:.0f} / {self.p99 * 1000:.0f} ms"
        notes = [f"{self.pairs} pairs, {self.tabs} tabs",
                 f"HTTP {self.http_sent} sent, {self.http_retried} retried, {self.http_failed} failed",
                 f"Kafka {self.kafka_sent} sent, {self.kafka_failed} unacked, {self.kafka_unstored} acked but not stored"]
        if self.stored_twice:
            notes.append(f"{self.stored_twice} stored twice")
        if self.foreign:
            notes.append(f"{self.foreign} foreign")
        if self.resyncs:
            notes.append(f"{self.resyncs} resync_required")
        return [self.fault, str(self.lost), str(self.duplicates), back, latency,
                s(self.recovered_after), s(self.caught_up_after), "; ".join(notes)]


HEADER = ["fault", "lost pairs", "duplicates", "sockets back after", "producer p50 / p99 in window",
          "latency recovered after", "caught up after", "notes"]


class Report:
    """The table of every fault run in this session: printed, and written to test-output/faults.md."""

    def __init__(self, path: Path = REPORT_PATH) -> None:
        self.path = path
        self.outcomes: list[Outcome] = []

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.write()

    def table(self) -> str:
        rows = [HEADER, *(o.row() for o in self.outcomes)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)

    def write(self) -> None:
        if not self.outcomes:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        profile = self.outcomes[0].profile
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        examples = "\n".join(f"- {o.fault}: {', '.join(o.examples)}" for o in self.outcomes if o.examples)
        self.path.write_text(f"# Fault-injection suite ({profile} profile, {stamp})\n\n{self.table()}\n"
                             + (f"\nExamples of lost or duplicated pairs (tab: id):\n\n{examples}\n" if examples else ""))


# -- one run ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fault:
    """A fault: ``inject`` breaks something and holds it broken; ``restore`` undoes it whatever
    state ``inject`` left (it runs even when ``inject`` failed half-way)."""

    name: str
    inject: Callable[["FaultRun"], Awaitable[None]]
    restore: Callable[["FaultRun"], Awaitable[None]]


async def nothing(run: "FaultRun") -> None:
    """Inject or restore nothing."""
    return None


BASELINE = Fault("baseline", nothing, nothing)


async def wait_stack_healthy(stack: Stack, timeout: float = 90.0) -> None:
    """Every socket and ingest worker answers /healthz, and the API (direct and through nginx) /readyz."""
    urls = [f"{u}/healthz" for u in [*stack.worker_urls.values(), *stack.ingest_urls.values()]]
    urls += [f"{stack.api_url}/readyz", f"{stack.public_url}/readyz"]
    # Processes give no event when they are ready: devstack's bounded poll is the one place for that.
    await asyncio.to_thread(wait_until, lambda: all(healthy(u) for u in urls), timeout, "the stack to be healthy")


class FaultRun:
    """Users, tabs and producers for one fault; ``execute`` runs it and returns the Outcome."""

    def __init__(self, *, stack: Stack, hub: Hub, js: JsBridge, db, profile: Profile) -> None:
        self.stack = stack
        self.hub = hub
        self.js = js
        self.db = db
        self.profile = profile
        self.run_id = f"fault-{uuid.uuid4().hex[:10]}"
        self.users = [hub.new_user("fi") for _ in range(profile.users)]
        self.tabs: list[Tab] = []
        self.fault_start: float | None = None
        self.fault_end: float | None = None
        self.healthy_at: float | None = None
        self.state: dict[str, object] = {}  # what a fault remembers between inject and restore
        self._stack = contextlib.AsyncExitStack()
        self.http: HttpProducer | None = None
        self.kafka: KafkaProducer | None = None
        self.stored: Stored | None = None

    async def __aenter__(self) -> "FaultRun":
        try:
            self.stored = await self._stack.enter_async_context(Stored(self.db, self.users))
            self.http = await self._stack.enter_async_context(
                HttpProducer(url=self.hub.url, users=self.users, rate=self.profile.http_rate,
                             deadline_s=self.profile.request_deadline_s, run_id=self.run_id))
            self.kafka = await self._stack.enter_async_context(
                KafkaProducer(bootstrap=self.stack.kafka_bootstrap, users=self.users, rate=self.profile.kafka_rate,
                              deadline_s=self.profile.request_deadline_s))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # -- steps ----------------------------------------------------------------------------------

    async def connect_tabs(self) -> None:
        """Every user's tabs, spread over the workers by nginx; returns once each had its `init`."""

        async def one(user: str, i: int) -> Tab:
            # One tab of three starts on long-polling and upgrades, as a browser does by default.
            transports = ["polling", "websocket"] if i == 1 else ["websocket"]
            sock = await self.hub.connect(self.js, f"{user}/t{i}", user, use_auth=True, transports=transports,
                                          reconnection_delay=100, reconnection_delay_max=500, timeout=5000,
                                          options={"trackSince": True})
            await sock.wait_for("init", timeout=20, consume=False)
            return Tab(user=user, sock=sock)

        self.tabs = list(await asyncio.gather(*(one(u, i) for u in self.users for i in range(self.profile.tabs))))

    async def warm_up(self) -> None:
        """One notification per user, received by every tab: from now on every tab has a `since`."""
        assert self.http is not None
        sent = await asyncio.gather(*(self.http.send(u, "fault.warmup") for u in self.users))
        for req in sent:
            assert req.ids, f"the warm-up request failed: {req.error}"
        ids = {req.user: req.ids[0] for req in sent}
        await asyncio.gather(*(t.sock.wait_for("notification", timeout=20, consume=False,
                                               predicate=lambda n, want=ids[t.user]: n.get("id") == want)
                               for t in self.tabs))

    def stored_before(self, moment: float) -> dict[str, set[str]]:
        """Per user, the ids known to be stored before ``moment`` (HTTP answers and the change stream)."""
        assert self.http is not None and self.stored is not None
        known: dict[str, set[str]] = {u: set() for u in self.users}
        for req in self.http.requests:
            if req.latency is not None and req.started + req.latency <= moment:
                known[req.user].update(req.ids)
        for id_, (recipient, _source, seen_at) in list(self.stored.seen.items()):
            if seen_at <= moment and recipient in known:
                known[recipient].add(id_)
        return known

    async def answered(self, user: str, count: int, *, after: float, timeout: float = 20) -> None:
        """Wait until the HTTP producer has had ``count`` answers for ``user`` to requests started after ``after``."""
        assert self.http is not None
        http = self.http

        def enough() -> bool:
            return sum(1 for r in http.requests if r.user == user and r.started >= after and r.latency is not None) >= count

        async with asyncio.timeout(timeout):
            async with http.changed:
                await http.changed.wait_for(enough)

    def recovered_at(self, threshold: float) -> float | None:
        """Start of the first run of RECOVERY_RUN requests after the fault, each answered at the
        first attempt, whose median is within ``threshold``."""
        assert self.http is not None and self.fault_end is not None
        after = sorted((r for r in self.http.requests if r.started >= self.fault_end), key=lambda r: r.started)
        for i in range(len(after) - RECOVERY_RUN + 1):
            window = after[i:i + RECOVERY_RUN]
            if any(r.latency is None and r.error is None for r in window):
                return None  # still under way: not decided yet
            if all(r.first_try for r in window):
                if percentile([r.latency for r in window], 50) <= threshold:
                    return window[0].started
        return None

    async def execute(self, fault: Fault) -> Outcome:
        """Run the whole scenario around ``fault`` and measure it."""
        assert self.http is not None and self.kafka is not None and self.stored is not None
        p = self.profile
        await self.connect_tabs()
        await self.warm_up()
        self.http.start()
        self.kafka.start()
        # The reference latency: traffic without a fault (a fixed stretch, not a wait for an event).
        await asyncio.sleep(p.before_s)
        before = [r.latency for r in self.http.requests if r.latency is not None]
        baseline, threshold = percentile(before, 50), recovery_threshold(before)
        self.fault_start = time.monotonic()
        try:
            await fault.inject(self)
        finally:
            try:
                await fault.restore(self)
            finally:
                self.fault_end = time.monotonic()
                await wait_stack_healthy(self.stack)
                self.healthy_at = time.monotonic()
        # Traffic goes on until the latency is back (at most recovery_s, plus one run of requests).
        recovered_at: float | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, self.fault_end + p.recovery_s + RECOVERY_RUN / p.http_rate
                                           - time.monotonic())):
                async with self.http.changed:
                    await self.http.changed.wait_for(lambda: self.recovered_at(threshold) is not None)
        recovered_at = self.recovered_at(threshold)
        remaining = self.fault_end + p.after_s - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)  # a fixed stretch of traffic after the fault
        await self.http.stop()
        await self.kafka.stop()
        return await self._fence_and_count(fault, baseline, threshold, recovered_at)

    async def _fence_and_count(self, fault: Fault, baseline: float | None, threshold: float,
                               recovered_at: float | None) -> Outcome:
        assert self.http is not None and self.kafka is not None and self.stored is not None
        assert self.fault_start is not None and self.fault_end is not None and self.healthy_at is not None
        p = self.profile
        acked = {e.source for e in self.kafka.events if e.acked}
        # Everything Kafka acknowledged must be stored; ingestion may need a rebalance first.
        await self.stored.until_sources(acked, timeout=90)
        # The fence: one last notification per user; every tab must get it.
        fences = await asyncio.gather(*(self.http.send(u, "fault.fence") for u in self.users))
        fence_ids = {req.user: (req.ids[0] if req.ids else None) for req in fences}
        docs = await self.stored.all_docs()
        unstored = acked - self.stored.sources - {d.get("source") for d in docs}
        expected: dict[str, set[str]] = {u: set() for u in self.users}
        for doc in docs:
            expected[doc["recipient"]].add(str(doc["_id"]))
        for id_, (recipient, _source, _at) in self.stored.seen.items():
            expected[recipient].add(id_)  # also what was trimmed since
        for req in self.http.requests:
            expected[req.user].update(req.ids)  # an answered id that is not stored is lost too
        for source in unstored:
            user = next(e.user for e in self.kafka.events if e.source == source)
            expected[user].add(source)  # never stored, so never received: lost on every tab

        async def settle(tab: Tab) -> None:
            fence = fence_ids[tab.user]
            with contextlib.suppress(TimeoutError):
                if fence is not None:
                    await tab.sock.wait_for("notification", timeout=30, consume=False,
                                            predicate=lambda n: n.get("id") == fence)
                # Stragglers: each missing id, for a bounded time in all.
                async with asyncio.timeout(p.settle_s):
                    for id_ in sorted(expected[tab.user] - set(tab.received())):
                        if id_.startswith("event:"):
                            continue
                        await tab.sock.wait_for("notification", timeout=p.settle_s, consume=False,
                                                predicate=lambda n, want=id_: n.get("id") == want)

        await asyncio.gather(*(settle(t) for t in self.tabs))

        # Where a notification came from, to explain a loss.
        origin = {str(d["_id"]): d.get("type", "?") for d in docs}
        origin.update({f"event:{e.event_id}": "fault.kafka, never stored" for e in self.kafka.events})
        for r in [*self.http.requests, *self.http.others]:
            for i in r.ids:
                origin[i] = f"{origin.get(i, 'not stored')}, HTTP {r.attempts} attempt{'s' if r.attempts > 1 else ''}"
        lost = duplicates = foreign = 0
        examples: list[str] = []
        lost_by_tab: dict[str, int] = {}
        duplicates_by_tab: dict[str, int] = {}
        all_ids = set().union(*expected.values())
        for tab in self.tabs:
            got = Counter(tab.received())
            missing = expected[tab.user] - set(got)
            twice = [i for i, c in got.items() if c > 1]
            lost += len(missing)
            duplicates += len(twice)
            if missing:
                lost_by_tab[tab.sock.id] = len(missing)
            if twice:
                duplicates_by_tab[tab.sock.id] = len(twice)
            foreign += sum(1 for i in got if i not in expected[tab.user] and i in all_ids)
            examples += [f"{tab.sock.id}: lost {i} ({origin.get(i, 'stored')})" for i in sorted(missing)[:2]]
            examples += [f"{tab.sock.id}: twice {i}" for i in sorted(twice)[:2]]
        by_source = Counter((d.get("source"), d["recipient"]) for d in docs if d.get("source"))
        stored_twice = sum(1 for c in by_source.values() if c > 1)

        # Sockets back: from the fault, until the last tab that dropped had its `init` again.
        backs = [t.back_at(self.fault_start) for t in self.tabs]
        dropped = sum(1 for d, _ in backs if d)
        not_back = sum(1 for t, (d, b) in zip(self.tabs, backs) if (d and b is None) or not t.sock.connected)
        back_after: float | None = max((b - self.fault_start for d, b in backs if d and b is not None), default=0.0)
        if not_back:
            back_after = None
        # Caught up: every tab holds everything stored before the fault, connected again.
        before = self.stored_before(self.fault_start)
        caught = [t.caught_up_at(self.fault_start, before[t.user]) for t in self.tabs]
        caught_up_after = None if any(c is None for c in caught) else max(c - self.fault_start for c in caught)

        latency_after = []
        for second in range(int(p.recovery_s) + 2):
            bucket = [r for r in self.http.requests if second <= r.started - self.fault_end < second + 1]
            latency_after.append((second, percentile([r.latency for r in bucket if r.latency is not None], 50),
                                  len(bucket), sum(1 for r in bucket if r.attempts > 1)))
        window_end = max(self.healthy_at, self.fault_start + 2.0)
        in_window = [r.latency for r in self.http.requests
                     if self.fault_start <= r.started <= window_end and r.latency is not None]
        return Outcome(
            fault=fault.name, profile=p.name, tabs=len(self.tabs),
            pairs=sum(len(expected[t.user]) for t in self.tabs),
            lost=lost, duplicates=duplicates, foreign=foreign, not_back=not_back, dropped=dropped,
            back_after=back_after, caught_up_after=caught_up_after,
            p50=percentile(in_window, 50), p99=percentile(in_window, 99), baseline_p50=baseline, recovery_threshold=threshold,
            recovered_after=None if recovered_at is None else max(0.0, recovered_at - self.fault_end),
            http_sent=len(self.http.requests), http_retried=sum(1 for r in self.http.requests if r.attempts > 1),
            http_failed=sum(1 for r in self.http.requests if r.latency is None),
            kafka_sent=len(self.kafka.events), kafka_failed=sum(1 for e in self.kafka.events if not e.acked),
            kafka_unstored=len(unstored), stored_twice=stored_twice,
            resyncs=sum(len(t.sock.events("resync_required")) for t in self.tabs),
            examples=examples[:6], lost_by_tab=lost_by_tab, duplicates_by_tab=duplicates_by_tab,
            latency_after=latency_after,
        )
