"""Acknowledged socket events and the read-state broadcast to every tab on every worker."""
import pytest

from .test_delivery import _on_each_worker


async def _seed(hub, user, n):
    ids = []
    for i in range(n):
        _, body = await hub.publish([user], "comment.created", actor={"id": "a", "name": "Kim"},
                                    data={"comment_excerpt": f"c{i}"})
        ids.append(body["notifications"][0]["id"])
    return ids


async def test_mark_read_reaches_every_tab_on_every_worker(hub, js):
    user = hub.new_user()
    ids = await _seed(hub, user, 3)
    tab1, tab2 = await _on_each_worker(hub, js, user)
    ack = await tab1.emit_ack("mark_read", {"ids": [ids[0], ids[1]]})
    assert ack == {"ok": True, "unread_count": 1}
    for tab in (tab1, tab2):
        event = await tab.wait_for("notifications_read")
        assert event == {"ids": sorted(ids[:2]), "all": False, "unread_count": 1} or (
            sorted(event["ids"]) == sorted(ids[:2]) and event["unread_count"] == 1 and event["all"] is False)
    ack = await tab2.emit_ack("mark_all_read", {})
    assert ack == {"ok": True, "unread_count": 0}
    for tab in (tab1, tab2):
        assert await tab.wait_for("notifications_read") == {"ids": [], "all": True, "unread_count": 0}


async def test_list_pages_in_the_sockets_language(hub, js):
    user = hub.new_user()
    ids = await _seed(hub, user, 5)
    sock = await hub.connect(js, "s", user, lang="ko")
    init = await sock.wait_for("init")
    assert init["unread_count"] == 5 and [n["id"] for n in init["notifications"]] == ids[::-1]
    first = await sock.emit_ack("list", {"limit": 3, "cursor": ""})
    assert first["ok"] and [n["id"] for n in first["notifications"]] == ids[:1:-1]
    assert first["notifications"][0]["title"] == "Kim님이 회원님의 글에 댓글을 남겼습니다"
    second = await sock.emit_ack("list", {"limit": 3, "cursor": first["next_cursor"]})
    assert [n["id"] for n in second["notifications"]] == ids[1::-1] and second["next_cursor"] is None
    await sock.emit_ack("mark_read", {"ids": [ids[4]]})
    unread = await sock.emit_ack("list", {"unread_only": True})
    assert [n["id"] for n in unread["notifications"]] == ids[3::-1]


async def test_a_user_cannot_touch_another_users_notifications(hub, js):
    owner, intruder = hub.new_user(), hub.new_user()
    ids = await _seed(hub, owner, 2)
    thief = await hub.connect(js, "thief", intruder)
    await thief.wait_for("init")
    assert await thief.emit_ack("mark_read", {"ids": ids}) == {"ok": True, "unread_count": 0}
    listing = await thief.emit_ack("list", {})
    assert listing["notifications"] == []
    mine = await hub.connect(js, "owner", owner)
    assert (await mine.wait_for("init"))["unread_count"] == 2
    await mine.assert_no_event("notifications_read", within=0.5)


BAD_PAYLOADS = [
    ("mark_read", {"ids": [{"$ne": None}]}),
    ("mark_read", {"ids": ["not-an-id"]}),
    ("mark_read", {"ids": "abc"}),
    ("mark_read", {"ids": []}),
    ("mark_read", {}),
    ("mark_read", "ids"),
    ("mark_read", None),
    ("mark_all_read", ["x"]),
    ("list", {"limit": 0}),
    ("list", {"limit": 101}),
    ("list", {"limit": "5"}),
    ("list", {"limit": True}),
    ("list", {"cursor": "garbage"}),
    ("list", {"cursor": {"$gt": ""}}),
    ("list", {"unread_only": "yes"}),
    ("list", 42),
]


@pytest.mark.parametrize("event,payload", BAD_PAYLOADS)
async def test_bad_input_gets_an_error_ack_and_the_socket_stays(hub, js, event, payload):
    user = hub.new_user()
    sock = await hub.connect(js, "s", user)
    await sock.wait_for("init")
    ack = await sock.emit_ack(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_request" and ack["error"]["message"]
    assert (await sock.emit_ack("mark_all_read", {}))["ok"] is True
    assert not sock.events("disconnect")
