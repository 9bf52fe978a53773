"""Command line: python -m devstack {run,install-system,install-kafka}."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from devstack.kafka import KAFKA_VERSION, ensure_kafka_libs
from devstack.stack import Stack
from devstack.system import install_system

log = logging.getLogger("devstack")

DEFAULT_SERVICE_KEY = "notihub-local-service-key"
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
# A process that stayed up this long is considered healthy again: its backoff resets.
BACKOFF_RESET_AFTER = 60.0

EPILOG = """\
environment (all optional):
  NOTIHUB_STATE_DIR          data and logs (default: ./.notihub)
  NOTIHUB_PUBLIC_PORT        nginx, the one public entry (default 8080)
  NOTIHUB_API_PORT           API server (default 8100)
  NOTIHUB_SOCKET_WORKERS     number of socket workers (default 2)
  NOTIHUB_SOCKET_BASE_PORT   worker i listens on base+i (default 8200)
  NOTIHUB_REDIS_PORT         local Redis (default 6390)
  NOTIHUB_REDIS_MODE=cluster a local Redis Cluster instead: 3 masters and 3 replicas on
                             NOTIHUB_REDIS_PORT..+5, cluster bus on
                             NOTIHUB_REDIS_CLUSTER_BUS_PORT..+5 (default: each port + 10000)
  NOTIHUB_MONGO_BASE_PORT    local replica set on base..base+2 (default 27117)
  NOTIHUB_MONGO_DELAYED_SECS make member 2 a delayed, non-voting secondary
  NOTIHUB_KAFKA_PORT         local Kafka broker (default 9092)
  NOTIHUB_KAFKA_CONTROLLER_PORT
                             its KRaft controller listener (default 9093)
  NOTIHUB_KAFKA_HEAP         its JVM heap (default 512m)
  NOTIHUB_KAFKA=off          no Kafka at all: no local broker, no ingest workers, and
                             NOTIHUB_KAFKA_BOOTSTRAP is not passed to the application
  NOTIHUB_KAFKA_LIBS         Kafka jar cache (default ~/.cache/notihub/kafka-<version>/libs)
  NOTIHUB_INGEST_WORKERS     number of ingest workers, when the repo has ingest/ (default 1)
  NOTIHUB_INGEST_BASE_PORT   ingest worker i serves /healthz on base+i (default 8300)
  NOTIHUB_DRAIN_SECONDS      a socket worker drains this long after SIGTERM; stopping it
                             waits that plus 10 s before SIGKILL (default 10)
  NOTIHUB_REDIS_URL / NOTIHUB_MONGO_URL / NOTIHUB_KAFKA_BOOTSTRAP
                             use these services instead of starting local ones
  NOTIHUB_ENV                the processes run with NOTIHUB_ENV=development unless it is set:
                             built-in secrets accepted, /metrics open to anyone, any origin
application settings (NOTIHUB_JWT_SECRET, rate limits, CORS, ...): see the README, "Configuration"
"""


class _Stop(BaseException):
    """Raised from the signal handler to abort start-up or leave the supervision loop."""


def _banner(stack: Stack) -> str:
    key = (os.environ.get("NOTIHUB_SERVICE_KEYS") or DEFAULT_SERVICE_KEY).split(",")[0].strip()
    url = stack.public_url
    ingest = "".join(f"\n  ingest         {i}={u}" for i, u in stack.ingest_urls.items())
    return f"""
notihub is running
  public entry   {url}
  API docs       {url}/docs
  dashboard      {url}/dashboard/
  Socket.IO      {url}/socket.io/  (namespace /notifications)
  workers        {", ".join(f"{w}={u}" for w, u in stack.worker_urls.items())}
  MongoDB        {stack.mongo_url}
  Redis          {stack.redis_url}
  Kafka          {stack.kafka_bootstrap or "off"}{ingest}
  logs           {stack.log_dir}

mint a user token:
  .venv/bin/python -m shared.devtoken --sub u1 --name Kim --roles instructor

send a notification:
  curl -sS -X POST {url}/v1/notifications \\
    -H "Authorization: Bearer ${{NOTIHUB_SERVICE_KEY:-{key}}}" \\
    -H "Content-Type: application/json" \\
    -d '{{"recipients": ["u1"], "type": "comment.created", "title": "Hello from curl"}}'

Ctrl-C stops everything.
"""


def _supervise(stack: Stack, wakeup_fd: int) -> None:
    """Block until SIGINT/SIGTERM; restart the API, a socket or ingest worker that dies, with capped backoff."""
    backoff: dict[str, float] = {}
    reported: set[int] = set()
    due: dict[str, float] = {}
    last_start: dict[str, float] = {}
    while True:
        now = time.monotonic()
        for name in stack.dead_app_processes():
            if name not in due:
                if now - last_start.get(name, 0.0) > BACKOFF_RESET_AFTER:
                    backoff[name] = BACKOFF_START
                delay = backoff.get(name, BACKOFF_START)
                due[name] = now + delay
                backoff[name] = min(delay * 2, BACKOFF_MAX)
                log.warning("%s exited unexpectedly; restarting in %.0fs", name, delay)
        for name, when in sorted(due.items(), key=lambda kv: kv[1]):
            if when <= now:
                del due[name]
                last_start[name] = time.monotonic()
                try:
                    stack.restart_app_process(name)
                    log.warning("%s restarted", name)
                except (RuntimeError, TimeoutError) as exc:
                    log.error("restarting %s failed: %s", name, exc)
        # Backing services are not restarted (their data would be lost or diverge); say so once.
        for proc in stack.all_processes():
            if proc.pid is not None and not proc.alive and proc.name not in stack.app_process_names() \
                    and proc.pid not in reported:
                reported.add(proc.pid)
                log.error("%s (pid %s) exited with code %s; see %s", proc.name, proc.pid, proc.returncode, proc.log_path)
        # Sleep until a signal arrives (SIGCHLD when a child exits, or SIGINT/SIGTERM) or the
        # next restart is due: the wakeup fd makes this event-driven rather than polling.
        timeout = max(0.0, min(due.values()) - time.monotonic()) if due else None
        select.select([wakeup_fd], [], [], timeout)
        try:
            while os.read(wakeup_fd, 512):
                pass
        except BlockingIOError:
            pass


def cmd_run(args: argparse.Namespace) -> int:
    """Start the stack, print where things are, supervise until SIGINT/SIGTERM, stop it."""
    state_dir = Path(os.environ.get("NOTIHUB_STATE_DIR") or ".notihub")
    try:
        stack = Stack(state_dir=state_dir, env={k: v for k, v in os.environ.items() if k.startswith("NOTIHUB_")})
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2

    stopping = False

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        # While stopping, further signals are ignored so the shutdown itself is not cut short.
        if not stopping:
            raise _Stop(signal.Signals(signum).name)

    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    # A Python-level handler (even a no-op) makes a child's exit wake the supervision loop.
    signal.signal(signal.SIGCHLD, lambda *_: None)

    code = 0
    try:
        log.info("starting the stack in %s", stack.state_dir)
        stack.start()
        print(_banner(stack), flush=True)
        _supervise(stack, rfd)
    except _Stop as exc:
        log.info("received %s, stopping", exc)
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        log.error("the stack failed to start: %s", exc)
        code = 1
    finally:
        stopping = True
        stack.stop()
        log.info("stopped")
    return code


def cmd_install_system(args: argparse.Namespace) -> int:
    """Install the Debian packages the stack needs, when missing, then the Kafka jars."""
    installed = install_system()
    print("installed: " + ", ".join(installed) if installed else "system packages already present")
    if (os.environ.get("NOTIHUB_KAFKA") or "").strip().lower() == "off":
        print("NOTIHUB_KAFKA=off: Kafka jars not fetched")
        return 0
    return cmd_install_kafka(args)


def cmd_install_kafka(args: argparse.Namespace) -> int:
    """Download Apache Kafka and its runtime jars from Maven Central into the cache, when missing."""
    try:
        libs = ensure_kafka_libs()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log.error("fetching the Kafka jars failed: %s", exc)
        return 1
    print(f"Kafka {KAFKA_VERSION} jars in {libs}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Install and run the local notihub stack: Redis, a 3-member MongoDB replica "
        "set, a Kafka broker, the API server, the socket workers, the ingest workers and nginx as "
        "the public entry.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="start the stack and keep it running until Ctrl-C",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.set_defaults(func=cmd_run)
    inst = sub.add_parser(
        "install-system",
        help="apt-get install redis-server, nginx-light, Java 17 and Maven when missing, then fetch the Kafka jars",
    )
    inst.set_defaults(func=cmd_install_system)
    kafka = sub.add_parser("install-kafka", help=f"fetch Kafka {KAFKA_VERSION} and its jars from Maven Central when missing")
    kafka.set_defaults(func=cmd_install_kafka)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pymongo's debug chatter is noise here even with -v.
    logging.getLogger("pymongo").setLevel(logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
