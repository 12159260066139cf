"""Browser checks from an accessibility audit of the admin UI: where the focus goes after a
refused form or a decision, what is announced, what fits a 320 px screen."""

from __future__ import annotations

import pytest

from tests.browser.test_admin_browser import login
from tests.fixtures_admin import PASSWORD

pytestmark = pytest.mark.browser

# Records the text of each [data-announce] element whenever it changes, from before the
# page's scripts run (flashes are role="alert"/"status" without an aria-live attribute).
RECORD_ANNOUNCED = """
window.announced = [];
new MutationObserver(function (records) {
  records.forEach(function (record) {
    var node = record.target.nodeType === 1 ? record.target : record.target.parentElement;
    var region = node && node.closest && node.closest("[data-announce]");
    if (region) {
      window.announced.push(region.textContent);
    }
  });
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def focused(page, what: str = "name"):
    return page.evaluate(f"document.activeElement.getAttribute('{what}')")


def test_a_refused_form_focuses_the_field_at_fault_or_the_error(page, live_server, make_user,
                                                                add_messages):
    make_user("root", "admin")
    add_messages(("WIN a FREE prize, call now", 0.97))
    page.add_init_script(RECORD_ANNOUNCED)
    login(page, live_server, "root")
    # The password is the username: refused, and the focus is on Password (the form is
    # below the table), not on Username nor the top of the page.
    page.goto(f"{live_server}/admin/users")
    page.fill("input[name=username]", "evelyn1234")
    page.fill("input[name=password]", "evelyn1234")
    with page.expect_navigation():
        page.click("form[action='/admin/users'] button[type=submit]")
    assert page.title().startswith("Error: Users")
    assert focused(page) == "password"
    assert focused(page, "aria-describedby") == "page-error password-rule"
    # The two new passwords differ: New password again, not Current password.
    page.goto(f"{live_server}/admin/password")
    assert focused(page) == "current_password"
    page.fill("input[name=current_password]", PASSWORD)
    page.fill("input[name=new_password]", "a-long-new-secret")
    page.fill("input[name=new_password_again]", "a-long-new-secreT")
    with page.expect_navigation():
        page.click("form[action='/admin/password'] button[type=submit]")
    assert page.title().startswith("Error: Change password")
    assert focused(page) == "new_password_again"
    # An error that names no field (no message ticked): the error itself has the focus, and
    # is not emptied and written again (that is for what is not focused).
    page.goto(f"{live_server}/admin/messages")
    with page.expect_navigation():
        page.click(".bulkbar button[value=spam]:not([data-scope])")
    assert focused(page, "id") == "page-error"
    assert page.inner_text("#page-error") == "Select at least one message."
    # An information flash is written again after the load, so it is announced.
    from tests.browser.conftest import settled_text

    page.goto(f"{live_server}/admin/senders")
    page.fill("input[name=sender]", "+15550001234")
    with page.expect_navigation():
        page.click("button[value=block]")
    said = settled_text(page, "p.flash")
    assert said.startswith("Blocked +15550001234")
    assert page.evaluate("window.announced.slice(-2)") == ["", said]  # emptied, written again
    assert page.evaluate("document.activeElement === document.body")
