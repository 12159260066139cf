"""Browser checks from an accessibility audit of the admin UI: where the focus goes after a
refused form or a decision, what is announced, what fits a 320 px screen."""

from __future__ import annotations

import pytest

from tests.browser.test_admin_browser import login, seeded  # noqa: F401 (a fixture)
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


def test_after_a_decision_the_focus_is_on_the_next_message(page, live_server, seeded,  # noqa: F811
                                                           add_messages, db_session_factory):
    """After Spam, Ham, Skip or Undo in the queue, a spot-check decision or a relabel on a
    message's page, the focus is where the next decision is made (it was on <body>: the
    next message's note field took 12 Tabs). In the queue and the spot check it is the
    card, whose keys still work; its note field is a Tab or two away."""
    from tests.browser.conftest import settled_text
    from tests.browser.test_admin_browser import current_id

    ids, (active, _) = seeded
    add_messages(("Hi mum, this is my new number", 0.91), ("Your parcel fee is due", 0.93),
                 model_version_id=active)
    page.add_init_script(RECORD_ANNOUNCED)
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/queue")
    assert page.evaluate("document.activeElement === document.body")  # nothing done yet
    for key in ("s", "k", "u"):
        with page.expect_navigation():
            page.keyboard.press(key)
        assert focused(page, "id") == "current", key
        assert page.inner_text("#current h2") == f"Message #{current_id(page)}"
    said = f"Undid your decision on message {current_id(page)}."
    assert settled_text(page, "p.said") == said
    assert page.evaluate("window.announced.slice(-2)") == ["", said]
    for _ in range(3):
        page.keyboard.press("Tab")
        if focused(page) == "note":
            break
    assert focused(page) == "note"
    assert page.evaluate("document.activeElement.labels[0].innerText").startswith(
        "Note (optional)")
    # Spot check: the card again, after a decision and after a skip.
    page.goto(f"{live_server}/admin/spot-check?verdict=spam")
    for button, said in (("button[name=label][value=ham]", "Message "), ("button[data-key=k]",
                                                                         "Skipped message ")):
        with page.expect_navigation():
            page.click(button)
        assert focused(page, "id") == "current", button
        assert settled_text(page, "p.said").startswith(said)
    # A message's page: back to its label form's note.
    page.goto(f"{live_server}/admin/messages/{ids[0]}")
    with page.expect_navigation():
        page.click("button[name=label][value=spam]")
    assert focused(page) == "note"
    assert settled_text(page, "p.flash-info") == f"Message {ids[0]} labelled spam."
    assert page.evaluate("window.announced.slice(-2)") == ["", f"Message {ids[0]} labelled spam."]


def test_a_running_rebuild_is_watched_without_reloading_the_page(page, live_server, make_user,
                                                                db_session_factory):
    """The campaigns page reloaded itself every 5 s while a rebuild ran (meta refresh:
    focus and reading place lost each time). Now admin.js asks for the page and, once the
    rebuild is over, says so in the status region with a link to reload."""
    from spamguard.services import locks, retrain_jobs

    make_user("mo", "moderator")
    login(page, live_server, "mo")
    page.clock.install()
    with locks.acquire(session_factory=db_session_factory, name=retrain_jobs.CAMPAIGN_LOCK,
                       ttl=600):
        page.goto(f"{live_server}/admin/campaigns")
        page.evaluate("window.stayed = true")
        region = page.locator("[data-poll]")
        assert region.get_attribute("role") == "status"
        assert region.inner_text().endswith("Check again")
        # a link in grey words: underlined (axe link-in-text-block, found on a recheck)
        assert region.locator("a").evaluate("e => getComputedStyle(e).textDecorationLine") \
            == "underline"
        page.clock.run_for(6000)  # asked once: still running
        page.wait_for_timeout(500)
        assert region.inner_text().endswith("Check again")
    page.clock.run_for(6000)
    page.wait_for_function(
        "() => document.querySelector('[data-poll]').textContent.startsWith('Finished')")
    assert region.inner_text() == "Finished: reload to see the result. Reload"
    assert region.locator("a").evaluate("e => getComputedStyle(e).textDecorationLine") \
        == "underline"
    assert page.evaluate("window.stayed")  # the same page: never reloaded
    with page.expect_navigation():
        page.click("[data-poll] a")
    assert page.locator("[data-poll]").count() == 0


def test_links_in_running_text_are_underlined_and_navigation_is_not(page, live_server,
                                                                    make_user):
    """axe link-in-text-block: a link in a sentence was told apart by its colour only."""
    make_user("mo", "moderator")
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/queue")
    underline = "e => getComputedStyle(e).textDecorationLine"
    assert page.locator("p a", has_text="Spot check").evaluate(underline) == "underline"
    assert page.locator("nav.nav a", has_text="Messages").evaluate(underline) == "none"
    page.goto(f"{live_server}/admin/campaigns")
    assert page.locator(".heading p a", has_text="most recent").evaluate(underline) \
        == "underline"


def test_the_shortcuts_switch_sits_on_one_line_with_its_words(page, live_server, make_user,
                                                             add_messages):
    make_user("mo", "moderator")
    add_messages(("WIN a FREE prize, call now", 0.55))
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/queue")
    switch = page.locator("label.shortcuts-switch")
    box = switch.locator("input").bounding_box()
    label = switch.bounding_box()
    assert label["height"] < 2 * box["height"] + 8  # one line, not the box over its words
    keys = page.locator("p.small kbd").first.bounding_box()
    assert abs((keys["y"] + keys["height"] / 2) - (box["y"] + box["height"] / 2)) < 12


def test_pages_fit_320_css_pixels(page, live_server, seeded, db_session_factory):  # noqa: F811
    """400% zoom of a 1280 px screen (WCAG 1.4.10): the two-column grids made the dashboard,
    a message's page, a model's and the comparison 330 px wide. The Verdicts table of a
    message fits a phone (390 px) without scrolling in its box."""
    from spamguard.models import Verdict

    ids, (active, candidate) = seeded
    with db_session_factory() as session:  # a verdict by a model of a long name, sender rule
        session.add_all([Verdict(message_id=ids[0], model_version_id=version,
                                 spam_probability=0.9731, label="spam", threshold=0.5,
                                 latency_ms=12.3, sender_rule=rule)
                         for version, rule in ((active, None), (candidate, "block"))])
        session.commit()
    login(page, live_server, "root")
    page.set_viewport_size({"width": 320, "height": 700})
    for url in ("/admin/", f"/admin/messages/{ids[0]}", f"/admin/models/{active}",
                f"/admin/models/compare?a={active}&b={candidate}"):
        page.goto(f"{live_server}{url}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 320, url
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server}/admin/messages/{ids[0]}")
    verdicts = page.locator("h2:has-text('Verdicts') + .table-wrap")
    assert verdicts.evaluate("e => e.scrollWidth <= e.clientWidth")
