"""Headless Chromium for the dashboard's browser tests: Debian's ``chromium`` driven by Playwright."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tests.tools import missing, need

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def chromium_path() -> str:
    """Debian's chromium; skipped locally when it (or playwright) is missing, an error in CI."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("the playwright package", "pip install -e '.[dev]'")
    return need("chromium", "apt-get install chromium chromium-driver", path=Path(CHROMIUM))


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A headless Chromium browser (playwright's Browser), closed on exit."""
    from playwright.async_api import async_playwright

    path = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()
