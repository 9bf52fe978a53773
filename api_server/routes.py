"""The route table: what the API serves, and the source of its OpenAPI document."""
from __future__ import annotations

import dataclasses
import re

from aiohttp import web
from pydantic import BaseModel

from shared import web as shared_web

from . import openapi, views
from .respond import Handler, only_query
from .static_files import setup_static
from .schemas import (EventAccepted, EventIn, HealthOut, IdsIn, PageOut, PreferencesIn, PreferencesOut, PublishAnswer,
                      PublishIn, SubscribersOut, UnreadCountOut)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One operation: its handler and everything the OpenAPI document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    auth: str | None = None  # "service" or "user"
    body: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = dataclasses.field(default_factory=dict)
    query: tuple[openapi.Param, ...] = ()
    headers: tuple[openapi.Param, ...] = ()
    tag: str = "notifications"
    conflicts: bool = False  # may answer 409


_PAGE_QUERY = (
    openapi.Param("limit", "integer", "1 to 100, default 20", minimum=1, maximum=100),
    openapi.Param("cursor", "string", "next_cursor of the previous page"),
    openapi.Param("unread_only", "boolean", "only unread notifications"),
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/notifications", views.publish, "Notify users (producer)", auth="service",
             body=PublishIn, responses={201: PublishAnswer, 200: PublishAnswer}, tag="producer", conflicts=True,
             headers=(openapi.Param("Prefer", "string", "return=minimal (RFC 7240): answer only how many notifications "
                                    "there are ({count}), not one entry per recipient; the answer then carries "
                                    "Preference-Applied: return=minimal", where="header"),)),
    Endpoint("GET", "/v1/me/notifications", views.list_mine, "The caller's inbox, newest first",
             auth="user", responses={200: PageOut}, query=_PAGE_QUERY),
    Endpoint("GET", "/v1/me/notifications/unread-count", views.unread_count, "The caller's unread count",
             auth="user", responses={200: UnreadCountOut}),
    Endpoint("POST", "/v1/me/notifications/read", views.mark_read, "Mark notifications read",
             auth="user", body=IdsIn, responses={200: UnreadCountOut}),
    Endpoint("POST", "/v1/me/notifications/read-all", views.mark_all_read, "Mark all notifications read",
             auth="user", responses={200: UnreadCountOut}),
    Endpoint("DELETE", "/v1/me/notifications/{id}", views.delete, "Delete one of the caller's notifications",
             auth="user", responses={204: None}),
    Endpoint("POST", "/v1/events", views.publish_event, "Send a domain event (written to Kafka, handled by ingest)",
             auth="service", body=EventIn, responses={202: EventAccepted}, tag="producer"),
    Endpoint("PUT", "/v1/topics/{topic}/subscribers/{user_id}", views.subscribe, "Subscribe a user to a topic",
             auth="service", responses={204: None}, tag="producer"),
    Endpoint("DELETE", "/v1/topics/{topic}/subscribers/{user_id}", views.unsubscribe,
             "Unsubscribe a user from a topic", auth="service", responses={204: None}, tag="producer"),
    Endpoint("GET", "/v1/topics/{topic}/subscribers", views.subscribers, "A topic's subscribers, in user order",
             auth="service", responses={200: SubscribersOut}, tag="producer",
             query=(openapi.Param("limit", "integer", "1 to 1000, default 100", minimum=1, maximum=1000),
                    openapi.Param("cursor", "string", "next_cursor of the previous page"))),
    Endpoint("GET", "/v1/me/preferences", views.get_preferences, "Types the caller does not want",
             auth="user", responses={200: PreferencesOut}),
    Endpoint("PUT", "/v1/me/preferences", views.put_preferences, "Replace the types the caller does not want",
             auth="user", body=PreferencesIn, responses={200: PreferencesOut}),
    Endpoint("GET", "/healthz", shared_web.healthz, "Alive", responses={200: HealthOut}, tag="operations"),
    Endpoint("GET", "/readyz", views.readyz, "Ready: MongoDB and Redis answer",
             responses={200: HealthOut, 503: HealthOut}, tag="operations"),
)


def setup_routes(app: web.Application) -> None:
    """Register every endpoint, the metrics and the OpenAPI document."""
    for endpoint in ENDPOINTS:
        # Any one path segment reaches the view, whose validation answers 400 for a bad one.
        path = re.sub(r"{(\w+)}", r"{\1:[^/]+}", endpoint.path)
        handler = endpoint.handler
        if endpoint.query:
            # The document's parameters and no others: a misspelt one must not pass unnoticed.
            handler = only_query(handler, *(param.name for param in endpoint.query))
        app.router.add_route(endpoint.method, path, handler)
    document = openapi.build(ENDPOINTS)
    app.router.add_get("/openapi.json", openapi.serve(document))
    app.router.add_get("/metrics", views.metrics)
    setup_static(app)
