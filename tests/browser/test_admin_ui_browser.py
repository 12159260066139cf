"""Browser checks of smaller UI behaviour: the message list at phone width, what the review
queue says to screen readers after a decision, copying a new API key."""

from __future__ import annotations

import pytest

from tests.browser.conftest import SIZES, settled_text
from tests.browser.test_admin_browser import login

pytestmark = pytest.mark.browser


def test_the_message_list_shows_the_model_label_at_phone_width(page, live_server, make_user,
                                                               add_messages):
    make_user("viewer", "viewer")
    spam, ham, pending = add_messages(("WIN a FREE prize, call now", 0.97),
                                      ("see you at 6", 0.03), "not scored yet")
    login(page, live_server, "viewer")
    page.set_viewport_size(SIZES["phone"])
    page.goto(f"{live_server}/admin/messages")
    for message_id, label in ((spam, "spam"), (ham, "ham")):
        row = page.locator(f"table.messages tr:has(a[href='/admin/messages/{message_id}'])")
        shown = row.locator("td.num .badge")
        assert shown.is_visible() and shown.inner_text() == label
        box = shown.bounding_box()
        assert box["x"] + box["width"] <= SIZES["phone"]["width"]  # on screen, no scrolling
        assert row.locator("td.num").inner_text().startswith("0.970" if label == "spam"
                                                             else "0.030")
    unscored = page.locator(f"table.messages tr:has(a[href='/admin/messages/{pending}'])")
    assert unscored.locator("td.num .badge").count() == 0  # "–": no label yet
    # At laptop width the Model column shows it, and the probability stands alone.
    page.set_viewport_size(SIZES["laptop"])
    assert not page.locator("td.num .badge").first.is_visible()


# Records each text a live region holds when it changes, from before the page's scripts run.
RECORD_LIVE_REGIONS = """
window.liveTexts = [];
new MutationObserver(function (records) {
  records.forEach(function (record) {
    var node = record.target.nodeType === 1 ? record.target : record.target.parentElement;
    if (node && node.closest && node.closest("[aria-live]")) {
      window.liveTexts.push(node.closest("[aria-live]").textContent);
    }
  });
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def test_a_queue_decision_is_announced_to_screen_readers(page, live_server, make_user,
                                                         add_messages):
    from tests.browser.test_admin_browser import current_id

    make_user("mo", "moderator")
    add_messages(("WIN a FREE prize, call now", 0.55), ("see you at 6", 0.45))
    page.add_init_script(RECORD_LIVE_REGIONS)
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/queue")
    region = page.locator("p.said")
    assert region.get_attribute("aria-live") == "polite"
    assert region.get_attribute("role") == "status" and region.inner_text() == ""
    decided = current_id(page)
    with page.expect_navigation():
        page.keyboard.press("s")
    said = f"Marked message {decided} as spam."
    page.wait_for_function("text => window.liveTexts.slice(-1)[0] === text", arg=said)
    assert region.inner_text() == said
    # Emptied, then written again after the load: a change, which screen readers announce.
    assert "" in page.evaluate("window.liveTexts")
    # The button does the same (and without JavaScript the text is there from the server).
    decided = current_id(page)
    with page.expect_navigation():
        page.click("button[name=label][value=ham]")
    page.wait_for_function("text => window.liveTexts.slice(-1)[0] === text",
                           arg=f"Marked message {decided} as ham.")


def test_a_new_api_key_is_copied_and_a_reload_makes_no_second_one(page, live_server,
                                                                   make_user,
                                                                   db_session_factory):
    from spamguard.models import ApiKey

    make_user("root", "admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    login(page, live_server, "root")
    page.goto(f"{live_server}/admin/api-keys")
    page.fill("input[name=name]", "gateway")
    with page.expect_navigation():
        page.click("form[action='/admin/api-keys'] button[type=submit]")
    key = page.input_value("#new-key")
    assert key.startswith("sg_")
    said = page.locator("#new-key-copied")
    assert said.get_attribute("aria-live") == "polite" and said.inner_text() == ""
    page.click("button[data-copy=new-key]")
    page.wait_for_function("() => document.getElementById('new-key-copied').textContent "
                           "=== 'Copied.'")
    assert page.evaluate("navigator.clipboard.readText()") == key
    # Reloading the page sends its form again: refused, and no second key.
    page.reload()
    assert "This form was already sent: API key 1 (gateway) was created from it." in (
        settled_text(page))
    assert page.locator("#new-key").count() == 0
    with db_session_factory() as session:
        assert session.query(ApiKey).count() == 1


def test_an_admin_adds_and_removes_a_sender_rule_at_phone_width_too(page, live_server,
                                                                    make_user, add_messages,
                                                                    db_session_factory):
    """The Senders page: an admin blocks a sender from its form, sees the rule listed,
    removes it (the button asks first: Cancel keeps it); a 200-character sender stays in
    its column and the page fits 390 px. A message's page offers "This sender", and comes
    back to the message."""
    from spamguard.db import session_scope
    from spamguard.services import sender_rules
    from tests.browser.conftest import shoot

    make_user("root", "admin")
    long_sender = "MYBANK-ALERTS-" + "X" * 186
    with session_scope(db_session_factory) as session:
        sender_rules.set_rule(session, sender="+44 7700 900123", action="allow",
                              note="the bank's alert number", by="root")
        sender_rules.set_rule(session, sender=long_sender, action="allow", note=None, by="root")
    [message_id] = add_messages(("Your login code is 123456", 0.91), sender="MyBank")
    [long_id] = add_messages(("Your card was used", 0.8), sender=long_sender)
    login(page, live_server, "root")
    page.goto(f"{live_server}/admin/senders")
    page.fill("input[name=sender]", "PRIZE-DRAW")
    page.fill("input[name=note]", "a prize-draw scam wave")
    with page.expect_navigation():
        page.click("button[name=action][value=block]")
    assert "Blocked PRIZE-DRAW: messages from 'PRIZE-DRAW' (capitals or not) are spam" in (
        settled_text(page, "p.flash"))
    row = page.locator("tbody tr", has_text="PRIZE-DRAW")
    assert "blocked" in row.inner_text() and "a prize-draw scam wave" in row.inner_text()
    assert page.locator("tbody tr").count() == 3
    shoot(page, "senders")
    for size in ("laptop", "phone"):  # the long sender is cut with an ellipsis: no overflow
        page.set_viewport_size(SIZES[size])
        width = SIZES[size]["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= width, size
        assert page.locator(".table-wrap").evaluate("e => e.scrollWidth <= e.clientWidth"), size
        remove = row.locator("button", has_text="Remove").bounding_box()
        assert remove["x"] + remove["width"] <= width, size
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    row.locator("button", has_text="Remove").click()  # Cancel: the rule stays
    page.wait_for_timeout(300)
    assert asked == ["Remove the rule for PRIZE-DRAW? The model decides its messages again."]
    assert page.locator("tbody tr").count() == 3
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    with page.expect_navigation():
        row.locator("button", has_text="Remove").click()
    assert len(asked) == 2
    assert "Removed the rule for PRIZE-DRAW" in settled_text(page, "p.flash")
    assert page.locator("tbody tr", has_text="PRIZE-DRAW").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES["phone"]["width"]
    with session_scope(db_session_factory) as session:
        assert len(sender_rules.list_rules(session)) == 2
    # A message's page: "This sender" sets a rule for its sender and comes back.
    page.set_viewport_size(SIZES["laptop"])
    page.goto(f"{live_server}/admin/messages/{message_id}")
    form = page.locator("form", has=page.locator("h2", has_text="This sender"))
    shoot(page, "message-sender-rule")
    page.set_viewport_size(SIZES["phone"])
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES["phone"]["width"]
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    with page.expect_navigation():
        form.locator("button", has_text="Always allow").click()
    assert asked[-1] == "Label every new message from this sender ham?"
    assert page.url == f"{live_server}/admin/messages/{message_id}"
    assert "(new messages from this sender are ham)" in settled_text(page)
    page.goto(f"{live_server}/admin/messages/{long_id}")  # "This sender" names a long one
    for size in ("phone", "laptop"):
        page.set_viewport_size(SIZES[size])
        assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
        card = page.locator("form.card", has=page.locator("h2", has_text="This sender"))
        assert card.evaluate("e => e.scrollWidth <= e.clientWidth"), size
    shoot(page, "message-long-sender-rule")
