"""The domain events of the contract, validated strictly from JSON.

One model per event type; `parse_event` reads raw bytes and answers with the typed event or
raises InvalidEvent naming what is wrong. The same models validate `POST /v1/events`.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from ..errors import InvalidRequest
from ..validation import Data, NotificationType, TopicName, Url, UserId, describe

Id = UserId
Text = Annotated[str, StringConstraints(max_length=500)]
MAX_EVENT_BYTES = 64 * 1024


class InvalidEvent(InvalidRequest):
    """An event that can never be handled: it goes to the dead-letter topic with this reason."""

    code = "invalid_event"


class Strict(BaseModel):
    # Unknown fields are ignored (producers may send more than we read); wrong types are not.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Actor(Strict):
    id: Id
    name: Text | None = None


class Post(Strict):
    id: Id
    title: Text | None = None
    url: Url | None = None


class AuthoredPost(Post):
    author_id: Id


class Comment(Strict):
    id: Id
    excerpt: Text | None = None


class ParentComment(Strict):
    id: Id
    author_id: Id


class Followee(Strict):
    id: Id
    name: Text | None = None


class PenalizedUser(Strict):
    id: Id


class Course(Strict):
    id: Id
    title: Text | None = None


class Lesson(Strict):
    id: Id
    title: Text | None = None


class RequestedNotification(Strict):
    type: NotificationType
    title: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    body: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    url: Url | None = None
    data: Data | None = None


class Event(Strict):
    """Fields every event has."""

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    type: str
    occurred_at: AwareDatetime
    actor: Actor


class PostCreated(Event):
    type: Literal["post.created"]
    post: Post


class CommentCreated(Event):
    type: Literal["comment.created"]
    post: AuthoredPost
    comment: Comment


class CommentReplied(Event):
    type: Literal["comment.replied"]
    post: Post
    parent_comment: ParentComment
    comment: Comment


class PostLiked(Event):
    type: Literal["post.liked"]
    post: AuthoredPost


class UserFollowed(Event):
    type: Literal["user.followed"]
    followee: Followee


class UserUnfollowed(Event):
    type: Literal["user.unfollowed"]
    followee: Followee


class ModerationPenalized(Event):
    type: Literal["moderation.penalized"]
    user: PenalizedUser
    reason: Text
    until: AwareDatetime | None = None


class CourseProgressed(Event):
    type: Literal["course.progressed"]
    course: Course
    lesson: Lesson | None = None
    progress: Annotated[float, Field(ge=0, le=1)]


class NotificationRequested(Event):
    type: Literal["notification.requested"]
    recipients: Annotated[list[Id], Field(min_length=1, max_length=10_000)] | None = None
    topic: TopicName | None = None
    notification: RequestedNotification

    @model_validator(mode="after")
    def _one_audience(self) -> "NotificationRequested":
        if (self.recipients is None) == (self.topic is None):
            raise ValueError("give exactly one of recipients or topic")
        return self


EVENT_MODELS: dict[str, type[Event]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in (PostCreated, CommentCreated, CommentReplied, PostLiked, UserFollowed, UserUnfollowed,
                  ModerationPenalized, CourseProgressed, NotificationRequested)
}


def parse_event(raw: bytes | str | None) -> Event:
    """Validate one event from its JSON; raise InvalidEvent with the reason."""
    if raw is None:
        raise InvalidEvent("the record has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"the event is larger than {MAX_EVENT_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidEvent("the event is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidEvent("the event must be a JSON object")
    kind = body.get("type")
    model = EVENT_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InvalidEvent(f"unknown event type {kind!r}" if isinstance(kind, str) else "type must be a string")
    try:
        # JSON mode: ISO strings become datetimes, but a number is never a string.
        return model.model_validate_json(raw if isinstance(raw, bytes | str) else orjson.dumps(body))
    except ValidationError as exc:
        raise InvalidEvent(describe(exc, root="event")) from None


def occurred(event: Event) -> dt.datetime:
    """When the event happened, in UTC."""
    return event.occurred_at.astimezone(dt.timezone.utc)
