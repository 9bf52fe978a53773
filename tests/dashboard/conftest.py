"""Headless Chromium (Debian's, never a downloaded build) driven by Playwright."""
from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright, expect

# Waits are for events on the page (Playwright retries until they hold), bounded generously:
# the first Kafka event of a session waits for the consumer group to form.
expect.set_options(timeout=20_000)

CHROMIUM = "/usr/bin/chromium"
SHOTS = pathlib.Path(__file__).resolve().parents[2] / "test-output" / "dashboard"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: make install installs Debian's chromium package")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def shot():
    """Save a screenshot of a page under test-output/dashboard/."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    async def take(page, name: str) -> pathlib.Path:
        path = SHOTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    return take
