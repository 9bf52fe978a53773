"""The user endpoints of the inbox."""
import pytest


async def _seed(hub, user, n, type_="comment.created"):
    ids = []
    for i in range(n):
        _, body = await hub.publish([user], type_, actor={"id": "a", "name": "Kim"}, data={"comment_excerpt": f"c{i}"})
        ids.append(body["notifications"][0]["id"])
    return ids


async def test_pages_newest_first_with_an_opaque_cursor(hub):
    user = hub.new_user()
    ids = await _seed(hub, user, 5)
    token = hub.token(user)
    seen, cursor = [], None
    while True:
        path = "/v1/me/notifications?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await hub.request("GET", path, token=token)
        assert status == 200
        seen += [n["id"] for n in page["notifications"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_titles_follow_accept_language(hub):
    user = hub.new_user()
    await _seed(hub, user, 1)
    token = hub.token(user)
    _, ko = await hub.request("GET", "/v1/me/notifications", token=token, headers={"Accept-Language": "ko-KR,ko;q=0.9"})
    _, fallback = await hub.request("GET", "/v1/me/notifications", token=token, headers={"Accept-Language": "fr"})
    assert ko["notifications"][0]["title"] == "Kim님이 회원님의 글에 댓글을 남겼습니다"
    assert fallback["notifications"][0]["title"] == "Kim commented on your post"


async def test_unread_count_and_read_endpoints(hub):
    user, other = hub.new_user(), hub.new_user()
    ids = await _seed(hub, user, 3)
    token = hub.token(user)
    assert await hub.request("GET", "/v1/me/notifications/unread-count", token=token) == (200, {"unread_count": 3})
    # Another user's token cannot mark them.
    assert await hub.request("POST", "/v1/me/notifications/read", json={"ids": ids}, token=hub.token(other)) == (
        200, {"unread_count": 0})
    assert await hub.request("POST", "/v1/me/notifications/read", json={"ids": ids[:1]}, token=token) == (
        200, {"unread_count": 2})
    _, unread = await hub.request("GET", "/v1/me/notifications?unread_only=true", token=token)
    assert [n["id"] for n in unread["notifications"]] == ids[:0:-1]
    assert await hub.request("POST", "/v1/me/notifications/read-all", token=token) == (200, {"unread_count": 0})


async def test_delete_is_404_for_anyone_but_the_owner(hub):
    user, other = hub.new_user(), hub.new_user()
    [note] = await _seed(hub, user, 1)
    status, body = await hub.request("DELETE", f"/v1/me/notifications/{note}", token=hub.token(other))
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _ = await hub.request("DELETE", f"/v1/me/notifications/{note}", token=hub.token(user))
    assert status == 204
    status, _ = await hub.request("DELETE", f"/v1/me/notifications/{note}", token=hub.token(user))
    assert status == 404


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=garbage", "cursor=%7B%24gt%3A1%7D",
                                   "unread_only=maybe", "offset=20", "cursor=&=null"])
async def test_bad_queries_are_400(hub, query):
    status, body = await hub.request("GET", f"/v1/me/notifications?{query}", token=hub.token(hub.new_user()))
    assert status == 400 and body["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("path,method,json", [
    ("/v1/me/notifications", "GET", None),
    ("/v1/me/notifications/unread-count", "GET", None),
    ("/v1/me/notifications/read-all", "POST", None),
    ("/v1/me/notifications/read", "POST", {"ids": []}),
])
async def test_user_endpoints_need_a_valid_token(hub, path, method, json):
    for headers in ({}, {"Authorization": "Bearer x.y.z"}, {"Authorization": "Token abc"}):
        status, body = await hub.request(method, path, json=json, headers=headers)
        assert status == 401 and body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("body", [{"ids": [{"$ne": None}]}, {"ids": ["zz"]}, {"ids": "x"}, {"ids": []}, {},
                                  {"ids": ["6b02627a1106ff6d4c84cc9e"], "extra": 1}])
async def test_bad_read_bodies(hub, body):
    status, answer = await hub.request("POST", "/v1/me/notifications/read", json=body, token=hub.token("u"))
    assert status == 400 and answer["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("id_", ["not-an-id", "6b02627a1106ff6d4c84cc9e", "%7B%24ne%3Anull%7D", "0" * 25])
async def test_deleting_an_id_that_is_nobodys_is_404(hub, id_):
    status, body = await hub.request("DELETE", f"/v1/me/notifications/{id_}", token=hub.token("u"))
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_empty_query_parameters_are_not_given(hub):
    # Clients that always send every parameter send "?limit=&cursor=&unread_only=".
    user = hub.new_user()
    ids = await _seed(hub, user, 3)
    status, page = await hub.request("GET", "/v1/me/notifications?limit=&cursor=&unread_only=", token=hub.token(user))
    assert status == 200 and [n["id"] for n in page["notifications"]] == ids[::-1] and page["next_cursor"] is None


async def test_unknown_route_and_method(hub):
    assert (await hub.request("GET", "/v1/nothing"))[1]["error"]["code"] == "not_found"
    status, body = await hub.request("PATCH", "/v1/notifications", service=True)
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


async def test_walking_pages_while_new_ones_arrive_sees_every_older_item_once(hub):
    import asyncio

    user = hub.new_user()
    older = await _seed(hub, user, 30)
    token = hub.token(user)
    producer = asyncio.create_task(_seed(hub, user, 20, "post.liked"))
    seen, cursor = [], None
    while True:
        path = "/v1/me/notifications?limit=7" + (f"&cursor={cursor}" if cursor else "")
        _, page = await hub.request("GET", path, token=token)
        seen += [n["id"] for n in page["notifications"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    newer = await producer
    assert len(seen) == len(set(seen)), "an item came twice"
    assert [i for i in seen if i in set(older)] == older[::-1], "an older item was skipped or misordered"
    assert set(seen) <= set(older) | set(newer)
