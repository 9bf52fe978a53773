"""The whole local stack, composed from NOTIHUB_* settings and started in order."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Mapping, Protocol

from devstack.hub import REPO_ROOT, HubProcess
from devstack.kafka import KafkaBroker
from devstack.mongo import MongoReplicaSet
from devstack.nginx import Nginx
from devstack.ports import port_accepts
from devstack.process import ManagedProcess
from devstack.redis_cluster import NODES as CLUSTER_NODES
from devstack.redis_cluster import RedisCluster
from devstack.redis_server import RedisServer

log = logging.getLogger(__name__)

DEFAULTS = {
    "NOTIHUB_PUBLIC_PORT": "8080",
    "NOTIHUB_SOCKET_WORKERS": "2",
    "NOTIHUB_API_PORT": "8100",
    "NOTIHUB_SOCKET_BASE_PORT": "8200",
    "NOTIHUB_REDIS_PORT": "6390",
    "NOTIHUB_MONGO_BASE_PORT": "27117",
    "NOTIHUB_KAFKA_PORT": "9092",
    "NOTIHUB_KAFKA_CONTROLLER_PORT": "9093",
    "NOTIHUB_KAFKA_HEAP": "512m",
    "NOTIHUB_INGEST_WORKERS": "1",
    "NOTIHUB_INGEST_BASE_PORT": "8300",
    "NOTIHUB_DRAIN_SECONDS": "10",
}


def ingest_available() -> bool:
    """True when the repository has the ingest worker (python -m ingest)."""
    return (REPO_ROOT / "ingest" / "__main__.py").exists()


class Service(Protocol):
    """What the stack needs from a backing service (Redis, MongoDB, Kafka, ...)."""

    name: str

    @property
    def env(self) -> dict[str, str]: ...  # variables exported to the application processes

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _int(env: Mapping[str, str], key: str) -> int:
    raw = env.get(key) or DEFAULTS[key]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None


def _mongo_parameters(env: Mapping[str, str]) -> dict[str, str]:
    parameters = {}
    if env.get("NOTIHUB_MONGO_TTL_MONITOR_SECS"):
        parameters["ttlMonitorSleepSecs"] = env["NOTIHUB_MONGO_TTL_MONITOR_SECS"]
    if env.get("NOTIHUB_MONGO_FAIL_POINTS") == "1":
        # configureFailPoint, so that tests can make the real server refuse a command.
        parameters["enableTestCommands"] = "1"
    return parameters


class Stack:
    """Redis, MongoDB, Kafka, the API, the socket and ingest workers and nginx, started and stopped together."""

    def __init__(self, *, state_dir: str | os.PathLike[str], env: Mapping[str, str]) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.log_dir = self.state_dir / "logs"
        self.settings = dict(env)
        self.public_port = _int(env, "NOTIHUB_PUBLIC_PORT")
        self.api_port = _int(env, "NOTIHUB_API_PORT")
        self.socket_base_port = _int(env, "NOTIHUB_SOCKET_BASE_PORT")
        n_workers = _int(env, "NOTIHUB_SOCKET_WORKERS")
        if n_workers < 1:
            raise ValueError("NOTIHUB_SOCKET_WORKERS must be at least 1")
        self.worker_ids = [f"w{i}" for i in range(n_workers)]
        # A socket worker drains this long after SIGTERM (see socket_server/drain.py).
        self.drain_seconds = _int(env, "NOTIHUB_DRAIN_SECONDS")
        delayed = env.get("NOTIHUB_MONGO_DELAYED_SECS")
        kafka_switch = (env.get("NOTIHUB_KAFKA") or "on").strip().lower()
        if kafka_switch not in ("on", "off"):
            raise ValueError(f"NOTIHUB_KAFKA must be on or off, got {env.get('NOTIHUB_KAFKA')!r}")
        # The escape hatch: off wins over NOTIHUB_KAFKA_BOOTSTRAP, and the application sees no Kafka.
        self.kafka_off = kafka_switch == "off"
        n_ingest = _int(env, "NOTIHUB_INGEST_WORKERS")
        if n_ingest < 0:
            raise ValueError("NOTIHUB_INGEST_WORKERS must not be negative")
        self.ingest_base_port = _int(env, "NOTIHUB_INGEST_BASE_PORT")

        # Backing services, started in this order and stopped in reverse. A service given by
        # URL (NOTIHUB_*_URL, NOTIHUB_KAFKA_BOOTSTRAP) is someone else's: it is neither started
        # nor stopped here.
        self.redis: RedisServer | None = None
        self.redis_cluster: RedisCluster | None = None
        self.mongo: MongoReplicaSet | None = None
        self.kafka: KafkaBroker | None = None
        self.services: list[Service] = []
        redis_mode = (env.get("NOTIHUB_REDIS_MODE") or "standalone").strip().lower()
        if redis_mode not in ("standalone", "cluster"):
            raise ValueError(f"NOTIHUB_REDIS_MODE must be standalone or cluster, got {env.get('NOTIHUB_REDIS_MODE')!r}")
        if not env.get("NOTIHUB_REDIS_URL") and redis_mode == "cluster":
            base = _int(env, "NOTIHUB_REDIS_PORT")
            bus = int(env.get("NOTIHUB_REDIS_CLUSTER_BUS_PORT") or base + 10000)
            self.redis_cluster = RedisCluster(
                ports=[base + i for i in range(CLUSTER_NODES)],
                bus_ports=[bus + i for i in range(CLUSTER_NODES)],
                data_dir=self.state_dir / "redis-cluster",
                log_dir=self.log_dir,
            )
            self.services.append(self.redis_cluster)
        elif not env.get("NOTIHUB_REDIS_URL"):
            self.redis = RedisServer(
                port=_int(env, "NOTIHUB_REDIS_PORT"),
                data_dir=self.state_dir / "redis",
                log_path=self.log_dir / "redis.log",
            )
            self.services.append(self.redis)
        if not env.get("NOTIHUB_MONGO_URL"):
            base = _int(env, "NOTIHUB_MONGO_BASE_PORT")
            self.mongo = MongoReplicaSet(
                ports=[base, base + 1, base + 2],
                data_dir=self.state_dir / "mongo",
                delayed_secs=int(delayed) if delayed else None,
                log_dir=self.log_dir,
                parameters=_mongo_parameters(env),
            )
            self.services.append(self.mongo)
        if not env.get("NOTIHUB_KAFKA_BOOTSTRAP") and not self.kafka_off:
            self.kafka = KafkaBroker(
                port=_int(env, "NOTIHUB_KAFKA_PORT"),
                controller_port=_int(env, "NOTIHUB_KAFKA_CONTROLLER_PORT"),
                data_dir=self.state_dir / "kafka",
                log_path=self.log_dir / "kafka.log",
                heap=env.get("NOTIHUB_KAFKA_HEAP") or DEFAULTS["NOTIHUB_KAFKA_HEAP"],
            )
            self.services.append(self.kafka)

        # Ingest workers consume Kafka: none without a broker, or before the repository has them.
        with_ingest = self.kafka_bootstrap is not None and ingest_available()
        self.ingest_ids = [f"i{i}" for i in range(n_ingest)] if with_ingest else []

        self.api: HubProcess | None = None
        self.socket_workers: dict[str, HubProcess] = {}
        self.ingest_workers: dict[str, HubProcess] = {}
        self.nginx: Nginx | None = None
        self._started: list[object] = []

    # -- environment ---------------------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        """Environment of the application processes: os.environ + settings + service URLs."""
        env = dict(os.environ)
        env.update(self.settings)
        for service in self.services:
            env.update(service.env)
        if self.kafka_off:
            env.pop("NOTIHUB_KAFKA_BOOTSTRAP", None)
        # Children log unbuffered so that a crash leaves its last lines in the log file.
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The local stack is a development stack: its processes accept the built-in secrets.
        env.setdefault("NOTIHUB_ENV", "development")
        return env

    # -- accessors -----------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        """The public entry (nginx)."""
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def api_url(self) -> str:
        """The API server, bypassing nginx."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def worker_urls(self) -> dict[str, str]:
        """Socket worker id -> its URL, bypassing nginx."""
        return {wid: f"http://127.0.0.1:{self.socket_base_port + i}" for i, wid in enumerate(self.worker_ids)}

    @property
    def workers(self) -> dict[str, ManagedProcess]:
        """Socket worker id -> its process."""
        return {wid: hub.process for wid, hub in self.socket_workers.items()}

    @property
    def mongo_url(self) -> str:
        """The MongoDB URL the application uses."""
        return self.mongo.url if self.mongo else self.settings["NOTIHUB_MONGO_URL"]

    @property
    def redis_url(self) -> str:
        """The Redis URL the application uses."""
        if self.redis_cluster:
            return self.redis_cluster.url
        return self.redis.url if self.redis else self.settings["NOTIHUB_REDIS_URL"]

    @property
    def kafka_bootstrap(self) -> str | None:
        """The Kafka bootstrap servers the application uses, or None without Kafka (NOTIHUB_KAFKA=off)."""
        if self.kafka_off:
            return None
        return self.kafka.bootstrap if self.kafka else self.settings.get("NOTIHUB_KAFKA_BOOTSTRAP") or None

    @property
    def ingest_urls(self) -> dict[str, str]:
        """Ingest worker id -> its URL (/healthz, /metrics)."""
        return {iid: f"http://127.0.0.1:{self.ingest_base_port + i}" for i, iid in enumerate(self.ingest_ids)}

    # -- lifecycle -----------------------------------------------------------------------

    def ports(self) -> dict[int, str]:
        """Every local port this stack will listen on -> what it is for."""
        ports: dict[int, str] = {}
        if self.redis:
            ports[self.redis.port] = "redis (NOTIHUB_REDIS_PORT)"
        if self.redis_cluster:
            for i, (port, bus) in enumerate(zip(self.redis_cluster.ports, self.redis_cluster.bus_ports)):
                ports[port] = f"redis cluster node {i} (NOTIHUB_REDIS_PORT+{i})"
                ports[bus] = f"its cluster bus (NOTIHUB_REDIS_CLUSTER_BUS_PORT+{i})"
        if self.mongo:
            ports.update({p: f"mongod-{i} (NOTIHUB_MONGO_BASE_PORT+{i})" for i, p in enumerate(self.mongo.ports)})
        if self.kafka:
            ports[self.kafka.port] = "kafka (NOTIHUB_KAFKA_PORT)"
            ports[self.kafka.controller_port] = "kafka controller (NOTIHUB_KAFKA_CONTROLLER_PORT)"
        ports[self.api_port] = "api (NOTIHUB_API_PORT)"
        for i, wid in enumerate(self.worker_ids):
            ports[self.socket_base_port + i] = f"{wid} (NOTIHUB_SOCKET_BASE_PORT+{i})"
        for i, iid in enumerate(self.ingest_ids):
            ports[self.ingest_base_port + i] = f"{iid} (NOTIHUB_INGEST_BASE_PORT+{i})"
        ports[self.public_port] = "nginx (NOTIHUB_PUBLIC_PORT)"
        return ports

    def check_ports(self) -> None:
        """Raise RuntimeError naming every port that is already taken (e.g. by a stack still running)."""
        # Checked up front: a start-up check that "the port answers" would otherwise be fooled
        # by whoever already holds the port.
        taken = [f"{port} for {what}" for port, what in self.ports().items() if port_accepts(port, timeout=0.2)]
        if taken:
            raise RuntimeError("ports already in use: " + "; ".join(taken))

    def start(self) -> None:
        """Start everything in order; on any failure stop what was started and re-raise."""
        self.check_ports()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for service in self.services:
                self._timed(service.name, service.start)
                self._started.append(service)
            env = self.child_env()
            self.api = HubProcess.api(port=self.api_port, env=env, log_path=self.log_dir / "api.log", cwd=REPO_ROOT)
            self._timed("api", self.api.start)
            self._started.append(self.api)
            for i, wid in enumerate(self.worker_ids):
                hub = HubProcess.socket_worker(
                    worker_id=wid, port=self.socket_base_port + i, env=env,
                    log_path=self.log_dir / f"{wid}.log", cwd=REPO_ROOT, drain_seconds=self.drain_seconds,
                )
                self.socket_workers[wid] = hub
                self._timed(wid, hub.start)
                self._started.append(hub)
            for i, iid in enumerate(self.ingest_ids):
                hub = HubProcess(
                    name=iid, module="ingest", args=["--worker-id", iid], port=self.ingest_base_port + i,
                    env=env, log_path=self.log_dir / f"{iid}.log", cwd=REPO_ROOT,
                )
                self.ingest_workers[iid] = hub
                self._timed(iid, hub.start)
                self._started.append(hub)
            self.nginx = Nginx(
                port=self.public_port,
                api_addr=self.api.addr,
                worker_addrs={wid: hub.addr for wid, hub in self.socket_workers.items()},
                prefix_dir=self.state_dir / "nginx",
            )
            self._timed("nginx", self.nginx.start)
            self._started.append(self.nginx)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _timed(name: str, start: object) -> None:
        began = time.monotonic()
        start()  # type: ignore[operator]
        log.info("%s up in %.1fs", name, time.monotonic() - began)

    def stop(self) -> None:
        """Stop everything that was started, in reverse order; one failure does not stop the rest."""
        # Socket workers drain after SIGTERM: all of them at once, not one after the other.
        for hub in self.socket_workers.values():
            hub.process.signal(signal.SIGTERM)
        # Also covers an item whose start() failed half-way (it is not in _started yet).
        pending = [
            self.nginx,
            *reversed(list(self.ingest_workers.values())),
            *reversed(list(self.socket_workers.values())),
            self.api,
            *reversed(self.services),
        ]
        for item in pending:
            if item is None:
                continue
            try:
                item.stop()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - keep going so nothing is left running
                log.exception("failed to stop %s", getattr(item, "name", item))
        self._started.clear()

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- failure handling ----------------------------------------------------------------

    def kill_worker(self, wid: str) -> None:
        """SIGKILL socket worker wid (for failure tests)."""
        self.socket_workers[wid].kill()

    def terminate_worker(self, wid: str) -> ManagedProcess:
        """SIGTERM socket worker wid and return its process at once: it drains, then exits by itself."""
        process = self.socket_workers[wid].process
        process.signal(signal.SIGTERM)
        return process

    def restart_worker(self, wid: str, timeout: float = 30.0) -> None:
        """Start socket worker wid again (same port) and wait for its /healthz."""
        self.socket_workers[wid].restart(timeout)

    def kill_ingest_worker(self, iid: str) -> None:
        """SIGKILL ingest worker iid (for failure tests)."""
        self.ingest_workers[iid].kill()

    def restart_ingest_worker(self, iid: str, timeout: float = 30.0) -> None:
        """Start ingest worker iid again (same port) and wait for its /healthz."""
        self.ingest_workers[iid].restart(timeout)

    def kill_redis(self) -> None:
        """SIGKILL the stack's redis-server (for failure tests); without persistence its data is gone."""
        self._own_redis().kill()

    def start_redis(self, timeout: float = 15.0) -> None:
        """Start the stack's redis-server again (same port, empty) and wait until it answers PING."""
        self._own_redis().start(timeout)

    def restart_redis(self, down_for: float = 0.0, timeout: float = 15.0) -> None:
        """SIGKILL redis-server, keep it down for down_for seconds, then start it again."""
        self.kill_redis()
        time.sleep(down_for)  # holding the fault for a fixed time, not waiting for anything
        self.start_redis(timeout)

    def kill_redis_master(self, slot: int, timeout: float = 30.0) -> int:
        """SIGKILL the cluster master serving hash ``slot``; return its port once a replica took over."""
        return self._own_cluster().kill_master(slot, timeout)

    def start_redis_node(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed cluster node again; it rejoins as a replica."""
        self._own_cluster().start_node(port, timeout)

    def _own_cluster(self) -> RedisCluster:
        if self.redis_cluster is None:
            raise RuntimeError("this stack runs no Redis Cluster (NOTIHUB_REDIS_MODE=cluster)")
        return self.redis_cluster

    def _own_redis(self) -> RedisServer:
        if self.redis is None:
            raise RuntimeError("Redis is given by NOTIHUB_REDIS_URL: this stack does not run it")
        return self.redis

    def stop_kafka(self, timeout: float = 20.0) -> None:
        """Stop the stack's Kafka broker (controlled shutdown; for failure tests)."""
        self._own_kafka().stop(timeout)

    def start_kafka(self, timeout: float = 90.0) -> None:
        """Start the stack's Kafka broker again (same ports and data dir) and wait until it answers."""
        self._own_kafka().start(timeout)

    def restart_kafka(self, timeout: float = 90.0) -> None:
        """Stop the stack's Kafka broker and start it again."""
        self.stop_kafka()
        self.start_kafka(timeout)

    def _own_kafka(self) -> KafkaBroker:
        if self.kafka is None:
            raise RuntimeError("this stack runs no Kafka broker (NOTIHUB_KAFKA_BOOTSTRAP or NOTIHUB_KAFKA=off)")
        return self.kafka

    def restart_api(self, timeout: float = 30.0) -> None:
        """Start the API again (same port) and wait for its /healthz."""
        assert self.api is not None
        self.api.restart(timeout)

    def app_process_names(self) -> set[str]:
        """Names of the application processes, which the supervisor restarts (api, w0, ..., i0, ...)."""
        return {"api", *self.worker_ids, *self.ingest_ids}

    def dead_app_processes(self) -> list[str]:
        """Names of application processes (api, w0, i0, ...) that started and have since exited."""
        dead = []
        if self.api is not None and self.api in self._started and not self.api.alive:
            dead.append("api")
        dead.extend(wid for wid, hub in self.socket_workers.items() if hub in self._started and not hub.alive)
        dead.extend(iid for iid, hub in self.ingest_workers.items() if hub in self._started and not hub.alive)
        return dead

    def restart_app_process(self, name: str) -> None:
        """Restart the application process named as in dead_app_processes()."""
        if name == "api":
            self.restart_api()
        elif name in self.ingest_workers:
            self.restart_ingest_worker(name)
        else:
            self.restart_worker(name)

    def all_processes(self) -> list[ManagedProcess]:
        """Every process this stack manages (for leak checks)."""
        procs: list[ManagedProcess] = []
        if self.redis:
            procs.append(self.redis.process)
        if self.redis_cluster:
            procs.extend(self.redis_cluster.processes)
        if self.mongo:
            procs.extend(self.mongo.members)
        if self.kafka:
            procs.append(self.kafka.process)
        if self.api:
            procs.append(self.api.process)
        procs.extend(hub.process for hub in self.socket_workers.values())
        procs.extend(hub.process for hub in self.ingest_workers.values())
        if self.nginx:
            procs.append(self.nginx.process)
        return procs
