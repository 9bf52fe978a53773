"""Badges never drift: under concurrent marking from two tabs and concurrent new notifications,
the latest unread_count every tab received equals a fresh count."""
import asyncio

from .test_delivery import _on_each_worker

BADGE_EVENTS = ("init", "notification", "notifications_read", "notifications_deleted")


def latest_count(sock):
    return [r for r in sock.records() if r.name in BADGE_EVENTS][-1].data["unread_count"]


async def test_unread_count_stays_exact_under_concurrency(hub, js, runtime):
    user = hub.new_user()
    ids = []
    for start in range(0, 40, 10):
        bodies = await asyncio.gather(*(hub.publish([user], "comment.created") for _ in range(10)))
        ids += [b["notifications"][0]["id"] for _, b in bodies]
    tab1, tab2 = await _on_each_worker(hub, js, user)
    token = hub.token(user)

    async def mark(tab, some):
        for i in some:
            ack = await tab.emit_ack("mark_read", {"ids": [i]})
            assert ack["ok"]

    async def produce():
        for _ in range(20):
            await hub.publish([user], "post.liked")

    async def delete_some():
        for i in ids[35:]:
            assert (await hub.request("DELETE", f"/v1/me/notifications/{i}", token=token))[0] == 204

    await asyncio.gather(mark(tab1, ids[:18]), mark(tab2, ids[15:33]), produce(), delete_some(),
                         hub.request("POST", "/v1/me/notifications/read", json={"ids": ids[10:20]}, token=token))
    fresh = await runtime.db["notifications"].count_documents({"recipient": user, "read": False})
    # 40 seeded, ids[0:33] marked read, ids[35:40] deleted, 20 new: 2 + 20 unread.
    assert fresh == 22
    assert (await hub.request("GET", "/v1/me/notifications/unread-count", token=token))[1] == {"unread_count": fresh}
    # Fence: one more notification to the user. On each socket, everything sent before it has
    # arrived once it has, and the count it carries was read after every change above.
    _, body = await hub.publish([user], "user.followed")
    fence = body["notifications"][0]["id"]
    for tab in (tab1, tab2):
        await tab.wait_for("notification", predicate=lambda d: d["id"] == fence, timeout=20)
        assert latest_count(tab) == fresh + 1
    assert await runtime.db["notifications"].count_documents({"recipient": user, "read": False}) == fresh + 1
    # And every read-state change reached both tabs: the read events' ids cover all that was marked.
    for tab in (tab1, tab2):
        marked = {i for ev in tab.events("notifications_read") for i in ev["ids"]}
        assert marked == set(ids[:33])
        assert {i for ev in tab.events("notifications_deleted") for i in ev["ids"]} == set(ids[35:])
