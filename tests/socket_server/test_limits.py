"""Abuse resistance of a socket worker, each against a real worker process (in this process, on the
session's MongoDB and Redis, with small limits) and the real JavaScript client: handshakes per user
and per client address, events per socket (a flooder is cut off, its neighbours keep their
latency), the per-recipient throttle, and allowed origins."""
import asyncio
import contextlib
import dataclasses
import random
import statistics
import time
import uuid

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from shared.ratelimit import Rate
from shared.tokens import mint
from socket_server.app import BUS_READY, create_app
from socket_server.namespace import NAMESPACE


@contextlib.asynccontextmanager
async def worker(settings, **changes):
    app = create_app(dataclasses.replace(settings, **changes), worker_id=f"w{random.randint(100, 999)}")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(shutdown_timeout=0.5)  # clients still connected at the end are not waited for
    async with server:
        await asyncio.wait_for(app[BUS_READY].wait(), 10)
        yield server


def _url(server):
    return str(server.make_url(NAMESPACE))


async def _connect(js, name, server, settings, user, **kw):
    return await js.connect(name, _url(server), transports=["websocket"], reconnection=False,
                            query={"token": mint(settings, sub=user), "content-language": "en"}, **kw)


def _address():
    return f"203.0.113.{random.randint(1, 254)}"


async def test_too_many_handshakes_of_one_user_are_refused_with_retry_after(settings, js):
    user = f"hs-{uuid.uuid4().hex[:8]}"
    async with worker(settings, handshake_rate_per_user=Rate(3, 60)) as server:
        for i in range(3):
            sock = await _connect(js, f"ok{i}", server, settings, user)
            await sock.wait_for("init")
            await sock.disconnect()
        refused = await _connect(js, "refused", server, settings, user)
        err = await refused.wait_for("connect_error")
        assert err["data"]["code"] == "rate_limited" and err["data"]["message"]
        assert 1 <= err["data"]["retry_after"] <= 20
        # Another user is not affected.
        other = await _connect(js, "other", server, settings, f"hs-{uuid.uuid4().hex[:8]}")
        await other.wait_for("init")


async def test_too_many_handshakes_from_one_address_are_refused(settings, js):
    flooder, neighbour = _address(), _address()
    async with worker(settings, handshake_rate_per_address=Rate(4, 60)) as server:
        answers = []
        for i in range(6):
            # Bad tokens count too: the address is counted before the token is read.
            sock = await js.connect(f"f{i}", _url(server), transports=["websocket"], reconnection=False,
                                    query={"token": "not.a.jwt"}, extra_headers={"X-Forwarded-For": flooder})
            answers.append((await sock.wait_for("connect_error"))["data"]["code"])
        assert answers == ["unauthorized"] * 4 + ["rate_limited"] * 2
        sock = await _connect(js, "neighbour", server, settings, f"hs-{uuid.uuid4().hex[:8]}",
                              extra_headers={"X-Forwarded-For": neighbour})
        await sock.wait_for("init")
        # A forged address in front of the proxy's own entry does not help: the proxy's entry counts.
        sock = await _connect(js, "forged", server, settings, f"hs-{uuid.uuid4().hex[:8]}",
                              extra_headers={"X-Forwarded-For": f"{_address()}, {flooder}"})
        assert (await sock.wait_for("connect_error"))["data"]["code"] == "rate_limited"


async def test_internal_callers_are_not_limited_by_address(settings, js):
    # Straight from a trusted network with nothing forwarded: a health check, a benchmark.
    async with worker(settings, handshake_rate_per_address=Rate(1, 60)) as server:
        for i in range(3):
            sock = await _connect(js, f"s{i}", server, settings, f"hs-{uuid.uuid4().hex[:8]}")
            await sock.wait_for("init")


async def _timed_ack(sock, event, data=None):
    started = time.perf_counter()
    answer = await sock.emit_ack(event, data, timeout=10)
    return time.perf_counter() - started, answer


async def test_a_flooding_socket_is_cut_off_and_its_neighbours_keep_their_latency(settings, js, hub):
    flooder_user, neighbour_user = (f"fl-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with worker(settings, socket_event_rate=Rate(40, 10)) as server:
        flooder = await _connect(js, "flooder", server, settings, flooder_user)
        neighbour = await _connect(js, "neighbour", server, settings, neighbour_user)
        await flooder.wait_for("init")
        await neighbour.wait_for("init")
        before = [(await _timed_ack(neighbour, "list", {"limit": 1}))[0] for _ in range(10)]

        async def neighbour_during_flood():
            timings = []
            for _ in range(10):
                elapsed, answer = await _timed_ack(neighbour, "list", {"limit": 1})
                assert answer["ok"] is True, answer
                timings.append(elapsed)
            return timings

        flood = [flooder.emit_ack("mark_all_read", {}, timeout=10) for _ in range(200)]
        answers, during = await asyncio.gather(asyncio.gather(*flood, return_exceptions=True),
                                               neighbour_during_flood())
        oks = [a for a in answers if isinstance(a, dict) and a.get("ok")]
        limited = [a for a in answers if isinstance(a, dict) and not a.get("ok")]
        cut_off = [a for a in answers if isinstance(a, Exception)]
        # The whole allowance and not one more was served (acknowledgements of work still in
        # flight when the server disconnects the flooder are lost with its socket).
        assert len(oks) + len(cut_off) >= 40 and len(oks) <= 40
        assert {a["error"]["code"] for a in limited} == {"rate_limited"} and len(limited) >= 1
        assert all("disconnected" in str(e) for e in cut_off), cut_off[:3]
        # Past as many refusals in a row as its allowance, the flooder is disconnected by the
        # server (socket.io-client does not come back after that).
        disconnected = await flooder.wait_for("disconnect")
        assert disconnected["reason"] == "io server disconnect", disconnected
        # The neighbour is still there and gets what is published to it.
        status, _ = await hub.publish([neighbour_user], title="still here")
        assert status == 201
        assert (await neighbour.wait_for("notification"))["title"] == "still here"
        p50_before, p50_during = statistics.median(before), statistics.median(during)
        print(f"neighbour's list ack: p50 {p50_before * 1000:.1f} ms before the flood, "
              f"{p50_during * 1000:.1f} ms during it (max {max(during) * 1000:.1f} ms)")
        assert max(during) < 1.0


async def test_a_socket_within_its_limit_is_never_refused(settings, js):
    async with worker(settings, socket_event_rate=Rate(10, 60)) as server:
        sock = await _connect(js, "tab", server, settings, f"fl-{uuid.uuid4().hex[:8]}")
        await sock.wait_for("init")
        answers = await asyncio.gather(*(sock.emit_ack("list", {"limit": 1}) for _ in range(10)))
        assert all(a["ok"] for a in answers)
        assert (await sock.emit_ack("list", {"limit": 1}))["error"]["code"] == "rate_limited"


async def test_past_the_per_recipient_throttle_notifications_are_stored_not_pushed(settings, js, hub):
    user = f"th-{uuid.uuid4().hex[:8]}"
    async with worker(settings, user_max_per_minute=3) as server:
        sock = await _connect(js, "tab", server, settings, user)
        await sock.wait_for("init")
        for i in range(5):
            assert (await hub.publish([user], "post.liked", title=f"like {i}"))[0] == 201
        # Another type is not throttled, and it carries the exact badge.
        assert (await hub.publish([user], "comment.created", title="comment"))[0] == 201
        comment = await sock.wait_for("notification", predicate=lambda n: n["type"] == "comment.created")
        assert comment["unread_count"] == 6
        likes = [n["title"] for n in sock.events("notification") if n["type"] == "post.liked"]
        assert likes == ["like 0", "like 1", "like 2"]
        # All are stored: the inbox lists them.
        answer = await sock.emit_ack("list", {"limit": 10})
        assert len(answer["notifications"]) == 6


async def _polling_handshake(server, origin):
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/socket.io/"), params={"EIO": "4", "transport": "polling"},
                            headers={"Origin": origin} if origin else {}) as resp:
            return resp.status, dict(resp.headers)


@pytest.mark.parametrize("origins, origin, allowed", [
    ((), None, True),  # not a browser
    ((), "https://elsewhere.example", False),
    (("https://app.example",), "https://app.example", True),
    (("https://app.example",), "https://elsewhere.example", False),
    (("*",), "https://elsewhere.example", True),
])
async def test_sockets_accept_only_the_allowed_origins_and_never_credentials(settings, origins, origin, allowed):
    async with worker(settings, cors_origins=origins) as server:
        status, headers = await _polling_handshake(server, origin)
        assert (status == 200) is allowed, (status, headers)
        assert "Access-Control-Allow-Credentials" not in headers
        # The hub's own origin is always allowed (the dashboard).
        own = f"http://{server.host}:{server.port}"
        assert (await _polling_handshake(server, own))[0] == 200
