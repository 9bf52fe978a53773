"""Ingestion end to end: events on Kafka (or POST /v1/events) become notifications for the right
people, exactly once, in order per key; bad records go to the dead-letter topic."""
import asyncio

import orjson
import pytest
from aiokafka import TopicPartition

from shared.kafka import CONSUMER_GROUP, EVENTS_TOPIC

from .conftest import ask_kafka_until, fence, make_event

POST = {"id": "42", "title": "Graphs", "url": "/posts/42"}


async def test_comment_notifies_the_post_author_live_in_their_language(hub, js, events, inserts):
    author, commenter = hub.new_user("author"), hub.new_user("commenter")
    sock = await hub.connect(js, "author", author, lang="ko")
    await sock.wait_for("init")
    event = make_event("comment.created", actor=commenter, actor_name="Lee",
                       post={**POST, "author_id": author}, comment={"id": "7", "excerpt": "Nice!"})
    async with inserts([author]) as seen:
        await events.send(event)
        doc = await seen.until(lambda d: True)
    assert doc["source"] == f"event:{event['event_id']}" and doc["url"] == "/posts/42?comment_id=7"
    note = await sock.wait_for("notification")
    assert note["title"] == "Lee님이 회원님의 글에 댓글을 남겼습니다" and note["body"] == "Nice!"
    assert note["actor"] == {"id": commenter, "name": "Lee"} and note["data"] == {"post_id": "42", "comment_id": "7"}


async def test_commenting_on_your_own_post_notifies_nobody(hub, events, inserts, runtime):
    me, fence_user = hub.new_user(), hub.new_user("fence")
    async with inserts([me, fence_user]) as seen:
        meta = await events.send(make_event("comment.created", actor=me, post={**POST, "author_id": me},
                                            comment={"id": "1"}))
        await fence(events, seen, meta, fence_user)
    assert await runtime.db["notifications"].count_documents({"recipient": me}) == 0


async def test_follow_post_unfollow(hub, events, inserts, runtime):
    star, fan, fence_user = hub.new_user("star"), hub.new_user("fan"), hub.new_user("fence")
    topic = f"followers:{star}"
    async with inserts([star, fan, fence_user]) as seen:
        await events.send(make_event("user.followed", actor=fan, actor_name="Fan", followee={"id": star}))
        followed = await seen.until(lambda d: d["recipient"] == star)
        assert followed["type"] == "user.followed" and followed["url"] == f"/users/{fan}"
        assert (await hub.request("GET", f"/v1/topics/{topic}/subscribers", service=True))[1]["subscribers"] == [fan]
        # The fan joined followers:<star>, so the star's post reaches them.
        await events.send(make_event("post.created", actor=star, post={"id": "p1", "title": "Hi", "url": "/p/1"}))
        post = await seen.until(lambda d: d["recipient"] == fan)
        assert post["type"] == "post.created" and post["url"] == "/p/1"
        # Different event ids may sit on different partitions: wait for each step in turn.
        meta = await events.send(make_event("user.unfollowed", actor=fan, followee={"id": star}))
        await fence(events, seen, meta, fence_user)
        assert (await hub.request("GET", f"/v1/topics/{topic}/subscribers", service=True))[1]["subscribers"] == []
        meta = await events.send(make_event("post.created", actor=star, post={"id": "p2", "title": "Again"}))
        await fence(events, seen, meta, fence_user)
    assert await runtime.db["notifications"].count_documents({"recipient": fan}) == 1


async def test_course_progress_reaches_the_instructors(hub, events, inserts):
    course, instructor, student = hub.new_user("course"), hub.new_user("teacher"), hub.new_user("student")
    await hub.request("PUT", f"/v1/topics/course:{course}:instructors/subscribers/{instructor}", service=True)
    async with inserts([instructor]) as seen:
        await events.send(make_event("course.progressed", actor=student, actor_name="Min",
                                     course={"id": course, "title": "Go"}, lesson={"id": "l3", "title": "Maps"},
                                     progress=0.75))
        doc = await seen.until(lambda d: True)
    assert doc["type"] == "course.progressed" and doc["params"]["progress_percent"] == 75
    assert doc["data"]["student"] == {"id": student, "name": "Min"} and doc["data"]["progress"] == 0.75


async def test_penalty_and_requested_notifications(hub, events, inserts):
    user, a, b = hub.new_user(), hub.new_user(), hub.new_user()
    async with inserts([user, a, b]) as seen:
        await events.send(make_event("moderation.penalized", actor="mod", user={"id": user}, reason="spam"))
        await events.send(make_event("notification.requested", recipients=[a, b],
                                     notification={"type": "billing.due", "title": "Pay", "url": "/billing"}))
        await seen.count(3)
    by_user = {d["recipient"]: d for d in seen.seen}
    assert by_user[user]["type"] == "moderation.penalized" and by_user[user]["params"]["reason"] == "spam"
    assert by_user[a]["type"] == by_user[b]["type"] == "billing.due" and by_user[a]["title"] == "Pay"


async def test_a_redelivered_event_notifies_nobody_twice(hub, events, inserts, runtime):
    author, fence_user = hub.new_user(), hub.new_user("fence")
    event = make_event("post.liked", post={**POST, "author_id": author})
    async with inserts([author, fence_user]) as seen:
        first = await events.send(event)
        await events.send(event)  # the producer retried
        await events.send(event)
        await fence(events, seen, first, fence_user)
    assert await runtime.db["notifications"].count_documents({"recipient": author}) == 1


async def test_a_notification_deleted_before_its_event_comes_again_stays_deleted(hub, events, inserts, runtime):
    author, fence_user = hub.new_user(), hub.new_user("fence")
    event = make_event("post.liked", post={**POST, "author_id": author})
    async with inserts([author, fence_user]) as seen:
        await events.send(event)
        doc = await seen.until(lambda d: d["recipient"] == author)
        status, _ = await hub.request("DELETE", f"/v1/me/notifications/{doc['_id']}", token=hub.token(author))
        assert status == 204
        again = await events.send(event)  # redelivered, e.g. after a consumer died before committing
        await fence(events, seen, again, fence_user)
    assert await runtime.db["notifications"].count_documents({"recipient": author}) == 0


async def test_a_disabled_type_is_skipped_for_events_too(hub, events, inserts, runtime):
    author, fence_user = hub.new_user(), hub.new_user("fence")
    await hub.request("PUT", "/v1/me/preferences", token=hub.token(author), json={"disabled_types": ["post.liked"]})
    async with inserts([author, fence_user]) as seen:
        meta = await events.send(make_event("post.liked", post={**POST, "author_id": author}))
        await fence(events, seen, meta, fence_user)
    assert await runtime.db["notifications"].count_documents({"recipient": author}) == 0


async def test_same_key_is_handled_in_order(hub, events, inserts):
    user = hub.new_user()
    key = b"one-conversation"
    async with inserts([user]) as seen:
        for i in range(20):
            await events.send(make_event("notification.requested", recipients=[user],
                                         notification={"type": "chat.message", "title": f"#{i}"}), key=key)
        docs = await seen.count(20)
    assert [d["title"] for d in sorted(docs, key=lambda d: d["_id"])] == [f"#{i}" for i in range(20)]


BAD_RECORDS = {
    "malformed JSON": b'{"event_id": "x", ',
    "missing field": orjson.dumps({k: v for k, v in make_event("post.liked", post={**POST, "author_id": "a"}).items()
                                   if k != "post"}),
    "unknown type": orjson.dumps(make_event("post.exploded")),
    "wrong field type": orjson.dumps(make_event("post.liked", post={**POST, "author_id": 7})),
    # Valid JSON that could not be stored or sent back as given.
    "integer beyond 64 bits": orjson.dumps(
        make_event("notification.requested", recipients=["x"], notification={"type": "t", "data": {"n": 0}})
    ).replace(b'"n":0', b'"n":18446744073709551616'),
    "integer beyond BSON's int64": orjson.dumps(
        make_event("notification.requested", recipients=["x"], notification={"type": "t", "data": {"n": 2**63}})),
    "key holding NUL": orjson.dumps(
        make_event("notification.requested", recipients=["x"], notification={"type": "t", "data": {"a\u0000b": 1}})),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
async def test_bad_records_go_to_the_dead_letter_topic_and_consumption_goes_on(hub, events, inserts, dlq, case):
    raw = BAD_RECORDS[case]
    author = hub.new_user()
    key = b"bad-" + case.encode().replace(b" ", b"-")
    async with inserts([author]) as seen:
        meta = await events.send(raw, key=key)
        parked = await asyncio.wait_for(dlq.getone(), 30)
        # A good event after it, on the same partition, is still handled.
        await events.send(make_event("post.liked", post={**POST, "author_id": author}), partition=meta.partition)
        await seen.until(lambda d: d["recipient"] == author)
    headers = dict(parked.headers)
    assert parked.value == raw and parked.key == key  # the original record, unchanged
    assert headers["notihub.reason"].decode()
    assert headers["notihub.source"].decode() == f"{EVENTS_TOPIC}/{meta.partition}/{meta.offset}"


async def test_a_burst_of_events_to_one_user_reaches_a_reading_client_whole(hub, js, kafka_producer):
    """Polls bring one user many notifications at once (up to a commit's worth): a client that
    reads gets them all, once, in order, and is never closed as a slow one (socket_server/hub.py,
    rule 7)."""
    user = hub.new_user("burst")
    sock = await hub.connect(js, "burst", user)
    await sock.wait_for("init")
    n = 4 * hub.settings.max_socket_queue
    sent = [make_event("notification.requested", recipients=[user],
                       notification={"type": "chat.message", "title": f"#{i}"}) for i in range(n)]
    # Queued together on one partition, so that polls hand them out in large batches.
    queued = [await kafka_producer.send(EVENTS_TOPIC, value=orjson.dumps(e), key=e["event_id"].encode(), partition=0)
              for e in sent]
    await asyncio.gather(*queued)
    await sock.wait_for("notification", predicate=lambda _: len(sock.events("notification")) >= n, timeout=30)
    notes = sock.events("notification")
    assert sorted(note["title"] for note in notes) == sorted(e["notification"]["title"] for e in sent)
    # Each carries the newest count the socket knows: the inbox's after it, or a later one when a
    # position check caught the socket up from MongoDB meanwhile (socket_server/hub.py, rule 4).
    counts = [note["unread_count"] for note in notes]
    assert counts == sorted(counts) and counts[-1] == n and all(c >= i + 1 for i, c in enumerate(counts))
    assert [note["id"] for note in notes] == sorted(note["id"] for note in notes)
    assert "disconnect" not in sock.names()


async def test_post_events_validates_then_goes_through_kafka(hub, js, inserts):
    author = hub.new_user()
    sock = await hub.connect(js, "a", author)
    await sock.wait_for("init")
    event = make_event("post.liked", actor="fan", actor_name="Fan", post={**POST, "author_id": author})
    status, body = await hub.request("POST", "/v1/events", json=event, service=True)
    assert status == 202 and body == {"event_id": event["event_id"]}
    note = await sock.wait_for("notification")
    assert note["title"] == "Fan liked your post"


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
async def test_post_events_rejects_what_the_worker_would_dead_letter(hub, case):
    status, body = await hub.request("POST", "/v1/events", data=BAD_RECORDS[case],
                                     headers={"Content-Type": "application/json"}, service=True)
    assert status == 400 and body["error"]["code"] == "invalid_event" and body["error"]["message"]


async def test_post_events_needs_a_service_key(hub):
    status, body = await hub.request("POST", "/v1/events", json=make_event("user.unfollowed", followee={"id": "x"}))
    assert status == 401


async def test_metrics_show_processed_counts_and_lag(hub, events, inserts, http, stack):
    user = hub.new_user()
    async with inserts([user]) as seen:
        await events.send(make_event("moderation.penalized", user={"id": user}, reason="x"))
        await seen.until(lambda d: True)
    [url] = stack.ingest_urls.values()
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    assert 'notihub_ingest_events_total{outcome="handled",type="moderation.penalized"}' in text
    lags = [line for line in text.splitlines() if line.startswith("notihub_ingest_consumer_lag{")]
    assert len(lags) == 3, lags  # one per partition of notihub.events, all assigned to the one worker


async def test_offsets_are_committed_after_the_events_are_stored(hub, events, inserts, kafka_admin):
    """The offsets of a poll are committed (for all its partitions at once) once its events are
    stored, while the next poll is handled: they reach past every stored event."""
    users = [hub.new_user() for _ in range(3)]
    async with inserts(users) as seen:
        sent = [await events.send(make_event("moderation.penalized", user={"id": user}, reason="x"), partition=i)
                for i, user in enumerate(users)]
        await seen.count(3)
    wanted = {TopicPartition(EVENTS_TOPIC, meta.partition): meta.offset + 1 for meta in sent}

    async def committed_past_them() -> bool:
        committed = await kafka_admin.list_consumer_group_offsets(CONSUMER_GROUP, partitions=list(wanted))
        return all(tp in committed and committed[tp].offset >= offset for tp, offset in wanted.items())

    await ask_kafka_until(committed_past_them)
