"""Hostile Socket.IO traffic against a real worker, through the load balancer.

An attacker with a valid token sends generated events (any name, any arguments, any ack id),
then raw frames no client library would send (malformed packets, other namespaces, binary
attachments with wrong counts, huge strings, 10,000-level nesting, non-JSON), then 10,000 events
in one burst. Whatever it sends:
- the worker stays up: its process runs, /healthz answers, a fresh well-behaved socket gets init;
- no acknowledgement is an internal error (``{ok: false, error: {code: "internal"}}``), and every
  well-formed event with an ack id is answered in the contract's shape (``rate_limited`` included);
- a bystander socket on the same worker gets a notification published during the attack, and
  its ``mark_all_read`` is answered;
- the hub's own code logs no unhandled exception.
The attacker may be refused (``rate_limited``) or disconnected; it is then replaced by a new one.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import strategies as st

from .arena import (
    Attacker,
    Client,
    bystander_unaffected,
    check_ack,
    error_code,
    fresh_socket_gets_init,
    open_attacker,
    receives,
    run_examples,
    worker_is_healthy,
)
from .rawio import FENCE_BASE, Closed

HANDLERS = ["mark_read", "mark_all_read", "list"]
# python-engineio's max_http_buffer_size (its default): a bigger websocket message closes the connection.
ENGINEIO_LIMIT = 1_000_000
RESERVED = ["connect", "disconnect", "connect_error", "disconnecting", "newListener", "removeListener"]
# Names that exist somewhere in the server (methods, server-to-client events), never client events.
ODD_NAMES = ["init", "notification", "notifications_read", "session_expired", "message", "on_list", "_sync",
             "trigger_event", "__init__", "__class__", "constructor", "__proto__", "list ", "LIST", "mark_read\x00",
             "", "*", "mark_seen", "archive"]

weird_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "Mn"]), max_size=10),  # lone surrogates, controls
    st.sampled_from(["\x00", "\u202e", "\ufeff", "%00", "../../etc/passwd", "$where", "{'$gt': ''}", "\\", "𝔘"]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(10**60), max_value=10**60), st.floats(allow_nan=False, allow_infinity=False),
    weird_text,
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(weird_text, inner, max_size=4),
    max_leaves=12)
# Mongo operators and look-alikes, where ids or cursors are expected.
mongo_like = st.sampled_from([{"$gt": ""}, {"$ne": None}, {"$where": "1"}, {"$regex": ".*"}, ["$gt"], {"$oid": "0" * 24}])
hex24 = st.text(alphabet="0123456789abcdefABCDEF", min_size=24, max_size=24)
ids = st.one_of(
    st.lists(st.one_of(hex24, st.text(min_size=24, max_size=24), json_values, mongo_like), max_size=6),
    st.sampled_from([1000, 1001, 5000]).map(lambda n: ["0" * 24] * n),
    json_values, mongo_like)
cursors = st.one_of(weird_text, json_values, mongo_like,
                    st.binary(min_size=13, max_size=13).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode()),
                    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=70))
limits = st.one_of(st.integers(), st.sampled_from([0, -1, 1, 100, 101, 2**63, 10**20]), json_values)
handler_args = st.fixed_dictionaries({}, optional={
    "ids": ids, "cursor": cursors, "limit": limits, "unread_only": json_values, "__proto__": json_values})
huge_text = st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "é", "\x00", "\\u0000", "💥"]),
                      st.sampled_from([10_000, 200_000, 400_000]))
event_names = st.one_of(st.sampled_from(HANDLERS + RESERVED + ODD_NAMES), weird_text, json_values, huge_text)
arguments = st.one_of(
    st.tuples(handler_args),
    st.lists(st.one_of(handler_args, json_values, huge_text), max_size=3).map(tuple),
    st.just(()),
)
# Ack ids up to 99 digits (python-socketio's limit), away from the suite's own fence ids.
ack_ids = st.one_of(st.none(), st.integers(0, 2**31), st.integers(0, FENCE_BASE - 1),
                    st.integers(10**16, 10**99 - 1))


class Event:
    """One event as the attacker sends it, with a short repr for failure reports."""

    def __init__(self, name, args, ack_id) -> None:
        self.name, self.args, self.ack_id = name, list(args), ack_id

    @property
    def packet(self) -> list:
        return [self.name, *self.args]

    def __repr__(self) -> str:
        text = json.dumps(self.packet, default=str)
        if len(text) > 400:
            text = text[:400] + f"... ({len(text)} characters)"
        return f"Event(ack_id={self.ack_id}, packet={text})"


events = st.builds(Event, event_names, arguments, ack_ids)

EXPLICIT_EVENTS = [
    Event("mark_read", [{"ids": [{"$gt": ""}]}], 1),
    Event("list", [{"cursor": {"$ne": None}, "limit": 2**80}], 2),
    Event("list", [{"limit": 1e308}], 3),
    Event("mark_read", [{"ids": ["0" * 24] * 1001}], 4),
    Event("mark_all_read", ["x" * 900_000], 5),  # just under the Engine.IO limit
    Event("mark_all_read", ["x" * 1_100_000], 6),  # over it: the server may close the connection
    Event([[["nested"]]], [], 7),
    Event(["x"] * 2000, [], 8),
    Event("connect", [{"QUERY_STRING": "token=forged"}, {"token": "forged"}], 9),
    Event("disconnect", ["client namespace disconnect"], 10),
    Event("\ud800", [{"ids": ["\udc00" * 24]}], 11),
    Event("list", [{"cursor": "\x00" * 64, "unread_only": "yes"}], 12),
    Event("mark_read", [{"ids": ["0" * 24]}, "extra", {"extra": True}], int("9" * 99)),
    Event("list", [{}], 10**98),
]


@pytest.fixture
async def arena(hub, raw_http, stack, http):
    """An attacker's worker with a bystander on it (checked again at the end)."""
    first = await open_attacker(raw_http, hub)
    worker = first.worker
    await first.close()
    bystander = await Client.on_worker(hub, worker)
    attacker = Attacker(raw_http, hub, worker)
    yield attacker, bystander
    await attacker.recycle()
    await bystander.close()


async def _survived(hub, stack, http, attacker, bystander, publishing: list) -> None:
    # The notification published during the attack (or now, if the attack ended first) reached
    # the bystander, and the worker and the bystander still serve.
    if not publishing:
        publishing.append(asyncio.create_task(hub.publish([bystander.user], "user.followed")))
    status, body = await publishing[0]
    assert status == 201, (status, body)
    await receives(bystander, body)
    await worker_is_healthy(stack, http, attacker.worker)
    await fresh_socket_gets_init(hub, attacker.worker)
    await bystander_unaffected(hub, bystander)
    for ack_id, ack in attacker.acks:
        check_ack(ack, f"ack {ack_id}")


async def test_generated_events_get_contract_answers(hub, stack, http, arena, tally, stack_logs):
    attacker, bystander = arena
    publishing: list[asyncio.Task] = []
    answers: dict[str, int] = {}

    async def check(event: Event) -> None:
        mark = stack_logs.mark()
        if len(publishing) == 0 and tally.count >= 40:  # a notification for the bystander, mid-attack
            publishing.append(asyncio.create_task(hub.publish([bystander.user], "user.followed",
                                                              actor={"id": "x", "name": "Lee"})))
        sock = await attacker.socket()
        try:
            await sock.emit(event.packet, event.ack_id)
            attacker.sent += 1
            if event.ack_id is None:
                outcome = await attacker.fence()
            else:
                ack = await sock.ack(event.ack_id, timeout=15)
                check_ack(ack, repr(event))
                outcome = error_code(ack) or "ok"
        except Closed:
            # Only for a message over the Engine.IO size limit, or a socket refused for flooding.
            size = len(sock.event_packet(event.packet, event.ack_id).encode("utf-8", "surrogatepass"))
            flooding = any(error_code(ack) == "rate_limited" for _, ack in sock.all_acks)
            assert size > ENGINEIO_LIMIT or flooding, f"the server closed the socket after {event!r}"
            outcome = "closed"
            await attacker.recycle()
        except TimeoutError:
            raise AssertionError(f"no acknowledgement within 15 s for {event!r}") from None
        answers[outcome] = answers.get(outcome, 0) + 1
        assert stack.socket_workers[attacker.worker].alive, f"worker {attacker.worker} died after {event!r}"
        stack_logs.assert_no_defects(mark)

    failures = await run_examples(events, check, max_examples=150, tally=tally, explicit=EXPLICIT_EVENTS)
    await _survived(hub, stack, http, attacker, bystander, publishing)
    print(f"answers: {dict(sorted(answers.items()))}; {attacker.summary()}")
    failures.raise_if_any()


# -- raw frames ----------------------------------------------------------------------------

class Frames:
    """Websocket frames sent in a row (text or binary), with a short repr."""

    def __init__(self, frames, *, expect_ack: int | None = None, label: str = "") -> None:
        self.frames = list(frames)
        self.expect_ack = expect_ack
        self.label = label

    @property
    def unfenceable(self) -> bool:
        # After a BINARY_EVENT/BINARY_ACK header, python-socketio reads the next frames as its
        # attachments whatever they are; after a namespace DISCONNECT or an Engine.IO CLOSE no
        # event is answered: a fence would go unanswered, so the socket is replaced instead.
        return any(isinstance(f, str) and (f[:2] in ("45", "46", "41") or f[:1] == "1") for f in self.frames)

    def __repr__(self) -> str:
        shown = []
        for f in self.frames:
            r = repr(f)
            shown.append(r if len(r) <= 200 else r[:200] + f"...({len(f)} long)")
        return f"Frames({self.label + ': ' if self.label else ''}[{', '.join(shown)}])"


def _nested(depth: int, open_: str = "[", close: str = "]", inner: str = "") -> str:
    return open_ * depth + inner + close * depth


eio_types = st.sampled_from(["4", "4", "4", "4", "0", "1", "2", "3", "5", "6", "7", "9", "", "44", "x"])
sio_types = st.sampled_from(["2", "2", "2", "2", "2", "0", "1", "3", "4", "5", "6", "7", "9", "", "-", "٢"])
attachment_counts = st.sampled_from(["", "", "0-", "1-", "2-", "3-", "99999999999-", "-1-", "x-", "1"])
namespaces = st.one_of(
    st.sampled_from(["/notifications,", "/notifications,", "", "/", "/,", "/other,", "/notifications",
                     "/notifications/,", "/notifications?token=x,", "/NOTIFICATIONS,", "/notifications\x00,",
                     "//,", "/admin,", "/notifications/../,", "*,"]),
    weird_text.map(lambda t: "/" + t + ","))
ack_texts = st.sampled_from(["", "", "1", "0", "00", "007", "-1", "9" * 99, "9" * 100, "9" * 101, "1e5", "٣",
                             "１２", "18446744073709551616"])
bodies = st.one_of(
    st.builds(lambda name, args: json.dumps([name, *args]), event_names, arguments),
    json_values.map(json.dumps),
    st.sampled_from(["", "[", "]", "[\"list\"", "{\"a\":", "NaN", "[NaN]", "[Infinity,-Infinity]", "null", "[]",
                     "{}", "\"str\"", "[\"list\",{\"limit\":1e99999}]", "[\"list\"]garbage", "\x00", "\ud800",
                     "[\"mark_read\",{\"ids\":[\"" + "0" * 24 + "\"]}]", '["list",{"limit":1}]' * 3]),
    st.sampled_from([10, 900, 990, 1000, 10_000]).map(lambda d: _nested(d)),
    st.sampled_from([500, 990, 10_000]).map(lambda d: '["list",' + _nested(d, '{"a":', "}", "1") + "]"),
    weird_text,
)
text_packets = st.builds(lambda e, s, a, n, i, b: e + s + a + n + i + b,
                         eio_types, sio_types, attachment_counts, namespaces, ack_texts, bodies)
binary_frames = st.binary(max_size=64)


def _binary_event(count: int, placeholders: list, sent: int, ack: int) -> Frames:
    body = json.dumps(["list", {"blobs": [{"_placeholder": True, "num": n} for n in placeholders]}])
    header = f"45{count}-/notifications,{ack}{body}"
    consistent = 0 < count == sent and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < count
                                       for n in placeholders)
    return Frames([header, *(bytes([i]) * 4 for i in range(sent))], expect_ack=ack if consistent else None,
                  label="binary event")


binary_events = st.builds(
    _binary_event, st.integers(0, 3),
    st.lists(st.one_of(st.integers(-3, 5), st.sampled_from(["0", None, True, 1.5, 10**30])), max_size=3),
    st.integers(0, 4), st.integers(1, 10**6))
frame_lists = st.one_of(
    st.lists(st.one_of(text_packets, text_packets, binary_frames, weird_text), min_size=1, max_size=3).map(Frames),
    st.lists(st.one_of(text_packets, weird_text), min_size=1, max_size=3).map(Frames),
    st.lists(text_packets, min_size=1, max_size=2).map(Frames),
    binary_events,
)

EXPLICIT_FRAMES = [
    Frames(["42/notifications,1" + _nested(10_000)], label="10,000-level list"),
    Frames(['42/notifications,2["list",' + _nested(10_000, '{"a":', "}", "1") + "]"], label="10,000-level object"),
    Frames(["42/notifications,3" + _nested(995)], label="995-level list"),
    Frames(['42/notifications,4["list",{"cursor":"' + "A" * 999_000 + '"}]'], label="huge string"),
    Frames(["4" + "x" * 2_000_000], label="over the Engine.IO limit"),
    Frames(["42/notifications,5[\"list\"", "2"], label="truncated JSON"),
    Frames(["42/notifications,6{\"list\":1}", "42/notifications,7\"list\"", "42/notifications,8[]"],
           label="not a list"),
    Frames(["42/other,9[\"list\",{}]", "40/other,", "40/notifications,{}"], label="other namespaces, second CONNECT"),
    Frames(["43/notifications,1[\"forged ack\"]", "43/notifications," + "9" * 99 + "[]", "43/notifications,-5[]"],
           label="acks the server never asked for"),
    Frames(["42/notifications," + "9" * 101 + "[\"list\",{}]"], label="ack id over 100 digits"),
    Frames(["451-/notifications,10[\"list\",{\"b\":{\"_placeholder\":true,\"num\":0}}]", b"\x00\x01"],
           expect_ack=10, label="one attachment"),
    Frames(["452-/notifications,11[\"list\",{\"b\":{\"_placeholder\":true,\"num\":7}}]", b"a", b"b"],
           label="placeholder out of range"),
    Frames(["450-/notifications,12[\"list\",{}]", "42/notifications,13[\"list\",{}]"],
           label="binary header with no attachments"),
    Frames([b"\x04unexpected", b"", "", "\x00", "6", "5", "3"], label="stray frames"),
    Frames(["41/notifications,", "42/notifications,14[\"list\",{}]"], label="namespace disconnect, then an event"),
    Frames(["1"], label="Engine.IO close"),
]


async def test_raw_frames_never_break_the_worker(hub, stack, http, arena, tally, stack_logs):
    attacker, bystander = arena
    publishing: list[asyncio.Task] = []
    outcomes: dict[str, int] = {}

    async def check(case: Frames) -> None:
        mark = stack_logs.mark()
        if len(publishing) == 0 and tally.count >= 60:
            publishing.append(asyncio.create_task(hub.publish([bystander.user], "user.followed",
                                                              actor={"id": "x", "name": "Lee"})))
        sock = await attacker.socket()
        try:
            for frame in case.frames:
                await sock.send(frame)
                attacker.sent += 1
            if case.expect_ack is not None:
                ack = await sock.ack(case.expect_ack, timeout=15)
                check_ack(ack, repr(case))
                outcome = error_code(ack) or "ok"
            elif case.unfenceable:
                outcome = "replaced"
                await attacker.recycle()
            else:
                outcome = await attacker.fence()
        except Closed:
            outcome = "closed"
            await attacker.recycle()
        except TimeoutError:
            raise AssertionError(f"no acknowledgement within 15 s for {case!r}") from None
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for ack_id, ack in (sock.all_acks if sock is not None else []):
            check_ack(ack, f"ack {ack_id} after {case!r}")
        assert stack.socket_workers[attacker.worker].alive, f"worker {attacker.worker} died after {case!r}"
        stack_logs.assert_no_defects(mark)

    failures = await run_examples(frame_lists, check, max_examples=150, tally=tally, explicit=EXPLICIT_FRAMES)
    await _survived(hub, stack, http, attacker, bystander, publishing)
    print(f"outcomes: {dict(sorted(outcomes.items()))}; {attacker.summary()}")
    failures.raise_if_any()


# -- a burst -------------------------------------------------------------------------------

BURST = 10_000


def _burst_packet(i: int, sock) -> str:
    kind = i % 10
    if kind == 0:
        return sock.event_packet(["mark_all_read", {}], i)
    if kind == 1:
        return sock.event_packet(["list", {"limit": 1}], i)
    if kind == 2:
        return sock.event_packet(["mark_read", {"ids": ["f" * 24]}], i)
    if kind == 3:
        return sock.event_packet(["mark_read", {"ids": "nope"}], i)
    return sock.event_packet([f"burst.{i}", {}], i)


async def test_a_burst_of_10000_events_from_one_socket(hub, stack, http, raw_http, tally, stack_logs):
    attacker = await open_attacker(raw_http, hub)
    worker = attacker.worker
    bystander = await Client.on_worker(hub, worker)
    publishing = bystander_ack = None

    def bystander_acts() -> None:
        nonlocal publishing, bystander_ack
        publishing = asyncio.create_task(hub.publish([bystander.user], "post.liked", actor={"id": "a", "name": "Kim"}))
        bystander_ack = asyncio.create_task(bystander.mark_all_read())

    try:
        began = time.monotonic()
        sent = 0
        for i in range(BURST):
            try:
                await attacker.send(_burst_packet(i, attacker))
            except Closed:
                break  # disconnected for flooding: acceptable for the flooder
            sent += 1
            tally.add()
            if i == BURST // 2:
                bystander_acts()  # in the middle of the flood
        sent_in = time.monotonic() - began
        if publishing is None:
            bystander_acts()
        # The bystander is served while the flood is being worked through.
        ack = await asyncio.wait_for(bystander_ack, 15)
        assert ack.get("ok") is True, ack
        status, body = await publishing
        assert status == 201, (status, body)
        await receives(bystander, body, timeout=15)
        served_in = time.monotonic() - began

        # Every event is answered (rate_limited counts), unless the server disconnected the flooder.
        await attacker._wait(lambda: len(attacker.all_acks) >= sent, timeout=60)
        codes: dict[str, int] = {}
        for ack_id, answer in attacker.all_acks:
            check_ack(answer, f"burst ack {ack_id}")
            code = error_code(answer) or "ok"
            codes[code] = codes.get(code, 0) + 1
        if not attacker.closed.is_set():
            assert len(attacker.all_acks) == sent, (
                f"{sent - len(attacker.all_acks)} of {sent} events were never answered, and the socket is still open")
        await worker_is_healthy(stack, http, worker)
        await fresh_socket_gets_init(hub, worker)
        await bystander_unaffected(hub, bystander)
        stack_logs.assert_no_defects()
        print(f"sent {sent} events in {sent_in:.1f}s; bystander served after {served_in:.1f}s; "
              f"answers {dict(sorted(codes.items()))}; flooder disconnected: {attacker.closed.is_set()}")
    finally:
        await attacker.close()
        await bystander.close()
