"""Operations: health, readiness naming what is down, metrics, the OpenAPI document."""
import dataclasses
import re
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from api_server.app import create_app
from shared import metrics


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
    for url in stack.worker_urls.values():
        async with http.get(url + "/metrics") as resp:
            assert resp.status == 200 and "notihub_sockets_connected" in await resp.text()


async def test_public_metrics_cover_the_api_and_every_worker(hub, stack):
    stored = _sample_sum(await _public_metrics(hub), "notihub_notifications_stored_total", process="api")
    assert (await hub.publish([hub.new_user(), hub.new_user()]))[0] == 201
    text = await _public_metrics(hub)
    assert _sample_sum(text, "notihub_notifications_stored_total", process="api") == stored + 2
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # One family per name (no repeated TYPE line), samples labelled with their process.
    assert text.count("# TYPE notihub_sockets_connected ") == 1
    processes = {s.labels["process"] for s in families["notihub_sockets_connected"].samples}
    assert processes == {"api", *stack.worker_urls, *stack.ingest_urls}


async def test_combined_metrics_merge_snapshots_and_skip_unreadable_ones(runtime):
    prefix = f"mtest-{uuid.uuid4().hex[:6]}"
    worker_text = (b"# HELP notihub_sockets_connected Sockets\n# TYPE notihub_sockets_connected gauge\n"
                   b"notihub_sockets_connected 7.0\n")
    await metrics.put_snapshot(runtime.redis, prefix=prefix, process="w7", text=worker_text, ttl=60)
    await metrics.put_snapshot(runtime.redis, prefix=prefix, process="w8", text=b"this is { not prometheus", ttl=60)
    text = (await metrics.combined(runtime.redis, prefix=prefix, process="api")).decode()
    samples = {s.labels["process"]: s.value for f in text_string_to_metric_families(text)
               if f.name == "notihub_sockets_connected" for s in f.samples}
    assert samples["w7"] == 7.0 and "api" in samples and "w8" not in samples


async def _public_metrics(hub) -> str:
    status, body = await hub.request("GET", "/metrics")
    assert status == 200
    return body.decode()


def _sample_sum(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and labels.items() <= s.labels.items())


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
