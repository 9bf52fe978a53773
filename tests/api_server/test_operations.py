"""Operations: health, readiness naming what is down, metrics, the OpenAPI document."""
import dataclasses
import re

from aiohttp.test_utils import TestClient, TestServer

from api_server.app import create_app


async def test_healthz_and_readyz(hub):
    assert await hub.request("GET", "/healthz") == (200, {"status": "ok"})
    status, body = await hub.request("GET", "/readyz")
    assert status == 200 and body["checks"] == {"mongodb": "ok", "redis": "ok", "kafka": "ok"}


async def test_readyz_names_what_is_down(settings):
    # A real API whose Redis and Kafka addresses have nothing listening.
    broken = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1")
    async with TestClient(TestServer(create_app(broken))) as client:
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["checks"] == {"mongodb": "ok", "redis": "down", "kafka": "down"}
        assert body["error"] == {"code": "unavailable", "message": "down: kafka, redis"}
        assert (await client.get("/healthz")).status == 200
        # Calls that need what is down fail cleanly, with the error shape.
        resp = await client.post("/v1/events", json={"event_id": "e", "type": "user.unfollowed",
                                                     "occurred_at": "2026-11-22T00:00:00Z", "actor": {"id": "a"},
                                                     "followee": {"id": "b"}},
                                 headers={"Authorization": f"Bearer {settings.service_keys[0]}"})
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "unavailable"


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


async def test_docs_render_from_local_assets(hub):
    status, page = await hub.request("GET", "/docs")
    assert status == 200
    html = page.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from another origin
    for src in sources:
        status, _ = await hub.request("GET", src)
        assert status == 200, src
    status, script = await hub.request("GET", "/docs/docs.js")
    assert status == 200 and b"/openapi.json" in script


async def test_docs_assets_cannot_escape_their_folder(hub):
    for path in ("/vendor/swagger-ui-dist/..%2f..%2fpackage.json", "/vendor/evil/x.js",
                 "/docs/..%2fviews.py", "/vendor/swagger-ui-dist/package.json", "/dashboard/..%2f..%2fviews.py"):
        status, body = await hub.request("GET", path)
        assert status == 404 and body["error"]["code"] == "not_found", path
