"""The admin UI's Senders page and a message page's "This sender" form: everyone sees the
rules, admins set and remove them; SMS-borne senders are escaped."""

from __future__ import annotations

from spamguard.db import session_scope
from spamguard.models import Message, SenderRule
from spamguard.services import sender_rules


def test_an_admin_allows_blocks_and_removes_senders(admin_client, viewer_client,
                                                    db_session_factory):
    assert "No sender rules: the model decides every message." in admin_client.get(
        "/admin/senders").get_data(as_text=True)
    done = admin_client.post("/admin/senders", data={"sender": "+44 7911 123456",
                                                     "action": "allow", "note": "bank"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/admin/senders")
    blocked = admin_client.post("/admin/senders", data={"sender": "447911123456",
                                                        "action": "block"},
                                follow_redirects=True)
    page = blocked.get_data(as_text=True)
    assert ("Blocked 447911123456 (it was allowed): messages from phone number 447911123456 "
            "(however it is written) are spam from now on.") in page
    # the note kept: this form had no note field sent
    assert '<td class="hide-sm note"><bdi>bank</bdi></td>' in page
    with session_scope(db_session_factory) as session:
        [rule] = sender_rules.list_rules(session)
        assert (rule.action, rule.set_by, rule.sender) == ("block", "admin", "447911123456")
    seen = viewer_client.get("/admin/senders").get_data(as_text=True)
    assert "447911123456" in seen and "Remove" not in seen and "Allow (ham)" not in seen
    removed = admin_client.post(f"/admin/senders/{rule.id}/remove", follow_redirects=True)
    assert ("Removed the rule for 447911123456: the model decides its messages again."
            in removed.get_data(as_text=True))
    again = admin_client.post(f"/admin/senders/{rule.id}/remove", follow_redirects=True)
    assert f"Rule not removed: no sender rule {rule.id} (removed already?)" in again.get_data(
        as_text=True)


def test_a_bad_rule_is_refused_with_its_reason(admin_client, db_session_factory):
    refused = admin_client.post("/admin/senders", data={"sender": "  ", "action": "allow"},
                                follow_redirects=True)
    assert ("Rule not set: give the sender: a phone number, short code or sender name."
            in refused.get_data(as_text=True))
    odd = admin_client.post("/admin/senders", data={"sender": "X", "action": "delete"},
                            follow_redirects=True)
    assert "Rule not set: unknown action" in odd.get_data(as_text=True)
    with session_scope(db_session_factory) as session:
        assert session.query(SenderRule).count() == 0


def test_only_admins_change_rules(moderator_client, viewer_client, db_session_factory):
    for client in (moderator_client, viewer_client):
        assert client.post("/admin/senders", data={"sender": "X",
                                                   "action": "allow"}).status_code == 403
        assert client.post("/admin/senders/1/remove").status_code == 403
        assert client.get("/admin/senders").status_code == 200
    with session_scope(db_session_factory) as session:
        assert session.query(SenderRule).count() == 0


def test_a_sender_from_an_sms_is_escaped_everywhere(admin_client, add_messages,
                                                    db_session_factory):
    evil = '<img src=x onerror=alert(1)>"'
    [message_id] = add_messages(("hello", 0.9), sender=evil)
    page = admin_client.get(f"/admin/messages/{message_id}").get_data(as_text=True)
    assert "<img src=x" not in page
    assert 'value="&lt;img src=x onerror=alert(1)&gt;&#34;"' in page  # the hidden field
    admin_client.post("/admin/senders", data={"sender": evil, "action": "block",
                                              "note": "<b>bold</b>"})
    listing = admin_client.get("/admin/senders").get_data(as_text=True)
    assert "<img src=x" not in listing and "<b>bold</b>" not in listing
    assert "&lt;b&gt;bold&lt;/b&gt;" in listing


def test_the_message_page_offers_admins_its_sender_and_comes_back(admin_client,
                                                                  moderator_client,
                                                                  add_messages,
                                                                  db_session_factory):
    [message_id] = add_messages(("Your login code is 123456", 0.91), sender="MyBank")
    url = f"/admin/messages/{message_id}"
    page = admin_client.get(url).get_data(as_text=True)
    assert "none: the model decides" in page
    assert 'value="allow"' in page and 'value="block"' in page
    assert "Always allow" not in moderator_client.get(url).get_data(as_text=True)
    done = admin_client.post("/admin/senders", data={"sender": "MyBank", "action": "allow",
                                                     "next": url})
    assert done.status_code == 302 and done.headers["Location"].endswith(url)
    page = admin_client.get(url).get_data(as_text=True)
    assert "(new messages from this sender are ham)" in page
    assert 'value="allow"' not in page and 'value="block"' in page  # only the other way
    with session_scope(db_session_factory) as session:  # the stored verdict is unchanged
        assert session.get(Message, message_id).model_label == "spam"


def test_lists_say_when_a_sender_rule_set_the_label(admin_client, add_messages,
                                                    db_session_factory):
    [message_id] = add_messages(("Your code is 123456", 0.9), sender="MyBank")
    with session_scope(db_session_factory) as session:  # as a rule "allow" stores it
        message = session.get(Message, message_id)
        message.model_label, message.sender_rule = "ham", "allow"
    listing = admin_client.get("/admin/messages").get_data(as_text=True)
    assert "by sender rule (allowed)" in listing
    assert "by sender rule (allowed)" in admin_client.get(
        f"/admin/messages/{message_id}").get_data(as_text=True)


def test_hidden_controls_in_a_sender_are_shown_not_obeyed(admin_client, add_messages):
    """A right-to-left override in an SMS sender ("\u202eKNABYM" reads "MYBANK") is marked
    as [U+202E] in the flash, the rule's wording and the remove button's confirmation,
    never left to reorder the text after it."""
    from tests.fixtures_admin import flashes

    tricky = "\u202eKNABYM"
    add_messages(("hello", 0.9), sender=tricky)
    done = admin_client.post("/admin/senders", data={"sender": tricky, "action": "block"},
                             follow_redirects=True)
    [(category, said)] = flashes(done)
    assert category == "info" and "\u202e" not in said and "[U+202E]KNABYM" in said
    listing = admin_client.get("/admin/senders").get_data(as_text=True)
    assert "\u202e" not in listing
    assert 'data-confirm="Remove the rule for [U+202E]KNABYM?' in listing
    rule_id = listing.split('action="/admin/senders/')[1].split("/remove")[0]
    removed = admin_client.post(f"/admin/senders/{rule_id}/remove", follow_redirects=True)
    assert flashes(removed) == [("info", "Removed the rule for [U+202E]KNABYM: the model "
                                         "decides its messages again.")]


def test_remove_takes_the_rule_by_its_id_whatever_its_key(admin_client, db_session_factory):
    """A rule whose stored key is not what today's matching makes of its sender (a rule
    kept from an older way of matching) is still removed by its button."""
    with session_scope(db_session_factory) as session:
        rule = SenderRule(sender_key="old-key", sender="MyBank", action="allow",
                          set_by="alice")
        session.add(rule)
        session.flush()
        rule_id = rule.id
    done = admin_client.post(f"/admin/senders/{rule_id}/remove", follow_redirects=True)
    assert "Removed the rule for MyBank" in done.get_data(as_text=True)
    with session_scope(db_session_factory) as session:
        assert session.get(SenderRule, rule_id) is None


def test_the_message_page_offers_no_rule_for_a_sender_that_cannot_have_one(admin_client,
                                                                          add_messages):
    [message_id] = add_messages(("hello", 0.9), sender="BANK\tX")
    page = admin_client.get(f"/admin/messages/{message_id}").get_data(as_text=True)
    assert "Always allow" not in page and 'value="block"' not in page
    assert ("No sender rule can be set for this sender: the sender contains a control "
            "character or line break.") in page


def test_a_nul_in_a_rule_note_or_a_hold_reason_is_refused_in_words(admin_client,
                                                                   db_session_factory):
    """PostgreSQL text cannot hold a NUL: a sender rule's note or a hold's reason with one
    was a 500 page there (SQLite stored it). Both databases now refuse it, saying why."""
    from spamguard.models import PromotionHold

    rule = admin_client.post("/admin/senders", data={"sender": "+15550001111",
                                                     "action": "block", "note": "a\x00b"},
                             follow_redirects=True)
    assert rule.status_code == 200
    assert "the note contains a NUL character" in rule.get_data(as_text=True)
    held = admin_client.post("/admin/models/hold", data={"reason": "a\x00b"},
                             follow_redirects=True)
    assert held.status_code == 200
    assert "the reason contains a NUL character" in held.get_data(as_text=True)
    with session_scope(db_session_factory) as session:
        assert sender_rules.list_rules(session) == []
        assert session.query(PromotionHold).count() == 0
