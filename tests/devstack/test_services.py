"""The local services start for real, do what the stack relies on, and stop without leftovers."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path

import pymongo
import pytest
import redis
from pymongo.write_concern import WriteConcern

from devstack.mongo import MongoReplicaSet
from devstack.nginx import Nginx, render_config
from devstack.ports import free_port
from devstack.process import pid_gone, wait_until
from devstack.redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)

# Variables that would put the query string (and so ?token=) into the access log.
_LEAKY = re.compile(r"\$(request|request_uri|args|query_string|arg_\w+|http_referer)\b")


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_redis_answers_ping_and_stops_without_leftover(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path)
    try:
        server.start()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        # The pub/sub output-buffer limits are set on purpose, not left to the defaults.
        limits = client.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
        assert "pubsub 33554432 8388608 60" in limits, limits
        client.close()
        pid = server.process.pid
    finally:
        server.stop()
    assert pid is not None and pid_gone(pid)


def test_replica_set_elects_member_0_and_majority_write_works(delayed_replica_set: MongoReplicaSet) -> None:
    rs = delayed_replica_set
    assert rs.primary_index() == 0
    config = pymongo.MongoClient(rs.member_url(0)).admin.command("replSetGetConfig")["config"]
    delayed = config["members"][2]
    assert (delayed["priority"], delayed["votes"], delayed["hidden"], delayed["secondaryDelaySecs"]) == (0, 0, False, 600)

    with pymongo.MongoClient(rs.url) as client:
        coll = client.devstack_test.docs.with_options(write_concern=WriteConcern(w="majority", wtimeout=10000))
        coll.insert_one({"_id": "doc-1", "v": 1})

    with pymongo.MongoClient(rs.member_url(0)) as primary:
        assert primary.devstack_test.docs.find_one({"_id": "doc-1"}) == {"_id": "doc-1", "v": 1}
    with pymongo.MongoClient(rs.member_url(2)) as lagging:
        assert lagging.admin.command("hello")["secondary"] is True
        assert lagging.devstack_test.docs.find_one({"_id": "doc-1"}) is None


def test_replica_set_stops_fast_without_leftover(tmp_path: Path) -> None:
    rs = MongoReplicaSet(ports=[free_port() for _ in range(3)], data_dir=tmp_path)
    try:
        rs.start()
        pids = [m.pid for m in rs.members]
        began = time.monotonic()
    finally:
        rs.stop()
    assert time.monotonic() - began < 10
    assert all(pid is not None and pid_gone(pid) for pid in pids)


def test_nginx_config_keeps_query_out_of_access_log_and_passes_nginx_t(tmp_path: Path) -> None:
    conf = render_config(prefix=tmp_path, port=free_port(), api_addr="127.0.0.1:1",
                         worker_addrs={"w0": "127.0.0.1:2", "w1": "127.0.0.1:3"})
    log_format = conf.split("log_format", 1)[1].split(";", 1)[0]
    assert "$uri" in log_format and not _LEAKY.search(log_format)
    assert not re.search(r"^\s*ip_hash", conf, re.M)
    nginx = Nginx(port=free_port(), api_addr="127.0.0.1:1",
                  worker_addrs={"w0": "127.0.0.1:2", "w1": "127.0.0.1:3"}, prefix_dir=tmp_path)
    nginx.write_config()
    nginx.test_config()  # raises with nginx's message when rejected


def test_nginx_routes_by_sid_prefix_and_skips_dead_worker(tmp_path: Path, backends: dict) -> None:
    nginx = Nginx(port=free_port(), api_addr=backends["api"].addr,
                  worker_addrs={"w0": backends["w0"].addr, "w1": backends["w1"].addr}, prefix_dir=tmp_path)
    try:
        nginx.start()
        secret = "eyJSECRETTOKEN"
        assert _get(f"{nginx.url}/v1/me/notifications?token={secret}") == (200, "api")
        for wid in ("w0", "w1"):
            for _ in range(3):
                assert _get(f"{nginx.url}/socket.io/?EIO=4&transport=polling&sid={wid}.abc&token={secret}") == (200, wid)
        handshakes = {_get(f"{nginx.url}/socket.io/?EIO=4&transport=polling&token={secret}")[1] for _ in range(4)}
        assert handshakes == {"w0", "w1"}

        # A dead worker is skipped for new handshakes.
        backends["w0"].stop()
        handshakes = {_get(f"{nginx.url}/socket.io/?EIO=4&transport=polling")[1] for _ in range(4)}
        assert handshakes == {"w1"}

        # The access log is written by the worker after the response; wait for all our lines.
        wait_until(lambda: nginx.access_log.read_text().count("\n") >= 12, 10, "access log lines")
        text = nginx.access_log.read_text()
        assert "/socket.io/" in text and secret not in text and "token=" not in text
        assert secret not in nginx.error_log.read_text()
    finally:
        nginx.stop()
    assert pid_gone(nginx.process.pid)
