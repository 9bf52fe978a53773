"""Readable accounts of pydantic validation errors, for error messages."""
from __future__ import annotations

from pydantic import ValidationError


def describe(exc: ValidationError, *, root: str) -> str:
    """``where: what`` for the first few problems; ``root`` names the whole input."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or root
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
