"""HTTP views: parse, call the service, shape the answer."""
from __future__ import annotations

from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter, ValidationError

from shared import metrics as shared_metrics
from shared.errors import InvalidRequest, NotFound, Unavailable, UnsupportedMediaType
from shared.events.models import parse_event
from shared.i18n import negotiate, template_params
from shared.ids import parse_id, parse_ids
from shared.kafka import EVENTS_TOPIC, kafka_answers
from shared.models import Actor, Draft
from shared.service import fingerprint
from shared.web import metrics_refusal

from .auth import require_service, require_user
from .keys import KAFKA, RENDERER, RUNTIME, SETTINGS
from .respond import json_response, parse_body, query_bool, query_int
from .schemas import IdsIn, PreferencesIn, PublishIn, TopicName, UserId


async def publish(request: web.Request) -> web.Response:
    """POST /v1/notifications: store and deliver one notification per recipient."""
    producer = await require_service(request)
    body = await parse_body(request, PublishIn)
    # Idempotency keys are the producer's own: another producer's equal key is another request.
    source = f"key:{producer}:{body.idempotency_key}" if body.idempotency_key else None
    draft = Draft(
        type=body.type,
        recipients=tuple(body.recipients or ()),
        topic=body.topic,
        actor=Actor(id=body.actor.id, name=body.actor.name) if body.actor else None,
        title=body.title,
        body=body.body,
        url=body.url,
        params=template_params(body.data),
        data=body.data or {},
        source=source,
        fingerprint=fingerprint(body.model_dump(exclude={"idempotency_key"})) if source else None,
    )
    minimal = _prefers_minimal(request)
    result = await request.app[RUNTIME].service.publish(draft, report=not minimal)
    status = 201 if result.created else 200
    if minimal:
        # A topic of any audience: nothing listed, nothing held (RFC 7240).
        return json_response({"count": result.count}, status=status, headers={"Preference-Applied": "return=minimal"})
    return json_response({"notifications": [{"id": i, "recipient": r} for i, r in result.notifications]},
                         status=status)


def _prefers_minimal(request: web.Request) -> bool:
    """Whether the producer asked for the short answer: ``Prefer: return=minimal`` (RFC 7240;
    several preferences per header, parameters after ";", any case)."""
    for header in request.headers.getall("Prefer", ()):
        for preference in header.split(","):
            name, _, value = preference.split(";", 1)[0].partition("=")
            if name.strip().lower() == "return" and value.strip().strip('"').lower() == "minimal":
                return True
    return False


def _lang(request: web.Request) -> str:
    return negotiate(request.headers.get("Accept-Language"), request.app[RENDERER].default_lang)


async def list_mine(request: web.Request) -> web.Response:
    """GET /v1/me/notifications: the caller's inbox, newest first."""
    user = await require_user(request)
    page = await request.app[RUNTIME].service.page(
        user.id,
        cursor=request.query.get("cursor"),
        limit=query_int(request, "limit"),
        unread_only=query_bool(request, "unread_only"),
    )
    lang = _lang(request)
    render = request.app[RENDERER].render
    return json_response(
        {"notifications": [render(n, lang) for n in page.notifications], "next_cursor": page.next_cursor}
    )


async def unread_count(request: web.Request) -> web.Response:
    """GET /v1/me/notifications/unread-count."""
    user = await require_user(request)
    return json_response({"unread_count": await request.app[RUNTIME].service.unread_count(user.id)})


async def mark_read(request: web.Request) -> web.Response:
    """POST /v1/me/notifications/read: mark some of the caller's notifications read."""
    user = await require_user(request)
    body = await parse_body(request, IdsIn)
    count = await request.app[RUNTIME].service.mark_read(user.id, parse_ids(body.ids))
    return json_response({"unread_count": count})


async def mark_all_read(request: web.Request) -> web.Response:
    """POST /v1/me/notifications/read-all."""
    user = await require_user(request)
    return json_response({"unread_count": await request.app[RUNTIME].service.mark_all_read(user.id)})


async def delete(request: web.Request) -> web.Response:
    """DELETE /v1/me/notifications/{id}: 404 unless it is the caller's."""
    user = await require_user(request)
    try:
        notification_id = parse_id(request.match_info["id"])
    except InvalidRequest:
        # Ids are opaque to clients: one that cannot exist is not the caller's either.
        raise NotFound("no such notification") from None
    await request.app[RUNTIME].service.delete(user.id, notification_id)
    return web.Response(status=204)


async def publish_event(request: web.Request) -> web.Response:
    """POST /v1/events: validate a domain event and write it to Kafka for the ingest workers."""
    await require_service(request)
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send JSON with Content-Type: application/json")
    raw = await request.read()
    event = parse_event(raw)
    link = request.app.get(KAFKA)
    if link is None:
        raise Unavailable("Kafka is not configured (NOTIHUB_KAFKA_BOOTSTRAP)")
    producer = link.producer
    if producer is None:
        raise Unavailable("Kafka is not reachable yet; try again")
    try:
        # Keyed by event_id, as the contract says; acks=all, idempotent producer.
        await producer.send_and_wait(EVENTS_TOPIC, value=raw, key=event.event_id.encode())
    except KafkaError as exc:
        raise Unavailable(f"Kafka did not take the event: {exc.__class__.__name__}") from None
    return json_response({"event_id": event.event_id}, status=202)


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 only when every backing service answers; else 503 naming what is down."""
    checks = await request.app[RUNTIME].health()
    link = request.app.get(KAFKA)
    if link is not None:
        checks["kafka"] = link.producer is not None and await kafka_answers(link.producer)
    down = sorted(name for name, ok in checks.items() if not ok)
    body: dict[str, Any] = {"status": "ok" if not down else "unavailable",
                            "checks": {name: "ok" if ok else "down" for name, ok in checks.items()}}
    if down:
        body["error"] = {"code": "unavailable", "message": "down: " + ", ".join(down)}
    return json_response(body, status=503 if down else 200)


_TOPIC = TypeAdapter(TopicName)
_USER = TypeAdapter(UserId)


def _path(request: web.Request, name: str, adapter: TypeAdapter) -> str:
    try:
        return adapter.validate_python(request.match_info[name])
    except ValidationError:
        raise InvalidRequest(f"{name} is not valid") from None


async def subscribe(request: web.Request) -> web.Response:
    """PUT /v1/topics/{topic}/subscribers/{user_id}."""
    await require_service(request)
    topic, user = _path(request, "topic", _TOPIC), _path(request, "user_id", _USER)
    await request.app[RUNTIME].service.subscribe(topic, user)
    return web.Response(status=204)


async def unsubscribe(request: web.Request) -> web.Response:
    """DELETE /v1/topics/{topic}/subscribers/{user_id}."""
    await require_service(request)
    topic, user = _path(request, "topic", _TOPIC), _path(request, "user_id", _USER)
    await request.app[RUNTIME].service.unsubscribe(topic, user)
    return web.Response(status=204)


async def subscribers(request: web.Request) -> web.Response:
    """GET /v1/topics/{topic}/subscribers: one page, in user order."""
    await require_service(request)
    topic = _path(request, "topic", _TOPIC)
    limit = query_int(request, "limit")
    users, cursor = await request.app[RUNTIME].service.subscribers(
        topic, cursor=request.query.get("cursor"), limit=100 if limit is None else limit)
    return json_response({"subscribers": users, "next_cursor": cursor})


async def get_preferences(request: web.Request) -> web.Response:
    """GET /v1/me/preferences."""
    user = await require_user(request)
    return json_response({"disabled_types": await request.app[RUNTIME].service.disabled_types(user.id)})


async def put_preferences(request: web.Request) -> web.Response:
    """PUT /v1/me/preferences: replace the types the caller does not want."""
    user = await require_user(request)
    body = await parse_body(request, PreferencesIn)
    types = await request.app[RUNTIME].service.set_disabled_types(user.id, body.disabled_types)
    return json_response({"disabled_types": types})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text of the API and of every live worker (label ``process``);
    behind NOTIHUB_METRICS_KEY when set, else internal callers only (see shared/web.py)."""
    refusal = metrics_refusal(request, request.app[SETTINGS])
    if refusal is not None:
        raise refusal
    body = await shared_metrics.combined(request.app[RUNTIME].redis, prefix=request.app[SETTINGS].channel_prefix,
                                         process="api")
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
