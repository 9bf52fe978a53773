"""Run one socket worker: python -m socket_server --port 8200 --worker-id w0."""
from __future__ import annotations

import argparse
import re

from shared import logs, metrics
from shared.settings import Settings, SettingsError
from shared.web import run

from .app import DRAINER, create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve Socket.IO until SIGINT, or SIGTERM and a drain."""
    parser = argparse.ArgumentParser(
        prog="python -m socket_server",
        description="notihub socket worker (Socket.IO namespace /notifications). "
        "Configuration comes from NOTIHUB_* environment variables (see README). "
        "Outside NOTIHUB_ENV=development it refuses to start with the built-in secrets.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8200, help="port to listen on (default 8200)")
    parser.add_argument("--worker-id", default="w0",
                        help="this worker's id, w<number>; session ids start with it so the load "
                        "balancer can route a session back to its worker (default w0)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"w[0-9]+", args.worker_id):
        parser.error("--worker-id must look like w0, w1, …")
    try:
        settings = Settings.from_env()
        logs.setup(settings.log_level, name=args.worker_id)
        settings.check_secrets()
    except SettingsError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    metrics.watch_gc()
    app = create_app(settings, worker_id=args.worker_id)
    app[DRAINER].install(app)
    run(app, host=args.host, port=args.port, event_loop=settings.event_loop)


if __name__ == "__main__":
    main()
