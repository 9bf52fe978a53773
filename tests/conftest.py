"""The test session's own stack: Redis, a MongoDB replica set with a delayed secondary, the API,
two socket workers and nginx, on free ports under a temporary folder, stopped at the end."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from devstack.ports import free_port_run
from devstack.redis_cluster import NODES as CLUSTER_NODES
from devstack.stack import Stack
from shared.kafka import EVENTS_TOPIC
from shared.runtime import Runtime, open_runtime
from shared.settings import Settings
from shared.tokens import mint

from .jsclient import JsBridge

JWT_SECRET = "test-suite-secret-0123456789-0123456789-0123456789-0123456789"
SERVICE_KEY = "test-suite-service-key"
# The delayed member lags this long behind the primary, long enough to prove that a read
# from a secondary right after a write misses it.
SECONDARY_DELAY = 30
# The MongoDB client name of the tests' own runtime (a fail point can be aimed at it alone).
TEST_APP_NAME = "notihub-tests"


def pytest_configure(config: pytest.Config) -> None:
    # The suite starts its own services: never let a developer's NOTIHUB_* reach them.
    for key in [k for k in os.environ if k.startswith("NOTIHUB_")]:
        del os.environ[key]


def stack_env() -> dict[str, str]:
    """The settings of a test stack, on free ports."""
    return {
        "NOTIHUB_PUBLIC_PORT": str(free_port_run(1)),
        "NOTIHUB_API_PORT": str(free_port_run(1)),
        "NOTIHUB_SOCKET_BASE_PORT": str(free_port_run(2)),
        "NOTIHUB_SOCKET_WORKERS": "2",
        "NOTIHUB_REDIS_PORT": str(free_port_run(1)),
        "NOTIHUB_MONGO_BASE_PORT": str(free_port_run(3)),
        "NOTIHUB_MONGO_DELAYED_SECS": str(SECONDARY_DELAY),
        # MongoDB's TTL monitor wakes every second instead of every minute (retention tests).
        "NOTIHUB_MONGO_TTL_MONITOR_SECS": "1",
        # Tests may make the real servers refuse a command (configureFailPoint failCommand).
        "NOTIHUB_MONGO_FAIL_POINTS": "1",
        "NOTIHUB_JWT_SECRET": JWT_SECRET,
        "NOTIHUB_SERVICE_KEYS": f"{SERVICE_KEY},second-key",
        "NOTIHUB_MAX_CONNECTIONS_PER_USER": "8",
        # A socket still holding this many unsent packets when a bus message comes is closed
        # (slow-client tests).
        "NOTIHUB_MAX_SOCKET_QUEUE": "50",
        # An Engine.IO session that never joins /notifications is closed after this (abuse tests).
        "NOTIHUB_NAMESPACE_TIMEOUT_SECONDS": "3",
        # Short drains (rolling-deploy tests), and a session that stops quickly.
        "NOTIHUB_DRAIN_SECONDS": "3",
        "NOTIHUB_KAFKA_PORT": str(kafka_port := free_port_run(2)),
        "NOTIHUB_KAFKA_CONTROLLER_PORT": str(kafka_port + 1),
        "NOTIHUB_INGEST_WORKERS": "1",
        "NOTIHUB_INGEST_BASE_PORT": str(free_port_run(3)),
    }


@contextlib.asynccontextmanager
async def fail_point(runtime: Runtime, commands: list[str], mode: dict, **failure) -> AsyncIterator[None]:
    """The real replica set fails ``commands`` of the tests' own client (``failCommand`` with
    ``mode`` and ``failure``, e.g. errorCode=2 or closeConnection=True) until the block ends."""
    await runtime.mongo.admin.command({"configureFailPoint": "failCommand", "mode": mode,
                                       "data": {"failCommands": commands, "appName": TEST_APP_NAME, **failure}})
    try:
        yield
    finally:
        await runtime.mongo.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(state_dir=tmp_path_factory.mktemp("stack"), env=stack_env()) as stack:
        yield stack


@pytest.fixture(scope="session")
def stack(session_stack: Stack) -> Stack:
    """The stack the tests run against (tests/cluster: the cluster stack)."""
    return session_stack


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    """The settings the stack's processes run with."""
    return Settings.from_env(stack.child_env())


@pytest.fixture(scope="session")
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Direct access to the same MongoDB and Redis, for checks behind the API's back."""
    async with open_runtime(settings, app_name=TEST_APP_NAME) as rt:
        yield rt


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def js(tmp_path) -> AsyncIterator[JsBridge]:
    """The real socket.io-client, in Node."""
    async with JsBridge(stderr_log=tmp_path / "node.stderr") as bridge:
        yield bridge


class Hub:
    """What tests do through the public port: publish as a producer, act as users."""

    def __init__(self, stack: Stack, settings: Settings, http: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.settings = settings
        self.http = http
        self.url = stack.public_url
        self.socket_url = f"{stack.public_url}/notifications"

    @staticmethod
    def new_user(prefix: str = "u") -> str:
        """A user id no other test uses."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def token(self, user: str, **kw) -> str:
        return mint(self.settings, sub=user, **kw)

    async def request(self, method: str, path: str, *, json=None, data=None, headers=None, token=None,
                      service: bool = False) -> tuple[int, object]:
        headers = dict(headers or {})
        if service:
            headers.setdefault("Authorization", f"Bearer {SERVICE_KEY}")
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        async with self.http.request(method, self.url + path, json=json, data=data, headers=headers) as resp:
            body = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, body

    async def publish(self, recipients: list[str], type_: str = "comment.created", **fields) -> tuple[int, dict]:
        payload = {"recipients": recipients, "type": type_, **fields}
        return await self.request("POST", "/v1/notifications", json=payload, service=True)

    async def connect(self, js: JsBridge, name: str, user: str, *, lang: str = "en",
                      transports=("websocket",), since: str | None = None, use_auth: bool = False, **kw):
        token = self.token(user)
        if use_auth:
            auth = {"token": token, "lang": lang, **({"since": since} if since else {})}
            return await js.connect(name, self.socket_url, transports=list(transports), auth=auth, **kw)
        query = {"token": token, "content-language": lang, **({"since": since} if since else {})}
        return await js.connect(name, self.socket_url, transports=list(transports), query=query, **kw)


@pytest.fixture(scope="session")
def hub(stack: Stack, settings: Settings, http: aiohttp.ClientSession) -> Hub:
    return Hub(stack, settings, http)


# -- the same hub on a Redis Cluster (tests/cluster, and its faults in tests/faults) -------------

@pytest.fixture(scope="session")
def cluster_stack(session_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack on a Redis Cluster (three masters, three replicas) that shares the session stack's
    MongoDB replica set, in a database of its own, and runs without Kafka (ingest reaches Redis
    only through the service the API uses too)."""
    ports = free_port_run(2 * CLUSTER_NODES)
    env = stack_env() | {
        "NOTIHUB_REDIS_MODE": "cluster",
        "NOTIHUB_REDIS_PORT": str(ports),
        "NOTIHUB_REDIS_CLUSTER_BUS_PORT": str(ports + CLUSTER_NODES),
        "NOTIHUB_MONGO_URL": session_stack.mongo_url,
        "NOTIHUB_MONGO_DB": "notihub_cluster",
        "NOTIHUB_KAFKA": "off",
    }
    with Stack(state_dir=tmp_path_factory.mktemp("cluster-stack"), env=env) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_settings(cluster_stack: Stack) -> Settings:
    return Settings.from_env(cluster_stack.child_env())


@pytest.fixture(scope="session")
async def cluster_runtime(cluster_settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(cluster_settings, app_name="notihub-cluster-tests") as rt:
        yield rt


@pytest.fixture(scope="session")
def cluster_hub(cluster_stack: Stack, cluster_settings: Settings, http: aiohttp.ClientSession) -> Hub:
    return Hub(cluster_stack, cluster_settings, http)


def make_event(type_: str, *, actor: str = "actor-1", actor_name: str = "Kim", **fields) -> dict:
    """A well-formed event with a fresh event_id."""
    return {"event_id": f"ev-{uuid.uuid4().hex}", "type": type_,
            "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "actor": {"id": actor, "name": actor_name}, **fields}


class Events:
    """Sends events to notihub.events as any producer would (key = event_id)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, event: dict | bytes, *, key: bytes | None = None, partition: int | None = None):
        if isinstance(event, dict):
            key = key if key is not None else event["event_id"].encode()
            value = orjson.dumps(event)
        else:
            value = event
        return await self.producer.send_and_wait(EVENTS_TOPIC, value=value, key=key, partition=partition)


@pytest.fixture(scope="session")
async def kafka_producer(stack) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
def events(kafka_producer) -> Events:
    return Events(kafka_producer)
