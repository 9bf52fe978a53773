"""Run the HTTP API: python -m api_server --host 127.0.0.1 --port 8100."""
from __future__ import annotations

import argparse

from shared import logs
from shared.settings import Settings, SettingsError
from shared.web import run

from .app import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the API until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m api_server",
        description="notihub HTTP API. Configuration comes from NOTIHUB_* environment variables (see README). "
        "Outside NOTIHUB_ENV=development it refuses to start with the built-in secrets.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8100, help="port to listen on (default 8100)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        logs.setup(settings.log_level, name="api")
        settings.check_secrets()
    except SettingsError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    run(create_app(settings), host=args.host, port=args.port, event_loop=settings.event_loop)


if __name__ == "__main__":
    main()
