"""Handshake authentication through the load balancer, with the real JS client."""
import time

import jwt
import pytest

from ..conftest import JWT_SECRET


def _claims(**kw):
    return {"sub": "u-hs", "exp": int(time.time()) + 60, **kw}


BAD_TOKENS = {
    "wrong key": lambda: jwt.encode(_claims(), "not-the-secret-0123456789-0123456789", algorithm="HS256"),
    "none algorithm": lambda: jwt.encode(_claims(), None, algorithm="none"),
    "other algorithm": lambda: jwt.encode(_claims(), JWT_SECRET, algorithm="HS512"),
    "no sub": lambda: jwt.encode({"exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256"),
    "no exp": lambda: jwt.encode({"sub": "u-hs"}, JWT_SECRET, algorithm="HS256"),
    "sub nobody could address": lambda: jwt.encode(_claims(sub="Kim Lee"), JWT_SECRET, algorithm="HS256"),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_as_unauthorized(hub, js, case):
    sock = await js.connect("s", hub.socket_url, transports=["websocket"],
                            query={"token": BAD_TOKENS[case](), "content-language": "en"}, reconnection=False)
    err = await sock.wait_for("connect_error")
    assert err["data"]["code"] == "unauthorized", err
    assert err["data"]["message"]


async def test_missing_token_is_refused(hub, js):
    sock = await js.connect("s", hub.socket_url, transports=["polling"], reconnection=False)
    err = await sock.wait_for("connect_error")
    assert err["data"] == {"code": "unauthorized", "message": "a user token is required"}


async def test_expired_token_is_refused_as_token_expired(hub, js):
    token = jwt.encode(_claims(exp=int(time.time()) - 10), JWT_SECRET, algorithm="HS256")
    sock = await js.connect("s", hub.socket_url, transports=["websocket"], auth={"token": token}, reconnection=False)
    err = await sock.wait_for("connect_error")
    assert err["data"]["code"] == "token_expired"


async def test_auth_object_is_accepted(hub, js):
    user = hub.new_user()
    sock = await hub.connect(js, "s", user, lang="ko", use_auth=True)
    init = await sock.wait_for("init")
    assert (init["user_id"], init["lang"], init["unread_count"], init["notifications"]) == (user, "ko", 0, [])


async def test_too_many_connections(hub, js):
    user = hub.new_user()
    limit = hub.settings.max_connections_per_user
    for i in range(limit):
        sock = await hub.connect(js, f"s{i}", user)
        await sock.wait_for("init")
    extra = await hub.connect(js, "extra", user, reconnection=False)
    err = await extra.wait_for("connect_error")
    assert err["data"]["code"] == "too_many_connections"
    # The limit is per user: somebody else still gets in.
    other = await hub.connect(js, "other", hub.new_user())
    assert (await other.wait_for("init"))["unread_count"] == 0
