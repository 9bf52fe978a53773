"""Packets a worker will not read close their connection, once, quietly (socket_server/engine.py).

- Binary attachments (Socket.IO BINARY_EVENT and BINARY_ACK) cannot fill a worker's memory: a
  packet's header says how many attachments follow, and python-socketio keeps every one of them
  until that many came. Past MAX_ATTACHMENTS announced, or MAX_ATTACHMENT_BYTES brought, the
  connection is closed; a few small attachments are still read and answered.
- A packet that is not one a Socket.IO client sends (broken JSON, a server's packet type, stray
  bytes) closes its connection as in Node's socket.io, instead of a traceback in the worker's log
  for each one a client cares to send.
See also test_socket_events.py, which throws generated frames at a worker."""
from __future__ import annotations

import asyncio

import pytest

from socket_server.engine import MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS

from .arena import check_ack, fresh_socket_gets_init, open_attacker, worker_is_healthy
from .rawio import Closed, RawSocket

HEADER = '45{count}-/notifications,{ack}["list",{{"b":{{"_placeholder":true,"num":0}}}}]'


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def _send_until_closed(sock, frames):
    sent = 0
    try:
        for frame in frames:
            await sock.send(frame)
            sent += 1
    except Closed:
        pass
    return sent


@pytest.mark.parametrize("count", [MAX_ATTACHMENTS + 1, 1_000_000, 9_999_999_999])
async def test_a_packet_announcing_too_many_attachments_closes_the_connection(hub, stack, raw_http, count):
    sock = await open_attacker(raw_http, hub)
    pid = stack.socket_workers[sock.worker].process.pid
    before = _rss_kib(pid)
    await sock.send(HEADER.format(count=count, ack=1))
    # What would have been kept: 100 MB of attachments.
    sent = await _send_until_closed(sock, (bytes([i % 256]) * 500_000 for i in range(200)))
    await asyncio.wait_for(sock.closed.wait(), 10)
    assert sent < 200 and _rss_kib(pid) - before < 50_000, (sent, _rss_kib(pid) - before)
    await worker_is_healthy(stack, raw_http, sock.worker)
    await fresh_socket_gets_init(hub, sock.worker)


async def test_attachments_past_their_bytes_close_the_connection(hub, stack, raw_http):
    sock = await open_attacker(raw_http, hub)
    await sock.send(HEADER.format(count=3, ack=2))
    third = MAX_ATTACHMENT_BYTES // 3 + 1
    await _send_until_closed(sock, [b"a" * third, b"b" * third, b"c" * third])
    await asyncio.wait_for(sock.closed.wait(), 10)
    assert 2 not in sock.acks
    await worker_is_healthy(stack, raw_http, sock.worker)


async def test_a_few_small_attachments_are_read_and_answered(hub, raw_http):
    sock = await open_attacker(raw_http, hub)
    await sock.send(HEADER.format(count=MAX_ATTACHMENTS, ack=3))
    for i in range(MAX_ATTACHMENTS):
        await sock.send(bytes([i]) * 100)
    check_ack(await sock.ack(3), "a binary list event")
    check_ack(await sock.call(["list", {}], 4), "the list event after it")
    assert not sock.closed.is_set()


async def _refused(http, stack, worker):
    async with http.get(stack.worker_urls[worker] + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("notihub_socket_packets_refused_total{"))


MALFORMED = {
    "broken JSON": '42/notifications,5["list",{',
    "JSON nested past the parser's depth": "42/notifications,6" + "[" * 10_000 + "]" * 10_000,
    "a server's packet type (CONNECT_ERROR)": '44/notifications,{"message":"x"}',
    "an unknown packet type": "49/notifications,[]",
    "an empty message": "4",
    "bytes outside a binary packet": b"\x00\x01\x02",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_packet_that_is_not_socketio_closes_its_connection_quietly(hub, stack, raw_http, stack_logs, case):
    sock = await open_attacker(raw_http, hub)
    refused = await _refused(raw_http, stack, sock.worker)
    mark = stack_logs.mark()
    await sock.send(MALFORMED[case])
    await asyncio.wait_for(sock.closed.wait(), 10)
    assert await _refused(raw_http, stack, sock.worker) == refused + 1
    logged = "".join(stack_logs.since(mark).values())
    assert "Traceback" not in logged, logged[-2000:]
    await worker_is_healthy(stack, raw_http, sock.worker)


async def test_a_binary_packet_before_joining_closes_the_connection(hub, stack, raw_http, stack_logs):
    sock = await RawSocket.open(raw_http, hub.url)  # an Engine.IO session, no namespace joined
    mark = stack_logs.mark()
    await sock.send(HEADER.format(count=1, ack=7))
    await asyncio.wait_for(sock.closed.wait(), 10)
    logged = "".join(stack_logs.since(mark).values())
    assert "Traceback" not in logged, logged[-2000:]
    await worker_is_healthy(stack, raw_http, sock.worker)
