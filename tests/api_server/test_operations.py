"""Operations: health, readiness naming what is down, metrics, the OpenAPI document."""
import dataclasses
import re

import pytest

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
                 "/docs/..%2fviews.py", "/vendor/swagger-ui-dist/package.json"):
        status, body = await hub.request("GET", path)
        assert status == 404 and body["error"]["code"] == "not_found", path
    # A path that climbs above the root is refused by the load balancer itself, in the same shape.
    status, body = await hub.request("GET", "/dashboard/..%2f..%2fviews.py")
    assert status == 400 and body["error"]["code"] == "invalid_request"
    status, body = await hub.request("GET", "/.notihub/invalid_request")
    assert status == 404 and body["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/dashboard/a%00b.js", "/docs/" + "x" * 300 + ".js",
                                  "/vendor/socket.io-client/" + "y" * 5000 + ".js", "/docs/%2e%2e"])
async def test_odd_asset_names_are_not_found(hub, stack, http, path):
    # Straight to the API: the load balancer refuses some of these itself (400).
    async with http.get(stack.api_url + path) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found", path
    status, body = await hub.request("GET", path)
    assert status in (400, 404) and body["error"]["code"] in ("invalid_request", "not_found"), (path, body)


@pytest.mark.parametrize("value", ["Bearer \xff\xfe", "Bearer caf\u00e9", "Bearer \u00a0"])
async def test_non_ascii_credentials_are_unauthorized(hub, value):
    for path, method in (("/v1/notifications", "POST"), ("/v1/me/notifications", "GET")):
        status, body = await hub.request(method, path, headers={"Authorization": value.encode("utf-8").decode("latin-1")},
                                         json={"recipients": ["u"], "type": "a.b"} if method == "POST" else None)
        assert status == 401 and body["error"]["code"] == "unauthorized", (path, body)
