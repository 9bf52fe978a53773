"""Recovery: a client that reconnects with `since` gets every missed notification, oldest first,
exactly once, then live ones, while notifications keep being published."""
import asyncio

import pytest


async def _publish_stream(hub, user, count, published, started):
    for i in range(count):
        _, body = await hub.publish([user], "comment.created", actor={"id": "a", "name": "Kim"},
                                    data={"comment_excerpt": f"#{i}"})
        published.append(body["notifications"][0]["id"])
        if i == 5:
            started.set()


async def _fence(hub, sock, user):
    """Publish one more and wait for it: anything sent before it has arrived by then."""
    await hub.publish([user], "user.followed", actor={"id": "f", "name": "F"})
    await sock.wait_for("notification", predicate=lambda n: n["type"] == "user.followed", timeout=20)
    return [n["id"] for n in sock.events("notification") if n["type"] == "comment.created"]


@pytest.mark.parametrize("how", ["kill the worker", "drop the transport"])
async def test_reconnect_with_since_loses_nothing_and_repeats_nothing(hub, js, stack, how):
    user = hub.new_user()
    # The client keeps auth.since at the newest id it holds, as a real client does.
    sock = await hub.connect(js, "tab", user, use_auth=True, transports=["websocket"],
                             reconnection_delay=100, reconnection_delay_max=300, options={"trackSince": True})
    await sock.wait_for("init")
    published: list[str] = []
    started = asyncio.Event()
    producer = asyncio.create_task(_publish_stream(hub, user, 60, published, started))
    worker = sock.engine_id.split(".", 1)[0]
    try:
        await asyncio.wait_for(started.wait(), 20)
        await sock.wait_for("notification")
        if how == "kill the worker":
            stack.kill_worker(worker)
        else:
            await sock.drop()
        await sock.wait_for("disconnect")
        await sock.wait_for("reconnect", timeout=20)
        await sock.wait_for("init")
        await asyncio.wait_for(producer, 60)
        received = await _fence(hub, sock, user)
        assert received == published, (len(received), len(published))
    finally:
        producer.cancel()
        if how == "kill the worker":
            stack.restart_worker(worker)


async def test_more_than_500_missed_asks_for_a_resync(hub, js):
    user = hub.new_user()
    _, body = await hub.publish([user], "post.liked")
    since = body["notifications"][0]["id"]
    for start in range(0, 501, 50):
        await asyncio.gather(*(hub.publish([user], "post.liked") for _ in range(min(50, 501 - start))))
    sock = await hub.connect(js, "tab", user, since=since)
    init = await sock.wait_for("init")
    assert init["unread_count"] == 502 and len(init["notifications"]) == 20
    assert await sock.wait_for("resync_required") == {"reason": "too_many_missed"}
    assert sock.events("notification") == []
    # Exactly 500 missed is still replayed.
    sock2 = await hub.connect(js, "tab2", user, since=init["notifications"][-1]["id"])
    await sock2.wait_for("init")
    await sock2.assert_no_event("resync_required", within=0.2)


async def test_since_replays_in_order_then_goes_live(hub, js):
    user = hub.new_user()
    ids = []
    for i in range(4):
        _, body = await hub.publish([user], "comment.created", data={"comment_excerpt": str(i)})
        ids.append(body["notifications"][0]["id"])
    sock = await hub.connect(js, "tab", user, since=ids[0], lang="ko")
    await sock.wait_for("init")
    replayed = [await sock.wait_for("notification") for _ in range(3)]
    assert [n["id"] for n in replayed] == ids[1:]
    _, body = await hub.publish([user], "post.liked")
    live = await sock.wait_for("notification")
    assert live["id"] == body["notifications"][0]["id"] and live["title"] == "누군가님이 회원님의 글을 좋아합니다"


async def test_malformed_since_asks_for_a_resync_and_stays_connected(hub, js):
    user = hub.new_user()
    sock = await hub.connect(js, "tab", user, since="not-an-id")
    await sock.wait_for("init")
    assert await sock.wait_for("resync_required") == {"reason": "invalid_since"}
    assert (await sock.emit_ack("mark_all_read", {}))["ok"] is True
