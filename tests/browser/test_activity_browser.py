"""The Activity page in a browser: an admin's change is listed with who made it, and a
long target (a 200-character sender rule) stays inside the page at phone and laptop width."""

from __future__ import annotations

import pytest

from tests.browser.conftest import SIZES, shoot
from tests.browser.test_admin_browser import login

pytestmark = pytest.mark.browser


def test_an_admins_change_is_listed_and_fits_a_phone(page, live_server, make_user):
    make_user("root", "admin")
    login(page, live_server, "root")
    long_sender = "MYBANK-ALERTS-" + "X" * 186
    for sender in ("PRIZE-DRAW", long_sender):
        page.goto(f"{live_server}/admin/senders")
        page.fill("input[name=sender]", sender)
        with page.expect_navigation():
            page.click("button[name=action][value=block]")
    page.click("nav.nav a:has-text('Activity')")
    page.wait_for_url("**/admin/activity")
    rows = page.locator("tbody tr")
    assert "set sender rule for MYBANK-ALERTS-" in rows.nth(0).inner_text()
    assert "root" in rows.nth(1).inner_text() and "PRIZE-DRAW" in rows.nth(1).inner_text()
    for size in ("laptop", "phone"):
        page.set_viewport_size(SIZES[size])
        width = SIZES[size]["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= width, size
        assert page.locator(".table-wrap").evaluate(
            "e => e.scrollWidth <= e.clientWidth"), size
    shoot(page, "activity")
    page.select_option("select[name=kind]", "user")
    with page.expect_navigation():
        page.click("form.filters button")
    assert page.locator("tbody tr").count() == 1  # the fixture made the account
    assert "created account root" in page.inner_text("tbody")
