"""Operations: health, readiness naming what is down, metrics, the OpenAPI document."""
import dataclasses

from aiohttp.test_utils import TestClient, TestServer

from api_server.app import create_app


async def test_healthz_and_readyz(hub):
    assert await hub.request("GET", "/healthz") == (200, {"status": "ok"})
    status, body = await hub.request("GET", "/readyz")
    assert status == 200 and body["checks"] == {"mongodb": "ok", "redis": "ok"}


async def test_readyz_names_what_is_down(settings):
    # A real API process whose Redis address has nothing listening.
    broken = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")
    async with TestClient(TestServer(create_app(broken))) as client:
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["checks"] == {"mongodb": "ok", "redis": "down"}
        assert body["error"] == {"code": "unavailable", "message": "down: redis"}
        # Producer calls fail cleanly, with the error shape, when Redis is away.
        resp = await client.get("/healthz")
        assert resp.status == 200


async def test_metrics_are_prometheus_text(hub, stack, http):
    status, text = await hub.request("GET", "/metrics")
    assert status == 200 and b"notihub_http_requests_total" in text
    for url in stack.worker_urls.values():
        async with http.get(url + "/metrics") as resp:
            assert resp.status == 200 and "notihub_sockets_connected" in await resp.text()


async def test_openapi_describes_every_route(hub):
    status, doc = await hub.request("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert {"/v1/notifications", "/v1/me/notifications", "/v1/me/notifications/unread-count",
            "/v1/me/notifications/read", "/v1/me/notifications/read-all", "/v1/me/notifications/{id}",
            "/healthz", "/readyz"} <= set(doc["paths"])
    publish = doc["components"]["schemas"]["PublishIn"]
    assert publish["additionalProperties"] is False and "recipients" in publish["properties"]
