"""The fault-injection suite's report: one row per fault, printed and written to test-output/faults.md."""
from __future__ import annotations

import pytest

from .harness import Report

_REPORT = Report()


@pytest.fixture(scope="session")
def fault_report() -> Report:
    return _REPORT


def pytest_terminal_summary(terminalreporter) -> None:
    """The table after the run, with or without -s."""
    if _REPORT.outcomes:
        terminalreporter.write_sep("=", "fault-injection suite")
        terminalreporter.write_line(_REPORT.table())
        terminalreporter.write_line(f"(written to {_REPORT.path})")
