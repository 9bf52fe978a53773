"""Operations: health, readiness naming what is down, metrics, the OpenAPI document."""
import dataclasses
import re

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
    for path in ("/docs/vendor/swagger-ui-dist/..%2f..%2fpackage.json", "/docs/vendor/evil/x.js",
                 "/docs/..%2fviews.py", "/docs/vendor/swagger-ui-dist/package.json"):
        status, body = await hub.request("GET", path)
        assert status == 404 and body["error"]["code"] == "not_found", path
