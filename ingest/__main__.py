"""Run one ingest worker: python -m ingest --worker-id i0 --port 8300."""
from __future__ import annotations

import argparse
import re

from shared import logs
from shared.settings import Settings
from shared.web import run

from .app import HandlerWrapper, create_app


def main(argv: list[str] | None = None, *, wrap_handler: HandlerWrapper | None = None) -> None:
    """Parse the command line and consume domain events until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="notihub ingest worker: consumes domain events from the Kafka topic notihub.events "
        "(consumer group notihub-ingest), notifies the right people, and parks bad records in "
        "notihub.events.dlq. Serves /healthz and /metrics. Configuration comes from NOTIHUB_* "
        "environment variables (see README); NOTIHUB_KAFKA_BOOTSTRAP is required.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address of /healthz and /metrics (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8300, help="port of /healthz and /metrics (default 8300)")
    parser.add_argument("--worker-id", default="i0", help="this worker's id, i<number> (default i0)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"i[0-9]+", args.worker_id):
        parser.error("--worker-id must look like i0, i1, …")
    settings = Settings.from_env()
    logs.setup(settings.log_level, name=args.worker_id)
    run(create_app(settings, worker_id=args.worker_id, wrap_handler=wrap_handler), host=args.host, port=args.port,
        event_loop=settings.event_loop)


if __name__ == "__main__":
    main()
