"""A client that stops reading is closed instead of growing the worker's memory; it reconnects and
replays from `since`. Driven with a hand-made Engine.IO long-polling client that connects, then
never polls again (a browser tab frozen in the background does just that). A client that reads
gets one commit of more notifications than that bound whole (socket_server/hub.py, rule 7)."""
import asyncio

import orjson

from shared.ids import new_id
from shared.models import Notification, utcnow


async def _polling_session(http, base, token):
    async with http.get(f"{base}/socket.io/?EIO=4&transport=polling") as resp:
        assert resp.status == 200
        open_packet = (await resp.text()).split("\x1e")[0]
    sid = orjson.loads(open_packet[1:])["sid"]
    url = f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
    connect = "40/notifications," + orjson.dumps({"token": token, "lang": "en"}).decode()
    async with http.post(url, data=connect) as resp:
        assert resp.status == 200
    async with http.get(url) as resp:  # the namespace's CONNECT (and maybe init)
        assert resp.status == 200 and "40/notifications" in await resp.text()
    return url


async def _dropped_count(http, url):
    async with http.get(url + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("notihub_sockets_dropped_slow_total"):
                return float(line.split()[-1])
    return 0.0


async def _dropped_anywhere(http, stack):
    return sum([await _dropped_count(http, url) for url in stack.worker_urls.values()])


async def test_a_client_that_stops_reading_is_closed_and_others_keep_theirs(hub, http, js, stack):
    limit = hub.settings.max_socket_queue
    worker = stack.worker_urls["w0"]
    slow_user, other_user = hub.new_user("slow"), hub.new_user("reader")
    url = await _polling_session(http, worker, hub.token(slow_user))
    # On the same worker: it handles bus messages in order, so once the reader has its
    # notification, the worker has judged the frozen client at every message before it.
    reader = await js.connect("reader", worker + "/notifications", transports=["websocket"],
                              query={"token": hub.token(other_user), "content-language": "en"})
    await reader.wait_for("init")
    dropped_before = await _dropped_count(http, worker)
    # Commits until more notifications wait than the worker queues for one client, then more
    # commits (the bound is checked before each), then one for a reading client.
    for start in range(0, limit + 30, 20):
        await asyncio.gather(*(hub.publish([slow_user]) for _ in range(20)))
    status, body = await hub.publish([other_user])
    await reader.wait_for("notification", predicate=lambda n: n["id"] == body["notifications"][0]["id"])
    assert await _dropped_count(http, worker) == dropped_before + 1
    # The frozen client's session is over: its next poll is told so, not handed hundreds of packets.
    async with http.get(url) as resp:
        text = await resp.text()
    assert resp.status == 400 or text.startswith("1") or text.endswith("\x1e1"), (resp.status, text[:200])
    assert text.count("notification") < limit


async def test_one_commit_of_more_notifications_than_the_bound_reaches_a_reading_client_whole(
        hub, http, js, stack, runtime):
    limit = hub.settings.max_socket_queue
    user = hub.new_user("burst")
    client = await hub.connect(js, "burst", user)
    await client.wait_for("init")
    dropped_before = await _dropped_anywhere(http, stack)
    now = utcnow()
    notes = [Notification(id=new_id(now), type="comment.created", recipient=user, actor=None, created_at=now)
             for _ in range(3 * limit)]
    # One commit, one bus message: every packet is queued before the client can read one.
    stored = [s for s in await runtime.service.store.commit(notes) if s is not None]
    await runtime.bus.announce(stored)
    last = str(stored[-1].notification.id)
    await client.wait_for("notification", predicate=lambda n: n["id"] == last)
    got = [n["id"] for n in client.events("notification")]
    assert got == [str(s.notification.id) for s in stored]
    # The inbox's count after each, or a later one if a position check caught the socket up.
    counts = [n["unread_count"] for n in client.events("notification")]
    assert counts == sorted(counts) and counts[-1] == 3 * limit and all(c >= i + 1 for i, c in enumerate(counts))
    assert "disconnect" not in client.names()
    assert await _dropped_anywhere(http, stack) == dropped_before
