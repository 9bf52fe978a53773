"""Topics: subscriptions and fan-out to subscribers."""
import asyncio
import time

import orjson
import pytest

from ..conftest import SERVICE_KEY


async def test_subscribe_list_unsubscribe(hub):
    topic = f"course:{hub.new_user('c')}:instructors"
    users = sorted(hub.new_user() for _ in range(5))
    for user in users + users[:2]:  # subscribing twice is harmless
        assert (await hub.request("PUT", f"/v1/topics/{topic}/subscribers/{user}", service=True))[0] == 204
    status, page = await hub.request("GET", f"/v1/topics/{topic}/subscribers?limit=3", service=True)
    assert status == 200 and page["subscribers"] == users[:3]
    status, rest = await hub.request("GET", f"/v1/topics/{topic}/subscribers?limit=3&cursor={page['next_cursor']}",
                                     service=True)
    assert rest == {"subscribers": users[3:], "next_cursor": None}
    assert (await hub.request("DELETE", f"/v1/topics/{topic}/subscribers/{users[0]}", service=True))[0] == 204
    assert (await hub.request("DELETE", f"/v1/topics/{topic}/subscribers/{users[0]}", service=True))[0] == 204
    _, page = await hub.request("GET", f"/v1/topics/{topic}/subscribers", service=True)
    assert page["subscribers"] == users[1:]


async def test_a_repeated_topic_request_reaches_no_one_new(hub, runtime):
    # The first result stands: a subscriber who joined since, or a notification deleted since,
    # does not make the repeat store or deliver anything.
    topic = f"followers:{hub.new_user()}"
    early, late = hub.new_user(), hub.new_user()
    await hub.request("PUT", f"/v1/topics/{topic}/subscribers/{early}", service=True)
    payload = {"topic": topic, "type": "post.created", "idempotency_key": hub.new_user("key")}
    status, first = await hub.request("POST", "/v1/notifications", json=payload, service=True)
    assert status == 201 and [n["recipient"] for n in first["notifications"]] == [early]
    await hub.request("PUT", f"/v1/topics/{topic}/subscribers/{late}", service=True)
    status, again = await hub.request("POST", "/v1/notifications", json=payload, service=True)
    assert status == 200 and again == first
    assert await runtime.db["notifications"].count_documents({"recipient": late}) == 0
    note = first["notifications"][0]["id"]
    assert (await hub.request("DELETE", f"/v1/me/notifications/{note}", token=hub.token(early)))[0] == 204
    status, again = await hub.request("POST", "/v1/notifications", json=payload, service=True)
    assert status == 200 and again == {"notifications": []}
    assert await runtime.db["notifications"].count_documents({"recipient": {"$in": [early, late]}}) == 0


async def test_topic_publish_reaches_subscribers_only(hub, js):
    topic = f"followers:{hub.new_user()}"
    fan, other = hub.new_user(), hub.new_user()
    await hub.request("PUT", f"/v1/topics/{topic}/subscribers/{fan}", service=True)
    fan_sock = await hub.connect(js, "fan", fan)
    other_sock = await hub.connect(js, "other", other)
    await fan_sock.wait_for("init")
    await other_sock.wait_for("init")
    status, body = await hub.request("POST", "/v1/notifications", service=True,
                                     json={"topic": topic, "type": "post.created", "actor": {"id": "a", "name": "Kim"},
                                           "data": {"post_title": "Hello"}})
    assert status == 201 and [n["recipient"] for n in body["notifications"]] == [fan]
    assert (await fan_sock.wait_for("notification"))["title"] == "Kim published a new post"
    await hub.publish([other], "user.followed")  # fence
    await other_sock.wait_for("notification")
    assert [n["type"] for n in other_sock.events("notification")] == ["user.followed"]


async def test_empty_topic_notifies_nobody(hub):
    status, body = await hub.request("POST", "/v1/notifications", service=True,
                                     json={"topic": f"t-{hub.new_user()}", "type": "post.created"})
    assert status == 201 and body == {"notifications": []}


async def test_ten_thousand_subscribers(hub, js, runtime, capsys):
    topic = f"followers:{hub.new_user('star')}"
    users = [hub.new_user("f") for _ in range(10_000)]
    # Seed the subscriptions straight into MongoDB: 10,000 PUTs would only test HTTP.
    await runtime.db["topic_subscribers"].insert_many([{"topic": topic, "user": u} for u in users])
    online = users[::625]
    socks = []
    for i, user in enumerate(online):
        sock = await hub.connect(js, f"f{i}", user, lang=("en", "ko")[i % 2])
        await sock.wait_for("init")
        socks.append(sock)
    started = time.perf_counter()
    status, body = await hub.request("POST", "/v1/notifications", service=True,
                                     json={"topic": topic, "type": "post.created", "actor": {"id": "s", "name": "Star"},
                                           "data": {"post_title": "New"}})
    stored = time.perf_counter() - started
    assert status == 201 and len(body["notifications"]) == 10_000
    assert {n["recipient"] for n in body["notifications"]} == set(users)
    notes = await asyncio.gather(*(s.wait_for("notification", timeout=30) for s in socks))
    delivered = time.perf_counter() - started
    assert [n["recipient"] for n in notes] == online
    assert await runtime.db["notifications"].count_documents({"recipient": {"$in": users}}) == 10_000
    with capsys.disabled():
        print(f"\n10,000-subscriber topic: stored in {stored * 1000:.0f} ms, "
              f"all {len(online)} online followers had it after {delivered * 1000:.0f} ms")


async def _minimal(hub, payload, prefer="return=minimal"):
    """POST /v1/notifications asking for the short answer: (status, body, Preference-Applied)."""
    async with hub.http.post(f"{hub.url}/v1/notifications", json=payload,
                             headers={"Authorization": f"Bearer {SERVICE_KEY}", "Prefer": prefer}) as resp:
        return resp.status, await resp.read(), resp.headers.get("Preference-Applied")


async def test_a_hundred_thousand_subscribers_get_it_and_the_answer_is_their_count(hub, js, runtime, capsys):
    """The answer lists nothing (Prefer: return=minimal), and the fan-out streams in batches: a
    topic of any audience costs the API the same memory (measured by python -m bench.topic)."""
    topic = f"followers:{hub.new_user('star')}"
    users = [f"{topic}-{i:06d}" for i in range(100_000)]
    for start in range(0, len(users), 20_000):
        await runtime.db["topic_subscribers"].insert_many([{"topic": topic, "user": u}
                                                           for u in users[start:start + 20_000]])
    online = users[::6250]
    socks = []
    for i, user in enumerate(online):
        sock = await hub.connect(js, f"f{i}", user)
        await sock.wait_for("init")
        socks.append(sock)
    started = time.perf_counter()
    status, body, applied = await _minimal(hub, {"topic": topic, "type": "post.created",
                                                 "actor": {"id": "s", "name": "Star"}})
    stored = time.perf_counter() - started
    assert (status, orjson.loads(body), applied) == (201, {"count": 100_000}, "return=minimal")
    notes = await asyncio.gather(*(s.wait_for("notification", timeout=60) for s in socks))
    delivered = time.perf_counter() - started
    assert [n["recipient"] for n in notes] == online
    assert await runtime.db["notifications"].count_documents(
        {"recipient": {"$gte": users[0], "$lte": users[-1]}}) == 100_000
    with capsys.disabled():
        print(f"\n100,000-subscriber topic: stored in {stored:.1f} s, "
              f"all {len(online)} online followers had it after {delivered:.1f} s")


async def test_the_short_answer_of_a_repeat_counts_what_the_first_request_stored(hub):
    topic = f"followers:{hub.new_user()}"
    users = sorted(hub.new_user() for _ in range(3))
    for user in users:
        await hub.request("PUT", f"/v1/topics/{topic}/subscribers/{user}", service=True)
    payload = {"topic": topic, "type": "post.created", "idempotency_key": hub.new_user("key")}
    assert await _minimal(hub, payload) == (201, b'{"count":3}', "return=minimal")
    await hub.request("PUT", f"/v1/topics/{topic}/subscribers/{hub.new_user()}", service=True)
    assert await _minimal(hub, payload, prefer='respond-async, RETURN="minimal"; x=1') == \
        (200, b'{"count":3}', "return=minimal")
    # Without the preference (or with another), the listing of the first request.
    status, body, applied = await _minimal(hub, payload, prefer="return=representation")
    assert status == 200 and applied is None
    assert sorted(n["recipient"] for n in orjson.loads(body)["notifications"]) == users


@pytest.mark.parametrize("path", [
    "/v1/topics/%24where/subscribers/u1",
    "/v1/topics/t/subscribers/%7B%22%24ne%22%3Anull%7D",
    "/v1/topics/t/subscribers/" + "u" * 200,
    "/v1/topics/bad%20topic/subscribers/u1",
])
async def test_bad_topic_or_user(hub, path):
    status, body = await hub.request("PUT", path, service=True)
    assert status == 400 and body["error"]["code"] == "invalid_request"


async def test_topic_endpoints_need_a_service_key(hub):
    for method, path in (("PUT", "/v1/topics/t/subscribers/u"), ("DELETE", "/v1/topics/t/subscribers/u"),
                         ("GET", "/v1/topics/t/subscribers")):
        status, body = await hub.request(method, path, token=hub.token("u"))
        assert status == 401 and body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=a"])
async def test_bad_subscriber_page(hub, query):
    status, body = await hub.request("GET", f"/v1/topics/t/subscribers?{query}", service=True)
    assert status == 400
