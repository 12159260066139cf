"""Browser fixtures: the app served on loopback, Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
SIZES = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def artifacts_dir() -> Path:
    """Where screenshots go: ``$SPAMGUARD_ARTIFACTS`` or ``artifacts/screenshots``."""
    folder = Path(os.environ.get("SPAMGUARD_ARTIFACTS", "artifacts/screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium (skips when Debian's chromium is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def live_server(app, db_backend):
    """Serve the app on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    from werkzeug.serving import make_server

    if db_backend != "sqlite":
        pytest.skip("browser tests run on SQLite only")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def page(chromium):
    """A fresh browser context and page; CSP violations and page errors fail the test."""
    context = chromium.new_context(viewport=SIZES["laptop"])
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    yield page
    context.close()
    assert not problems, problems


# admin.js empties each [data-announce] region (a flash, the queue's status line) as the
# page loads and writes its text back 150 ms later, so that screen readers announce it
# (keeping its height meanwhile). Settled: every region it emptied has its text again.
ANNOUNCED = ("() => Array.from(document.querySelectorAll('[data-announce]'))"
             ".every(e => !e.style.minHeight || e.textContent.trim())")


def settled_text(page, selector: str = "main") -> str:
    """The text of ``selector`` once the page's announcements are written back."""
    page.wait_for_function(ANNOUNCED)
    return page.inner_text(selector)


def shoot(page, name: str) -> None:
    """Save a full-page screenshot of ``page`` at laptop and phone widths."""
    folder = artifacts_dir()
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        page.screenshot(path=str(folder / f"{name}-{size}.png"), full_page=True)
    page.set_viewport_size(SIZES["laptop"])
