"""Sender rules: set, change, remove; a rule labels new messages whatever the model says
(the model's probability kept); the CLI and the JSON API."""

from __future__ import annotations

import json
import threading

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from spamguard import db
from spamguard.cli import _Group, sender_commands
from spamguard.models import Message, SenderRule, Verdict
from spamguard.senders import sender_key
from spamguard.services import messages, registry, sender_rules
from spamguard.services.sender_rules import SenderRuleError
from tests.test_messages import FakeClassifier


@pytest.fixture
def version_id(db_session, make_version_dir) -> str:
    version = registry.register_version(session=db_session, version_dir=make_version_dir("v1"))
    db_session.commit()
    return version.id


def ingest(session, classifier, external_id, sender, body="Your code is 123456"):
    return messages.ingest(session=session, classifier=classifier, gateway="twilio",
                           external_id=external_id, sender=sender, recipient="+2", body=body)


def test_sender_key_matches_a_phone_number_however_written_and_a_name_in_any_case():
    assert sender_key("+44 7911 123456") == sender_key("447911123456") == "447911123456"
    assert sender_key(" MyBank ") == sender_key("mybank") == "mybank"
    assert sender_key("60123") == "60123" != sender_key("+60123")  # short codes exact


def test_set_change_and_remove_a_rule(db_session):
    made = sender_rules.set_rule(db_session, sender=" +44 7911 123456 ", action="allow",
                                 note="bank\nalerts", by="alice")
    assert (made.changed, made.before, made.rule.sender, made.rule.note) == (
        True, None, "+44 7911 123456", "bank alerts")
    again = sender_rules.set_rule(db_session, sender="447911123456", action="allow",
                                  note=None, by="bob")
    assert (again.changed, again.rule.set_by, again.rule.note) == (False, "alice", "bank alerts")
    flipped = sender_rules.set_rule(db_session, sender="+447911123456", action="block",
                                    note=None, by="bob")
    assert (flipped.changed, flipped.before, flipped.rule.action, flipped.rule.set_by,
            flipped.rule.note) == (True, "allow", "block", "bob", "bank alerts")
    cleared = sender_rules.set_rule(db_session, sender="+447911123456", action="block",
                                    note="", by="bob")
    assert cleared.changed and cleared.rule.note is None
    db_session.commit()
    assert db_session.scalar(select(SenderRule.id).where(SenderRule.id > 1)) is None  # one row
    gone = sender_rules.remove_rule(db_session, sender="44 7911 123 456")
    assert (gone.changed, gone.before) == (True, "block")
    assert sender_rules.remove_rule(db_session, sender="447911123456").changed is False
    db_session.commit()
    assert sender_rules.list_rules(db_session) == []


@pytest.mark.parametrize(("sender", "action", "error"), [
    ("  ", "allow", "give the sender"),
    ("x" * 256, "allow", "256 characters long; the limit is 255"),
    ("BANK\nX", "block", "control character"),
    # case folding lengthens it past the key's column (a DataError, a 500, on PostgreSQL)
    ("STRAẞE" * 40, "block", "280 characters long once capitals are folded; the limit is 255"),
    ("BANK", "delete", "unknown action 'delete': use one of allow, block"),
])
def test_bad_rules_are_refused_with_a_reason(db_session, sender, action, error):
    with pytest.raises(SenderRuleError, match=error):
        sender_rules.set_rule(db_session, sender=sender, action=action, note=None, by="a")


def test_a_rule_is_committed_by_the_caller_only(db_session_factory):
    """set_rule flushes, never commits: on SQLite its savepoint's RELEASE committed it."""
    session = db_session_factory()
    try:
        sender_rules.set_rule(session, sender="MyBank", action="allow", note=None, by="a")
        session.rollback()
    finally:
        session.close()
    with db.session_scope(db_session_factory) as other:
        assert sender_rules.list_rules(other) == []


def test_two_admins_setting_the_same_sender_at_once_make_one_rule(db_session_factory):
    """The second insert finds the first (waiting for it to commit) and changes it."""
    first, second = db_session_factory(), db_session_factory()
    said: dict = {}

    def set_second() -> None:
        try:
            said["change"] = sender_rules.set_rule(second, sender="MYBANK", action="block",
                                                   note=None, by="bob")
            second.commit()
        except Exception as exc:  # noqa: BLE001  (reported below)
            said["error"] = exc

    try:
        made = sender_rules.set_rule(first, sender="MyBank", action="allow", note="alerts",
                                     by="alice")
        assert made.changed and made.before is None
        thread = threading.Thread(target=set_second)
        thread.start()
        thread.join(0.5)  # it waits for the first rule, not yet committed
        first.commit()
        thread.join(30)
        assert "error" not in said, said
        change = said["change"]
        assert (change.before, change.changed, change.rule.action) == ("allow", True, "block")
    finally:
        first.close()
        second.close()
    with db.session_scope(db_session_factory) as session:
        assert [(r.sender, r.action, r.note, r.set_by)
                for r in sender_rules.list_rules(session)] == [("MYBANK", "block", "alerts",
                                                                 "bob")]


def test_a_rule_sets_the_label_and_the_models_probability_is_kept(db_session, version_id):
    sender_rules.set_rule(db_session, sender="+44 7911 123456", action="allow", note=None,
                          by="a")
    sender_rules.set_rule(db_session, sender="PRIZES", action="block", note=None, by="a")
    db_session.commit()
    spammy, hammy = FakeClassifier(version_id, 0.93), FakeClassifier(version_id, 0.02)
    allowed = ingest(db_session, spammy, "SM1", "+447911123456")
    blocked = ingest(db_session, hammy, "SM2", "prizes")
    plain = ingest(db_session, spammy, "SM3", "+15550001111")
    assert (allowed.message.model_label, allowed.message.sender_rule,
            allowed.message.spam_probability) == ("ham", "allow", pytest.approx(0.93))
    assert (blocked.message.model_label, blocked.message.sender_rule) == ("spam", "block")
    assert (plain.message.model_label, plain.message.sender_rule) == ("spam", None)
    db_session.expire_all()
    stored = {m.external_id: (m.model_label, m.sender_rule, m.threshold_distance)
              for m in db_session.scalars(select(Message))}
    assert stored == {"SM1": ("ham", "allow", pytest.approx(0.43)),
                      "SM2": ("spam", "block", pytest.approx(0.48)),
                      "SM3": ("spam", None, pytest.approx(0.43))}
    verdicts = {v.message_id: (v.label, v.sender_rule, v.spam_probability)
                for v in db_session.scalars(select(Verdict))}
    assert verdicts[allowed.message.id] == ("ham", "allow", pytest.approx(0.93))
    assert verdicts[plain.message.id] == ("spam", None, pytest.approx(0.93))


def test_rules_apply_to_pending_messages_drained_later_not_to_verdicts_given(db_session,
                                                                          version_id):
    early = ingest(db_session, FakeClassifier(version_id, 0.9), "SM1", "MYBANK")
    waiting = ingest(db_session, None, "SM2", "MyBank")  # no model yet: pending
    sender_rules.set_rule(db_session, sender="mybank", action="allow", note=None, by="a")
    db_session.commit()
    assert messages.classify_pending(session=db_session,
                                     classifier=FakeClassifier(version_id, 0.9)) == 1
    db_session.expire_all()
    assert db_session.get(Message, early.message.id).model_label == "spam"
    assert (db_session.get(Message, waiting.message.id).model_label,
            db_session.get(Message, waiting.message.id).sender_rule) == ("ham", "allow")


def test_one_query_finds_the_rules_of_a_batch(db_session, version_id):
    sender_rules.set_rule(db_session, sender="+1 555 000 1111", action="block", note=None,
                          by="a")
    db_session.commit()
    assert sender_rules.actions_for(db_session, ["+15550001111", "+15550002222",
                                                 "1-555-000-1111"]) == {
        "+15550001111": "block", "1-555-000-1111": "block"}
    assert sender_rules.actions_for(db_session, []) == {}


# ------------------------------------------------------------------ the command line


@pytest.fixture
def cli(migrated_db_url, monkeypatch) -> click.Group:
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    group = _Group("spamguard")
    sender_commands.register(group)
    return group


def run(cli, *args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_senders_commands(cli, migrated_db_url):
    allowed = run(cli, "senders", "allow", "+44 7911 123456", "--note", "bank alerts")
    assert allowed.exit_code == 0
    assert allowed.stdout == ("allowed +44 7911 123456: messages from phone number "
                              "447911123456 (however it is written) are ham from now on "
                              "(messages already classified keep their verdicts)\n")
    assert "sender ids can be forged" in allowed.stderr
    assert run(cli, "senders", "allow", "447911123456").stdout == (
        "allowed already: +44 7911 123456; nothing changed\n")
    blocked = run(cli, "senders", "block", "Prize-Draw")
    assert "messages from 'Prize-Draw' (capitals or not) are spam" in blocked.stdout
    flipped = run(cli, "senders", "block", "+447911123456")
    assert flipped.stdout.endswith("are spam from now on (it was allowed)\n")
    listed = run(cli, "senders", "list", "--json").stdout.splitlines()
    rows = [json.loads(line) for line in listed]
    assert [(r["sender"], r["action"], r["label"], r["note"]) for r in rows] == [
        ("+447911123456", "block", "spam", "bank alerts"), ("Prize-Draw", "block", "spam", None)]
    table = run(cli, "senders", "list").stdout
    assert "block  +447911123456" in table and "(bank alerts)" in table
    assert run(cli, "senders", "remove", "prize-draw").stdout == (
        "removed the rule for Prize-Draw (it was blocked): the model decides its messages "
        "again\n")
    assert run(cli, "senders", "remove", "nobody").stdout == (
        "no rule matches nobody; nothing changed\n")
    refused = CliRunner().invoke(cli, ["senders", "block", " "])
    assert refused.exit_code == 2
    assert "give the sender" in refused.stderr
    engine = db.make_engine(migrated_db_url)
    with db.session_scope(db.make_session_factory(engine)) as session:
        assert [r.sender for r in sender_rules.list_rules(session)] == ["+447911123456"]
    engine.dispose()


def test_listing_no_rules_says_so_on_stderr(cli):
    empty = run(cli, "senders", "list")
    assert (empty.stdout, empty.stderr) == (
        "", "no sender rules: the model decides every message\n")
    assert run(cli, "senders", "list", "--json").output == ""


# ------------------------------------------------------------------ the JSON API


def test_the_api_answers_the_rules_label_and_says_a_rule_set_it(app, api):
    from spamguard.extensions import get_db

    with app.app_context(), db.session_scope(get_db().session_factory) as session:
        sender_rules.set_rule(session, sender="+15550003333", action="block", note=None,
                              by="a")
    posted = api("POST", "/messages", json={"id": "m1", "from": "+1 555 000 3333",
                                            "to": "+2", "body": "see you at lunch"})
    assert posted.status_code == 201, posted.get_json()
    answer = posted.get_json()
    assert (answer["label"], answer["sender_rule"]) == ("spam", "block")
    read = api("GET", f"/messages/{answer['message_id']}").get_json()
    assert read["sender_rule"] == "block"
    assert [(v["label"], v["sender_rule"]) for v in read["verdicts"]] == [("spam", "block")]
    other = api("POST", "/messages", json={"id": "m2", "from": "+15550004444", "to": "+2",
                                           "body": "see you at lunch"}).get_json()
    assert other["sender_rule"] is None
