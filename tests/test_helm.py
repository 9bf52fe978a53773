"""The Helm chart deploy/helm/notihub, rendered and validated offline.

`helm lint` and `helm template` render the chart with its default values and with
ci/external-redis-cluster-values.yaml (an existing Secret with keys of its own, a Redis Cluster
URL, several Kafka brokers, TLS). `kubeconform -strict` validates every rendered object against
the Kubernetes JSON schemas of the oldest and the newest supported Kubernetes, and the tests
then read the objects themselves. Nothing reaches a cluster or the network: `make install`
builds .venv/bin/helm and .venv/bin/kubeconform from tools/helmcheck/go.mod and unpacks the
schemas into .venv/share/kubernetes-json-schema (tools/helmcheck/k8s_schemas.py).
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "notihub"
PRODUCTION_VALUES = CHART / "ci" / "external-redis-cluster-values.yaml"
BIN = ROOT / ".venv" / "bin"
SCHEMAS = ROOT / ".venv" / "share" / "kubernetes-json-schema"
SCHEMA_LOCATION = str(SCHEMAS) + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas
# (the versions tools/helmcheck/k8s_schemas.py unpacks).
KUBE_VERSIONS = ("1.25.0", "1.37.0")
RELEASE = "hub"
NAMESPACE = "notifications"

VALUE_SETS = {"defaults": (), "external-redis-cluster": ("-f", str(PRODUCTION_VALUES))}
SECRET_VARIABLES = ("NOTIHUB_JWT_SECRET", "NOTIHUB_SERVICE_KEYS", "NOTIHUB_METRICS_KEY",
                    "NOTIHUB_MONGO_URL", "NOTIHUB_REDIS_URL")
# The processes as the Dockerfile and compose.yaml start them: module, port.
COMPONENTS = {"api": ("api_server", 8100), "socket": ("socket_server", 8200), "ingest": ("ingest", 8300)}


@functools.cache
def _tool(name: str) -> str:
    path = BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: `make install` builds it from tools/helmcheck (needs the Go "
                    "toolchain)", pytrace=False)
    return str(path)


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's cache, configuration and data folders in a temporary place, never under $HOME."""
    home = tmp_path_factory.mktemp("helm")
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data")}


def _helm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("helm"), *args], env=env, capture_output=True, text=True, timeout=120)


def _template(env: dict[str, str], *args: str, kube_version: str = KUBE_VERSIONS[-1]) -> subprocess.CompletedProcess[str]:
    return _helm(env, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                 "--kube-version", kube_version, *args)


def _objects(manifest: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The rendered objects by (kind, name)."""
    objects = {}
    for doc in yaml.safe_load_all(manifest):
        if doc:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} rendered twice"
            objects[key] = doc
    return objects


def _render(env: dict[str, str], *args: str) -> dict[tuple[str, str], dict[str, Any]]:
    result = _template(env, *args)
    assert result.returncode == 0, result.stderr
    return _objects(result.stdout)


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, helm_env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return _render(helm_env, *VALUE_SETS[request.param])


@pytest.fixture(scope="module")
def defaults(helm_env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return _render(helm_env)


@pytest.fixture(scope="module")
def production(helm_env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return _render(helm_env, *VALUE_SETS["external-redis-cluster"])


def _name(component: str) -> str:
    return f"{RELEASE}-notihub-{component}"


def _pod(objects: dict, component: str) -> dict[str, Any]:
    return objects[("Deployment", _name(component))]["spec"]["template"]


def _container(objects: dict, component: str) -> dict[str, Any]:
    (container,) = _pod(objects, component)["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [item["name"] for item in container["env"]]
    assert len(names) == len(set(names)), f"duplicate variables: {names}"
    return {item["name"]: item for item in container["env"]}


def _values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint(helm_env: dict[str, str], values: str) -> None:
    result = _helm(helm_env, "lint", str(CHART), "--strict", *VALUE_SETS[values])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def _kubeconform(manifest: str, kube_version: str) -> dict[str, Any]:
    """kubeconform -strict's JSON report of a manifest."""
    schemas = SCHEMAS / f"v{kube_version}-local-strict"
    if not (schemas / "deployment-apps-v1.json").is_file():
        pytest.fail(f"no Kubernetes {kube_version} schemas in {schemas}: `make install` unpacks them",
                    pytrace=False)
    result = subprocess.run(
        [_tool("kubeconform"), "-strict", "-summary", "-output", "json", "-kubernetes-version", kube_version,
         "-schema-location", SCHEMA_LOCATION, "-"],
        input=manifest, capture_output=True, text=True, timeout=120,
    )
    report = json.loads(result.stdout)
    report["returncode"] = result.returncode
    return report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_kubeconform_strict(helm_env: dict[str, str], values: str, kube_version: str) -> None:
    result = _template(helm_env, *VALUE_SETS[values], kube_version=kube_version)
    assert result.returncode == 0, result.stderr
    count = len(_objects(result.stdout))
    report = _kubeconform(result.stdout, kube_version)
    assert report["returncode"] == 0, json.dumps(report["resources"], indent=2)
    # Every object was checked against a schema: none skipped for want of one.
    assert report["summary"] == {"valid": count, "invalid": 0, "errors": 0, "skipped": 0}, report


def test_kubeconform_rejects_what_kubernetes_would(helm_env: dict[str, str]) -> None:
    """The schemas are really applied: an unknown field and a wrong type are both reported."""
    result = _template(helm_env)
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
        if doc["kind"] == "PodDisruptionBudget":
            doc["spec"]["selector"]["matchLabels"] = ["not", "a", "map"]
    report = _kubeconform(yaml.safe_dump_all(docs), KUBE_VERSIONS[-1])
    assert report["returncode"] != 0
    invalid = {(r["kind"], r["status"]) for r in report["resources"]}
    assert ("Deployment", "statusInvalid") in invalid and ("PodDisruptionBudget", "statusInvalid") in invalid
    assert any("periodSecond" in r["msg"] for r in report["resources"] if r["kind"] == "Deployment")


def test_components_run_like_compose(rendered: dict) -> None:
    assert {kind for kind, _ in rendered} == {
        "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress"}
    for component, (module, port) in COMPONENTS.items():
        pod = _pod(rendered, component)
        container = _container(rendered, component)
        command = container["command"]
        if component == "api":
            assert command == ["python", "-m", "api_server", "--host", "0.0.0.0", "--port", "8100"]
        else:
            # One command for every pod; `exec` keeps python as PID 1, so that SIGTERM reaches it.
            assert command[:2] == ["/bin/sh", "-c"], command
            assert command[2].startswith(f"exec python -m {module} --host 0.0.0.0 --port {port} --worker-id "), command
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        labels = pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == component
        assert labels["app.kubernetes.io/instance"] == RELEASE
        selector = rendered[("Deployment", _name(component))]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        # The image's unprivileged user (Dockerfile), on a read-only root filesystem.
        security = pod["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False
    # Nothing routes to the ingest workers.
    assert ("Service", _name("ingest")) not in rendered
    for component in ("api", "socket"):
        service = rendered[("Service", _name(component))]
        assert service["spec"]["selector"].items() <= _pod(rendered, component)["metadata"]["labels"].items()
        assert service["spec"]["ports"] == [{"name": "http", "port": COMPONENTS[component][1],
                                             "targetPort": "http", "protocol": "TCP"}]


def test_image_comes_from_values(defaults: dict, production: dict) -> None:
    chart = _values(CHART / "Chart.yaml")
    prod = _values(PRODUCTION_VALUES)["image"]
    for component in COMPONENTS:
        assert _container(defaults, component)["image"] == f"notihub:{chart['appVersion']}"
        assert _container(production, component)["image"] == f"{prod['repository']}:{prod['tag']}"
        assert _container(production, component)["imagePullPolicy"] == prod["pullPolicy"]


@pytest.mark.parametrize("component,prefix", [("socket", "w"), ("ingest", "i")])
def test_worker_ids_come_from_the_pod_ip(defaults: dict, component: str, prefix: str) -> None:
    """Every pod runs the same command; its id (w<number>, i<number>) is unique per pod IP."""
    container = _container(defaults, component)
    pod_ip = _env(container)["POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    match = re.search(r'--worker-id "%s\$\(python -c \'([^\']+)\'\)"$' % prefix, container["command"][2])
    assert match, container["command"][2]
    ids = {}
    for address in ("10.244.1.17", "10.244.11.7", "10.24.41.17", "fd00:10:244::1a"):
        result = subprocess.run([sys.executable, "-c", match.group(1)], env={"POD_IP": address},
                                capture_output=True, text=True, timeout=30, check=True)
        worker_id = prefix + result.stdout.strip()
        # What `python -m socket_server` / `python -m ingest` accept as --worker-id.
        assert re.fullmatch(prefix + r"[0-9]+", worker_id), worker_id
        assert int(worker_id[1:]) == int(ipaddress.ip_address(address))
        ids[address] = worker_id
    assert len(set(ids.values())) == len(ids), ids


def test_environment(rendered: dict, production: dict) -> None:
    for component in COMPONENTS:
        env = _env(_container(rendered, component))
        assert env["NOTIHUB_ENV"] == {"name": "NOTIHUB_ENV", "value": "production"}
        for name in SECRET_VARIABLES:
            assert set(env[name]) == {"name", "valueFrom"}, f"{component}: {name} is not from the Secret"
        # The socket workers never talk to Kafka (as in compose.yaml).
        assert ("NOTIHUB_KAFKA_BOOTSTRAP" in env) == (component != "socket"), component
        for item in env.values():
            assert "value" not in item or isinstance(item["value"], str), item

    values = _values(PRODUCTION_VALUES)
    for component in COMPONENTS:
        env = _env(_container(production, component))
        for name in SECRET_VARIABLES:
            assert env[name]["valueFrom"] == {"secretKeyRef": {
                "name": values["existingSecret"], "key": values["secretKeys"][name]}}, name
        assert env["NOTIHUB_MONGO_DB"]["value"] == values["mongodb"]["database"]
        assert env["NOTIHUB_RETENTION_DAYS"]["value"] == "30"
        assert env["NOTIHUB_DEFAULT_LANG"]["value"] == "ko"
        if component != "socket":
            assert env["NOTIHUB_KAFKA_BOOTSTRAP"]["value"] == values["kafka"]["bootstrap"]
    assert _env(_container(production, "socket"))["NOTIHUB_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == \
        "redis-cluster-url"


def test_prometheus_scrapes_every_pod(rendered: dict) -> None:
    for component, (_, port) in COMPONENTS.items():
        annotations = _pod(rendered, component)["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_socket_workers_drain_before_they_are_killed(rendered: dict) -> None:
    pod = _pod(rendered, "socket")
    container = _container(rendered, "socket")
    drain = int(_env(container)["NOTIHUB_DRAIN_SECONDS"]["value"])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    # SIGTERM, the drain, then aiohttp's shutdown: SIGKILL must come later (as in compose.yaml).
    assert grace > drain and grace >= drain + 10, (grace, drain)
    # A draining worker answers 503 on /healthz: it leaves the Service at once.
    readiness = container["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/healthz", "port": "http"}
    assert readiness.get("failureThreshold", 3) == 1
    # Liveness must not kill a worker for draining.
    assert "httpGet" not in container["livenessProbe"], container["livenessProbe"]
    # A rolling update adds a worker before it drains one.
    strategy = rendered[("Deployment", _name("socket"))]["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    for component in ("api", "ingest"):
        probe = _container(rendered, component)["readinessProbe"]
        assert probe["httpGet"] == {"path": "/healthz", "port": "http"}


def test_socket_workers_have_a_disruption_budget_and_an_autoscaler(rendered: dict) -> None:
    pod_labels = _pod(rendered, "socket")["metadata"]["labels"]
    pdb = rendered[("PodDisruptionBudget", _name("socket"))]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = rendered[("HorizontalPodAutoscaler", _name("socket"))]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": _name("socket")}
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Scaling down closes every socket of a pod: one pod at a time.
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    # The autoscaler owns the replica count; CPU utilisation needs a CPU request.
    assert "replicas" not in rendered[("Deployment", _name("socket"))]["spec"]
    assert _container(rendered, "socket")["resources"]["requests"]["cpu"]


def test_without_autoscaling_the_replicas_are_fixed(helm_env: dict[str, str]) -> None:
    objects = _render(helm_env, "--set", "socket.autoscaling.enabled=false", "--set", "socket.replicas=5")
    assert ("HorizontalPodAutoscaler", _name("socket")) not in objects
    assert objects[("Deployment", _name("socket"))]["spec"]["replicas"] == 5


def test_ingress_routes_sockets_sticky_and_the_rest_to_the_api(rendered: dict, production: dict) -> None:
    sockets = rendered[("Ingress", _name("socket"))]
    api = rendered[("Ingress", _name("api"))]
    for ingress, path, service in ((sockets, "/socket.io/", _name("socket")), (api, "/", _name("api"))):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        (rule,) = ingress["spec"]["rules"]
        (route,) = rule["http"]["paths"]
        assert route == {"path": path, "pathType": "Prefix",
                         "backend": {"service": {"name": service, "port": {"name": "http"}}}}
    annotations = sockets["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "affinity"] == "cookie"
    assert annotations[prefix + "affinity-mode"] == "persistent"
    assert annotations[prefix + "session-cookie-name"]
    assert annotations[prefix + "session-cookie-path"] == "/socket.io/"
    assert int(annotations[prefix + "proxy-read-timeout"]) >= 3600
    assert int(annotations[prefix + "proxy-send-timeout"]) >= 3600
    assert annotations[prefix + "proxy-buffering"] == "off"
    assert "http_503" in annotations[prefix + "proxy-next-upstream"].split()
    # Only the socket path is sticky.
    assert not any(key.startswith(prefix + "affinity") for key in api["metadata"]["annotations"])
    assert api["metadata"]["annotations"][prefix + "proxy-body-size"] == "4m"

    values = _values(PRODUCTION_VALUES)["ingress"]
    for component in ("socket", "api"):
        spec = production[("Ingress", _name(component))]["spec"]
        assert spec["rules"][0]["host"] == values["host"]
        assert spec["tls"] == [{"secretName": values["tls"][0]["secretName"], "hosts": [values["host"]]}]
    annotations = production[("Ingress", _name("socket"))]["metadata"]["annotations"]
    assert annotations[prefix + "session-cookie-name"] == values["affinityCookie"]["name"]
    assert annotations[prefix + "session-cookie-samesite"] == "None"


def test_ingest_workers_bounded_by_partitions(helm_env: dict[str, str]) -> None:
    objects = _render(helm_env, "--set", "ingest.replicas=3", "--set", "ingest.partitions=3")
    assert objects[("Deployment", _name("ingest"))]["spec"]["replicas"] == 3
    result = _template(helm_env, "--set", "ingest.replicas=4", "--set", "ingest.partitions=3")
    assert result.returncode != 0
    assert "ingest.replicas (4) is more than ingest.partitions (3)" in result.stderr, result.stderr
    assert _template(helm_env, "--set", "ingest.enabled=false", "--set", "ingest.replicas=4").returncode == 0


@pytest.mark.parametrize("args,message", [
    (("--set", "socket.drainSeconds=30"), "socket.terminationGracePeriodSeconds (30) must be at least "
                                          "socket.drainSeconds (30) + 10"),
    (("--set", "existingSecret="), "existingSecret must name the Secret"),
    (("--set", "secretKeys.NOTIHUB_REDIS_URL="), "secretKeys.NOTIHUB_REDIS_URL must name the key"),
    (("--set", "kafka.bootstrap="), "kafka.bootstrap must list the Kafka brokers"),
])
def test_bad_values_fail_with_a_message(helm_env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    result = _template(helm_env, *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
