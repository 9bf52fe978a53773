"""Run the HTTP API: python -m api_server --host 127.0.0.1 --port 8100."""
from __future__ import annotations

import argparse

from shared import logs
from shared.settings import Settings
from shared.web import run

from .app import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the API until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m api_server",
        description="notihub HTTP API. Configuration comes from NOTIHUB_* environment variables (see README).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8100, help="port to listen on (default 8100)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logs.setup(settings.log_level, name="api")
    settings.warn_if_local()
    run(create_app(settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
