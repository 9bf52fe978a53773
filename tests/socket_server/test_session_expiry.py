"""A socket lives no longer than its token: at `exp` it gets `session_expired` and is disconnected;
the client sets a fresh token and connects again, and its `since` replays what it missed.
The real socket.io-client, through nginx."""
from shared.tokens import mint


async def test_an_expired_session_is_told_and_a_fresh_token_resumes_with_since(hub, js):
    user = hub.new_user("exp")
    short = mint(hub.settings, sub=user, ttl=3)
    sock = await js.connect("tab", hub.socket_url, transports=["websocket"],
                            auth={"token": short, "lang": "en"}, reconnection_delay=100)
    await sock.wait_for("connect")
    await sock.wait_for("init")
    _, body = await hub.publish([user], "post.liked")
    held = body["notifications"][0]["id"]
    await sock.wait_for("notification", predicate=lambda n: n["id"] == held)

    assert await sock.wait_for("session_expired", timeout=10) == {}
    gone = await sock.wait_for("disconnect", timeout=10)
    # A namespace disconnect: socket.io-client does not reconnect with the expired token by itself.
    assert gone["reason"] == "io server disconnect"
    await sock.assert_no_event("connect", within=0.5)

    _, body = await hub.publish([user], "user.followed")  # while it is away
    missed = body["notifications"][0]["id"]
    await sock.set_auth({"token": mint(hub.settings, sub=user), "lang": "en", "since": held})
    await sock.open()
    await sock.wait_for("init")
    note = await sock.wait_for("notification", predicate=lambda n: n["id"] == missed)
    assert note["type"] == "user.followed"
    assert [n["id"] for n in sock.events("notification")] == [held, missed]


async def test_a_long_lived_token_keeps_its_socket(hub, js):
    user = hub.new_user("exp")
    sock = await hub.connect(js, "tab", user)
    await sock.wait_for("init")
    await sock.assert_no_event("session_expired", within=1)
    assert (await sock.emit_ack("mark_all_read", {}))["ok"] is True
