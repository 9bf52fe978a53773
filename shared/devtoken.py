"""Mint a development user token: python -m shared.devtoken --sub u1 --name Kim."""
from __future__ import annotations

import argparse
import sys

from .settings import Settings
from .tokens import mint


def main(argv: list[str] | None = None) -> int:
    """Print a user JWT signed with NOTIHUB_JWT_SECRET (or the local default)."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.devtoken",
        description="Mint an HS256 user token for trying notihub locally. "
        "It is signed with NOTIHUB_JWT_SECRET, or the built-in local secret that "
        "`make run` uses when that variable is unset.",
    )
    parser.add_argument("--sub", required=True, help="user id (the token's sub claim)")
    parser.add_argument("--name", help="display name")
    parser.add_argument("--roles", nargs="*", default=[], help="roles, e.g. instructor")
    parser.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default one day)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    print(mint(settings, sub=args.sub, name=args.name, roles=tuple(args.roles), ttl=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
