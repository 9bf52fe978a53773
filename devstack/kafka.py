"""A single-node Apache Kafka (KRaft broker and controller in one JVM) on loopback, from Maven Central jars."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import fcntl
import hashlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Coroutine, Mapping, TypeVar

from devstack.hub import REPO_ROOT
from devstack.process import ManagedProcess, log_tail, wait_until
from devstack.system import install_system, missing_packages

log = logging.getLogger(__name__)

T = TypeVar("T")

# Keep in step with <kafka.version> in deploy/kafka/pom.xml: it names the jar cache folder.
KAFKA_VERSION = "4.1.1"
POM_PATH = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
# Topics the application relies on -> partition count.
TOPICS = {"notihub.events": 3, "notihub.events.dlq": 1}
# Debian packages that provide `java` and `mvn`.
JAVA_PACKAGES = ["openjdk-17-jre-headless", "maven"]

_STAMP = ".notihub-complete"
_MAIN_JAR = "kafka_2.13-*.jar"
_MVN_TIMEOUT = 900.0
# Kafka error codes that mean "already done" for create_topics.
_TOPIC_ALREADY_EXISTS = 36


def default_libs_dir() -> Path:
    """The jar cache: $NOTIHUB_KAFKA_LIBS, else ~/.cache/notihub/kafka-<version>/libs (outside the work tree)."""
    override = os.environ.get("NOTIHUB_KAFKA_LIBS")
    if override:
        return Path(override).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "notihub" / f"kafka-{KAFKA_VERSION}" / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(POM_PATH.read_bytes()).hexdigest()


def libs_complete(libs_dir: str | os.PathLike[str]) -> bool:
    """True when libs_dir holds the jars of the current pom (its stamp matches)."""
    stamp = Path(libs_dir) / _STAMP
    try:
        return stamp.read_text().strip() == _pom_digest()
    except OSError:
        return False


def _foreign_libs(libs: Path) -> bool:
    """True for a folder of Kafka jars that someone else put there (no stamp of ours): used as it is."""
    return not (libs / _STAMP).exists() and any(libs.glob(_MAIN_JAR))


def ensure_kafka_libs(libs_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download Kafka and its runtime jars with Maven into the cache when missing (idempotent); return the folder."""
    libs = Path(libs_dir) if libs_dir is not None else default_libs_dir()
    if libs_complete(libs) or _foreign_libs(libs):
        return libs
    missing = missing_packages(JAVA_PACKAGES)
    if missing:
        try:
            install_system(missing)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(f"Kafka needs {', '.join(missing)}, and installing them failed: {exc}") from exc
    mvn = shutil.which("mvn") or "/usr/bin/mvn"
    libs.parent.mkdir(parents=True, exist_ok=True)
    # A lock, so that two test runs or a test run and `make install` do not download into each other.
    with open(libs.parent / f".{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if libs_complete(libs):
            return libs
        if libs.exists() and not (libs / _STAMP).exists() and any(libs.iterdir()):
            raise RuntimeError(f"{libs} is not empty and holds no Kafka jars: refusing to replace it")
        staging = libs.parent / f".{libs.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        argv = [
            mvn, "-q", "-B", "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}", "-DincludeScope=runtime", "-f", str(POM_PATH),
        ]
        log.info("downloading Kafka %s jars into %s", KAFKA_VERSION, libs)
        began = time.monotonic()
        try:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=POM_PATH.parent, timeout=_MVN_TIMEOUT, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"mvn did not finish within {_MVN_TIMEOUT:.0f}s") from exc
        output = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0 or not (staging / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join(output.splitlines()[-30:])
            raise RuntimeError(f"mvn dependency:copy-dependencies failed with code {result.returncode}:\n{tail}")
        (staging / _STAMP).write_text(_pom_digest() + "\n")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        log.info("Kafka %s jars ready in %s (%.1fs)", KAFKA_VERSION, libs, time.monotonic() - began)
    return libs


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _api_versions(port: int, timeout: float = 1.0) -> bool:
    """Return True when the broker on port answers an ApiVersions request without error (raw protocol, stdlib only)."""
    client_id = b"notihub-devstack"
    # Request header v1: api_key 18 (ApiVersions), api_version 0, correlation id, client id; empty body.
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            head = _recv_exact(sock, 10)  # size, correlation id, error code
    except OSError:
        return False
    if head is None:
        return False
    _size, correlation_id, error_code = struct.unpack(">iih", head)
    return correlation_id == 7 and error_code == 0


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run coro to completion from synchronous code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Inside a loop (an async test, say): a helper thread gets a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def new_cluster_id() -> str:
    """A random cluster id as `kafka-storage random-uuid` makes it (22 characters, base64url)."""
    while True:
        # Like Kafka's own Uuid.randomUuid(): never one that starts with "-", which the
        # command line would read as an option.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def render_server_properties(*, port: int, controller_port: int, log_dirs: str | os.PathLike[str]) -> str:
    """server.properties for one node that is both KRaft controller and broker, sized for a laptop."""
    return f"""\
# Written by devstack.kafka at every start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dirs}
num.partitions=3
auto.create.topics.enable=false
# One node: every internal topic has one replica, and few partitions so that it is created quickly.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
# After a SIGKILL the restarted node may register again only once its old session expired
# (default 9 s): keep that short, the heartbeats are on loopback.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
# Small segments and short retention: local data only.
log.segment.bytes=1048576
log.retention.hours=24
log.retention.check.interval.ms=60000
log.cleaner.dedupe.buffer.size=8388608
log.cleaner.threads=1
# Few threads: the machine is small and the load is a developer's.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
"""


def render_log4j2(*, level: str = "WARN") -> str:
    """log4j2 configuration: level for everything, INFO for start-up and shutdown, to standard output."""
    return f"""\
status = warn
# Kafka logs its own shutdown: log4j must not stop before it does.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
logger.controller.name = kafka.server.ControllerServer
logger.controller.level = INFO
"""


class KafkaBroker:
    """One Kafka JVM that is both KRaft controller and broker, bound to 127.0.0.1."""

    name = "kafka"

    def __init__(
        self,
        *,
        port: int,
        controller_port: int,
        data_dir: str | os.PathLike[str],
        log_path: str | os.PathLike[str] | None = None,
        heap: str = "512m",
        topics: Mapping[str, int] = TOPICS,
        libs_dir: str | os.PathLike[str] | None = None,
        java: str | None = None,
    ) -> None:
        self.port = port
        self.controller_port = controller_port
        self.data_dir = Path(data_dir)
        self.heap = heap
        self.topics = dict(topics)
        self.libs_dir = Path(libs_dir) if libs_dir is not None else default_libs_dir()
        self.java = java or shutil.which("java") or "/usr/bin/java"
        self.config_path = self.data_dir / "server.properties"
        self.log4j_path = self.data_dir / "log4j2.properties"
        # Kafka's "log" is its data: the partitions and the KRaft metadata log.
        self.log_dirs = self.data_dir / "logs"
        self.process = ManagedProcess(
            name="kafka",
            argv=[
                self.java,
                f"-Xms{heap}",
                f"-Xmx{heap}",
                # The JVM flags of Kafka's own start script.
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.log4j_path}",
                "-cp", self._classpath,
                "kafka.Kafka",
                str(self.config_path),
            ],
            log_path=log_path or self.data_dir / "kafka.log",
        )

    @property
    def _classpath(self) -> str:
        # The JVM expands the wildcard itself: no shell is involved.
        return str(self.libs_dir / "*")

    @property
    def bootstrap(self) -> str:
        """bootstrap_servers for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Same as bootstrap (Kafka clients take host:port, not a URL)."""
        return self.bootstrap

    @property
    def env(self) -> dict[str, str]:
        """Variables this service exports to the application processes."""
        return {"NOTIHUB_KAFKA_BOOTSTRAP": self.bootstrap}

    @property
    def formatted(self) -> bool:
        """True once the storage was formatted (it is formatted only once per data_dir)."""
        return (self.log_dirs / "meta.properties").exists()

    def install(self) -> Path:
        """Make sure the jars are in libs_dir (downloads them once); return the folder."""
        return ensure_kafka_libs(self.libs_dir)

    def write_config(self) -> None:
        """Write server.properties and the log4j2 configuration into data_dir."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_server_properties(port=self.port, controller_port=self.controller_port, log_dirs=self.log_dirs)
        )
        self.log4j_path.write_text(render_log4j2())

    def format_storage(self, timeout: float = 120.0) -> None:
        """Format log.dirs for a new single-node cluster (kafka-storage format); a no-op once formatted."""
        if self.formatted:
            return
        argv = [
            self.java, "-Xmx256m", f"-Dlog4j2.configurationFile={self.log4j_path}", "-cp", self._classpath,
            # A static quorum (controller.quorum.voters): no --standalone / --initial-controllers.
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            "-t", new_cluster_id(), "-c", str(self.config_path),
        ]
        self.process.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.process.log_path, "ab") as out:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout, check=False)
        if result.returncode != 0 or not self.formatted:
            raise RuntimeError(
                f"formatting Kafka storage in {self.log_dirs} failed with code {result.returncode}; "
                f"log {self.process.log_path}:\n{log_tail(self.process.log_path)}"
            )

    def start(self, timeout: float = 90.0) -> None:
        """Install if needed, format once, start the JVM, wait until it answers and create the topics."""
        self.install()
        self.write_config()
        self.format_storage()
        began = time.monotonic()
        self.process.start()
        try:
            wait_until(self.ping, timeout, f"Kafka ApiVersions on port {self.port}", process=self.process)
            self.create_topics(self.topics, timeout=max(5.0, timeout - (time.monotonic() - began)))
        except BaseException:
            self.process.stop(5)
            raise

    def ping(self) -> bool:
        """Return True when the broker answers an ApiVersions request."""
        return _api_versions(self.port)

    def create_topics(self, topics: Mapping[str, int], timeout: float = 30.0) -> list[str]:
        """Create the topics (name -> partitions, one replica) that do not exist yet; return the ones created."""
        return _run(self._create_topics(dict(topics), timeout))

    async def _create_topics(self, topics: dict[str, int], timeout: float) -> list[str]:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # imported lazily: only Kafka needs it
        from aiokafka.errors import KafkaError, for_code

        deadline = time.monotonic() + timeout
        created: list[str] = []
        pending = dict(topics)
        last_error = "no attempt"
        # Right after start-up the broker may still be registering with the controller: retry
        # retriable errors until the deadline. Bounded in time, not by a count.
        while pending:
            if not self.process.alive and self.process.pid is not None:
                raise RuntimeError(f"kafka exited with code {self.process.returncode} while creating topics")
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="notihub-devstack",
                                        request_timeout_ms=5000)
            try:
                await admin.start()
                response = await admin.create_topics(
                    [NewTopic(name, partitions, 1) for name, partitions in pending.items()], timeout_ms=5000
                )
                for topic_error in response.topic_errors:
                    name, code = topic_error[0], topic_error[1]
                    if code == 0:
                        created.append(name)
                        pending.pop(name, None)
                    elif code == _TOPIC_ALREADY_EXISTS:
                        pending.pop(name, None)
                    else:
                        error = for_code(code)
                        last_error = f"{name}: {error.__name__} {topic_error[2] if len(topic_error) > 2 else ''}"
                        if not error.retriable:
                            raise RuntimeError(f"creating Kafka topic {last_error}")
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                last_error = repr(exc)
            finally:
                await admin.close()
            if pending:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"timed out after {timeout:.0f}s creating Kafka topics {sorted(pending)}: {last_error}")
                await asyncio.sleep(0.2)
        # The controller has committed them; wait until the broker's metadata shows them too, so
        # that a client starting right after this sees every partition.
        while created:
            known = await self._describe_topics()
            if all(known.get(name) == topics[name] for name in created):
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for Kafka topics {created} in the metadata")
            await asyncio.sleep(0.1)
        if created:
            log.info("created Kafka topics %s", ", ".join(created))
        return created

    def describe_topics(self) -> dict[str, int]:
        """Every non-internal topic -> its partition count."""
        return _run(self._describe_topics())

    async def _describe_topics(self) -> dict[str, int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="notihub-devstack",
                                    request_timeout_ms=5000)
        try:
            await admin.start()
            names = [n for n in await admin.list_topics() if not n.startswith("__")]
            if not names:
                return {}
            return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        finally:
            await admin.close()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker (controlled shutdown on SIGTERM, SIGKILL after timeout seconds)."""
        self.process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the broker (for failure tests)."""
        self.process.kill()
