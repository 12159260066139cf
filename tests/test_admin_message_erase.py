"""Erasing a message, or every message from its sender, from the message's page: admins
only, asked first on a page that says what goes, done by the service `spamguard messages
erase` uses, and said in an escaped message on the messages list. Both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from spamguard.db import session_scope
from spamguard.ml.data import text_hash
from spamguard.models import EvalExample, Message, Review, Verdict
from spamguard.services import message_deletion, model_diff, registry, reviews, sender_rules
from tests.fixtures_admin import flashes
from tests.test_message_deletion import _changes

SECRET = "my PIN is 4321, call Anna"


@pytest.fixture
def reviewed(add_messages, make_user, db_session_factory) -> dict[str, int]:
    """A message with a verdict and a moderator's review with a note ("mine"), and another
    message from someone else ("other")."""
    [mine] = add_messages((SECRET, 0.9), sender="+447911123456")
    [other] = add_messages(("WIN a free cruise now", 0.95), sender="+15550001111")
    mod = make_user("mod", "moderator")
    with session_scope(db_session_factory) as session:
        version = registry.active_version(session).id
        for message_id in (mine, other):
            session.add(Verdict(message_id=message_id, model_version_id=version,
                                spam_probability=0.9, label="spam", threshold=0.5))
        reviews.add_review(session=session, message_id=mine, label="ham", user_id=mod,
                           note="a note naming Anna")
    return {"mine": mine, "other": other}


def _count(factory, model, *where) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def _erase_url(message_id: int) -> str:
    return f"/admin/messages/{message_id}/erase"


def test_the_erase_control_shows_for_admins_only(admin_client, moderator_client,
                                                 viewer_client, reviewed):
    url = f"/admin/messages/{reviewed['mine']}"
    page = admin_client.get(url).get_data(as_text=True)
    assert (f'<a class="btn small danger" href="{_erase_url(reviewed["mine"])}">Erase this '
            "message</a>") in page
    assert (f'<a class="btn small" href="{_erase_url(reviewed["mine"])}?scope=sender">Erase '
            "every message from this sender</a>") in page
    for client in (moderator_client, viewer_client):
        shown = client.get(url).get_data(as_text=True)
        assert "/erase" not in shown and "Erase this message" not in shown


def test_the_confirmation_says_what_goes_and_changes_nothing(admin_client, reviewed,
                                                             db_session_factory):
    asked = admin_client.get(_erase_url(reviewed["mine"]))
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200
    assert f"<h1>Erase message #{reviewed['mine']}?</h1>" in page
    assert SECRET in page and "reviewed by a moderator" in page
    for said in ("verdicts", "reviews and the moderators' notes on them", "spot-check draws",
                 "the evaluation set", "<code>changes.md</code>",
                 "where no other stored message has the same text",
                 "<strong>This cannot be undone.</strong>"):
        assert said in page, said
    assert f'<input type="hidden" name="confirmed" value="{reviewed["mine"]}">' in page
    assert 'name="csrf_token"' in page
    # A form without the confirmation (stale or hand-made) only leads to the question.
    unconfirmed = admin_client.post(_erase_url(reviewed["mine"]))
    assert unconfirmed.status_code == 302
    assert unconfirmed.headers["Location"] == f"{_erase_url(reviewed['mine'])}?scope=message"
    assert admin_client.post(_erase_url(reviewed["mine"]),
                             data={"confirmed": str(reviewed["other"])}).status_code == 302
    assert _count(db_session_factory, Message) == 2
    assert _count(db_session_factory, Review) == 1


def test_erasing_takes_the_message_its_verdicts_and_reviews_through_the_service(
        admin_client, reviewed, db_session_factory, monkeypatch):
    calls = []
    real = message_deletion.delete_in
    monkeypatch.setattr(message_deletion, "delete_in",
                        lambda *args, **kwargs: calls.append(args[1]) or real(*args, **kwargs))
    done = admin_client.post(_erase_url(reviewed["mine"]),
                             data={"confirmed": str(reviewed["mine"])})
    assert done.status_code == 302 and done.headers["Location"] == "/admin/messages"
    assert [c.message_ids for c in calls] == [(reviewed["mine"],)]
    listing = admin_client.get("/admin/messages")
    assert flashes(listing) == [("info", f"Erased message {reviewed['mine']} (reviewed), with "
                                         "its verdicts, reviews and notes.")]
    assert SECRET not in listing.get_data(as_text=True)
    mine = reviewed["mine"]
    assert _count(db_session_factory, Message, Message.id == mine) == 0
    assert _count(db_session_factory, Review, Review.message_id == mine) == 0
    assert _count(db_session_factory, Verdict, Verdict.message_id == mine) == 0
    assert _count(db_session_factory, Verdict, Verdict.message_id == reviewed["other"]) == 1
    assert admin_client.get(f"/admin/messages/{mine}").status_code == 404
    assert admin_client.get(_erase_url(mine)).status_code == 404
    from spamguard.db import session_scope
    from spamguard.services import audit

    with session_scope(db_session_factory) as session:  # the admin's name, no text
        [event] = audit.recent(session, action="messages")
        assert (event.actor, event.action, event.details) == (
            "admin", "messages.erase", {"messages": 1, "reviewed": 1, "ids": [mine]})


def test_the_text_leaves_the_evaluation_set_and_changes_md(admin_client, reviewed,
                                                           db_session_factory,
                                                           make_version_dir):
    from spamguard.models import TrainingRun

    directory = make_version_dir("v-erase")
    (directory / "lexical.json").write_text("{}", encoding="utf-8")  # a blended version
    with session_scope(db_session_factory) as session:
        registry.register_version(session=session, version_dir=directory,
                                  activate_if_none=False)
        session.add(EvalExample(text_hash=text_hash(SECRET), text=SECRET, label="ham",
                                source="review"))
        session.add(TrainingRun(candidate_version_id="v-erase", max_review_id=10**6,
                                status="rejected"))  # it read every review there is
    _changes(directory, [SECRET, "WIN a free cruise now"])
    asked = admin_client.get(_erase_url(reviewed["mine"])).get_data(as_text=True)
    assert ("Not erased either: model version v-erase was trained on the moderators' labels "
            "of this message, and its <code>lexical.json</code> keeps words of its text") in asked

    done = admin_client.post(_erase_url(reviewed["mine"]),
                             data={"confirmed": str(reviewed["mine"])}, follow_redirects=True)

    assert flashes(done) == [("info", f"Erased message {reviewed['mine']} (reviewed), with its "
                                      "verdicts, reviews and notes; 1 evaluation-set example "
                                      "removed; example texts erased from changes.md of "
                                      "v-erase; version v-erase trained on moderators' "
                                      "labels of erased messages: its lexical.json keeps "
                                      "words and character n-grams of those texts until "
                                      "deleted (spamguard models delete, or prune once "
                                      "newer versions serve).")]
    assert _count(db_session_factory, EvalExample, EvalExample.source == "review") == 0
    markdown = (directory / model_diff.CHANGES_MD).read_text(encoding="utf-8")
    assert "4321" not in markdown and "WIN a free cruise" in markdown


def test_moderators_and_viewers_get_403(moderator_client, viewer_client, reviewed,
                                        db_session_factory):
    for client in (moderator_client, viewer_client):
        for scope in ("message", "sender"):
            url = f"{_erase_url(reviewed['mine'])}?scope={scope}"
            assert client.get(url).status_code == 403
            assert client.post(url, data={"confirmed": str(reviewed["mine"]),
                                          "scope": scope}).status_code == 403
    assert _count(db_session_factory, Message) == 2


def test_no_such_message_is_a_404_and_only_a_confirmed_post_erases(admin_client, reviewed,
                                                                   db_session_factory):
    for url in (_erase_url(999_999), f"{_erase_url(999_999)}?scope=sender"):
        assert admin_client.get(url).status_code == 404
        assert admin_client.post(url, data={"confirmed": "999999"}).status_code == 404
    # A GET is the question, never the erasure; other methods are not allowed.
    url = f"{_erase_url(reviewed['mine'])}?confirmed={reviewed['mine']}"
    assert admin_client.get(url).status_code == 200
    assert admin_client.client.delete(_erase_url(reviewed["mine"])).status_code == 405
    assert admin_client.post(f"{_erase_url(reviewed['mine'])}?scope=everyone",
                             data={"confirmed": str(reviewed["mine"])}).status_code == 400
    assert _count(db_session_factory, Message) == 2


def test_a_post_without_a_valid_csrf_token_erases_nothing(admin_client, reviewed,
                                                          db_session_factory):
    refused = admin_client.client.post(_erase_url(reviewed["mine"]), data={
        "confirmed": str(reviewed["mine"]), "csrf_token": "forged"})
    assert refused.status_code == 400
    assert "Nothing was changed" in refused.get_data(as_text=True)
    assert _count(db_session_factory, Message) == 2


def test_erasing_every_message_from_the_sender_shows_the_count_first(
        admin_client, reviewed, add_messages, db_session_factory):
    add_messages("hi again", "and again", sender="+44 7911 123456")  # the same number
    with session_scope(db_session_factory) as session:
        sender_rules.set_rule(session, sender="447911123456", action="block", note=None,
                              by="admin")
    url = f"{_erase_url(reviewed['mine'])}?scope=sender"
    page = admin_client.get(url).get_data(as_text=True)
    assert "<h1>Erase every message from this sender?</h1>" in page
    assert ("3 messages from phone number 447911123456 (however it is written), 1 of them "
            "reviewed by moderators") in page
    assert '<input type="hidden" name="scope" value="sender">' in page
    assert ">Erase 3 messages</button>" in page
    assert "The sender rule for this sender (blocked) stays" in page

    done = admin_client.post(_erase_url(reviewed["mine"]), data={
        "confirmed": str(reviewed["mine"]), "scope": "sender"}, follow_redirects=True)
    assert flashes(done) == [("info", "Erased 3 messages from phone number 447911123456 "
                                      "(however it is written), 1 of them reviewed, with their "
                                      "verdicts, reviews and notes. The sender rule for this "
                                      "sender stays (the Senders page removes it).")]
    with db_session_factory() as session:
        assert list(session.scalars(select(Message.id))) == [reviewed["other"]]
        assert session.scalar(select(func.count()).select_from(Review)) == 0


def test_a_sender_from_an_sms_is_escaped_on_the_page_and_in_the_message(
        admin_client, add_messages):
    evil = '<img src=x onerror=alert(1)>\u202e'
    [message_id, _] = add_messages(("hello", 0.9), "bye", sender=evil)
    page = admin_client.get(f"{_erase_url(message_id)}?scope=sender").get_data(as_text=True)
    assert "<img src=x" not in page
    assert "2 messages from &lt;img src=x onerror=alert(1)&gt;[U+202E] (exactly as written)" in page
    done = admin_client.post(_erase_url(message_id), data={
        "confirmed": str(message_id), "scope": "sender"}, follow_redirects=True)
    shown = done.get_data(as_text=True)
    assert "<img src=x" not in shown and "\u202e" not in shown
    assert flashes(done) == [("info", "Erased 2 messages from <img src=x onerror=alert(1)>"
                                      "[U+202E] (exactly as written), with their verdicts, "
                                      "reviews and notes.")]


def test_too_many_for_a_request_points_to_the_command(admin_client, add_messages,
                                                      db_session_factory, monkeypatch):
    from spamguard.admin import message_erase

    monkeypatch.setattr(message_erase, "MAX_IN_REQUEST", 1)
    [first, _] = add_messages("one", "two", sender="Anna's Bank")
    url = f"{_erase_url(first)}?scope=sender"
    page = admin_client.get(url).get_data(as_text=True)
    assert ("That is more than 1 messages, too many for one page request: erase them with "
            "<code>spamguard messages erase --sender &#39;Anna&#39;&#34;&#39;&#34;&#39;s "
            "Bank&#39;</code> on the server.") in page
    assert 'name="confirmed"' not in page
    refused = admin_client.post(_erase_url(first), data={"confirmed": str(first),
                                                         "scope": "sender"})
    assert refused.status_code == 302 and refused.headers["Location"] == url
    assert _count(db_session_factory, Message) == 2
    # One message is never too many.
    assert 'name="confirmed"' in admin_client.get(_erase_url(first)).get_data(as_text=True)


def test_a_blank_sender_offers_no_sender_erasure(admin_client, add_messages):
    [message_id] = add_messages("from nobody", sender="  ")
    page = admin_client.get(f"/admin/messages/{message_id}").get_data(as_text=True)
    assert "Erase this message" in page and "scope=sender" not in page
    assert admin_client.get(f"{_erase_url(message_id)}?scope=sender").status_code == 400
