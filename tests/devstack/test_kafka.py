"""The local Kafka broker (KRaft, one node) starts for real, has the hub's topics, carries messages
and stops without leftovers; the stack wires it in or leaves it out as configured.

Self-contained: it starts only its own broker, so `pytest tests/devstack/test_kafka.py` runs alone.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack import stack as stack_module
from devstack.kafka import TOPICS, KafkaBroker, ensure_kafka_libs, libs_complete
from devstack.ports import free_port_run
from devstack.process import pid_gone
from devstack.stack import Stack

pytestmark = pytest.mark.timeout(240)


def _java_processes_using(path: Path) -> list[int]:
    """Pids of java processes whose command line mentions path (ours only: path is a fresh temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"java") and any(str(path).encode() in arg for arg in argv):
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running broker with the hub's topics, on free ports under a temporary folder."""
    base = free_port_run(2)
    kafka = KafkaBroker(port=base, controller_port=base + 1, data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        began = time.monotonic()
        kafka.start()
        print(f"kafka up in {time.monotonic() - began:.1f}s")
        yield kafka
    finally:
        kafka.stop()


def test_libs_are_cached_and_install_is_idempotent(broker: KafkaBroker) -> None:
    assert libs_complete(broker.libs_dir)
    assert any(broker.libs_dir.glob("kafka_2.13-*.jar"))
    began = time.monotonic()
    assert ensure_kafka_libs(broker.libs_dir) == broker.libs_dir
    assert time.monotonic() - began < 1.0


def test_broker_answers_and_exports_its_bootstrap(broker: KafkaBroker) -> None:
    assert broker.ping()
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.env == {"NOTIHUB_KAFKA_BOOTSTRAP": broker.bootstrap}
    assert broker.formatted
    config = broker.config_path.read_text()
    assert "process.roles=broker,controller" in config
    assert f"controller.quorum.voters=1@127.0.0.1:{broker.controller_port}" in config
    assert "auto.create.topics.enable=false" in config


def test_topics_exist_with_their_partition_counts(broker: KafkaBroker) -> None:
    topics = broker.describe_topics()
    assert topics["notihub.events"] == 3
    assert topics["notihub.events.dlq"] == 1
    assert TOPICS == {"notihub.events": 3, "notihub.events.dlq": 1}


def test_create_topics_is_idempotent(broker: KafkaBroker) -> None:
    assert broker.create_topics(TOPICS) == []
    name = f"test.{uuid.uuid4().hex[:8]}"
    assert broker.create_topics({name: 2}) == [name]
    assert broker.create_topics({name: 2}) == []
    assert broker.describe_topics()[name] == 2


async def test_produced_message_is_consumed(broker: KafkaBroker) -> None:
    payload = f"hello-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait("notihub.events", payload, key=b"u1")
    finally:
        await producer.stop()
    assert meta.topic == "notihub.events" and 0 <= meta.partition < 3

    consumer = AIOKafkaConsumer(
        "notihub.events", bootstrap_servers=broker.bootstrap, group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async def find() -> bytes:
            while True:
                msg = await consumer.getone()
                if msg.value == payload:
                    return msg.key
        assert await asyncio.wait_for(find(), 30) == b"u1"
    finally:
        await consumer.stop()


def test_stop_leaves_no_java_and_a_restart_keeps_the_topics(tmp_path: Path) -> None:
    base = free_port_run(2)
    kafka = KafkaBroker(port=base, controller_port=base + 1, data_dir=tmp_path / "kafka")
    try:
        kafka.start()
        first = kafka.process.pid
        kafka.stop()
        assert first is not None and pid_gone(first)
        assert not _java_processes_using(tmp_path)
        # Same data dir: not formatted again, and the topics are still there.
        meta = (kafka.log_dirs / "meta.properties").read_text()
        kafka.start()
        assert (kafka.log_dirs / "meta.properties").read_text() == meta
        assert kafka.create_topics(TOPICS) == []
        second = kafka.process.pid
        kafka.kill()
        assert second is not None and pid_gone(second)
    finally:
        kafka.stop()
    assert not _java_processes_using(tmp_path)
    assert not kafka.ping()


# -- stack wiring (nothing is started) ---------------------------------------------------------


def test_stack_runs_a_broker_by_default(tmp_path: Path) -> None:
    stack = Stack(state_dir=tmp_path, env={"NOTIHUB_KAFKA_PORT": "29500", "NOTIHUB_KAFKA_CONTROLLER_PORT": "29501"})
    assert stack.kafka is not None
    assert stack.services[-1] is stack.kafka  # after Redis and MongoDB
    assert [s.name for s in stack.services] == ["redis", "mongo", "kafka"]
    assert stack.kafka_bootstrap == "127.0.0.1:29500"
    assert stack.child_env()["NOTIHUB_KAFKA_BOOTSTRAP"] == "127.0.0.1:29500"
    assert {29500, 29501} <= set(stack.ports())
    assert stack.kafka.data_dir == tmp_path.resolve() / "kafka"


def test_stack_passes_a_given_bootstrap_through(tmp_path: Path) -> None:
    stack = Stack(state_dir=tmp_path, env={"NOTIHUB_KAFKA_BOOTSTRAP": "10.0.0.1:9092"})
    assert stack.kafka is None
    assert "kafka" not in [s.name for s in stack.services]
    assert stack.kafka_bootstrap == "10.0.0.1:9092"
    assert stack.child_env()["NOTIHUB_KAFKA_BOOTSTRAP"] == "10.0.0.1:9092"


def test_stack_without_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_module, "ingest_available", lambda: True)
    stack = Stack(state_dir=tmp_path, env={"NOTIHUB_KAFKA": "off", "NOTIHUB_KAFKA_BOOTSTRAP": "10.0.0.1:9092"})
    assert stack.kafka is None and stack.kafka_bootstrap is None
    assert "NOTIHUB_KAFKA_BOOTSTRAP" not in stack.child_env()
    assert stack.ingest_ids == []
    with pytest.raises(ValueError, match="NOTIHUB_KAFKA"):
        Stack(state_dir=tmp_path, env={"NOTIHUB_KAFKA": "maybe"})


def test_stack_plans_ingest_workers_only_when_the_module_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"NOTIHUB_INGEST_WORKERS": "2", "NOTIHUB_INGEST_BASE_PORT": "29600"}
    monkeypatch.setattr(stack_module, "ingest_available", lambda: False)
    assert Stack(state_dir=tmp_path, env=env).ingest_ids == []
    monkeypatch.setattr(stack_module, "ingest_available", lambda: True)
    stack = Stack(state_dir=tmp_path, env=env)
    assert stack.ingest_ids == ["i0", "i1"]
    assert stack.ingest_urls == {"i0": "http://127.0.0.1:29600", "i1": "http://127.0.0.1:29601"}
    assert {29600, 29601} <= set(stack.ports())
    assert {"api", "i0", "i1"} <= stack.app_process_names()
