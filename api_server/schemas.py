"""Request and response models: they validate input and generate the OpenAPI document."""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints, model_validator

from shared.events.models import EVENT_MODELS
from shared.validation import Data, NotificationType, TopicName, Url, UserId

MAX_RECIPIENTS = 10_000

LangCode = Annotated[str, StringConstraints(min_length=2, max_length=8, pattern=r"^[a-z]{2,3}$")]
NotificationId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{24}$")]
Title = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Body = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class Strict(BaseModel):
    """No coercion (a number is not a string) and no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ActorIn(Strict):
    id: UserId
    name: Annotated[str, StringConstraints(max_length=200)] | None = None


class PublishIn(Strict):
    """A producer's request to notify users."""

    recipients: Annotated[list[UserId], Field(min_length=1, max_length=MAX_RECIPIENTS)] | None = None
    topic: TopicName | None = None
    type: NotificationType
    actor: ActorIn | None = None
    title: Title | dict[LangCode, Title] | None = Field(
        default=None, description="Overrides the catalogue title; a string, or one per language."
    )
    body: Body | dict[LangCode, Body] | None = None
    url: Url | None = None
    data: Data | None = None
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _one_audience(self) -> "PublishIn":
        if (self.recipients is None) == (self.topic is None):
            raise ValueError("give exactly one of recipients or topic")
        return self


class PublishedItem(BaseModel):
    id: str
    recipient: str


class PublishOut(BaseModel):
    notifications: list[PublishedItem]


class PublishCountOut(BaseModel):
    """The short answer (``Prefer: return=minimal``): how many notifications were stored, or for
    a repeat, how many the first request stored."""

    count: int


class PublishAnswer(RootModel[PublishOut | PublishCountOut]):
    """One entry per recipient notified, or with ``Prefer: return=minimal`` only their count."""


class IdsIn(Strict):
    ids: Annotated[list[NotificationId], Field(min_length=1, max_length=1000)]


class ActorOut(BaseModel):
    id: str
    name: str | None


class NotificationOut(BaseModel):
    """A notification, rendered in the reader's language."""

    id: str
    type: str
    recipient: str
    actor: ActorOut | None
    title: str
    body: str | None
    url: str | None
    data: dict[str, Any]
    read: bool
    created_at: str = Field(description="ISO 8601, UTC, milliseconds")


class PageOut(BaseModel):
    notifications: list[NotificationOut]
    next_cursor: str | None


class UnreadCountOut(BaseModel):
    unread_count: int


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] | None = None


class PreferencesIn(Strict):
    disabled_types: Annotated[list[NotificationType], Field(max_length=100)]


class PreferencesOut(BaseModel):
    disabled_types: list[str]


class SubscribersOut(BaseModel):
    subscribers: list[str]
    next_cursor: str | None


AnyEvent = Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="type")]  # noqa: UP007


class EventIn(RootModel[AnyEvent]):  # type: ignore[valid-type]
    """A domain event (the same models validate what the ingest worker consumes)."""


class EventAccepted(BaseModel):
    event_id: str
