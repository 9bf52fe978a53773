"""A throwaway Redis Cluster on loopback: three masters and three replicas of Debian's redis-server.

Started with ``NOTIHUB_REDIS_MODE=cluster``: nodes on NOTIHUB_REDIS_PORT .. +5, their cluster bus
on NOTIHUB_REDIS_CLUSTER_BUS_PORT .. +5 (default: each port + 10000), joined by
``redis-cli --cluster create --cluster-replicas 1``. The application gets
``NOTIHUB_REDIS_URL=redis+cluster://127.0.0.1:P0,127.0.0.1:P1,...``.

For failure tests, ``kill_master`` SIGKILLs the master that owns a slot and returns once a
replica has taken its slots over; ``start_node`` brings the killed node back (it rejoins as a
replica of the new master, from its nodes.conf).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from devstack.process import ManagedProcess, wait_until
from devstack.redis_server import PUBSUB_BUFFER_LIMIT, answers_ping

log = logging.getLogger(__name__)

MASTERS = 3
NODES = 6
# How long a master may be unreachable before its replica is promoted: short, so that failure
# tests take seconds; production clusters keep Redis's 15 s or tune it to their network.
NODE_TIMEOUT_MS = 2000


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    done = subprocess.run([binary, "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli -p {port} {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class RedisCluster:
    """Six redis-server nodes in cluster mode, without persistence, bound to 127.0.0.1."""

    name = "redis-cluster"

    def __init__(self, *, ports: list[int], bus_ports: list[int], data_dir: str | os.PathLike[str],
                 log_dir: str | os.PathLike[str] | None = None) -> None:
        if len(ports) != NODES or len(bus_ports) != NODES:
            raise ValueError(f"a local cluster has {NODES} nodes")
        self.ports = list(ports)
        self.bus_ports = list(bus_ports)
        self.data_dir = Path(data_dir)
        log_dir = Path(log_dir) if log_dir else self.data_dir
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.nodes = {
            port: ManagedProcess(
                name=f"redis-{port}",
                argv=[
                    binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(bus),
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # A replica that lost its master for a while may still take over.
                    "--cluster-replica-validity-factor", "0",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.data_dir / str(port)),
                    "--client-output-buffer-limit", PUBSUB_BUFFER_LIMIT,
                ],
                log_path=log_dir / f"redis-{port}.log",
            )
            for port, bus in zip(ports, bus_ports)
        }

    @property
    def url(self) -> str:
        """Connection URL for clients: every node is a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def env(self) -> dict[str, str]:
        """Variables this service exports to the application processes."""
        return {"NOTIHUB_REDIS_URL": self.url}

    @property
    def processes(self) -> list[ManagedProcess]:
        return list(self.nodes.values())

    def start(self, timeout: float = 60.0) -> None:
        """Start the six nodes, join them (three masters, one replica each), wait until every
        slot is served."""
        for port, node in self.nodes.items():
            (self.data_dir / str(port)).mkdir(parents=True, exist_ok=True)
            node.start()
        for port, node in self.nodes.items():
            wait_until(lambda p=port: answers_ping(p), 15, f"redis PING on port {port}", process=node)
        if "cluster_state:ok" not in _cli(self.ports[0], "cluster", "info"):
            _cli(self.ports[0], "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                 "--cluster-replicas", "1", "--cluster-yes", timeout=timeout)
        wait_until(self.healthy, timeout, "every node of the Redis cluster to report cluster_state:ok")

    def healthy(self) -> bool:
        """Every running node sees all slots served and the six nodes joined."""
        try:
            for port, node in self.nodes.items():
                if not node.alive:
                    continue
                info = _cli(port, "cluster", "info", timeout=3)
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{NODES}" not in info:
                    return False
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Port of each live master -> the slot ranges it serves (as a live node sees it)."""
        port = next(p for p in self.ports if answers_ping(p))
        masters: dict[int, list[tuple[int, int]]] = {}
        for line in _cli(port, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            node_port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            ranges = [tuple(int(x) for x in r.split("-")) if "-" in r else (int(r), int(r))
                      for r in fields[8:] if not r.startswith("[")]
            if ranges:
                masters[node_port] = ranges  # type: ignore[assignment]
        return masters

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for port, ranges in self.masters().items():
            if any(lo <= slot <= hi for lo, hi in ranges):
                return port
        raise LookupError(f"no master serves slot {slot}")

    def kill_master(self, slot: int, timeout: float = 30.0) -> int:
        """SIGKILL the master serving ``slot``; return its port once a replica serves its slots."""
        port = self.master_of(slot)
        self.nodes[port].kill()
        log.info("killed the master of slot %d on port %d", slot, port)

        def promoted() -> bool:
            try:
                return self.master_of(slot) != port and self.healthy()
            except (LookupError, RuntimeError, subprocess.TimeoutExpired):
                return False

        wait_until(promoted, timeout, f"a replica to take over slot {slot} from port {port}")
        return port

    def start_node(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again; it rejoins the cluster (as a replica) from its nodes.conf."""
        self.nodes[port].start()
        wait_until(lambda: answers_ping(port), 15, f"redis PING on port {port}", process=self.nodes[port])
        wait_until(self.healthy, timeout, f"node {port} to rejoin the Redis cluster")

    def ping(self) -> bool:
        """Return True when every node answers PING."""
        return all(answers_ping(p) for p in self.ports)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node."""
        for node in self.nodes.values():
            node.stop(timeout)
