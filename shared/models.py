"""Plain data that flows between the service, the stores and the edges."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from bson import ObjectId

from .tokens import User  # noqa: F401  (re-exported: the caller of user operations)


def utcnow() -> dt.datetime:
    """Now, in UTC, at the millisecond precision MongoDB keeps."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: dt.datetime) -> str:
    """ISO 8601 with milliseconds and a Z, as the contract shows."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    elif value.utcoffset():
        value = value.astimezone(dt.timezone.utc)
    # isoformat is C code: several times faster than strftime, on every notification sent.
    return value.isoformat(timespec="milliseconds")[:23] + "Z"


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    id: str
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """One stored notification of one recipient, before it is rendered in a language."""

    id: ObjectId
    type: str
    recipient: str
    actor: Actor | None
    created_at: dt.datetime
    read: bool = False
    # Producer-given texts override the catalogue: a string, or {lang: text}.
    title: str | dict[str, str] | None = None
    body: str | dict[str, str] | None = None
    url: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None

    def to_document(self) -> dict[str, Any]:
        """The MongoDB document."""
        doc = {
            "_id": self.id,
            "type": self.type,
            "recipient": self.recipient,
            "actor": self.actor.to_dict() if self.actor else None,
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "params": self.params,
            "data": self.data,
            "read": self.read,
            "created_at": self.created_at,
        }
        if self.source is not None:
            doc["source"] = self.source
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "Notification":
        actor = doc.get("actor")
        return cls(
            id=doc["_id"],
            type=doc["type"],
            recipient=doc["recipient"],
            actor=Actor(id=actor["id"], name=actor.get("name")) if actor else None,
            created_at=doc["created_at"],
            read=doc.get("read", False),
            title=doc.get("title"),
            body=doc.get("body"),
            url=doc.get("url"),
            params=doc.get("params") or {},
            data=doc.get("data") or {},
            source=doc.get("source"),
        )

    def to_wire(self) -> dict[str, Any]:
        """The form that travels between processes over Redis (JSON-safe, not rendered)."""
        return {
            "id": str(self.id),
            "type": self.type,
            "recipient": self.recipient,
            "actor": self.actor.to_dict() if self.actor else None,
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "params": self.params,
            "data": self.data,
            "read": self.read,
            "created_at": iso(self.created_at),
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> "Notification":
        actor = wire.get("actor")
        return cls(
            id=ObjectId(wire["id"]),
            type=wire["type"],
            recipient=wire["recipient"],
            actor=Actor(id=actor["id"], name=actor.get("name")) if actor else None,
            created_at=dt.datetime.fromisoformat(wire["created_at"].replace("Z", "+00:00")),
            read=wire.get("read", False),
            title=wire.get("title"),
            body=wire.get("body"),
            url=wire.get("url"),
            params=wire.get("params") or {},
            data=wire.get("data") or {},
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Draft:
    """What a producer asks for, before recipients are resolved and ids assigned."""

    type: str
    recipients: tuple[str, ...] = ()
    topic: str | None = None
    actor: Actor | None = None
    title: str | dict[str, str] | None = None
    body: str | dict[str, str] | None = None
    url: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Makes a repeat of the same request a no-op: an idempotency key or an event id.
    source: str | None = None
    fingerprint: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    """The outcome of publishing a draft."""

    created: bool
    notifications: list[tuple[str, str]]  # (id, recipient); empty unless asked for
    count: int = 0  # how many notifications the request has stored (in all, for a repeat)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    notifications: list[Notification]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Inbox:
    """A user's inbox position and badge, kept by every write that changes them.

    ``seq`` counts the notifications ever stored for the user (positions 1..seq, assigned in
    commit order); ``last`` is the newest id stored, and ids of one user increase in commit
    order; ``ver`` grows with every change of the inbox (stored, read, deleted), so of two
    badge counts the one with the higher ``ver`` is the newer.
    """

    user: str
    seq: int = 0
    last: ObjectId | None = None
    unread: int = 0
    total: int = 0
    ver: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """A notification as committed: its position in the recipient's inbox and the badge after it."""

    notification: Notification
    seq: int
    unread: int
    ver: int
    total: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Changed:
    """The outcome of a read-state change or a deletion: which ids changed, and the inbox after."""

    ids: list[ObjectId]
    inbox: Inbox
    count: int  # how many notifications changed (``ids`` may be left empty, as for "all")


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What a socket gets on (re)connect: the inbox and its newest unread notifications."""

    inbox: Inbox
    notifications: list[Notification]
