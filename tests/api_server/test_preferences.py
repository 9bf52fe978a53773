"""Preferences: a disabled type is never stored nor delivered."""
import pytest


async def test_get_and_put(hub):
    token = hub.token(hub.new_user())
    assert await hub.request("GET", "/v1/me/preferences", token=token) == (200, {"disabled_types": []})
    status, body = await hub.request("PUT", "/v1/me/preferences", token=token,
                                     json={"disabled_types": ["post.liked", "course.progressed", "post.liked"]})
    assert status == 200 and body == {"disabled_types": ["course.progressed", "post.liked"]}
    assert (await hub.request("GET", "/v1/me/preferences", token=token))[1] == body


async def test_a_disabled_type_is_neither_stored_nor_delivered(hub, js, runtime):
    quiet, loud = hub.new_user(), hub.new_user()
    await hub.request("PUT", "/v1/me/preferences", token=hub.token(quiet), json={"disabled_types": ["post.liked"]})
    sock = await hub.connect(js, "q", quiet)
    await sock.wait_for("init")
    status, body = await hub.publish([quiet, loud], "post.liked")
    assert status == 201 and [n["recipient"] for n in body["notifications"]] == [loud]
    topic = f"t-{hub.new_user()}"
    await hub.request("PUT", f"/v1/topics/{topic}/subscribers/{quiet}", service=True)
    _, body = await hub.request("POST", "/v1/notifications", service=True, json={"topic": topic, "type": "post.liked"})
    assert body["notifications"] == []
    await hub.publish([quiet], "comment.created")  # other types still come
    assert (await sock.wait_for("notification"))["type"] == "comment.created"
    assert await runtime.db["notifications"].count_documents({"recipient": quiet, "type": "post.liked"}) == 0


@pytest.mark.parametrize("body", [{}, {"disabled_types": "post.liked"}, {"disabled_types": [1]},
                                  {"disabled_types": [{"$ne": None}]}, {"disabled_types": ["Bad Type"]},
                                  {"disabled_types": [], "x": 1}, {"disabled_types": ["a.b"] * 101}])
async def test_bad_preferences(hub, body):
    status, answer = await hub.request("PUT", "/v1/me/preferences", json=body, token=hub.token("u"))
    assert status == 400 and answer["error"]["code"] == "invalid_request"
