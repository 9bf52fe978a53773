"""The rules and event validation: pure functions, no services."""
import datetime as dt
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events.models import EVENT_MODELS, InvalidEvent, parse_event
from shared.events.rules import RULES, notification_type, texts
from shared.i18n import KNOWN_TYPES

from .conftest import make_event

POST = {"id": "42", "title": "Graphs", "url": "/posts/42", "author_id": "author"}
CASES = {
    "post.created": (make_event("post.created", post={"id": "1", "title": "T", "url": "/p/1"}),
                     (), "followers:actor-1", "/p/1"),
    "comment.created": (make_event("comment.created", post=POST, comment={"id": "7", "excerpt": "Nice"}),
                        ("author",), None, "/posts/42?comment_id=7"),
    "comment.replied": (make_event("comment.replied", post=POST, parent_comment={"id": "5", "author_id": "p"},
                                   comment={"id": "8", "excerpt": "Yes"}), ("p",), None, "/posts/42?comment_id=8"),
    "post.liked": (make_event("post.liked", post=POST), ("author",), None, "/posts/42"),
    "user.followed": (make_event("user.followed", followee={"id": "star", "name": "Star"}), ("star",), None,
                      "/users/actor-1"),
    "user.unfollowed": (make_event("user.unfollowed", followee={"id": "star"}), (), None, None),
    "moderation.penalized": (make_event("moderation.penalized", user={"id": "bad"}, reason="spam"), ("bad",), None,
                             None),
    "course.progressed": (make_event("course.progressed", course={"id": "c1", "title": "Go"},
                                     lesson={"id": "l1", "title": "Intro"}, progress=0.5),
                          (), "course:c1:instructors", None),
    "notification.requested": (make_event("notification.requested", recipients=["a", "b"],
                                          notification={"type": "billing.due", "title": "Pay"}),
                               ("a", "b"), None, None),
}


def test_every_contract_type_has_a_model_and_a_rule():
    assert set(EVENT_MODELS) == set(RULES) == set(CASES)
    # Every notification type an event produces has catalogue texts.
    assert {t for t in RULES if t not in ("user.unfollowed", "notification.requested")} <= set(KNOWN_TYPES)


@pytest.mark.parametrize("type_", sorted(CASES))
def test_rule_audience_and_url(type_):
    raw, recipients, topic, url = CASES[type_]
    event = parse_event(orjson.dumps(raw))
    rule = RULES[type_]
    audience = rule.audience(event)
    assert (audience.recipients, audience.topic) == (recipients, topic)
    assert rule.url(event) == url


@pytest.mark.parametrize("type_,field", [("comment.created", "post"), ("post.liked", "post"),
                                         ("comment.replied", "parent_comment")])
def test_self_notifications_are_suppressed(type_, field):
    raw = dict(CASES[type_][0])
    raw[field] = {**raw[field], "author_id": raw["actor"]["id"]}
    event = parse_event(orjson.dumps(raw))
    assert RULES[type_].audience(event).empty


def test_follow_and_unfollow_change_membership():
    followed = parse_event(orjson.dumps(CASES["user.followed"][0]))
    [join] = RULES["user.followed"].membership(followed)
    assert (join.topic, join.user, join.join) == ("followers:star", "actor-1", True)
    unfollowed = parse_event(orjson.dumps(CASES["user.unfollowed"][0]))
    [leave] = RULES["user.unfollowed"].membership(unfollowed)
    assert (leave.topic, leave.user, leave.join) == ("followers:star", "actor-1", False)


def test_requested_notifications_carry_their_own_type_and_texts():
    event = parse_event(orjson.dumps(CASES["notification.requested"][0]))
    assert notification_type(event) == "billing.due" and texts(event) == ("Pay", None)


BAD = {
    "not json": b"{oops",
    "not an object": b"[1, 2]",
    "no type": orjson.dumps({"event_id": "e"}),
    "unknown type": orjson.dumps(make_event("post.deleted")),
    "missing field": orjson.dumps({k: v for k, v in CASES["post.liked"][0].items() if k != "post"}),
    "wrong field type": orjson.dumps({**CASES["post.liked"][0], "post": {**POST, "id": 42}}),
    "no event_id": orjson.dumps({k: v for k, v in CASES["post.liked"][0].items() if k != "event_id"}),
    "bad occurred_at": orjson.dumps({**CASES["post.liked"][0], "occurred_at": "yesterday"}),
    "naive occurred_at": orjson.dumps({**CASES["post.liked"][0], "occurred_at": "2026-11-22T03:00:00"}),
    "progress over 1": orjson.dumps({**CASES["course.progressed"][0], "progress": 1.5}),
    "operator as id": orjson.dumps({**CASES["post.liked"][0], "post": {**POST, "author_id": {"$ne": None}}}),
    "both audiences": orjson.dumps({**CASES["notification.requested"][0], "topic": "t"}),
    "too big": orjson.dumps({**CASES["post.liked"][0], "pad": "x" * 70_000}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_events_are_invalid_with_a_reason(case):
    with pytest.raises(InvalidEvent) as info:
        parse_event(BAD[case])
    assert info.value.message


@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_garbage_is_always_an_invalid_event(raw):
    try:
        parse_event(raw)
    except InvalidEvent:
        pass


def test_occurred_at_is_aware():
    event = parse_event(orjson.dumps(CASES["post.liked"][0]))
    assert event.occurred_at.tzinfo is not None and event.occurred_at <= dt.datetime.now(dt.timezone.utc)
