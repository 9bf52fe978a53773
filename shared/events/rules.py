"""Who is notified of what: one declarative rule per event type.

Adding an event type is adding a model (models.py), a rule here and two catalogue entries;
the handler has no per-type code path.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .models import CourseProgressed, Event, NotificationRequested


@dataclasses.dataclass(frozen=True)
class Audience:
    """Explicit recipients, or a topic's subscribers."""

    recipients: tuple[str, ...] = ()
    topic: str | None = None

    @property
    def empty(self) -> bool:
        return not self.recipients and self.topic is None


NOBODY = Audience()


@dataclasses.dataclass(frozen=True)
class Membership:
    """A topic membership change an event implies."""

    topic: str
    user: str
    join: bool


def others(event: Event, *users: str) -> Audience:
    """These users, except the actor: nobody is notified of their own action."""
    return Audience(recipients=tuple(u for u in dict.fromkeys(users) if u != event.actor.id))


def with_query(url: str | None, **params: str) -> str | None:
    """``url`` with extra query parameters (``/posts/42`` -> ``/posts/42?comment_id=7``)."""
    if url is None:
        return None
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _none(event: Event) -> list[Membership]:
    return []


def _no_params(event: Event) -> dict[str, Any]:
    return {}


def _no_url(event: Event) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one event type becomes notifications."""

    audience: Callable[[Any], Audience]
    params: Callable[[Any], dict[str, Any]] = _no_params
    url: Callable[[Any], str | None] = _no_url
    data: Callable[[Any], dict[str, Any]] = _no_params
    membership: Callable[[Any], list[Membership]] = _none


def _progress_percent(e: CourseProgressed) -> int:
    return round(e.progress * 100)


RULES: dict[str, Rule] = {
    "post.created": Rule(
        audience=lambda e: Audience(topic=f"followers:{e.actor.id}"),
        params=lambda e: {"post_title": e.post.title},
        url=lambda e: e.post.url,
        data=lambda e: {"post_id": e.post.id},
    ),
    "comment.created": Rule(
        audience=lambda e: others(e, e.post.author_id),
        params=lambda e: {"post_title": e.post.title, "comment_excerpt": e.comment.excerpt},
        url=lambda e: with_query(e.post.url, comment_id=e.comment.id),
        data=lambda e: {"post_id": e.post.id, "comment_id": e.comment.id},
    ),
    "comment.replied": Rule(
        audience=lambda e: others(e, e.parent_comment.author_id),
        params=lambda e: {"post_title": e.post.title, "comment_excerpt": e.comment.excerpt},
        url=lambda e: with_query(e.post.url, comment_id=e.comment.id),
        data=lambda e: {"post_id": e.post.id, "comment_id": e.comment.id, "parent_comment_id": e.parent_comment.id},
    ),
    "post.liked": Rule(
        audience=lambda e: others(e, e.post.author_id),
        params=lambda e: {"post_title": e.post.title},
        url=lambda e: e.post.url,
        data=lambda e: {"post_id": e.post.id},
    ),
    "user.followed": Rule(
        audience=lambda e: others(e, e.followee.id),
        url=lambda e: f"/users/{e.actor.id}",
        data=lambda e: {"follower_id": e.actor.id},
        membership=lambda e: [Membership(f"followers:{e.followee.id}", e.actor.id, join=True)],
    ),
    "user.unfollowed": Rule(
        audience=lambda e: NOBODY,
        membership=lambda e: [Membership(f"followers:{e.followee.id}", e.actor.id, join=False)],
    ),
    "moderation.penalized": Rule(
        audience=lambda e: Audience(recipients=(e.user.id,)),
        params=lambda e: {"reason": e.reason, "until": e.until.isoformat() if e.until else None},
        data=lambda e: {"reason": e.reason, "until": e.until.isoformat() if e.until else None},
    ),
    "course.progressed": Rule(
        audience=lambda e: Audience(topic=f"course:{e.course.id}:instructors"),
        params=lambda e: {"course_title": e.course.title, "lesson_title": e.lesson.title if e.lesson else None,
                          "progress_percent": _progress_percent(e)},
        data=lambda e: {
            "course": {"id": e.course.id, "title": e.course.title},
            "lesson": {"id": e.lesson.id, "title": e.lesson.title} if e.lesson else None,
            "progress": e.progress,
            "student": {"id": e.actor.id, "name": e.actor.name},
        },
    ),
    "notification.requested": Rule(
        audience=lambda e: Audience(recipients=tuple(e.recipients or ()), topic=e.topic),
        params=lambda e: e.notification.data or {},
        url=lambda e: e.notification.url,
        data=lambda e: e.notification.data or {},
    ),
}



def notification_type(event: Event) -> str:
    """The type of the notifications an event produces (notification.requested names its own)."""
    return event.notification.type if isinstance(event, NotificationRequested) else event.type


def texts(event: Event) -> tuple[str | None, str | None]:
    """Producer-given title and body, if the event carries them."""
    if isinstance(event, NotificationRequested):
        return event.notification.title, event.notification.body
    return None, None
