"""Catalogues and rendering: pure functions, no services."""
import datetime as dt

import pytest
from babel.messages.pofile import read_po
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from shared.i18n import (COUNTED_TYPES, KNOWN_TYPES, LOCALES_DIR, Renderer, negotiate, normalize_language,
                         supported_languages, template_params)
from shared.models import Actor, Notification


def make(type_="comment.created", **kw):
    base = dict(id=ObjectId(), type=type_, recipient="u1", actor=Actor("u2", "Kim"),
                created_at=dt.datetime(2026, 11, 22, 3, 12, 45, 123000, tzinfo=dt.timezone.utc))
    base.update(kw)
    return Notification(**base)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_every_type_has_a_title_and_body_in_every_language(lang):
    with open(LOCALES_DIR / lang / "LC_MESSAGES" / "notihub.po", "rb") as fh:
        ids = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    for type_ in (*KNOWN_TYPES, "generic"):
        assert f"{type_}.title" in ids and f"{type_}.body" in ids, (lang, type_)
    assert {"ko", "en"} <= set(supported_languages())


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("type_", [*KNOWN_TYPES, "unknown.type"])
def test_no_rendered_text_is_a_catalogue_key(lang, type_):
    r = Renderer(default_lang="en")
    for params in ({}, {"post_title": "P", "comment_excerpt": "C", "reason": "R", "course_title": "T",
                        "lesson_title": "L", "progress_percent": 5, "others": 2}):
        out = r.render(make(type_, params=params), lang)
        for text in (out["title"], out["body"]):
            assert text is None or not any(text.endswith(s) for s in (".title", ".body", "_others")), (type_, text)


def test_same_notification_renders_per_language():
    r = Renderer(default_lang="en")
    n = make(params={"comment_excerpt": "Nice!"})
    en, ko = r.render(n, "en"), r.render(n, "ko")
    assert en["title"] == "Kim commented on your post"
    assert ko["title"] == "Kim님이 회원님의 글에 댓글을 남겼습니다"
    assert en["body"] == ko["body"] == "Nice!"
    assert en["created_at"] == "2026-11-22T03:12:45.123Z"


def test_missing_params_give_no_body_and_unknown_types_the_generic_title():
    r = Renderer(default_lang="en")
    assert r.render(make(), "en")["body"] is None
    generic = r.render(make("billing.failed", actor=None), "ko")
    assert generic["title"] == "새 알림이 있습니다"
    assert r.render(make("user.followed", actor=None), "en")["title"] == "Someone started following you"


def test_producer_texts_override_catalogue_and_may_be_per_language():
    r = Renderer(default_lang="en")
    n = make(title={"en": "Hi", "ko": "안녕"}, body="plain")
    assert (r.render(n, "ko")["title"], r.render(n, "en")["title"]) == ("안녕", "Hi")
    assert r.render(n, "ko")["body"] == "plain"


def test_placeholders_cannot_reach_attributes():
    r = Renderer(default_lang="en")
    n = make(title=None, params={"comment_excerpt": "{actor.__class__}"})
    assert r.render(n, "en")["body"] == "{actor.__class__}"


@pytest.mark.parametrize("code,expected", [("ko-KR", "ko"), ("ko_kr", "ko"), ("EN", "en"), ("en-US", "en"),
                                           ("fr", "en"), ("", "en"), (None, "en"), (7, "en")])
def test_normalize_language(code, expected):
    assert normalize_language(code, "en") == expected


def test_negotiate_accept_language():
    assert negotiate("fr, ko-KR;q=0.8, en;q=0.5", "en") == "ko"
    assert negotiate("en;q=0.1, ko;q=0.9", "en") == "ko"
    assert negotiate("de", "ko") == "ko"
    assert negotiate("ko;q=0", "en") == "en"


def test_counted_titles_use_plural_forms():
    r = Renderer(default_lang="en")
    one, many = make("post.liked", params={"others": 1}), make("post.liked", params={"others": 3})
    assert r.render(one, "en")["title"] == "Kim and 1 other person liked your post"
    assert r.render(many, "en")["title"] == "Kim and 3 other people liked your post"
    assert r.render(many, "ko")["title"] == "Kim님 외 3명이 회원님의 글을 좋아합니다"
    assert r.render(make("post.liked", params={"others": 0}), "en")["title"] == "Kim liked your post"
    assert r.render(make("post.liked", params={"others": True}), "en")["title"] == "Kim liked your post"


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_counted_types_have_plural_entries(lang):
    with open(LOCALES_DIR / lang / "LC_MESSAGES" / "notihub.po", "rb") as fh:
        catalog = read_po(fh)
    for type_ in COUNTED_TYPES:
        message = catalog.get((f"{type_}.title_others", f"{type_}.title_others"))
        assert message is not None and message.pluralizable, (lang, type_)
        assert all(message.string), (lang, type_)


def test_plural_forms():
    r = Renderer(default_lang="en")
    assert r.unread_label(1, "en") == "1 unread notification"
    assert r.unread_label(2, "en") == "2 unread notifications"
    assert r.unread_label(2, "ko") == "읽지 않은 알림 2개"


@given(st.text(max_size=40), st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4))
def test_rendering_never_fails(code, params):
    r = Renderer(default_lang="en")
    out = r.render(make(params=params), r.language(code))
    assert isinstance(out["title"], str) and out["title"]


@pytest.mark.parametrize(("configured", "default"), [("ko-KR", "ko"), ("KO", "ko"), ("en_US", "en"), ("fr", "en")])
def test_the_configured_default_language_is_normalised(configured, default):
    # Used as given, "ko-KR" or "fr" would name a catalogue that does not exist.
    r = Renderer(default_lang=configured)
    assert r.default_lang == default
    assert r.render(make(), r.language("xx"))["title"]


def test_templates_get_the_top_level_text_and_numbers_of_the_data():
    # The same for a producer's request and for a domain event (api_server/views.py, shared/events).
    assert template_params({"title": "Hi", "n": 3, "ratio": 0.5, "flag": True, "none": None,
                            "nested": {"a": 1}, "list": [1]}) == {"title": "Hi", "n": 3, "ratio": 0.5}
    assert template_params(None) == {}
