"""Live delivery across workers, languages and transports, with the real JS client."""
import asyncio

from bson import ObjectId


async def _on_each_worker(hub, js, user, langs=("en", "ko"), transports=("websocket",)):
    """Open sockets for ``user`` until there is one on each worker (new handshakes spread)."""
    by_worker = {}
    for attempt in range(12):
        lang = langs[len(by_worker) % len(langs)]
        sock = await hub.connect(js, f"{user}-{attempt}", user, lang=lang, transports=transports)
        await sock.wait_for("init")
        worker = sock.engine_id.split(".", 1)[0]
        if worker in by_worker:
            await sock.disconnect()
            continue
        by_worker[worker] = sock
        if len(by_worker) == len(hub.stack.worker_ids):
            return list(by_worker.values())
    raise AssertionError(f"handshakes did not spread over the workers: {sorted(by_worker)}")


async def test_two_tabs_on_two_workers_each_get_it_once_in_their_language(hub, js):
    alice, bob = hub.new_user("alice"), hub.new_user("bob")
    en_tab, ko_tab = await _on_each_worker(hub, js, alice)
    assert en_tab.engine_id.split(".")[0] != ko_tab.engine_id.split(".")[0]
    bystander = await hub.connect(js, "bob", bob)
    await bystander.wait_for("init")

    status, body = await hub.publish([alice], "post.liked", actor={"id": bob, "name": "Kim"},
                                     data={"post_title": "Graphs"}, url="/posts/42")
    assert status == 201
    [created] = body["notifications"]
    en = await en_tab.wait_for("notification")
    ko = await ko_tab.wait_for("notification")
    assert en["id"] == ko["id"] == created["id"]
    assert en["title"] == "Kim liked your post" and ko["title"] == "Kim님이 회원님의 글을 좋아합니다"
    assert en["body"] == ko["body"] == "Graphs"
    assert en["recipient"] == alice and en["read"] is False and en["url"] == "/posts/42"
    assert en["actor"] == {"id": bob, "name": "Kim"} and en["data"] == {"post_title": "Graphs"}

    # A second notification is a fence: once it has arrived, any duplicate of the first would have too.
    await hub.publish([alice, bob], "user.followed", actor={"id": "x", "name": "Lee"})
    for tab in (en_tab, ko_tab, bystander):
        await tab.wait_for("notification", predicate=lambda n: n["type"] == "user.followed")
    assert [n["id"] for n in en_tab.events("notification")].count(created["id"]) == 1
    assert [n["id"] for n in ko_tab.events("notification")].count(created["id"]) == 1
    assert [n["type"] for n in bystander.events("notification")] == ["user.followed"]


async def test_polling_upgrades_through_the_load_balancer(hub, js):
    user = hub.new_user()
    tabs = await _on_each_worker(hub, js, user, transports=("polling", "websocket"))
    for tab in tabs:
        await tab.wait_for("upgrade")
    await hub.publish([user], "comment.created", actor={"id": "a", "name": "Kim"},
                      data={"comment_excerpt": "hello"})
    for tab in tabs:
        note = await tab.wait_for("notification")
        assert note["body"] == "hello"


async def test_polling_only_clients_stay_on_their_worker(hub, js):
    user = hub.new_user()
    tabs = await _on_each_worker(hub, js, user, transports=("polling",))
    await hub.publish([user], "post.created", actor={"id": "a", "name": "Kim"}, data={"post_title": "T"})
    titles = [(await tab.wait_for("notification"))["title"] for tab in tabs]
    assert titles == ["Kim published a new post", "Kim님이 새 글을 올렸습니다"]
    assert [tab.transport for tab in tabs] == ["polling", "polling"]


async def test_language_normalisation_and_fallback(hub, js):
    user = hub.new_user()
    socks = {}
    for code in ("ko-KR", "EN_us", "xx", "ko"):
        socks[code] = await hub.connect(js, code, user, lang=code)
        socks[code] = (socks[code], await socks[code].wait_for("init"))
    assert {code: init["lang"] for code, (_, init) in socks.items()} == {
        "ko-KR": "ko", "EN_us": "en", "xx": "en", "ko": "ko"}
    await hub.publish([user], "moderation.penalized", data={"reason": "spam"})
    bodies = {code: (await s.wait_for("notification"))["body"] for code, (s, _) in socks.items()}
    assert bodies == {"ko-KR": "사유: spam", "EN_us": "Reason: spam", "xx": "Reason: spam", "ko": "사유: spam"}


async def test_ten_thousand_recipients_stored_and_delivered_once(hub, js, runtime):
    recipients = [hub.new_user("bulk") for _ in range(10_000)]
    online = recipients[:: 10_000 // 16]  # 16 connected recipients spread through the list
    socks = []
    for i, user in enumerate(online):
        sock = await hub.connect(js, f"bulk{i}", user, lang=("en", "ko")[i % 2])
        await sock.wait_for("init")
        socks.append(sock)
    status, body = await hub.publish(recipients, "post.created", actor={"id": "author", "name": "Kim"},
                                     data={"post_title": "Big news"})
    assert status == 201 and len(body["notifications"]) == 10_000
    assert {n["recipient"] for n in body["notifications"]} == set(recipients)
    ids = {n["recipient"]: n["id"] for n in body["notifications"]}
    stored = await runtime.db["notifications"].count_documents(
        {"_id": {"$in": [ObjectId(i) for i in ids.values()]}})
    assert stored == 10_000
    notes = await asyncio.gather(*(s.wait_for("notification", timeout=30) for s in socks))
    for user, note in zip(online, notes):
        assert note["id"] == ids[user] and note["recipient"] == user
    # Fence, then count: exactly once each.
    await hub.publish(online, "user.followed", actor={"id": "f", "name": "F"})
    for sock in socks:
        await sock.wait_for("notification", predicate=lambda n: n["type"] == "user.followed")
        assert len(sock.events("notification")) == 2
