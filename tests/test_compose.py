"""The container stack: compose.yaml as `docker compose config` resolves it, deploy/nginx.conf,
deploy/kafka-init.sh and the Dockerfile.

No container is started. compose.yaml is resolved by `docker compose config --format json` when the
docker client has its compose plugin (no Docker engine is needed), otherwise by
.venv/bin/composecheck, which `make install` builds from tools/composecheck: a small Go program
on compose-go, the loader `docker compose config` itself uses, that prints the same JSON form.
deploy/nginx.conf's routing of Socket.IO sessions runs in a real nginx on loopback addresses.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.nginx import nginx_binary
from devstack.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
KAFKA_INIT = ROOT / "deploy" / "kafka-init.sh"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSECHECK = ROOT / ".venv" / "bin" / "composecheck"

# The socket workers are one service, scaled with `docker compose up --scale socket=N`.
SOCKET_SERVICE = "socket"
SOCKET_REPLICAS = 3
INGEST_WORKERS = ("i0",)
INGEST_SERVICES = tuple(f"ingest-{i}" for i in INGEST_WORKERS)
# The Kafka clients: the API produces domain events, the ingest workers consume them.
KAFKA_CLIENTS = ("api", *INGEST_SERVICES)
APP_SERVICES = (*KAFKA_CLIENTS, SOCKET_SERVICE)
SERVICES = ("redis", "mongo1", "mongo2", "mongo3", "mongo-init", "kafka", "kafka-init", *APP_SERVICES, "nginx")

KAFKA_IMAGE = "apache/kafka:4.1.1"
# Topic -> partitions, as the application expects them (shared/kafka.py, devstack/kafka.py).
TOPICS = {"notihub.events": 3, "notihub.events.dlq": 1}

JWT_SECRET = "compose-test-secret-0123456789-0123456789"
SERVICE_KEYS = "compose-test-key-1,compose-test-key-2"
PUBLIC_PORT = "18443"

# Log variables that would put the query string (and so ?token=) into the access log.
FORBIDDEN_LOG_VARIABLES = re.compile(
    r"\$(?:request|request_uri|args|query_string|is_args|http_referer|arg_[A-Za-z0-9_]+)(?![A-Za-z0-9_])"
)


@functools.cache
def _config_command() -> tuple[str, ...]:
    """The command that prints compose.yaml resolved as JSON: `docker compose config` or composecheck."""
    docker = shutil.which("docker")
    if docker is not None:
        result = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            return (docker, "compose", "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT),
                    "config", "--format", "json")
        why = f"`docker compose version` failed: {(result.stderr or result.stdout).strip()}"
    else:
        why = "the docker client is not installed"
    if os.access(COMPOSECHECK, os.X_OK):
        return (str(COMPOSECHECK), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT))
    pytest.fail(
        "compose.yaml cannot be resolved: these tests need either `docker compose` (the docker "
        f"client with its compose plugin; no Docker engine is needed) or {COMPOSECHECK} "
        "(`make install` builds it from tools/composecheck with the Go toolchain).\n"
        f"docker: {why}\ncomposecheck: {COMPOSECHECK} does not exist or is not executable",
        pytrace=False,
    )


def _env(**overrides: str) -> dict[str, str]:
    """The process environment without any NOTIHUB_* or COMPOSE_* variable, plus overrides."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("NOTIHUB_", "COMPOSE_"))
    }
    env.update(overrides)
    return env


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """compose.yaml resolved with env as JSON: the output of `docker compose config`, or of composecheck."""
    return subprocess.run(
        _config_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def _load(env: dict[str, str]) -> dict[str, Any]:
    result = _compose_config(env)
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _load(_env(
        NOTIHUB_JWT_SECRET=JWT_SECRET,
        NOTIHUB_SERVICE_KEYS=SERVICE_KEYS,
        NOTIHUB_PUBLIC_PORT=PUBLIC_PORT,
    ))


@pytest.fixture(scope="module")
def nginx_conf() -> str:
    # Comments dropped, so that only directives are checked.
    return "\n".join(line.split("#", 1)[0] for line in NGINX_CONF.read_text().splitlines())


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else list(command)


def _option(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def test_services_exist(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in SERVICES:
        assert name in services, f"service {name} missing; have {sorted(services)}"
    assert services["redis"]["image"].startswith("redis:7")
    # The same pub/sub output-buffer limits as the local stack's Redis.
    assert "pubsub 32mb 8mb 60" in _command(services["redis"]), _command(services["redis"])
    assert services["nginx"]["image"].startswith("nginx:1.27")
    for name in ("mongo1", "mongo2", "mongo3"):
        assert services[name]["image"] == "mongo:6.0"
        command = _command(services[name])
        assert _option(command, "--replSet") == "rs0"
        assert "--bind_ip_all" in command
        assert "healthcheck" in services[name]


def _worker_id_code(service: dict[str, Any]) -> str:
    """The Python code by which a socket worker's container names itself, from its command."""
    command = _command(service)
    assert command[:2] == ["sh", "-c"], command
    # `docker compose config` writes a literal "$" as "$$".
    script = command[2].replace("$$", "$")
    prefix = """exec python -m socket_server --host 0.0.0.0 --port 8200 --worker-id "w$(python -c '"""
    suffix = "')\""
    assert script.startswith(prefix) and script.endswith(suffix), script
    return script[len(prefix):-len(suffix)]


def _worker_id(code: str, address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """The --worker-id of a container whose address is `address`."""
    with monkeypatch.context() as patch:
        patch.setattr(socket, "gethostbyname", lambda name: address)
        exec(code, {})
    return "w" + capsys.readouterr().out.strip()


def test_socket_workers_are_one_scalable_service(
        config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    services = config["services"]
    assert not [name for name in services if name.startswith("socket-")], sorted(services)
    socket_worker = services[SOCKET_SERVICE]
    # Nothing that two containers of one service could not share.
    for key in ("container_name", "hostname", "ports"):
        assert not socket_worker.get(key), f"{key}: {socket_worker[key]}"
    assert socket_worker["deploy"]["replicas"] == SOCKET_REPLICAS
    # Each container names itself after its address: w<3rd octet><4th octet>, 3 digits each.
    code = _worker_id_code(socket_worker)
    ids = {address: _worker_id(code, address, monkeypatch, capsys)
           for address in ("172.18.0.5", "172.18.0.50", "172.18.5.0", "192.168.208.17")}
    assert ids == {"172.18.0.5": "w000005", "172.18.0.50": "w000050", "172.18.5.0": "w005000",
                   "192.168.208.17": "w208017"}
    for worker_id in ids.values():
        # What `python -m socket_server` accepts as --worker-id.
        assert re.fullmatch(r"w[0-9]+", worker_id)
    api = _command(services["api"])
    assert api[:3] == ["python", "-m", "api_server"], api
    assert _option(api, "--port") == "8100"


def test_ingest_workers_have_distinct_worker_ids(config: dict[str, Any]) -> None:
    ids = []
    for name, worker in zip(INGEST_SERVICES, INGEST_WORKERS):
        service = config["services"][name]
        command = _command(service)
        assert command[:3] == ["python", "-m", "ingest"], command
        assert _option(command, "--host") == "0.0.0.0"
        assert _option(command, "--port") == "8300"
        assert _option(command, "--worker-id") == worker
        ids.append(worker)
        test = " ".join(service["healthcheck"]["test"])
        assert "urllib" in test and "127.0.0.1:8300/healthz" in test, test
        assert service.get("build"), f"{name} is not built from this repository"
    assert len(set(ids)) == len(ids)


def test_nginx_publishes_the_public_port(config: dict[str, Any]) -> None:
    ports = config["services"]["nginx"]["ports"]
    assert [(str(p["published"]), int(p["target"])) for p in ports] == [(PUBLIC_PORT, 8080)]
    # Nothing else is reachable from outside.
    for name, service in config["services"].items():
        if name != "nginx":
            assert not service.get("ports"), f"{name} publishes {service['ports']}"
    mounts = {v["target"]: v["source"] for v in config["services"]["nginx"].get("volumes", [])}
    assert Path(mounts["/etc/nginx/nginx.conf"]) == NGINX_CONF


def test_public_port_defaults_to_8080() -> None:
    config = _load(_env(NOTIHUB_JWT_SECRET=JWT_SECRET, NOTIHUB_SERVICE_KEYS=SERVICE_KEYS))
    ports = config["services"]["nginx"]["ports"]
    assert [str(p["published"]) for p in ports] == ["8080"]


def test_app_services_get_configuration(config: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = config["services"][name]
        env = service.get("environment") or {}
        mongo_url = env.get("NOTIHUB_MONGO_URL") or ""
        assert "replicaSet=rs0" in mongo_url, f"{name}: NOTIHUB_MONGO_URL={mongo_url!r}"
        for host in ("mongo1:27017", "mongo2:27017", "mongo3:27017"):
            assert host in mongo_url
        assert env.get("NOTIHUB_REDIS_URL") == "redis://redis:6379/0"
        assert env.get("NOTIHUB_JWT_SECRET") == JWT_SECRET
        assert env.get("NOTIHUB_SERVICE_KEYS") == SERVICE_KEYS
        assert env.get("NOTIHUB_DEFAULT_LANG") == "en"
        assert env.get("NOTIHUB_RETENTION_DAYS") == "7"
        if name in KAFKA_CLIENTS:
            assert env.get("NOTIHUB_KAFKA_BOOTSTRAP") == "kafka:9092", name
        else:
            # The socket workers never talk to Kafka.
            assert "NOTIHUB_KAFKA_BOOTSTRAP" not in env, name
        assert service.get("build"), f"{name} is not built from this repository"


def _seconds(duration: str) -> float:
    """A compose duration ("30s", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_socket_workers_drain_before_docker_kills_them(config: dict[str, Any]) -> None:
    service = config["services"][SOCKET_SERVICE]
    drain = int(service["environment"]["NOTIHUB_DRAIN_SECONDS"])
    assert drain == 10
    # SIGTERM, the drain, then aiohttp's shutdown: Docker's SIGKILL must come later.
    assert _seconds(service.get("stop_grace_period") or "10s") >= drain + 10
    # `exec`: python, not sh, is the process that Docker's SIGTERM reaches.
    assert _command(service)[2].startswith("exec python -m socket_server ")
    test = " ".join(service["healthcheck"]["test"])
    assert "urllib" in test and "127.0.0.1:8200/healthz" in test, test


def test_kafka_bootstrap_can_point_elsewhere() -> None:
    config = _load(_env(
        NOTIHUB_JWT_SECRET=JWT_SECRET,
        NOTIHUB_SERVICE_KEYS=SERVICE_KEYS,
        NOTIHUB_KAFKA_BOOTSTRAP="broker-a.example:9092,broker-b.example:9092",
    ))
    for name in (*KAFKA_CLIENTS, "kafka-init"):
        env = config["services"][name]["environment"]
        assert env["NOTIHUB_KAFKA_BOOTSTRAP"] == "broker-a.example:9092,broker-b.example:9092", name


def test_app_services_start_after_the_replica_set(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["mongo-init"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert "healthcheck" in services[name], name
    init = services["mongo-init"]
    for member in ("mongo1", "mongo2", "mongo3"):
        assert init["depends_on"][member]["condition"] == "service_healthy"
    assert init.get("restart") in (None, "no")
    mounts = {v["target"]: v["source"] for v in init.get("volumes", [])}
    script = next(Path(src) for src in mounts.values() if src.endswith(".js"))
    assert script.is_file()
    assert "rs0" in script.read_text()
    assert services["nginx"]["depends_on"][SOCKET_SERVICE]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_kafka_is_one_kraft_node(config: dict[str, Any]) -> None:
    kafka = config["services"]["kafka"]
    assert kafka["image"] == KAFKA_IMAGE
    env = kafka["environment"]
    assert env["KAFKA_NODE_ID"] == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners == {"PLAINTEXT": ":9092", "CONTROLLER": ":9093"}
    # The clients are on the compose network: they must be told kafka:9092, not localhost.
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", key
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "-Xmx512m" in env["KAFKA_HEAP_OPTS"].split()
    assert env.get("CLUSTER_ID"), "CLUSTER_ID missing: the image formats the storage with it"
    # The data (partitions and the KRaft metadata log) lives in a named volume, where log.dirs points.
    volumes = {v["target"]: v for v in kafka.get("volumes", [])}
    data = volumes.get(env["KAFKA_LOG_DIRS"])
    assert data is not None and data["type"] == "volume", f"{env['KAFKA_LOG_DIRS']} is not a volume: {volumes}"
    assert data["source"] in config["volumes"]
    test = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in test and "localhost:9092" in test, test
    assert not kafka.get("ports")


def test_kafka_init_creates_the_topics(config: dict[str, Any]) -> None:
    services = config["services"]
    init = services["kafka-init"]
    assert init["image"] == KAFKA_IMAGE
    assert init.get("restart") in (None, "no")
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["environment"]["NOTIHUB_KAFKA_BOOTSTRAP"] == "kafka:9092"
    mounts = {v["target"]: v["source"] for v in init.get("volumes", [])}
    entrypoint = init["entrypoint"]
    script_target = next(arg for arg in entrypoint if arg in mounts)
    assert Path(mounts[script_target]) == KAFKA_INIT
    script = KAFKA_INIT.read_text()
    assert "kafka-topics.sh" in script
    assert "--create --if-not-exists" in script
    for topic, partitions in TOPICS.items():
        assert f'"{topic}:{partitions}"' in script, f"{topic} with {partitions} partitions missing"
    # The Kafka clients start only once the topics exist; the socket workers do not wait for Kafka.
    for name in KAFKA_CLIENTS:
        depends = services[name]["depends_on"]
        assert depends["kafka-init"]["condition"] == "service_completed_successfully", name
    depends = services[SOCKET_SERVICE]["depends_on"]
    assert "kafka" not in depends and "kafka-init" not in depends


def _dockerfile_stages() -> list[dict[str, Any]]:
    """The Dockerfile's stages: {"from", "name", "instructions": [(keyword, arguments), ...]}."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    stages: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            image, _, name = args.partition(" ")
            stages.append({"from": image, "name": name.split()[-1] if name else None, "instructions": []})
        else:
            assert stages, f"{line!r} before the first FROM"
            stages[-1]["instructions"].append((keyword, args))
    return stages


def test_dockerfile_installs_the_web_assets() -> None:
    stages = _dockerfile_stages()
    web = next((s for s in stages if s["name"] == "web"), None)
    assert web is not None, "no build stage named web"
    assert web["from"] == "node:20-alpine"
    workdir = next(args for keyword, args in web["instructions"] if keyword == "WORKDIR")
    copied = [args.split() for keyword, args in web["instructions"] if keyword == "COPY"]
    sources = {src for args in copied for src in args[:-1]}
    assert {"api_server/assets/package.json", "api_server/assets/package-lock.json"} <= sources, copied
    runs = [args for keyword, args in web["instructions"] if keyword == "RUN"]
    assert any("npm ci" in run and "--omit=dev" in run for run in runs), runs

    final = stages[-1]
    assert final is not web and final["from"].startswith("python:3.11")
    node_modules = [
        args.split() for keyword, args in final["instructions"]
        if keyword == "COPY" and args.startswith("--from=web ")
    ]
    assert node_modules, "the final stage copies nothing from the web stage"
    (_, src, dest), = node_modules
    assert src.rstrip("/") == f"{workdir.rstrip('/')}/node_modules", src
    final_workdir = next(args for keyword, args in final["instructions"] if keyword == "WORKDIR")
    assert dest.rstrip("/") in ("./api_server/assets/node_modules", "api_server/assets/node_modules",
                                f"{final_workdir}/api_server/assets/node_modules"), dest
    # Every Python package, the ingest worker included, is in the image.
    copies = [args.split() for keyword, args in final["instructions"] if keyword == "COPY"]
    copied_dirs = {src.rstrip("/") for args in copies if not args[0].startswith("--") for src in args[:-1]}
    assert {"shared", "api_server", "socket_server", "ingest"} <= copied_dirs, copied_dirs
    assert (ROOT / "ingest" / "__main__.py").is_file()


def test_dockerignore_keeps_local_node_modules_out() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "**/node_modules" in patterns, patterns
    for needed in ("ingest", "shared", "api_server", "socket_server", "requirements.txt"):
        assert needed not in patterns and f"{needed}/" not in patterns, needed


def test_secrets_are_required() -> None:
    result = _compose_config(_env(NOTIHUB_SERVICE_KEYS=SERVICE_KEYS))
    assert result.returncode != 0
    assert "NOTIHUB_JWT_SECRET" in result.stderr
    result = _compose_config(_env(NOTIHUB_JWT_SECRET=JWT_SECRET))
    assert result.returncode != 0
    assert "NOTIHUB_SERVICE_KEYS" in result.stderr


def _block(conf: str, head: str) -> str:
    """The body of the block that starts with `head` (a regex), up to its closing brace."""
    match = re.search(head + r"\s*\{(.*?)\n\s*\}", conf, re.S)
    assert match, f"{head} {{ ... }} missing"
    return match.group(1)


def test_nginx_finds_the_socket_workers_by_name(nginx_conf: str) -> None:
    # Docker's DNS, asked again every few seconds: scaled workers join and leave without a reload.
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\s+valid=\d+s\b", nginx_conf, re.M)
    pool = _block(nginx_conf, r"upstream\s+notihub_sockets")
    servers = re.findall(r"^\s*server\s+(\S+)([^;]*);", pool, re.M)
    assert servers == [("socket:8200", " resolve max_fails=1 fail_timeout=5s")], servers
    assert re.search(r"^\s*zone\s+notihub_sockets\s", pool, re.M), "resolve needs a shared zone"
    # No list of workers anywhere, and no affinity that would pin clients by address.
    assert not re.search(r"\bsocket-w\d|notihub_w\d", nginx_conf)
    assert "ip_hash" not in nginx_conf and not re.search(r"^\s*hash\s", nginx_conf, re.M)
    sid_map = _block(nginx_conf, r"map\s+\$arg_sid\s+\$notihub_socket_upstream")
    assert re.search(r"^\s*default\s+notihub_sockets\s*;", sid_map, re.M)

    location = re.search(r"location\s+/socket\.io/\s*\{(.*?)\}", nginx_conf, re.S)
    assert location, "location /socket.io/ missing"
    for directive in (
        "proxy_pass http://$notihub_socket_upstream;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_buffering off;",
        # A draining worker answers new handshakes 503: nginx retries them on another one.
        "proxy_next_upstream error timeout http_503;",
    ):
        assert directive in location.group(1), directive
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", nginx_conf)
    assert re.search(r"client_max_body_size\s+4m\s*;", nginx_conf)
    assert re.search(r"listen\s+8080\s*;", nginx_conf)


class _Backend(http.server.ThreadingHTTPServer):
    """Answers every GET with the address it listens on: which worker a request reached."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = self.server.server_address[0].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    def __init__(self, address: str, port: int) -> None:
        super().__init__((address, port), self.Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def routing_nginx(tmp_path: Path, nginx_conf: str) -> Iterator[tuple[int, int]]:
    """deploy/nginx.conf's socket routing (its two maps, verbatim) in an nginx on loopback.

    Workers listen on 127.0.5.12 and 127.0.7.200 (the same port: the sid names the address),
    the pool for new handshakes on 127.0.9.9. nginx listens on 127.0.0.1 and on 127.1.0.1.
    Yields (nginx's port, the workers' port).
    """
    worker_port, port = free_port(), free_port()
    maps = re.findall(r"^    map \$(?:server_addr|arg_sid) .*?^    \}$", nginx_conf, re.S | re.M)
    assert len(maps) == 2, maps
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
        pid {tmp_path}/nginx.pid;
        error_log stderr notice;
        events {{}}
        http {{
            access_log off;
            client_body_temp_path {tmp_path}/client_body;
            proxy_temp_path {tmp_path}/proxy;
            fastcgi_temp_path {tmp_path}/fastcgi;
            uwsgi_temp_path {tmp_path}/uwsgi;
            scgi_temp_path {tmp_path}/scgi;
            upstream notihub_sockets {{ server 127.0.9.9:{worker_port}; }}
            {chr(10).join(maps).replace(":8200", f":{worker_port}")}
            server {{
                listen 127.0.0.1:{port};
                listen 127.1.0.1:{port};
                location /socket.io/ {{ proxy_pass http://$notihub_socket_upstream; }}
            }}
        }}
    """)
    backends = [_Backend(address, worker_port) for address in ("127.0.5.12", "127.0.7.200", "127.0.9.9")]
    nginx = subprocess.Popen(
        [nginx_binary(), "-p", str(tmp_path), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        # The master logs this once it listens: no polling.
        lines = []
        for line in nginx.stderr:
            lines.append(line)
            if "start worker process" in line:
                break
        else:
            pytest.fail("nginx did not start:\n" + "".join(lines), pytrace=False)
        yield port, worker_port
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
        nginx.stderr.close()
        for backend in backends:
            backend.shutdown()
            backend.server_close()


def _reached(url: str) -> str | int:
    """The address of the backend that answered, or nginx's own error status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code


def test_nginx_sends_a_session_to_the_worker_its_sid_names(
        routing_nginx: tuple[int, int], config: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    port, _ = routing_nginx
    code = _worker_id_code(config["services"][SOCKET_SERVICE])
    for address in ("127.0.5.12", "127.0.7.200"):
        # The id a container at that address gives itself (compose.yaml), as its sids start.
        sid = _worker_id(code, address, monkeypatch, capsys) + ".AbCdEf"
        for transport in ("polling", "websocket"):
            assert _reached(f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport={transport}&sid={sid}") == address
    # New handshakes, and sids of any other form, go to the pool.
    for query in ("EIO=4&transport=polling", "EIO=4&sid=w5.AbC", "EIO=4&sid=w005012AbC", "EIO=4&sid=x005012.AbC"):
        assert _reached(f"http://127.0.0.1:{port}/socket.io/?{query}") == "127.0.9.9", query
    # The first two octets are nginx's own: through 127.1.0.1 the same sid names 127.1.5.12,
    # where nothing listens, never 127.0.5.12.
    assert _reached(f"http://127.1.0.1:{port}/socket.io/?EIO=4&sid=w005012.AbC") == 502


def test_nginx_access_log_never_has_the_query_string(nginx_conf: str) -> None:
    formats = dict(re.findall(r"log_format\s+(\S+)\s+((?:'[^']*'\s*)+);", nginx_conf))
    assert formats, "no log_format found"
    for name, text in formats.items():
        found = FORBIDDEN_LOG_VARIABLES.findall(text)
        assert not found, f"log_format {name} logs {found}"
        assert "$request " not in text and "$request_uri" not in text and "$args" not in text
    assert "$request_method $uri $server_protocol" in formats["notihub"]
    # Every access log names one of these formats: the built-in "combined" has $request.
    access_logs = re.findall(r"access_log\s+([^;]+);", nginx_conf)
    assert access_logs, "no access_log directive"
    for args in access_logs:
        parts = args.split()
        if parts[0] == "off":
            continue
        assert len(parts) >= 2 and parts[1] in formats, f"access_log {args} uses a built-in format"


def test_nginx_errors_are_json(nginx_conf: str) -> None:
    pages = dict(re.findall(r"error_page\s+([\d\s]+?)\s*=\s*(@\w+)\s*;", nginx_conf))
    codes = {code: target for spec, target in pages.items() for code in spec.split()}
    assert set(codes) >= {"413", "502", "503", "504"}, codes
    for code, target in codes.items():
        # The JSON body has braces of its own: the block ends at a "}" on a line of its own.
        block = re.search(r"location\s+%s\s*\{(.*?)\n\s*\}" % re.escape(target), nginx_conf, re.S)
        assert block, f"location {target} missing"
        assert re.search(r"default_type\s+application/json\s*;", block.group(1))
        ret = re.search(r"return\s+(\d{3})\s+'([^']*)'\s*;", block.group(1))
        assert ret, f"location {target} returns no body"
        body = json.loads(ret.group(2))
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
        expected = "payload_too_large" if code == "413" else "unavailable"
        assert body["error"]["code"] == expected
        assert ret.group(1) == ("413" if code == "413" else "503")
