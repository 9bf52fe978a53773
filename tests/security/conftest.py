"""The attack suite's bookkeeping: how many inputs each test tried (printed by each test, and in
the terminal summary), and what the stack's processes logged meanwhile (attached to the report)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from .stacklogs import StackLogs

_TRIED: dict[str, int] = {}


class Tally:
    """How many inputs one test sent to the stack."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int = 1) -> None:
        self.count += n


@pytest.fixture
def tally(request: pytest.FixtureRequest):
    counter = Tally()
    yield counter
    _TRIED[request.node.nodeid] = counter.count
    print(f"tried {counter.count} inputs")


@pytest.fixture
def stack_logs(request: pytest.FixtureRequest, stack):
    logs = StackLogs(stack)
    yield logs
    errors = logs.errors()
    if errors:
        request.node.add_report_section("teardown", "stack logs, errors only", errors)


@pytest.fixture
async def raw_http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session without a connection limit, for attacker websockets."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
        yield session


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per test of this package: how many inputs it tried."""
    if not _TRIED:
        return
    terminalreporter.write_sep("=", "attack suite: inputs tried")
    for nodeid, count in _TRIED.items():
        terminalreporter.write_line(f"tried {count:>6} inputs  {nodeid}")
    terminalreporter.write_line(f"tried {sum(_TRIED.values()):>6} inputs in all")
