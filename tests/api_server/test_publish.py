"""POST /v1/notifications: the producer endpoint, its idempotency and every way to get it wrong."""
import pytest

from api_server.auth import producer_id

from ..conftest import SERVICE_KEY

BIG = {"blob": "x" * (16 * 1024)}


async def test_publish_and_repeat_with_idempotency_key(hub, js):
    user = hub.new_user()
    sock = await hub.connect(js, "s", user)
    await sock.wait_for("init")
    payload = dict(type_="post.liked", actor={"id": "a", "name": "Kim"}, idempotency_key=hub.new_user("key"))
    status, first = await hub.publish([user], **payload)
    assert status == 201
    status, again = await hub.publish([user], **payload)
    assert status == 200 and again == first
    # Fence: a later notification arrives, the repeat never did.
    await hub.publish([user], "user.followed")
    await sock.wait_for("notification", predicate=lambda n: n["type"] == "user.followed")
    assert [n["type"] for n in sock.events("notification")] == ["post.liked", "user.followed"]


async def test_an_auth0_style_user_id_is_reached(hub, js):
    user = hub.new_user("auth0|")
    sock = await hub.connect(js, "s", user)
    await sock.wait_for("init")
    status, body = await hub.publish([user], "post.liked", actor={"id": "a", "name": "Kim"})
    assert status == 201
    note = await sock.wait_for("notification")
    assert (note["id"], note["recipient"]) == (body["notifications"][0]["id"], user)


async def test_a_repeat_with_another_body_gets_the_first_result(hub, js):
    key, first_user, other = hub.new_user("key"), hub.new_user(), hub.new_user()
    sock = await hub.connect(js, "s", other)
    await sock.wait_for("init")
    status, first = await hub.publish([first_user], idempotency_key=key)
    assert status == 201
    status, again = await hub.publish([other], "post.liked", idempotency_key=key)
    assert status == 200 and again == first
    # Fence: a later notification reaches the other user, the repeat never did.
    await hub.publish([other], "user.followed")
    await sock.wait_for("notification", predicate=lambda n: n["type"] == "user.followed")
    assert [n["type"] for n in sock.events("notification")] == ["user.followed"]


async def test_another_body_under_the_key_of_an_unfinished_request_is_a_conflict(hub, runtime):
    # A first request still running (or dead midway): its claim is there, not yet done.
    key = hub.new_user("key")
    source = f"key:{producer_id(SERVICE_KEY)}:{key}"  # idempotency keys are the producer's own
    assert await runtime.service.idempotency.claim(source, "the first request's fingerprint") is None
    status, body = await hub.publish([hub.new_user()], idempotency_key=key)
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_any_configured_service_key_works(hub):
    status, _ = await hub.request("POST", "/v1/notifications", json={"recipients": ["u"], "type": "a.b"},
                                  headers={"Authorization": "Bearer second-key"})
    assert status == 201


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": SERVICE_KEY},
                                     {"Authorization": "Basic " + SERVICE_KEY}])
async def test_service_key_is_required(hub, headers):
    status, body = await hub.request("POST", "/v1/notifications", json={"recipients": ["u"], "type": "a.b"},
                                     headers=headers)
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_a_user_token_is_not_a_service_key(hub):
    status, _ = await hub.request("POST", "/v1/notifications", json={"recipients": ["u"], "type": "a.b"},
                                  token=hub.token("u"))
    assert status == 401


BAD_BODIES = {
    "empty recipients": {"recipients": [], "type": "a.b"},
    "too many recipients": {"recipients": [f"u{i}" for i in range(10_001)], "type": "a.b"},
    "operator as recipient": {"recipients": [{"$ne": None}], "type": "a.b"},
    "operator as recipients": {"recipients": {"$ne": None}, "type": "a.b"},
    "number as recipient": {"recipients": [1], "type": "a.b"},
    "blank recipient": {"recipients": [""], "type": "a.b"},
    "dollar recipient": {"recipients": ["$where"], "type": "a.b"},
    "no audience": {"type": "a.b"},
    "both audiences": {"recipients": ["u"], "topic": "t", "type": "a.b"},
    "no type": {"recipients": ["u"]},
    "bad type": {"recipients": ["u"], "type": "Not A Type"},
    "type as number": {"recipients": ["u"], "type": 5},
    "data too big": {"recipients": ["u"], "type": "a.b", "data": BIG},
    "data not object": {"recipients": ["u"], "type": "a.b", "data": [1]},
    "actor without id": {"recipients": ["u"], "type": "a.b", "actor": {"name": "x"}},
    "actor id operator": {"recipients": ["u"], "type": "a.b", "actor": {"id": {"$gt": ""}}},
    "title number": {"recipients": ["u"], "type": "a.b", "title": 3},
    "url javascript": {"recipients": ["u"], "type": "a.b", "url": "javascript:alert(1)"},
    "url of another site without a scheme": {"recipients": ["u"], "type": "a.b", "url": "//evil.example"},
    "url with a backslash host": {"recipients": ["u"], "type": "a.b", "url": "/\\evil.example"},
    "unknown field": {"recipients": ["u"], "type": "a.b", "priority": "high"},
    "idempotency key number": {"recipients": ["u"], "type": "a.b", "idempotency_key": 7},
    "array body": [{"recipients": ["u"], "type": "a.b"}],
    "string body": "hello",
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_bodies_get_400_with_the_error_shape(hub, case):
    status, body = await hub.request("POST", "/v1/notifications", json=BAD_BODIES[case], service=True)
    assert status == 400, body
    assert set(body) == {"error"} and body["error"]["code"] == "invalid_request" and body["error"]["message"]


# (Integers beyond 64 bits are read as floats by the API's JSON parser, and so stored.)
UNSTORABLE_DATA = {
    "integer beyond BSON's int64": b'{"n": 9223372036854775808}',
    "deep integer beyond BSON's int64": b'{"a": [{"b": 18446744073709551615}]}',
    "key holding NUL": b'{"a\\u0000b": 1}',
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE_DATA))
@pytest.mark.parametrize("path", ["/v1/notifications", "/v1/events"])
async def test_data_that_could_not_be_stored_as_given_is_refused(hub, runtime, case, path):
    # Valid JSON a parser accepts, but neither MongoDB nor a JSON answer could hold unchanged.
    user = hub.new_user()
    if path == "/v1/notifications":
        head = b'{"recipients": ["%s"], "type": "a.b", "data": ' % user.encode()
    else:
        head = (b'{"event_id": "e-%s", "type": "notification.requested", "occurred_at": "2026-11-22T03:12:45Z", '
                b'"actor": {"id": "a"}, "recipients": ["%s"], "notification": {"type": "a.b", "data": '
                % (user.encode(), user.encode()))
    raw = head + UNSTORABLE_DATA[case] + b"}" * (1 if path == "/v1/notifications" else 2)
    status, body = await hub.request("POST", path, data=raw, headers={"Content-Type": "application/json"},
                                     service=True)
    assert status == 400 and "data" in body["error"]["message"], body
    assert await runtime.db["notifications"].count_documents({"recipient": user}) == 0


async def test_integers_within_64_bits_round_trip(hub):
    user = hub.new_user()
    data = {"max": 2**63 - 1, "min": -(2**63), "float": 1.5e300, "nested": [{"k": "v"}], "": None}
    status, _ = await hub.publish([user], "a.b", data=data)
    assert status == 201
    status, page = await hub.request("GET", "/v1/me/notifications", token=hub.token(user))
    assert status == 200 and page["notifications"][0]["data"] == data


async def test_malformed_json(hub):
    status, body = await hub.request("POST", "/v1/notifications", data=b'{"recipients": [',
                                     headers={"Content-Type": "application/json"}, service=True)
    assert status == 400 and body["error"]["code"] == "invalid_json"


async def test_wrong_content_type(hub):
    status, body = await hub.request("POST", "/v1/notifications", data=b"recipients=u",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}, service=True)
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("size", [1024 * 1024 + 10, 3 * 1024 * 1024])
async def test_oversized_body(hub, size):
    # Just over the API's limit (the API answers) and over the load balancer's (nginx answers).
    status, body = await hub.request("POST", "/v1/notifications", data=b"{" + b" " * size + b"}",
                                     headers={"Content-Type": "application/json"}, service=True)
    assert status == 413 and body["error"]["code"] == "payload_too_large"


async def test_duplicate_recipients_get_one_notification(hub):
    user = hub.new_user()
    status, body = await hub.publish([user, user, user])
    assert status == 201 and len(body["notifications"]) == 1


async def test_nothing_is_stored_for_rejected_requests(hub, runtime):
    user = hub.new_user()
    await hub.request("POST", "/v1/notifications", json={"recipients": [user], "type": "a.b", "data": BIG},
                      service=True)
    assert await runtime.db["notifications"].count_documents({"recipient": user}) == 0
