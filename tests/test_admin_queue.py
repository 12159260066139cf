"""The review queue page: order, decide, skip, undo, roles."""

from __future__ import annotations

import re

from spamguard.models import Message, Review
from tests.fixtures_admin import AdminClient

CURRENT = re.compile(r'id="current" data-message-id="(\d+)"')
SEEN = re.compile(r'name="seen" value="([^"]+)"')


def current_id(client) -> int | None:
    match = CURRENT.search(client.get("/admin/queue").get_data(as_text=True))
    return int(match.group(1)) if match else None


def decide_form(client) -> dict:
    """The queue's decide form as the page shows it: the message and what was seen of it."""
    page = client.get("/admin/queue").get_data(as_text=True)
    return {"message_id": CURRENT.search(page).group(1), "seen": SEEN.search(page).group(1)}


def logged_in(app, make_user, name: str) -> AdminClient:
    make_user(name, "moderator")
    client = AdminClient(app.test_client(), name)
    assert client.login().status_code == 302
    return client


def test_decide_skip_undo(moderator_client, add_messages, db_session_factory,
                          tiny_model_dir):
    import json

    # Placed around the active (tiny) model's threshold: closest first.
    t = json.loads((tiny_model_dir / "model.json").read_text())["threshold"]
    assert 0.2 < t < 0.8
    sure, unsure, middle = add_messages(("sure spam", 0.999), ("unsure", t + 0.01),
                                        ("middle", t - 0.15))
    assert current_id(moderator_client) == unsure
    moderator_client.post("/admin/queue/decide", data={"message_id": unsure, "label": "ham",
                                                       "note": "a friend", "seen": "none"})
    assert current_id(moderator_client) == middle
    moderator_client.post("/admin/queue/skip", data={"message_id": middle})
    assert current_id(moderator_client) == sure
    response = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert f"Undid your decision on message {unsure}" in response.get_data(as_text=True)
    assert current_id(moderator_client) == unsure  # the undone message comes back first
    moderator_client.post("/admin/queue/decide", data={"message_id": unsure, "label": "spam",
                                                       "seen": "none"})
    moderator_client.post("/admin/queue/reset-skipped")
    assert current_id(moderator_client) == middle
    with db_session_factory() as session:
        assert session.get(Message, unsure).review_label == "spam"
        assert [r.label for r in session.query(Review).filter_by(message_id=unsure)] == ["spam"]


def test_empty_queue_and_nothing_to_undo(moderator_client):
    text = moderator_client.get("/admin/queue").get_data(as_text=True)
    assert "Nothing left to review" in text
    undo = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert "Nothing to undo" in undo.get_data(as_text=True)


def test_bad_decision_is_refused(moderator_client, add_messages):
    (mid,) = add_messages(("x", 0.5))
    for data in ({"message_id": mid, "label": "maybe"}, {"message_id": "abc", "label": "spam"},
                 {"message_id": 987654, "label": "spam"}):
        response = moderator_client.post("/admin/queue/decide", data={**data, "seen": "none"},
                                         follow_redirects=True)
        assert "Not recorded" in response.get_data(as_text=True)
    assert current_id(moderator_client) == mid


def test_viewer_sees_queue_but_cannot_decide(viewer_client, add_messages):
    (mid,) = add_messages(("x", 0.5))
    page = viewer_client.get("/admin/queue").get_data(as_text=True)
    assert "data-key=\"s\"" not in page
    assert viewer_client.post("/admin/queue/decide",
                              data={"message_id": mid, "label": "spam"}).status_code == 403
    assert viewer_client.post("/admin/queue/undo").status_code == 403


def test_out_of_range_ids_are_refused_and_do_not_break_the_queue(moderator_client,
                                                                 add_messages):
    add_messages(("unsure", 0.51))
    huge = "9" * 30
    decided = moderator_client.post("/admin/queue/decide",
                                    data={"message_id": huge, "label": "spam", "seen": "none"},
                                    follow_redirects=True)
    assert decided.status_code == 200 and "Not recorded" in decided.get_data(as_text=True)
    moderator_client.post("/admin/queue/skip", data={"message_id": huge})
    page = moderator_client.get("/admin/queue")
    assert page.status_code == 200 and "unsure" in page.get_data(as_text=True)


def expire_claims(session_factory) -> None:
    """Let every queue claim lapse (as SPAMGUARD_QUEUE_CLAIM_SECONDS after it was made)."""
    from datetime import timedelta

    from sqlalchemy import update

    from spamguard.models import QueueClaim
    from spamguard.sqltypes import utcnow

    with session_factory() as session:
        session.execute(update(QueueClaim).values(claimed_until=utcnow() - timedelta(seconds=1)))
        session.commit()


def test_a_decision_on_a_message_someone_reviewed_meanwhile_is_not_saved(
        app, make_user, add_messages, db_session_factory):
    """A claim is soft: once alice's has lapsed, bob is shown her message too, and of
    their two decisions the first counts."""
    first, second = add_messages(("unsure", 0.5), ("next one", 0.1))
    alice, bob = (logged_in(app, make_user, name) for name in ("alice", "bob"))
    alice_form = decide_form(alice)
    expire_claims(db_session_factory)
    bob_form = decide_form(bob)
    assert alice_form == bob_form == {"message_id": str(first), "seen": "none"}
    alice.post("/admin/queue/decide", data={**alice_form, "label": "spam"})
    late = bob.post("/admin/queue/decide", data={**bob_form, "label": "ham",
                                                 "note": "my sister's <new> number"},
                    follow_redirects=True).get_data(as_text=True)
    assert (f"alice labelled message {first} spam while you were looking; your ham label "
            f"was not saved. Your note was not saved: “my sister&#39;s &lt;new&gt; "
            f"number”.") in late  # said back, to copy rather than type again
    assert '<p class="said refused" role="status"' in late  # on the status line, announced
    assert f'data-message-id="{second}"' in late  # and bob sees the next message
    again = alice.post("/admin/queue/decide", data={**alice_form, "label": "ham"},
                       follow_redirects=True).get_data(as_text=True)  # a second tab
    assert f"You had already labelled message {first} spam" in again
    with db_session_factory() as session:
        assert session.get(Message, first).review_label == "spam"
        assert [r.label for r in session.query(Review).filter_by(message_id=first)] == ["spam"]
    stale = bob.post("/admin/queue/decide", data={"message_id": second, "label": "ham"},
                     follow_redirects=True).get_data(as_text=True)  # a page from before
    assert "Not recorded: the page was out of date" in stale
    assert current_id(bob) == second


def test_a_decision_someone_already_gave_is_information_not_an_error(
        app, make_user, add_messages, db_session_factory):
    """Two moderators shown the same message (alice's claim lapsed before bob looked) who
    agree: the later one is told, plainly, that there is nothing to do (not a red "not
    saved" as for a disagreement)."""
    first, second = add_messages(("unsure", 0.5), ("next one", 0.1))
    alice, bob = (logged_in(app, make_user, name) for name in ("alice", "bob"))
    alice_form = decide_form(alice)
    expire_claims(db_session_factory)
    bob_form = decide_form(bob)
    assert bob_form["message_id"] == alice_form["message_id"] == str(first)
    alice.post("/admin/queue/decide", data={**alice_form, "label": "spam"})
    late = bob.post("/admin/queue/decide", data={**bob_form, "label": "spam", "note": "scam"},
                    follow_redirects=True).get_data(as_text=True)
    assert ('<p class="said" role="status" aria-live="polite" data-announce>Message '
            f"{first} is already labelled spam by alice — nothing to do. Your note was not "
            "saved: “scam”.</p>") in late  # the status line, not a flash
    assert "flash-error" not in late and "refused" not in late
    assert f'data-message-id="{second}"' in late  # bob goes on to the next message
    again = alice.post("/admin/queue/decide", data={**alice_form, "label": "spam"},
                       follow_redirects=True).get_data(as_text=True)  # alice's second tab
    assert f"Message {first} is already labelled spam by you — nothing to do.</p>" in again
    assert "flash-error" not in again
    with db_session_factory() as session:
        assert [(r.label, r.note) for r in session.query(Review).filter_by(message_id=first)] \
            == [("spam", None)]


def test_a_review_saved_while_the_queue_page_renders_is_not_overwritten(
        app, make_user, add_messages, db_session_factory, monkeypatch):
    """The form's "seen" comes from the row the page shows, not from a later read that
    could already see another moderator's review (and so let this decision replace it)."""
    from spamguard.services import queue_claims, reviews

    first, _ = add_messages(("unsure", 0.5), ("next one", 0.1))
    alice = logged_in(app, make_user, "alice")
    bob_id = make_user("bob", "moderator")
    original = queue_claims.claim_first

    def claim_then_bob_decides(*args, **kwargs):
        index = original(*args, **kwargs)  # alice's page has claimed the message ...
        with db_session_factory() as other:  # ... and bob labels it on its page now
            reviews.add_review(session=other, message_id=first, label="spam", user_id=bob_id)
            other.commit()
        monkeypatch.setattr(queue_claims, "claim_first", original)
        return index

    monkeypatch.setattr(queue_claims, "claim_first", claim_then_bob_decides)
    form = decide_form(alice)
    assert form == {"message_id": str(first), "seen": "none"}
    late = alice.post("/admin/queue/decide", data={**form, "label": "ham"},
                      follow_redirects=True).get_data(as_text=True)
    assert f"bob labelled message {first} spam while you were looking" in late
    with db_session_factory() as session:
        assert session.get(Message, first).review_label == "spam"


def test_undo_takes_back_the_queue_decision_not_a_later_relabel_elsewhere(
        moderator_client, add_messages, db_session_factory):
    queued, other = add_messages(("unsure", 0.5), ("elsewhere", 0.99))
    moderator_client.post("/admin/queue/decide", data={**decide_form(moderator_client),
                                                       "label": "spam"})
    moderator_client.post("/admin/messages/bulk", data={  # a later bulk relabel
        "label": "ham", "ids": [str(other)], "confirmed": "1", "expected": "1"})
    undone = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert f"Undid your decision on message {queued}" in undone.get_data(as_text=True)
    with db_session_factory() as session:
        assert session.get(Message, queued).review_label is None
        assert session.get(Message, other).review_label == "ham"  # the bulk label stays
    nothing = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert "Nothing to undo in the queue." in nothing.get_data(as_text=True)


def test_undo_leaves_a_queue_decision_that_was_relabelled_since(
        moderator_client, add_messages, db_session_factory):
    first, second = add_messages(("unsure", 0.5), ("less unsure", 0.9))
    for label in ("spam", "ham"):
        moderator_client.post("/admin/queue/decide", data={**decide_form(moderator_client),
                                                           "label": label})
    moderator_client.post(f"/admin/messages/{second}/review", data={"label": "spam"})
    refused = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert (f"Nothing to undo in the queue: message {second} was relabelled"
            in refused.get_data(as_text=True))
    with db_session_factory() as session:
        assert session.get(Message, second).review_label == "spam"  # the detail page's
        assert session.get(Message, first).review_label == "spam"
    # The decision before it is still the user's to take back, key by key.
    undone = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert f"Undid your decision on message {first}" in undone.get_data(as_text=True)


def test_next_up_names_the_threshold_of_a_verdict_from_another_model(
        moderator_client, add_messages, db_session_factory):
    """After a promotion the backlog's verdicts are measured from their own model's
    threshold (migration 0009); the list says so beside such a verdict rather than only in
    a tooltip, so 0.950 is not read against the active model's threshold."""
    from spamguard.db import session_scope
    from spamguard.models import ModelVersion
    from spamguard.sqltypes import utcnow

    with session_scope(db_session_factory) as session:
        session.add(ModelVersion(id="older", directory="/nowhere", backbone="b",
                                 backbone_hash="h", status="retired", threshold=0.7,
                                 created_at=utcnow()))
    old = add_messages(("old, nearly spam", 0.68), ("old, sure", 0.95), threshold=0.7,
                       model_version_id="older")
    new = add_messages(("unversioned", 0.2))
    page = moderator_client.get("/admin/queue").get_data(as_text=True)
    rows = dict(re.findall(r'<li><a href="/admin/messages/(\d+)">(.*?)</li>', page, re.S))
    assert set(rows) == {str(old[1]), str(new[0])}  # old[0] is the current message
    assert "scored by another model, threshold 0.700" in rows[str(old[1])]
    assert "another model" not in rows[str(new[0])]


def test_moderators_working_the_queue_together_are_shown_different_messages(
        app, make_user, add_messages, db_session_factory):
    """The message the queue shows a moderator is claimed for them: another moderator is
    shown the next one; a reload shows the same; skipping or deciding hands it on."""
    first, second, third = add_messages(("unsure", 0.5), ("next one", 0.4), ("last", 0.1))
    alice, bob = (logged_in(app, make_user, name) for name in ("alice", "bob"))
    assert current_id(alice) == first
    bob_page = bob.get("/admin/queue").get_data(as_text=True)
    assert f'data-message-id="{second}"' in bob_page
    assert "1 open for other moderators (not shown here)" in bob_page
    assert current_id(alice) == first and current_id(bob) == second  # reloads
    alice.post("/admin/queue/skip", data={"message_id": first})
    assert current_id(alice) == third
    bob.post("/admin/queue/decide", data={"message_id": second, "label": "ham",
                                          "seen": "none"})
    assert current_id(bob) == first  # alice skipped it: no longer hers
    alice.post("/admin/queue/reset-skipped")
    assert current_id(alice) == third  # her claim; bob has the first
    expire_claims(db_session_factory)
    alice.post("/admin/queue/reset-skipped")
    assert current_id(alice) == first  # bob's claim ran out


def test_the_message_page_says_who_has_it_open_in_the_queue(
        app, make_user, add_messages, db_session_factory, viewer_client):
    """Escaped: a name from before usernames were checked must not become markup."""
    from spamguard.models import User

    (mid,) = add_messages(("unsure", 0.5))
    alice = logged_in(app, make_user, "alice")
    assert current_id(alice) == mid
    with db_session_factory() as session:  # as an old or hand-made account could be named
        session.query(User).filter_by(username="alice").one().username = "<b>al</b>"
        session.commit()
    bob = logged_in(app, make_user, "bob")
    page = bob.get(f"/admin/messages/{mid}").get_data(as_text=True)
    assert "<strong>&lt;b&gt;al&lt;/b&gt;</strong> has this message open in the review queue" \
        in page and "<b>al</b>" not in page
    assert "has this message open" not in alice.get(f"/admin/messages/{mid}").get_data(
        as_text=True)  # her own claim
    viewer_page = viewer_client.get("/admin/queue").get_data(as_text=True)
    assert f'data-message-id="{mid}"' in viewer_page  # a viewer claims and hides nothing
    assert "&lt;b&gt;al&lt;/b&gt;</strong> has this message open" in viewer_page
    bob.post(f"/admin/messages/{mid}/review", data={"label": "spam", "seen": "none"})
    assert "has this message open" not in bob.get(f"/admin/messages/{mid}").get_data(
        as_text=True)  # reviewed: the claim counts for nothing


def test_logging_out_hands_the_moderators_message_to_the_others_at_once(
        app, make_user, add_messages, db_session_factory):
    first, second = add_messages(("unsure", 0.5), ("next one", 0.4))
    alice, bob = (logged_in(app, make_user, name) for name in ("alice", "bob"))
    assert current_id(alice) == first and current_id(bob) == second
    assert alice.post("/admin/logout").status_code == 302
    bob.post("/admin/queue/skip", data={"message_id": second})
    assert current_id(bob) == first  # not only once alice's claim has run out
    page = bob.get("/admin/queue").get_data(as_text=True)
    assert "open for other moderators" not in page


def test_an_unsaved_note_is_said_back_up_to_a_length():
    from spamguard.admin.queue import QUOTED_NOTE, unsaved_note

    assert unsaved_note("  ") == unsaved_note(None) == ""
    long = unsaved_note("x" * 2000)
    assert long.endswith("x…”.") and long.count("x") == QUOTED_NOTE - 1


SAID = re.compile(r'<p class="said" role="status" aria-live="polite" data-announce>(.*?)</p>')


def test_the_queue_says_what_the_last_decision_or_skip_did(moderator_client, add_messages):
    """In a polite live region on the next page (admin.js puts its text back after the load,
    so screen readers announce it), once: a reload says nothing."""
    first, second = add_messages(("one", 0.5), ("two", 0.52))
    assert SAID.findall(moderator_client.get("/admin/queue").get_data(as_text=True)) == [""]
    decided = moderator_client.post("/admin/queue/decide", data={
        "message_id": first, "label": "spam", "seen": "none"}, follow_redirects=True)
    assert SAID.findall(decided.get_data(as_text=True)) == [f"Marked message {first} as spam."]
    assert SAID.findall(moderator_client.get("/admin/queue").get_data(as_text=True)) == [""]
    skipped = moderator_client.post("/admin/queue/skip", data={"message_id": second},
                                    follow_redirects=True)
    assert SAID.findall(skipped.get_data(as_text=True)) == [f"Skipped message {second}."]
