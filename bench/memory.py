"""Benchmark: memory of one socket worker per idle websocket connection.

    python -m bench.memory [--sockets 2500] [--variants deflate,shipped] [--tracemalloc]

Starts its own Redis and MongoDB replica set on free ports, then, for each variant, ONE socket
worker (python -m socket_server), and connects the real socket.io-client v4 (Node, from tests/js)
over websocket to /notifications with query ``token=<jwt>&content-language=en``, one user per
socket, as browsers do. The worker's RSS is read after a warm-up (sockets that stay connected)
and again once all sockets are connected, have their ``init`` and have idled past one Engine.IO
ping; the growth divided by the sockets added is the cost of one connection.

Variants, each a fresh worker in the same run:
  shipped  the worker as it is (socket_server/engine.py refuses permessage-deflate)
  deflate  the same worker accepting permessage-deflate, as python-engineio on aiohttp does by
           default (WebSocketResponse(compress=True)) and socket.io-client always offers it

--tracemalloc also traces the worker's Python allocations (which inflates its RSS) and prints
where the growth went, per connection, by allocation site.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path

from devstack.hub import REPO_ROOT, healthy
from devstack.mongo import MongoReplicaSet
from devstack.ports import free_port_run
from devstack.process import ManagedProcess, wait_until
from devstack.redis_server import RedisServer
from shared.settings import Settings
from shared.tokens import mint

from .delivery import rss_kib

JS_DIR = REPO_ROOT / "tests" / "js"
NAMESPACE = "/notifications"
VARIANTS = ("deflate", "shipped")
# Frames kept per traced allocation: enough to reach the library code that made a task or queue.
TRACE_FRAMES = 12

# The clients: one Node process, many socket.io-client sockets, each with its own connection.
# stdin/stdout are JSON lines: {"op":"open","group","tokens","lang","batch","timeout"} answers
# {"op":"opened",connected,failed,errors,deflate}; {"op":"count"} answers {"op":"count",connected};
# {"op":"exit"} disconnects everything and exits.
NODE_CLIENTS = r"""
const { createRequire } = require("node:module");
const { io } = createRequire(process.argv[1] + "/")("socket.io-client");
const url = process.argv[2];
const groups = new Map();
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const all = () => [...groups.values()].flat();

function open(token, lang, timeout) {
  return new Promise((resolve) => {
    const socket = io(url, { transports: ["websocket"], query: { token, "content-language": lang },
                             forceNew: true, reconnection: false, timeout });
    const timer = setTimeout(() => done("timeout"), timeout);
    function done(err) { clearTimeout(timer); resolve([socket, err]); }
    socket.once("init", () => done(null));
    socket.once("connect_error", (e) => done("connect_error: " + e.message));
    socket.once("disconnect", (reason) => done("disconnect: " + reason));
  });
}

require("node:readline").createInterface({ input: process.stdin }).on("line", async (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "open") {
    const sockets = [], errors = {};
    for (let i = 0; i < cmd.tokens.length; i += cmd.batch) {
      const batch = cmd.tokens.slice(i, i + cmd.batch).map((t) => open(t, cmd.lang, cmd.timeout));
      for (const [socket, err] of await Promise.all(batch)) {
        sockets.push(socket);
        if (err) errors[err] = (errors[err] || 0) + 1;
      }
    }
    groups.set(cmd.group, sockets);
    // What the server agreed to: ws exposes the negotiated extensions of its handshake.
    const deflate = sockets.filter((s) => {
      const ws = s.io.engine && s.io.engine.transport && s.io.engine.transport.ws;
      return ws && String(ws.extensions || "").includes("permessage-deflate");
    }).length;
    say({ op: "opened", group: cmd.group, connected: sockets.filter((s) => s.connected).length,
          failed: Object.values(errors).reduce((a, b) => a + b, 0), errors, deflate });
  } else if (cmd.op === "count") {
    say({ op: "count", connected: all().filter((s) => s.connected).length });
  } else if (cmd.op === "exit") {
    for (const s of all()) s.disconnect();
    say({ op: "exit" });
    setTimeout(() => process.exit(0), 200);
  }
});
say({ op: "ready" });
"""


def serve(argv: list[str] | None = None) -> None:
    """Run the socket worker for one variant (the benchmark starts this in a child process).

    argv: VARIANT TRACE_DIR|- then the arguments of python -m socket_server.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    variant, trace_dir, rest = argv[0], argv[1], argv[2:]
    from socket_server import engine

    if variant == "deflate":
        engine.WorkerEngine.websocket_compression = True
    if trace_dir != "-":
        tracemalloc.start(TRACE_FRAMES)
        taken = [0]

        def snapshot(signum, frame) -> None:
            # Written to a temporary name first: the benchmark waits for the final one.
            taken[0] += 1
            path = Path(trace_dir) / f"snap{taken[0]}.tracemalloc"
            tracemalloc.take_snapshot().dump(str(path) + ".part")
            os.replace(str(path) + ".part", path)

        signal.signal(signal.SIGUSR1, snapshot)
    from socket_server.__main__ import main as worker_main

    worker_main(rest)




def sockets_metric(url: str) -> float | None:
    """The worker's own count of open sockets (notihub_sockets_connected)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    for line in text.splitlines():
        if line.startswith("notihub_sockets_connected "):
            return float(line.split()[-1])
    return None


class NodeClients:
    """The Node process that owns every client socket of one run."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "NodeClients":
        self.proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node", "-e", NODE_CLIENTS, str(JS_DIR), self.url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**20, cwd=JS_DIR)
        await self._reply("ready", 30)
        return self

    async def _reply(self, op: str, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("the Node clients exited")
                msg = json.loads(line)
                if msg.get("op") == op:
                    return msg

    async def command(self, cmd: dict, reply: str, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._reply(reply, timeout)

    async def open(self, group: str, tokens: list[str], *, batch: int, timeout_s: float) -> dict:
        return await self.command({"op": "open", "group": group, "tokens": tokens, "lang": "en",
                                   "batch": batch, "timeout": int(timeout_s * 1000)},
                                  "opened", timeout_s * (len(tokens) // batch + 2))

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.command({"op": "exit"}, "exit", 10)
        with contextlib.suppress(ProcessLookupError):
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                os.kill(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


async def measure(variant: str, *, env: dict[str, str], settings: Settings, state: Path, sockets: int,
                  warmup: int, batch: int, settle: float, trace: bool) -> dict:
    """Start a worker for ``variant``, connect the clients and return its figures."""
    port = free_port_run(1)
    trace_dir = state / f"trace-{variant}"
    if trace:
        trace_dir.mkdir()
    worker = ManagedProcess(
        name=f"w0-{variant}",
        argv=[sys.executable, "-c", "import bench.memory as m; m.serve()", variant,
              str(trace_dir) if trace else "-", "--host", "127.0.0.1", "--port", str(port), "--worker-id", "w0"],
        env=env, log_path=state / f"w0-{variant}.log", cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    worker.start()
    try:
        wait_until(lambda: healthy(url + "/healthz"), 60, f"worker {variant} /healthz", process=worker)
        pid = worker.pid
        assert pid is not None
        tokens = [mint(settings, sub=f"mem-{variant}-{i}", ttl=24 * 3600) for i in range(sockets)]

        async def snapshot(n: int) -> Path | None:
            if not trace:
                return None
            os.kill(pid, signal.SIGUSR1)
            path = trace_dir / f"snap{n}.tracemalloc"
            deadline = time.monotonic() + 300
            while not path.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no tracemalloc snapshot from the worker ({path})")
                await asyncio.sleep(0.5)
            return path

        async with NodeClients(url + NAMESPACE) as clients:
            warm = await clients.open("warm", tokens[:warmup], batch=batch, timeout_s=60)
            await asyncio.sleep(5)
            rss_warm = rss_kib(pid)
            snap_warm = await snapshot(1)
            began = time.monotonic()
            bulk = await clients.open("main", tokens[warmup:], batch=batch, timeout_s=60)
            connect_s = time.monotonic() - began
            # Idle past one Engine.IO ping (25 s) so every connection has sent and received one.
            await asyncio.sleep(settle)
            rss_full = rss_kib(pid)
            snap_full = await snapshot(2)
            alive = (await clients.command({"op": "count"}, "count", 30))["connected"]
            open_on_server = sockets_metric(url)
    finally:
        # SIGINT skips the drain (socket_server/drain.py): nothing is left to move.
        worker.signal(signal.SIGINT)
        if not worker.wait(30):
            worker.kill()
    added = bulk["connected"]
    return {
        "variant": variant, "warm": warm, "main": bulk, "alive": alive, "server_sockets": open_on_server,
        "rss_warm": rss_warm, "rss_full": rss_full, "added": added, "connect_s": connect_s,
        "per_conn": (rss_full - rss_warm) / max(1, added), "snaps": (snap_warm, snap_full),
    }


def breakdown(result: dict, top: int) -> None:
    """Print where the traced Python heap grew, per added connection, by owner.

    The owner of an allocation is the innermost frame of its traceback outside the standard
    library, so that a task or a queue counts for the code that created it."""
    before, after = (tracemalloc.Snapshot.load(str(p)) for p in result["snaps"])
    n = max(1, result["added"])
    sites: dict[str, list[int]] = {}
    packages: dict[str, int] = {}
    for stat in after.compare_to(before, "traceback"):
        frame = _owner(stat.traceback)
        site = f"{_short(frame.filename)}:{frame.lineno}"
        sizes = sites.setdefault(site, [0, 0])
        sizes[0] += stat.size_diff
        sizes[1] += stat.count_diff
        packages[_package(frame.filename)] = packages.get(_package(frame.filename), 0) + stat.size_diff
    total = sum(size for size, _ in sites.values())
    print(f"\n[{result['variant']}] traced Python heap growth {total / n / 1024:.1f} KiB per connection "
          f"(RSS growth {result['per_conn']:.1f} KiB, inflated by tracing); by owner:")
    print(f"  {'KiB/conn':>8} {'blocks/conn':>11}  owner (innermost frame outside the standard library)")
    for site, (size, count) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {size / n / 1024:8.2f} {count / n:11.1f}  {site}")
    print("  by package (KiB/conn): " + ", ".join(
        f"{k} {v / n / 1024:.1f}" for k, v in sorted(packages.items(), key=lambda kv: -kv[1]) if v / n >= 100))


def _owner(traceback: tracemalloc.Traceback) -> tracemalloc.Frame:
    stdlib = os.path.dirname(os.__file__)
    for frame in reversed(traceback):  # most recent first
        if not frame.filename.startswith(stdlib) or "site-packages" in frame.filename:
            return frame
    return traceback[-1]


def _short(filename: str) -> str:
    for marker in ("site-packages/", os.path.dirname(os.__file__) + "/", str(REPO_ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _package(filename: str) -> str:
    short = _short(filename)
    return short.split("/", 1)[0] if "/" in short else short


async def run(args: argparse.Namespace, env: dict[str, str], settings: Settings, state: Path) -> None:
    results = []
    for variant in args.variants:
        results.append(await measure(variant, env=env, settings=settings, state=state, sockets=args.sockets,
                                     warmup=args.warmup, batch=args.batch, settle=args.settle,
                                     trace=args.tracemalloc))
    print(f"\nnotihub socket worker memory: 1 worker, {args.sockets} idle websocket clients "
          f"(socket.io-client v4, Node), {os.cpu_count()} cores"
          + (", tracemalloc on (RSS inflated)" if args.tracemalloc else ""))
    print(f"{'variant':<9} {'deflate':>8} {'clients':>8} {'failed':>6} {'alive':>6} {'server':>6} "
          f"{'connect':>8} {'RSS warm':>9} {f'RSS @{args.sockets}':>10} {'KiB/conn':>9}")
    for r in results:
        clients = r["warm"]["connected"] + r["main"]["connected"]
        failed = r["warm"]["failed"] + r["main"]["failed"]
        deflate = r["warm"]["deflate"] + r["main"]["deflate"]
        server = "?" if r["server_sockets"] is None else f"{r['server_sockets']:.0f}"
        print(f"{r['variant']:<9} {deflate:>8} {clients:>8} {failed:>6} {r['alive']:>6} {server:>6} "
              f"{r['connect_s']:7.1f}s {r['rss_warm'] / 1024:8.1f}M {r['rss_full'] / 1024:9.1f}M "
              f"{r['per_conn']:9.1f}")
        errors = {**r["warm"]["errors"], **r["main"]["errors"]}
        if errors:
            print(f"          errors: {errors}")
    print("deflate: sockets whose handshake negotiated permessage-deflate; KiB/conn: RSS growth from "
          f"after {args.warmup} warm-up sockets to all of them, per socket added")
    if args.tracemalloc:
        for r in results:
            breakdown(r, args.top)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=2500, help="idle sockets on the worker (default 2500)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="sockets connected before the first reading, part of --sockets (default 100)")
    parser.add_argument("--batch", type=int, default=50, help="sockets connecting at once (default 50)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds idle before the second reading (default 30, past one ping)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, run in this order (default {','.join(VARIANTS)})")
    parser.add_argument("--tracemalloc", action="store_true", help="also print a tracemalloc breakdown")
    parser.add_argument("--top", type=int, default=15, help="allocation sites in the breakdown (default 15)")
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if not 0 < args.warmup < args.sockets:
        parser.error("--warmup must be between 0 and --sockets")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir() or shutil.which("node") is None:
        parser.error("needs node and `npm ci` in tests/js")
    ports = free_port_run(4)
    with tempfile.TemporaryDirectory(prefix="notihub-membench-") as tmp, contextlib.ExitStack() as stack:
        state = Path(tmp)
        redis = RedisServer(port=ports, data_dir=state / "redis", log_path=state / "redis.log")
        redis.start()
        stack.callback(redis.stop)
        mongo = MongoReplicaSet(ports=[ports + 1, ports + 2, ports + 3], data_dir=state / "mongo", log_dir=state)
        mongo.start()
        stack.callback(mongo.stop)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIHUB_")}
        env.update(redis.env)
        env.update(mongo.env)
        env.update({"NOTIHUB_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
                    "NOTIHUB_JWT_SECRET": "bench-memory-secret-0123456789-0123456789-0123456789",
                    "NOTIHUB_SERVICE_KEYS": "bench-memory-service-key"})
        settings = Settings.from_env(env)
        asyncio.run(run(args, env, settings, state))


if __name__ == "__main__":
    main()
