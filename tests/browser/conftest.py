"""A real browser on the real app: Debian's Chromium driven by Playwright, the app served by
uvicorn on a free port over the real store.

Playwright cannot download its own browser here, so the tests launch /usr/bin/chromium
(./test installs it when missing). A browser that cannot start fails the tests: never a skip.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from api.web import create_app
from infra.embedded import free_port
from infra.settings import Settings
from infra.store import RunStore

CHROMIUM = Path("/usr/bin/chromium")
# Two cores shared by the suite: a page may take a moment longer than Playwright's 5 s.
expect.set_options(timeout=10_000)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        found = shutil.which("chromium")
        pytest.fail(
            f"no Chromium at {CHROMIUM} (on PATH: {found}): `apt-get install -y chromium`, "
            "as ./test does when it is missing",
            pytrace=False,
        )
    # launch() gives every browser a fresh, temporary profile (user-data-dir).
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def served(settings: Settings, store: RunStore) -> Iterator[str]:
    """The app as `receipts serve` runs it, on a free port, over the test module's `store`
    (migrated, with its runs): its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start (see the log above)")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def signed_in(browser: Browser, base: str, token: str, javascript: bool = True) -> Page:
    """A fresh browser context (its own cookies), signed in with `token` through the form."""
    context = browser.new_context(base_url=base, java_script_enabled=javascript)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/ui")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/queue")
    return page
