"""Reserved and unknown event names sent by a client are data, never a call of a handler.

socket.io-client refuses to emit ``connect`` or ``disconnect`` itself; any other client can send
them, so the real client sends the raw EVENT packet here (``raw=True``).
"""
import asyncio

import pytest


def unknown_event(ack) -> bool:
    return (isinstance(ack, dict) and ack.get("ok") is False
            and ack.get("error", {}).get("code") == "unknown_event"
            and isinstance(ack["error"].get("message"), str))


async def _fence(hub, sock, user) -> None:
    """Once a second notification has arrived, any duplicate of an earlier one would have too."""
    await hub.publish([user], "user.followed", actor={"id": "x", "name": "Lee"})
    await sock.wait_for("notification", predicate=lambda n: n["type"] == "user.followed")


async def test_a_client_event_named_connect_never_runs_the_handshake_again(hub, js):
    user = hub.new_user()
    sock = await hub.connect(js, "tab", user)
    await sock.wait_for("init")
    token = hub.token(user)
    # What the handshake handler would take as (environ, auth): a valid token both ways.
    forged = [{"QUERY_STRING": f"token={token}"}, {"token": token, "lang": "en"}]
    acks = await asyncio.gather(*(sock.emit_ack("connect", args=forged, raw=True, timeout=10)
                                  for _ in range(50)))

    status, body = await hub.publish([user], "post.liked", actor={"id": "a", "name": "Kim"},
                                     data={"post_title": "Graphs"})
    assert status == 201
    [created] = body["notifications"]
    await sock.wait_for("notification", predicate=lambda n: n["id"] == created["id"])
    await _fence(hub, sock, user)
    assert [n["id"] for n in sock.events("notification")].count(created["id"]) == 1
    assert len(sock.events("init")) == 1
    assert all(unknown_event(ack) for ack in acks), acks[:3]
    assert (await sock.status())["connected"]


async def test_a_client_event_named_disconnect_leaves_the_socket_receiving(hub, js):
    user = hub.new_user()
    sock = await hub.connect(js, "tab", user)
    await sock.wait_for("init")
    await sock.emit("disconnect", "client namespace disconnect", raw=True)
    ack = await sock.emit_ack("disconnect", args=["transport close"], raw=True)

    status, body = await hub.publish([user], "post.liked", actor={"id": "a", "name": "Kim"},
                                     data={"post_title": "Graphs"})
    assert status == 201
    [created] = body["notifications"]
    note = await sock.wait_for("notification", timeout=5)
    assert note["id"] == created["id"]
    assert sock.names().count("disconnect") == 0 and (await sock.status())["connected"]
    assert unknown_event(ack), ack
    # Its requests are still served as its own.
    assert (await sock.emit_ack("mark_all_read", {})) == {"ok": True, "unread_count": 0}


@pytest.mark.parametrize("event", ["no_such_event", "connect_error", "newListener", 42])
async def test_an_unknown_event_is_answered_with_the_error_shape(hub, js, event):
    user = hub.new_user()
    sock = await hub.connect(js, "tab", user)
    await sock.wait_for("init")
    ack = await sock.emit_ack(event, {"ids": []}, raw=True)
    assert unknown_event(ack), ack
    assert set(ack) == {"ok", "error"} and set(ack["error"]) == {"code", "message"}
    # The socket stays connected and usable.
    assert (await sock.emit_ack("mark_all_read", {})) == {"ok": True, "unread_count": 0}
    assert sock.names().count("disconnect") == 0
