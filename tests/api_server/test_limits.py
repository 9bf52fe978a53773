"""Abuse resistance of the HTTP API, each against a real API process on the session's MongoDB and
Redis with small limits: rate limits per producer key and per user (429, Retry-After,
RateLimit-*), idempotency keys scoped per producer, CORS, security headers and /metrics access."""
import asyncio
import contextlib
import dataclasses
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api_server.app import create_app
from api_server.security import SECURITY_HEADERS
from shared.ratelimit import Rate
from shared.tokens import mint


@contextlib.asynccontextmanager
async def api(settings, **changes):
    # A prefix of its own: counts of other tests never reach these limits.
    changed = dataclasses.replace(settings, channel_prefix=f"limits-{uuid.uuid4().hex[:8]}", **changes)
    async with TestClient(TestServer(create_app(changed))) as client:
        yield client, changed


def _service(key):
    return {"Authorization": f"Bearer {key}"}


def _note(recipient, **fields):
    return {"recipients": [recipient], "type": "comment.created", "title": "t", **fields}


async def test_a_flooding_producer_is_refused_while_another_producer_goes_on(settings):
    flooder, other = settings.service_keys[0], settings.service_keys[1]
    user = f"lim-{uuid.uuid4().hex[:8]}"
    async with api(settings, producer_rate=Rate(5, 60)) as (client, _):
        answers = [await client.post("/v1/notifications", json=_note(user), headers=_service(flooder))
                   for _ in range(8)]
        assert [a.status for a in answers] == [201] * 5 + [429] * 3
        ok, refused = answers[0], answers[-1]
        assert ok.headers["RateLimit-Limit"] == "5" and ok.headers["RateLimit-Remaining"] == "4"
        assert 0 < int(ok.headers["RateLimit-Reset"]) <= 60
        assert await refused.json() == {"error": {"code": "rate_limited",
                                                  "message": await _message(refused)}}
        assert 1 <= int(refused.headers["Retry-After"]) <= 12 and refused.headers["RateLimit-Remaining"] == "0"
        # The other producer's requests still succeed.
        resp = await client.post("/v1/notifications", json=_note(user), headers=_service(other))
        assert resp.status == 201 and resp.headers["RateLimit-Remaining"] == "4"
        # Nothing was stored for the refused requests.
        resp = await client.get("/v1/me/notifications", params={"limit": "100"},
                                headers={"Authorization": f"Bearer {mint(settings, sub=user)}"})
        assert len((await resp.json())["notifications"]) == 6


async def _message(resp):
    return (await resp.json())["error"]["message"]


async def test_a_flooding_user_is_refused_while_another_user_goes_on(settings):
    flooder, other = (f"lim-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with api(settings, user_rate=Rate(3, 60)) as (client, _):
        headers = {"Authorization": f"Bearer {mint(settings, sub=flooder)}"}
        statuses = [(await client.post("/v1/me/notifications/read-all", headers=headers)).status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        resp = await client.get("/v1/me/notifications/unread-count", headers=headers)
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["code"] == "rate_limited"
        resp = await client.get("/v1/me/notifications/unread-count",
                                headers={"Authorization": f"Bearer {mint(settings, sub=other)}"})
        assert resp.status == 200 and resp.headers["RateLimit-Remaining"] == "2"


async def test_unauthenticated_and_unlimited_routes_carry_no_rate_headers(settings):
    async with api(settings) as (client, _):
        resp = await client.get("/v1/me/notifications")
        assert resp.status == 401 and "RateLimit-Limit" not in resp.headers
        resp = await client.get("/healthz")
        assert resp.status == 200 and "RateLimit-Limit" not in resp.headers


async def test_idempotency_keys_belong_to_their_producer(settings):
    a, b = settings.service_keys[0], settings.service_keys[1]
    user = f"idem-{uuid.uuid4().hex[:8]}"
    key = f"k-{uuid.uuid4().hex[:8]}"
    async with api(settings) as (client, _):
        first = await client.post("/v1/notifications", json=_note(user, idempotency_key=key), headers=_service(a))
        repeat = await client.post("/v1/notifications", json=_note(user, idempotency_key=key), headers=_service(a))
        other = await client.post("/v1/notifications", json=_note(user, idempotency_key=key), headers=_service(b))
        assert (first.status, repeat.status, other.status) == (201, 200, 201)
        assert await repeat.json() == await first.json()
        assert (await other.json())["notifications"][0]["id"] != (await first.json())["notifications"][0]["id"]


async def test_every_answer_carries_the_security_headers(settings):
    async with api(settings) as (client, _):
        for path in ("/healthz", "/openapi.json", "/v1/me/notifications", "/no/such/path", "/dashboard/"):
            resp = await client.get(path)
            for name, value in SECURITY_HEADERS.items():
                assert resp.headers.get(name) == value, (path, name)
        assert "unsafe-inline" not in SECURITY_HEADERS["Content-Security-Policy"]


async def test_no_cross_origin_access_unless_configured(settings):
    async with api(settings, cors_origins=()) as (client, _):  # NOTIHUB_CORS_ORIGINS unset in production
        resp = await client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
        assert "Access-Control-Allow-Origin" not in resp.headers
        resp = await client.options("/v1/me/notifications", headers={
            "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"})
        assert "Access-Control-Allow-Origin" not in resp.headers and resp.status >= 400


async def test_configured_origins_may_call_the_api_without_credentials(settings):
    app_origin = "https://app.example"
    user = f"cors-{uuid.uuid4().hex[:8]}"
    async with api(settings, cors_origins=(app_origin,)) as (client, _):
        resp = await client.options("/v1/me/notifications", headers={
            "Origin": app_origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == app_origin
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in resp.headers
        resp = await client.get("/v1/me/notifications/unread-count", headers={
            "Origin": app_origin, "Authorization": f"Bearer {mint(settings, sub=user)}"})
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == app_origin
        assert "RateLimit-Remaining" in resp.headers["Access-Control-Expose-Headers"]
        assert "Access-Control-Allow-Credentials" not in resp.headers
        resp = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with api(settings, cors_origins=("*",)) as (client, _):
        resp = await client.get("/healthz", headers={"Origin": "https://any.example"})
        assert resp.headers["Access-Control-Allow-Origin"] == "https://any.example"
        assert "Access-Control-Allow-Credentials" not in resp.headers


@pytest.mark.parametrize("env", ["production", "development"])
async def test_metrics_without_a_key_are_for_internal_callers(settings, env):
    async with api(settings, env=env, metrics_key=None) as (client, _):
        assert (await client.get("/metrics")).status == 200
        through_lb = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert through_lb.status == (404 if env == "production" else 200)
        if env == "production":
            assert (await through_lb.json())["error"]["code"] == "not_found"


async def test_metrics_behind_a_key(settings):
    async with api(settings, metrics_key="scrape-key-0123") as (client, _):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Forwarded-For": "203.0.113.9"}):
            resp = await client.get("/metrics", headers=headers)
            assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
        resp = await client.get("/metrics", headers={"Authorization": "Bearer scrape-key-0123",
                                                     "X-Forwarded-For": "203.0.113.9"})
        assert resp.status == 200 and b"notihub_http_requests_total" in await resp.read()


async def test_a_stalled_redis_lets_producers_through(settings, runtime):
    # Limits protect the hub; while Redis stalls the request goes on (and waits for Redis like
    # any other publish), never a 429 or a 5xx because of the limiter.
    user = f"lim-{uuid.uuid4().hex[:8]}"
    async with api(settings, producer_rate=Rate(1, 60), redis_timeout=0.3) as (client, _):
        assert (await client.post("/v1/notifications", json=_note(user), headers=_service(settings.service_keys[0]))
                ).status == 201
        await runtime.redis.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        try:
            resp = await client.post("/v1/notifications", json=_note(user), headers=_service(settings.service_keys[0]))
        finally:
            await runtime.redis.execute_command("CLIENT", "UNPAUSE")
        assert resp.status == 201 and "RateLimit-Limit" not in resp.headers
        resp = await client.post("/v1/notifications", json=_note(user), headers=_service(settings.service_keys[0]))
        assert resp.status == 429


async def test_the_openapi_document_names_the_limits(settings):
    async with api(settings) as (client, _):
        doc = await (await client.get("/openapi.json")).json()
        publish = doc["paths"]["/v1/notifications"]["post"]["responses"]
        assert "Retry-After" in publish["429"]["headers"] and "RateLimit-Remaining" in publish["201"]["headers"]
        assert "429" not in doc["paths"]["/healthz"]["get"]["responses"]
        assert "headers" not in doc["paths"]["/healthz"]["get"]["responses"]["200"]


async def test_limits_hold_under_concurrency(settings):
    # Twenty requests at once of one producer with an allowance of ten: exactly ten pass.
    user = f"lim-{uuid.uuid4().hex[:8]}"
    async with api(settings, producer_rate=Rate(10, 60)) as (client, _):
        answers = await asyncio.gather(*(client.post("/v1/notifications", json=_note(user),
                                                     headers=_service(settings.service_keys[0])) for _ in range(20)))
        assert sorted(a.status for a in answers) == [201] * 10 + [429] * 10
