"""Applies an event's rule: topic memberships first, then notifications through the service."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from ..i18n import template_params
from ..models import Actor, Draft, Published
from ..service import BATCH, NotificationService
from .models import Event
from .rules import RULES, notification_type, texts

logger = logging.getLogger(__name__)


class EventHandler:
    """Turns a validated event into topic changes and notifications, idempotently on event_id."""

    def __init__(self, *, service: NotificationService) -> None:
        self._service = service

    async def handle(self, event: Event) -> Published | None:
        """Apply ``event``; a redelivery stores and delivers nothing twice."""
        rule = RULES[event.type]
        # Memberships are set, not toggled, so applying them again is harmless.
        for change in rule.membership(event):
            if change.join:
                await self._service.subscribe(change.topic, change.user)
            else:
                await self._service.unsubscribe(change.topic, change.user)
        draft = self._draft(event)
        if draft is None:
            return None
        return await self._service.publish(draft, report=False)

    def batchable(self, event: Event) -> bool:
        """Whether ``event`` only notifies a list of users (no memberships, no topic), as many
        events can at once (``handle_many``)."""
        rule = RULES[event.type]
        if rule.membership(event):
            return False
        audience = rule.audience(event)
        return audience.topic is None and len(audience.recipients) <= BATCH

    async def handle_many(self, events: Sequence[Event]) -> int:
        """Apply batchable events together: their notifications share one group-commit entry
        (one transaction per COMMIT_BATCH, one bus message per worker). Idempotent as ``handle``;
        how many notifications were new."""
        drafts = [d for d in map(self._draft, events) if d is not None]
        return await self._service.publish_many(drafts)

    @staticmethod
    def _draft(event: Event) -> Draft | None:
        rule = RULES[event.type]
        audience = rule.audience(event)
        if audience.empty:
            return None
        title, body = texts(event)
        return Draft(
            type=notification_type(event),
            recipients=audience.recipients,
            topic=audience.topic,
            actor=Actor(id=event.actor.id, name=event.actor.name),
            title=title,
            body=body,
            url=rule.url(event),
            params=template_params(rule.params(event)),
            data=rule.data(event),
            # Redeliveries of an event store nothing twice: one (source, recipient) each.
            source=f"event:{event.event_id}",
        )
