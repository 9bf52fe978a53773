"""Rolling deploys: a socket worker that gets SIGTERM moves its sockets to the other worker
gradually, keeps serving them until each is closed, and then exits by itself. Real JS clients,
through nginx, against the session's stack (NOTIHUB_DRAIN_SECONDS is short there)."""
import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from socket_server.drain import Drainer


def worker_of(sock) -> str:
    return sock.engine_id.split(".", 1)[0]


async def _open(hub, js, name, user, transports):
    sock = await hub.connect(js, name, user, transports=transports, use_auth=True,
                             reconnection_delay=200, reconnection_delay_max=1000,
                             options={"trackSince": True})
    await sock.wait_for("connect")
    await sock.wait_for("init")
    return sock


async def _first_disconnect(socks, timeout):
    waits = [asyncio.ensure_future(s.wait_for("disconnect", timeout=timeout, consume=False)) for s in socks]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def test_a_terminated_worker_moves_its_sockets_gradually_then_exits(hub, js, http):
    stack = hub.stack
    drain = stack.drain_seconds
    users = [hub.new_user("drain") for _ in range(16)]
    socks = list(await asyncio.gather(*(_open(hub, js, f"ws{i}", u, ["websocket"]) for i, u in enumerate(users))))
    # Polling-only sockets too, until two of them are on w0.
    for i in range(16):
        if sum(1 for s in socks if s.transport == "polling" and worker_of(s) == "w0") >= 2:
            break
        users.append(hub.new_user("drain"))
        socks.append(await _open(hub, js, f"poll{i}", users[-1], ["polling"]))
    on_w0 = [s for s in socks if worker_of(s) == "w0"]
    on_w1 = [s for s in socks if worker_of(s) == "w1"]
    assert len(on_w0) >= 4 and on_w1, [worker_of(s) for s in socks]
    assert sum(1 for s in on_w0 if s.transport == "polling") >= 2

    # Every socket holds a `since` before the drain, so a reconnection asks for what it missed.
    status, body = await hub.publish(users, "user.followed", actor={"id": "a", "name": "Kim"})
    assert status == 201
    before = {n["recipient"]: n["id"] for n in body["notifications"]}
    for sock, user in zip(socks, users):
        await sock.wait_for("notification", predicate=lambda n, i=before[user]: n["id"] == i)

    process = stack.socket_workers["w0"].process
    terminated = time.monotonic()
    stack.terminate_worker("w0")
    try:
        await _first_disconnect(on_w0, timeout=drain + 5)

        # During the drain: a notification for everyone ...
        status, body = await hub.publish(users, "post.liked", actor={"id": "a", "name": "Kim"},
                                         data={"post_title": "Drain"})
        assert status == 201
        during = {n["recipient"]: n["id"] for n in body["notifications"]}
        still_on_w0 = [s for s in on_w0 if "disconnect" not in s.names()]
        assert still_on_w0, "the drain was over before the notification was published"
        # ... the worker is out of rotation: it refuses health checks and new handshakes ...
        for path, params in (("/healthz", {}), ("/socket.io/", {"EIO": "4", "transport": "polling"})):
            async with http.get(stack.worker_urls["w0"] + path, params=params) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["code"] == "draining"
        # ... and new handshakes succeed, on the other worker.
        handshakes_began = time.monotonic()
        newcomers = [hub.new_user("drain-new") for _ in range(4)]
        fresh = await asyncio.gather(*(_open(hub, js, f"new{i}", u, [("websocket", "polling")[i % 2]])
                                       for i, u in enumerate(newcomers)))
        assert [worker_of(s) for s in fresh] == ["w1"] * 4
        # Not by retrying: nginx took a handshake that w0 refused to w1 at once.
        assert not any(s.events("connect_error") for s in fresh)

        # Each socket of w0 was closed at its transport (served until then, polling included),
        # reconnected by itself to w1, and was given init again.
        closed_at = []
        for sock in on_w0:
            gone = await sock.wait_for("disconnect", timeout=drain + 5, full=True)
            assert gone.data["reason"] == "transport close", (sock.id, gone.data)
            closed_at.append(gone.received)
            back = await sock.wait_for("connect", timeout=10, full=True)
            assert back.engine_id.startswith("w1."), back
            assert not sock.events("connect_error") and not sock.events("reconnect_error"), sock.id
            await sock.wait_for("init", timeout=10)
        assert max(closed_at) - min(closed_at) >= drain / 2, sorted(t - terminated for t in closed_at)
        assert handshakes_began < max(closed_at)

        # The worker exits by itself, cleanly, soon after its drain.
        exited = await asyncio.to_thread(process.wait, max(0.0, terminated + drain + 5 - time.monotonic()))
        assert exited, f"w0 still runs {drain + 5}s after SIGTERM"
        assert process.returncode == 0
    finally:
        if process.alive:
            process.kill()
        await asyncio.to_thread(stack.restart_worker, "w0")

    # The notification published during the drain reached every socket exactly once (live, or
    # replayed after the reconnection); a later one is the fence for duplicates.
    status, body = await hub.publish(users + newcomers, "user.followed", actor={"id": "b", "name": "Lee"})
    assert status == 201
    fence = {n["recipient"]: n["id"] for n in body["notifications"]}
    for sock, user in zip([*socks, *fresh], users + newcomers):
        await sock.wait_for("notification", predicate=lambda n, i=fence[user]: n["id"] == i)
    for sock, user in zip(socks, users):
        ids = [n["id"] for n in sock.events("notification")]
        assert ids.count(during[user]) == 1 and ids.count(before[user]) == 1, (sock.id, ids)
    assert all("disconnect" not in s.names() for s in on_w1)


async def test_the_drain_closes_every_socket_in_shuffled_batches_spread_over_its_time():
    """The schedule on its own, in-process (no signal, no exit): what closes when."""
    loop = asyncio.get_running_loop()
    open_sids = [f"s{i}" for i in range(40)]
    closed: list[tuple[float, str]] = []

    async def close(sid):
        closed.append((loop.time(), sid))
        open_sids.remove(sid)

    rest: list[tuple[float, int]] = []

    async def close_rest():
        # The other Engine.IO sessions: once every socket is closed.
        rest.append((loop.time(), len(open_sids)))

    drainer = Drainer(seconds=1, sockets=lambda: list(open_sids), close=close, close_rest=close_rest)
    began = loop.time()
    await drainer.drain()
    times = [t - began for t, _ in closed]
    assert sorted(sid for _, sid in closed) == sorted(f"s{i}" for i in range(40)) and not open_sids
    assert len(rest) == 1 and rest[0][1] == 0 and rest[0][0] >= closed[-1][0]
    # Ten batches, 0.1 s apart, the first at once (bounds loose for a busy machine).
    assert times[0] < 0.5 and 0.8 <= times[-1] < 2
    assert len({round(t, 2) for t in times}) >= 5
    assert [sid for _, sid in closed] != [f"s{i}" for i in range(40)]  # shuffled

    still_open, closed_at_once = ["a", "b"], []

    async def close_now(sid: str) -> None:
        still_open.remove(sid)
        closed_at_once.append(sid)

    async def failing_rest():
        raise OSError("the rest could not be closed")

    # A failure to close the rest does not keep the drain (and the shutdown after it) from ending.
    everything = Drainer(seconds=0, sockets=lambda: list(still_open), close=close_now, close_rest=failing_rest)
    began = loop.time()
    await everything.drain()
    assert loop.time() - began < 0.5
    assert sorted(closed_at_once) == ["a", "b"] and not still_open


async def test_a_draining_worker_refuses_handshakes_and_health_checks_but_serves_sessions():
    drainer = Drainer(seconds=0, sockets=list, close=lambda sid: asyncio.sleep(0))
    app = web.Application(middlewares=[drainer.middleware])

    async def ok(request):
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", ok)
    app.router.add_get("/socket.io/", ok)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})).status == 200
        await drainer.drain()
        for path, params in (("/healthz", {}), ("/socket.io/", {"EIO": "4", "transport": "websocket"})):
            resp = await client.get(path, params=params)
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert (await resp.json())["error"]["code"] == "draining"
        resp = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling", "sid": "w0.x"})
        assert resp.status == 200
