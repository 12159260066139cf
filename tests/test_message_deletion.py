"""Deleting stored messages: ``spamguard messages purge`` (a retention period) and
``messages erase`` (a sender's messages, or messages by id), on both databases. What goes
with a message (verdicts, reviews, draws, claims, campaign counts, the evaluation set's
copies, changes.md examples), and what stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from spamguard.cli import _Group, message_commands
from spamguard.ml.data import text_hash
from spamguard.models import (
    Campaign,
    EvalExample,
    Message,
    QueueClaim,
    Review,
    SpotCheckDraw,
    Verdict,
)
from spamguard.services import (
    example_redaction,
    message_deletion,
    model_diff,
    registry,
    reviews,
    users,
)
from spamguard.services.message_deletion import Selection
from spamguard.sqltypes import utcnow
from tests.fixtures_admin import new_message

OLD = datetime(2026, 1, 10, 12, tzinfo=UTC)
NEW = datetime(2026, 11, 20, 12, tzinfo=UTC)
CUTOFF = datetime(2026, 6, 1, tzinfo=UTC)


def _add(session, body, *, received_at, sender="+15550001111", p=0.9, version=None):
    message = new_message(body, p=p, sender=sender, received_at=received_at,
                          model_version_id=version)
    session.add(message)
    session.flush()
    if version is not None:
        session.add(Verdict(message_id=message.id, model_version_id=version,
                            spam_probability=p, label=message.model_label, threshold=0.5))
    return message.id


def _moderator(session) -> int:
    """Add the moderator "mod"; return its id."""
    users.create_user(session=session, username="mod", password="a long passphrase 1",
                      role="moderator")
    session.flush()
    return session.scalar(select(users.User.id).where(users.User.username == "mod"))


def _blended(make_version_dir, session, name: str):
    """Register version ``name`` with a lexical half (a lexical.json); return its folder."""
    directory = make_version_dir(name)
    (directory / "lexical.json").write_text("{}", encoding="utf-8")
    registry.register_version(session=session, version_dir=directory)
    return directory


@pytest.fixture
def world(db_session, make_version_dir):
    """Old and new messages with verdicts, a review, a spot-check draw, a queue claim and a
    campaign that spans the cutoff; returns their ids by name."""
    version = registry.register_version(session=db_session,
                                        version_dir=make_version_dir("v1")).id
    mod = _moderator(db_session)
    ids = {name: _add(db_session, body, received_at=when, version=version)
           for name, body, when in (
               ("old", "WIN a prize now", OLD), ("old_reviewed", "call me later", OLD),
               ("old_drawn", "free ringtones", OLD), ("old_claimed", "cheap loans", OLD),
               ("new", "WIN a prize today", NEW))}
    db_session.flush()
    reviews.add_review(session=db_session, message_id=ids["old_reviewed"], label="ham",
                       user_id=mod, note="a note about this message")
    db_session.add(SpotCheckDraw(user_id=mod, verdict="spam", message_id=ids["old_drawn"],
                                 model_version_id=version, mode="spam"))
    db_session.add(QueueClaim(message_id=ids["old_claimed"], user_id=mod,
                              claimed_until=utcnow() + timedelta(minutes=5)))
    campaign = Campaign(first_seen=OLD, last_seen=NEW, size=2,
                        representative_message_id=ids["old"], label="spam")
    lonely = Campaign(first_seen=OLD, last_seen=OLD, size=1,
                      representative_message_id=ids["old_drawn"])
    db_session.add_all([campaign, lonely])
    db_session.flush()
    for name, target in (("old", campaign), ("new", campaign), ("old_drawn", lonely)):
        db_session.get(Message, ids[name]).campaign_id = target.id
    db_session.commit()
    ids.update(campaign=campaign.id, lonely=lonely.id, version=version)
    return ids


def _stored(session) -> set[int]:
    session.expire_all()
    return set(session.scalars(select(Message.id)))


def test_a_purge_keeps_reviewed_and_recent_messages_and_takes_everything_of_the_rest(
        world, db_session, db_session_factory, monkeypatch):
    monkeypatch.setattr(message_deletion, "BATCH", 2)  # several batches, one transaction each
    selection = Selection(before=CUTOFF, keep_reviewed=True)
    assert message_deletion.count(db_session, selection) == (3, 0)
    assert message_deletion.kept_reviewed(db_session, selection) == 1
    db_session.commit()

    done = message_deletion.delete_messages(db_session_factory, selection)

    assert (done.messages, done.reviewed) == (3, 0)
    assert _stored(db_session) == {world["old_reviewed"], world["new"]}
    assert db_session.scalar(select(func.count()).select_from(Verdict)) == 2
    assert db_session.scalar(select(func.count()).select_from(SpotCheckDraw)) == 0
    assert db_session.scalar(select(func.count()).select_from(QueueClaim)) == 0
    assert db_session.scalar(select(func.count()).select_from(Review)) == 1
    # The campaign that lost its representative is recounted around what is left; the one
    # left empty is gone.
    assert (done.campaigns_recounted, done.campaigns_removed) == (
        {world["campaign"]}, {world["lonely"]})
    campaign = db_session.get(Campaign, world["campaign"])
    assert (campaign.size, campaign.representative_message_id, campaign.label) == (
        1, world["new"], "spam")
    assert campaign.first_seen.replace(tzinfo=UTC) == NEW
    assert db_session.get(Campaign, world["lonely"]) is None


def test_a_purge_with_reviewed_messages_takes_their_reviews_and_notes(
        world, db_session, db_session_factory):
    done = message_deletion.delete_messages(db_session_factory, Selection(before=CUTOFF))
    assert (done.messages, done.reviewed) == (4, 1)
    assert _stored(db_session) == {world["new"]}
    assert db_session.scalar(select(func.count()).select_from(Review)) == 0


def test_a_selection_never_means_every_message():
    with pytest.raises(ValueError, match="never selects every message"):
        Selection(keep_reviewed=True)


def test_erasing_a_sender_finds_every_written_form_and_only_theirs(db_session,
                                                                     db_session_factory):
    for sender in ("+44 7911 123456", "+447911123456", "447911123456", "+15550001111"):
        _add(db_session, f"hello from {sender}", received_at=NEW, sender=sender)
    db_session.commit()
    done = message_deletion.delete_messages(db_session_factory,
                                            Selection(sender="+44 (7911) 123-456"))
    assert done.messages == 3
    assert {m.sender for m in db_session.scalars(select(Message))} == {"+15550001111"}


def test_erasing_a_sender_finds_rows_an_older_release_stored_without_digits(
        db_session, db_session_factory):
    """A deployment audit: between `db upgrade` and the restart the old release stores
    messages with no sender_digits (this code's insert fills it in), and an erasure
    request for that number missed them."""
    from sqlalchemy import update

    for sender in ("+447911123456", "447911123456", "+44 7911 123456", "+15550001111",
                   "+447911123456"):
        _add(db_session, f"hello from {sender}", received_at=NEW, sender=sender)
    db_session.commit()
    db_session.execute(update(Message).where(Message.id < 5).values(sender_digits=None))
    db_session.commit()
    done = message_deletion.delete_messages(db_session_factory,
                                            Selection(sender="+44 (7911) 123-456"))
    # the fifth, stored by this code, and the two old rows in a gateway's forms
    assert done.messages == 3
    assert sorted(m.sender for m in db_session.scalars(select(Message))) == [
        "+15550001111", "+44 7911 123456"]  # an old row in a hand-written form: not found
    done = message_deletion.delete_messages(db_session_factory,
                                            Selection(sender="+44 7911 123456"))
    assert done.messages == 1  # as written, it is


def _changes(directory, texts):
    examples = [{"text": t, "true_label": "spam", "old_probability": 0.2,
                 "new_probability": 0.9} for t in texts]
    flips = {"total": len(texts), "fixed": len(texts), "broken": 0}
    for name, _, _ in model_diff.FLIP_KINDS:
        flips[name] = {"count": 0, "fixed": 0, "broken": 0, "examples": []}
    flips[model_diff.FLIP_KINDS[0][0]].update(count=len(texts), fixed=len(texts),
                                             examples=examples)
    metrics = dict.fromkeys(model_diff.METRICS, 0.9)
    model_diff.write_changes(directory, {"versions": {"active": "v0", "candidate": "v1"},
                                         "active": metrics, "candidate": metrics,
                                         "flips": flips, "eval_messages": 10})


def test_erased_texts_leave_the_evaluation_set_and_changes_md_unless_another_message_has_them(
        db_session, db_session_factory, make_version_dir):
    directory = make_version_dir("v1")
    registry.register_version(session=db_session, version_dir=directory)
    secret, shared = "my PIN is 4321, call Anna", "WIN a free cruise now"
    _add(db_session, secret, received_at=NEW, sender="+447911123456")
    _add(db_session, shared, received_at=NEW, sender="+447911123456")
    _add(db_session, shared, received_at=NEW, sender="+15550001111")  # someone else's copy
    for text, source in ((secret, "review"), (shared, "review"), ("base text", "base")):
        db_session.add(EvalExample(text_hash=text_hash(text), text=text, label="spam",
                                   source=source))
    db_session.commit()
    _changes(directory, [secret, shared, "base text"])

    done = message_deletion.delete_messages(db_session_factory,
                                            Selection(sender="+447911123456"))

    assert (done.messages, done.eval_examples, done.redacted_versions) == (2, 1, ["v1"])
    left = set(db_session.scalars(select(EvalExample.text)))
    assert left == {shared, "base text"}
    markdown = (directory / model_diff.CHANGES_MD).read_text(encoding="utf-8")
    assert "4321" not in markdown and "| \\[erased\\] |" in markdown  # Markdown-escaped
    assert "WIN a free cruise" in markdown  # another sender's message still has it
    texts = [e["text"] for e in example_redaction.examples(model_diff.load_changes(directory))]
    assert texts == [example_redaction.ERASED, shared, "base text"]
    # Nothing left to erase the second time; the file is not rewritten.
    again = message_deletion.delete_messages(db_session_factory, Selection(sender="+447911123456"))
    assert (again.messages, again.redacted_versions) == (0, [])


def test_an_erased_text_is_no_longer_found_by_the_message_search(db_session,
                                                                 db_session_factory):
    from spamguard.services import text_search

    _add(db_session, "zanzibar holiday code 5521", received_at=NEW, sender="+447911123456")
    db_session.commit()
    found = lambda: db_session.scalar(  # noqa: E731
        select(func.count()).select_from(Message)
        .where(text_search.body_contains("zanzibar", indexed=text_search.has_index(db_session))))
    assert found() == 1
    db_session.commit()
    message_deletion.delete_messages(db_session_factory, Selection(sender="+447911123456"))
    db_session.expire_all()
    assert found() == 0


# The command line.

@pytest.fixture
def cli(migrated_db_url, monkeypatch) -> click.Group:
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    group = _Group("spamguard")
    message_commands.register(group)
    return group


def _run(cli, *args, stdin=None):
    return CliRunner().invoke(cli, ["messages", *args], input=stdin, catch_exceptions=False)


def test_purge_counts_on_a_dry_run_and_needs_yes_off_a_terminal(cli, world, db_session):
    before = _stored(db_session)
    dry = _run(cli, "purge", "--before", "2026-06-01", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == ("would purge 3 message(s) received before 2026-06-01 00:00 UTC"
                          "; kept 1 reviewed (moderators' labels: --include-reviewed deletes "
                          "them)\n")
    refused = _run(cli, "purge", "--before", "2026-06-01")
    assert refused.exit_code == 2
    assert "add --yes to confirm" in refused.stderr
    assert _stored(db_session) == before

    done = _run(cli, "purge", "--before", "2026-06-01", "--yes")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("purged 3 message(s) received before 2026-06-01 00:00 UTC; "
                                  "kept 1 reviewed")
    assert "campaigns: 1 recounted, 1 removed (left empty)" in done.stdout
    assert _stored(db_session) == {world["old_reviewed"], world["new"]}


def test_purge_older_than_days_counts_back_from_now(cli, db_session):
    _add(db_session, "forty days old", received_at=utcnow() - timedelta(days=40))
    _add(db_session, "twenty days old", received_at=utcnow() - timedelta(days=20))
    db_session.commit()
    result = _run(cli, "purge", "--older-than", "30", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("purged 1 message(s) received before ")
    assert [m.body for m in db_session.scalars(select(Message))] == ["twenty days old"]


@pytest.mark.parametrize("args, said", [
    ((), "give one of --older-than DAYS or --before YYYY-MM-DD"),
    (("--older-than", "3", "--before", "2026-01-01"), "give one of --older-than"),
    (("--older-than", "0"), "0 is not in the range x>=1"),
    (("--older-than", "99999999"), "too many days"),
    (("--before", "yesterday"), "'yesterday' does not match the format"),
    (("--before", "2026-02-30"), "'2026-02-30': there is no such day"),
    # A year typo (2099 for 2026) purged every unreviewed message (a helper's walkthrough).
    (("--before", "2099-01-01"), "--before 2099-01-01 is in the future"),
])
def test_purge_refuses_unclear_options_in_one_line(cli, args, said):
    result = _run(cli, "purge", *args)
    assert result.exit_code == 2
    assert said in result.output
    assert "Traceback" not in result.output


def test_erase_by_id_says_which_ids_were_not_there(cli, world, db_session, db_backend):
    result = _run(cli, "erase", "--message-id", str(world["old_reviewed"]),
                  "--message-id", "999999", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"erased 1 message(s) with id {world['old_reviewed']}, 999999 "
                             "(1 reviewed); 1 id(s) not found: 999999\n")
    assert world["old_reviewed"] not in _stored(db_session)
    # On SQLite the text stays in the file until it is compacted: the command says how.
    compact_note = "until `spamguard db compact`"
    assert (compact_note in result.stderr) == (db_backend == "sqlite")
    again = _run(cli, "erase", "--message-id", str(world["old_reviewed"]), "--yes")
    assert again.stdout.startswith("erased 0 message(s)") and compact_note not in again.stderr


def test_erase_by_id_names_the_missing_ids_before_a_dry_run_or_many(cli, world):
    present = world["old_reviewed"]
    dry = _run(cli, "erase", "--message-id", "999998", "--message-id", str(present),
               "--message-id", "999999", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.endswith("; 2 id(s) not found: 999998, 999999\n")
    many = [arg for i in range(25) for arg in ("--message-id", str(900000 + i))]
    result = _run(cli, "erase", *many, "--dry-run")
    assert result.stdout.endswith("; 25 id(s) not found: "
                                  + ", ".join(str(900000 + i) for i in range(20))
                                  + " and 5 more\n")


def test_erase_asks_at_a_terminal_and_notes_a_sender_rule_that_stays(cli, db_session,
                                                                     monkeypatch):
    from spamguard.services import sender_rules

    _add(db_session, "hi it's me", received_at=NEW, sender="+447911123456")
    sender_rules.set_rule(db_session, sender="+44 7911 123456", action="block", note=None,
                          by="admin")
    db_session.commit()
    monkeypatch.setattr(message_commands, "is_terminal", lambda stream: True)
    declined = _run(cli, "erase", "--sender", "+447911123456", stdin="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert len(_stored(db_session)) == 1

    result = _run(cli, "erase", "--sender", " +447911123456 ", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "erased 1 message(s) from +447911123456" in result.stdout
    assert ("note: the sender rule for +44 7911 123456 (block) stays; remove it with: "
            "spamguard senders remove '+44 7911 123456'") in result.stderr
    assert _stored(db_session) == set()
    nothing = _run(cli, "erase", "--sender", "+447911123456", "--dry-run")
    assert nothing.stdout.startswith("would erase 0 message(s)") and nothing.stderr == ""


def test_erase_names_the_versions_whose_lexical_half_learnt_an_erased_reviewed_text(
        cli, db_session, make_version_dir):
    """A blended version keeps the words of what it was trained on: the erase says which
    versions a retraining run trained on an erased message's label, so an operator can
    delete them. Not: a run that read reviews only up to before the label, a version
    without a lexical half, a deleted one, or a text another stored message still has."""
    from spamguard.models import ModelVersion, TrainingRun

    for name in ("v1", "v2", "v4", "v5"):
        _blended(make_version_dir, db_session, name)
    registry.register_version(session=db_session, version_dir=make_version_dir("v3"))
    mod = _moderator(db_session)
    shared = _add(db_session, "WIN a free cruise now", received_at=NEW, sender="+15550001111")
    earlier = reviews.add_review(session=db_session, message_id=shared, label="spam",
                                 user_id=mod).id
    secret = _add(db_session, "my PIN is 4321, call Anna", received_at=NEW,
                  sender="+447911123456")
    copy = _add(db_session, "WIN a free cruise now", received_at=NEW, sender="+447911123456")
    label = reviews.add_review(session=db_session, message_id=secret, label="ham",
                               user_id=mod).id
    last = reviews.add_review(session=db_session, message_id=copy, label="spam",
                              user_id=mod).id
    for version, read_up_to in (("v1", earlier), ("v2", last), ("v3", last),
                                ("v4", last), ("v5", label)):
        db_session.add(TrainingRun(candidate_version_id=version, max_review_id=read_up_to,
                                   status="promoted"))
    db_session.get(ModelVersion, "v4").status = "deleted"
    db_session.commit()

    # Its text is still another sender's message: nothing learnt is gone.
    assert "lexical.json" not in _run(cli, "erase", "--message-id", str(copy),
                                      "--dry-run").output
    first = _run(cli, "erase", "--message-id", str(copy), "--yes")
    assert first.exit_code == 0 and "lexical.json" not in first.output
    # A dry run names them first, so an operator knows before erasing.
    dry = _run(cli, "erase", "--sender", "+447911123456", "--dry-run")
    assert ("would erase 1 message(s) from +447911123456 (1 reviewed); versions v2, v5 "
            "trained on moderators' labels of these messages: their lexical.json keeps"
            ) in dry.stdout
    assert _stored(db_session) == {shared, secret}
    result = _run(cli, "erase", "--sender", "+447911123456", "--yes")

    assert result.exit_code == 0, result.output
    assert ("versions v2, v5 trained on moderators' labels of erased messages: their "
            "lexical.json keeps words and character n-grams of those texts until deleted"
            ) in result.stdout
    assert _stored(db_session) == {shared}


def test_a_learnt_text_whose_copies_go_in_different_batches_names_its_version(
        cli, db_session, make_version_dir, monkeypatch):
    """A review of the change: the reviewed message went in one batch, an unreviewed copy
    of its text in the next, and neither batch saw a reviewed text go."""
    from spamguard.models import TrainingRun

    _blended(make_version_dir, db_session, "v1")
    mod = _moderator(db_session)
    first = _add(db_session, "ok see you", received_at=OLD, sender="+447911123456")
    _add(db_session, "ok see you", received_at=NEW, sender="+447911123456")
    label = reviews.add_review(session=db_session, message_id=first, label="ham",
                               user_id=mod).id
    db_session.add(TrainingRun(candidate_version_id="v1", max_review_id=label,
                               status="promoted"))
    db_session.commit()
    monkeypatch.setattr(message_deletion, "BATCH", 1)

    result = _run(cli, "erase", "--sender", "+447911123456", "--yes")

    assert result.exit_code == 0 and "erased 2 message(s)" in result.stdout, result.output
    assert "version v1 trained on moderators' labels of erased messages" in result.stdout


@pytest.mark.parametrize("args, said", [
    ((), "give --sender SENDER or --message-id ID (not both)"),
    (("--sender", "x", "--message-id", "3"), "(not both)"),
    (("--sender", "  "), "--sender is empty"),
    (("--message-id", "0"), "is not in the range"),
])
def test_erase_refuses_unclear_options_in_one_line(cli, args, said):
    result = _run(cli, "erase", *args)
    assert result.exit_code == 2
    assert said in result.output


def test_on_sqlite_a_pause_between_batches_lets_the_service_store_messages(
        world, db_session, db_session_factory, monkeypatch):
    """SQLite has one writer: back-to-back batches kept inserts waiting for seconds
    (bench/purge.py); PostgreSQL locks rows and needs no pause."""
    pauses: list[float] = []
    monkeypatch.setattr(message_deletion.time, "sleep", pauses.append)
    monkeypatch.setattr(message_deletion, "BATCH", 1)
    done = message_deletion.delete_messages(db_session_factory, Selection(before=CUTOFF))
    expected = (message_deletion.SQLITE_PAUSE_SECONDS
                if db_session.get_bind().dialect.name == "sqlite" else 0)
    assert done.messages == 4
    assert pauses == [expected] * 4


def test_a_run_stopped_half_way_has_redacted_what_it_erased(db_session, db_session_factory,
                                                          make_version_dir, monkeypatch):
    """changes.md is rewritten after each batch: redacting only at the end left the texts of
    a stopped run's batches there, and no later run finds them (their messages are gone)."""
    directory = make_version_dir("v1")
    registry.register_version(session=db_session, version_dir=directory)
    first, second = "my PIN is for Anna", "the code is for Bob"
    for text in (first, second):
        _add(db_session, text, received_at=NEW, sender="+447911123456")
    db_session.commit()
    _changes(directory, [first, second])
    monkeypatch.setattr(message_deletion, "BATCH", 1)

    def stop(_count):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        message_deletion.delete_messages(db_session_factory, Selection(sender="+447911123456"),
                                         on_batch=stop)
    texts = [e["text"] for e in example_redaction.examples(model_diff.load_changes(directory))]
    assert texts == [example_redaction.ERASED, second]
    assert [m.body for m in db_session.scalars(select(Message))] == [second]


# Racing the running service: a batch commits between what another request read and wrote.

class _ErasingClassifier:
    """A model that, while it scores, lets an erase of the same messages commit."""

    def __init__(self, version, factory, selection):
        self.version, self.threshold = version, 0.5
        self.factory, self.selection = factory, selection

    def predict_proba(self, texts):
        import numpy as np

        message_deletion.delete_messages(self.factory, self.selection)
        return np.full(len(texts), 0.9)

    def label_for(self, p):
        return "spam" if p >= self.threshold else "ham"


def test_a_message_erased_while_it_is_classified_is_not_an_error(
        db_session, db_session_factory, make_version_dir):
    from spamguard.services import messages

    version = registry.register_version(session=db_session,
                                        version_dir=make_version_dir("v1")).id
    db_session.commit()
    model = _ErasingClassifier(version, db_session_factory, Selection(sender="+447911123456"))
    result = messages.ingest(session=db_session, classifier=model, gateway="api",
                             external_id="e1", sender="+447911123456", recipient="+2",
                             body="hello, it's me")
    assert result.verdict is None
    assert _stored(db_session) == set()
    assert db_session.scalar(select(func.count()).select_from(Verdict)) == 0


def test_a_pending_drain_passes_over_messages_purged_meanwhile(
        db_session, db_session_factory, make_version_dir):
    from spamguard.services import messages

    version = registry.register_version(session=db_session,
                                        version_dir=make_version_dir("v1")).id
    for n in range(2):
        db_session.add(new_message(f"pending {n}", p=None, received_at=OLD))
    db_session.add(new_message("pending, and kept", p=None, received_at=NEW))
    db_session.commit()
    model = _ErasingClassifier(version, db_session_factory, Selection(before=CUTOFF))
    # The first batch is purged while it is scored: the drain goes on with the next one.
    assert messages.classify_pending(session=db_session, classifier=model, batch_size=2) == 1
    assert [m.verdict_status for m in db_session.scalars(select(Message))] == ["classified"]


def test_a_message_erased_while_a_moderator_labels_it_is_not_an_error(
        db_session, db_session_factory, db_engine, make_user):
    """SQLite: the review read the message, the erase deleted it, the review's write then
    found no row (StaleDataError, a 500) unless the review holds the write lock first."""
    import threading

    from sqlalchemy import event

    mod = make_user("mod")
    target = _add(db_session, "call me, it's Anna", received_at=NEW, sender="+447911123456")
    db_session.commit()
    erase = {}

    def run_erase():
        erase["done"] = message_deletion.delete_messages(
            db_session_factory, Selection(sender="+447911123456"))

    def hook(conn, cursor, statement, parameters, context, executemany):
        if not erase and statement.lstrip().startswith("SELECT messages.id, messages.gateway"):
            erase["thread"] = threading.Thread(target=run_erase)
            erase["thread"].start()
            erase["thread"].join(timeout=1.5)  # it waits for the review, or erases first

    with db_session_factory() as session:
        event.listen(session.connection(), "after_cursor_execute", hook)
        try:
            reviews.add_review(session=session, message_id=target, label="ham", user_id=mod)
            session.commit()
        except reviews.ReviewError as exc:  # the erase came first (PostgreSQL may say so)
            assert str(exc) == f"no message {target}"
    erase["thread"].join(timeout=10)
    assert erase["done"].messages == 1
    assert _stored(db_session) == set()
    assert db_session.scalar(select(func.count()).select_from(Review)) == 0


def _after_batch_read(engine, action):
    """Run ``action`` once, right after a deletion batch has read which messages it takes
    (before it deletes them)."""
    from sqlalchemy import event

    fired = []

    def hook(conn, cursor, statement, parameters, context, executemany):
        if (not fired and statement.lstrip().startswith("SELECT messages.id, messages.text_hash")
                and "LIMIT" in statement):
            fired.append(True)
            action()

    event.listen(engine, "after_cursor_execute", hook)
    return fired


def test_a_purge_keeping_reviewed_messages_never_takes_one_labelled_while_it_runs(
        db_session, db_session_factory, db_engine, make_user):
    import threading

    mod = make_user("mod")
    target = _add(db_session, "is this spam?", received_at=OLD)
    db_session.commit()
    outcome = {}

    def review():
        try:
            with db_session_factory() as session:
                reviews.add_review(session=session, message_id=target, label="ham",
                                   user_id=mod)
                session.commit()
            outcome["review"] = "recorded"
        except reviews.ReviewError as exc:
            outcome["review"] = str(exc)

    def review_meanwhile():  # a moderator labels it now; the purge may make them wait
        thread = threading.Thread(target=review)
        thread.start()
        thread.join(timeout=1.5)
        outcome["thread"] = thread

    fired = _after_batch_read(db_engine, review_meanwhile)
    done = message_deletion.delete_messages(db_session_factory,
                                            Selection(before=CUTOFF, keep_reviewed=True))
    outcome["thread"].join(timeout=10)
    assert fired
    if outcome["review"] == "recorded":  # the label was given first: the message stays
        assert done.messages == 0
        assert _stored(db_session) == {target}
        assert db_session.scalar(select(func.count()).select_from(Review)) == 1
    else:  # the purge came first: the moderator is told the message is gone
        assert outcome["review"] == f"no message {target}"
        assert done.messages == 1 and _stored(db_session) == set()


def test_a_purge_and_a_campaign_label_at_once_wait_for_each_other(
        db_session, db_session_factory, make_user):
    """PostgreSQL: labelling a campaign locks it, then its messages; a purge batch locked
    the messages, then the campaign (to recount it): a deadlock, one of them failed."""
    import threading

    from sqlalchemy import event

    from spamguard.services import campaigns

    mod = make_user("mod")
    old = _add(db_session, "WIN a prize now", received_at=OLD)
    new = _add(db_session, "WIN a prize today", received_at=NEW)
    campaign = Campaign(first_seen=OLD, last_seen=NEW, size=2, representative_message_id=new)
    db_session.add(campaign)
    db_session.flush()
    for message_id in (old, new):
        db_session.get(Message, message_id).campaign_id = campaign.id
    db_session.commit()
    purge = {}

    def run_purge():
        try:
            purge["done"] = message_deletion.delete_messages(db_session_factory,
                                                             Selection(before=CUTOFF))
        except Exception as exc:  # noqa: BLE001 - a deadlock's victim
            purge["error"] = exc

    def hook(conn, cursor, statement, parameters, context, executemany):
        if not purge and statement.lstrip().startswith("UPDATE campaigns"):
            purge["thread"] = threading.Thread(target=run_purge)
            purge["thread"].start()
            purge["thread"].join(timeout=1.5)  # waits for the label, or locks the message

    with db_session_factory() as session:
        event.listen(session.connection(), "after_cursor_execute", hook)
        assert campaigns.label_campaign(session=session, campaign_id=campaign.id,
                                        label="spam", user_id=mod) == 2
        session.commit()
    purge["thread"].join(timeout=10)
    assert "error" not in purge, purge.get("error")
    assert purge["done"].messages == 1 and _stored(db_session) == {new}
    db_session.expire_all()
    assert db_session.get(Campaign, campaign.id).size == 1


def test_a_queue_claim_on_a_message_a_purge_is_deleting_is_passed_over(
        db_session, db_session_factory, make_user):
    """PostgreSQL: the claim's foreign-key check waits for the purge's uncommitted delete,
    then finds the message gone (an IntegrityError, a 500 on the queue page)."""
    import threading

    from spamguard.services import queue_claims

    mod = make_user("mod")
    gone = _add(db_session, "old and uncertain", received_at=OLD, p=0.5)
    kept = _add(db_session, "new and uncertain", received_at=NEW, p=0.55)
    db_session.commit()
    purge = db_session_factory()
    message_deletion.delete_batch(purge, Selection(before=CUTOFF))  # not committed yet
    outcome = {}

    def load_queue():
        with db_session_factory() as session:
            candidates = [session.get(Message, gone), session.get(Message, kept)]
            try:
                outcome["index"] = queue_claims.claim_first(
                    session, candidates, user_id=mod, now=utcnow(), seconds=300)
            except Exception as exc:  # noqa: BLE001 - what the page would answer
                outcome["error"] = exc

    thread = threading.Thread(target=load_queue)
    thread.start()
    thread.join(timeout=1)  # PostgreSQL: waits for the purge; SQLite: busy, waits too
    purge.commit()
    purge.close()
    thread.join(timeout=10)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["index"] == 1  # the purged message is passed over, the next claimed
    assert set(db_session.scalars(select(QueueClaim.message_id))) == {kept}


def test_a_campaign_rebuild_while_a_purge_runs_counts_only_what_is_left(
        db_session, db_session_factory):
    """SQLite: a rebuild reads the messages, embeds them (minutes on a large table), then
    writes; a purge batch committed in between left it campaigns of deleted messages (a
    foreign-key error on the representative, or stale sizes)."""
    import threading

    import numpy as np

    from spamguard.services import campaigns

    for when in (OLD, OLD, OLD, NEW, NEW, NEW):
        _add(db_session, "WIN a prize now", received_at=when)
    db_session.commit()
    purge = {}

    def run_purge():
        purge["done"] = message_deletion.delete_messages(db_session_factory,
                                                         Selection(before=CUTOFF))

    def encoder(texts):  # the purge runs while the rebuild embeds
        if not purge:
            purge["thread"] = threading.Thread(target=run_purge)
            purge["thread"].start()
            purge["thread"].join(timeout=1.5)  # PostgreSQL: it waits for the rebuild
        return np.ones((len(texts), 4), dtype=np.float32)

    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, encoder=encoder, days=None)
        session.commit()
    purge["thread"].join(timeout=10)
    assert purge["done"].messages == 3
    db_session.expire_all()
    (campaign,) = db_session.scalars(select(Campaign))
    members = set(db_session.scalars(select(Message.id).where(
        Message.campaign_id == campaign.id)))
    assert campaign.size == len(members) == 3 and members == _stored(db_session)
    assert campaign.representative_message_id in members


def test_a_batch_recounts_its_campaigns_in_a_few_statements_whatever_their_number(
        db_session):
    """A purge by time touches hundreds of campaigns a batch (and deletes their oldest
    message, the representative): three statements per campaign made a purge of 100,000
    messages in 2,000 campaigns ten times slower."""
    from tests.fixtures_db import captured_statements

    for n in range(30):
        ids = [_add(db_session, f"campaign {n} text", received_at=when)
               for when in (OLD, OLD + timedelta(hours=1), NEW)]
        campaign = Campaign(first_seen=OLD, last_seen=NEW, size=3,
                            representative_message_id=ids[0])
        db_session.add(campaign)
        db_session.flush()
        for message_id in ids:
            db_session.get(Message, message_id).campaign_id = campaign.id
    db_session.commit()
    with captured_statements(db_session.connection()) as statements:
        done, _ = message_deletion.delete_batch(db_session, Selection(before=CUTOFF))
    db_session.commit()
    assert done.messages == 60 and len(done.campaigns_recounted) == 30
    assert len(statements) < 20, [sql for sql, _ in statements]
    for campaign in db_session.scalars(select(Campaign)):
        only = db_session.scalar(select(Message).where(Message.campaign_id == campaign.id))
        assert (campaign.size, campaign.representative_message_id) == (1, only.id)
        assert campaign.first_seen.replace(tzinfo=UTC) == NEW == \
            campaign.last_seen.replace(tzinfo=UTC)


def test_a_version_written_during_an_erase_is_swept_by_the_next_run(
        db_session, db_session_factory, make_version_dir):
    """A retraining run that read the evaluation set before an erase writes the erased text
    into its changes.md afterwards; every run ends by redacting examples that neither a
    stored message nor the shipped data's evaluation examples hold, so running the erase
    again (it deletes nothing) cleans it."""
    directory = make_version_dir("v2")
    registry.register_version(session=db_session, version_dir=directory)
    kept = "see you at the station"
    _add(db_session, kept, received_at=NEW)
    db_session.add(EvalExample(text_hash=text_hash("base text"), text="base text", label="ham",
                               source="base"))
    db_session.commit()
    _changes(directory, ["my PIN is 4321, call Anna", "base text", kept])

    again = message_deletion.delete_messages(db_session_factory,
                                             Selection(sender="+447911123456"))

    assert (again.messages, again.redacted_versions) == (0, ["v2"])
    texts = [e["text"] for e in example_redaction.examples(model_diff.load_changes(directory))]
    assert texts == [example_redaction.ERASED, "base text", kept]


def test_a_busy_database_half_way_stops_the_command_with_one_line_and_the_count(
        cli, world, db_session, monkeypatch):
    from sqlalchemy.exc import OperationalError

    monkeypatch.setattr(message_deletion, "BATCH", 2)
    real, calls = message_deletion.delete_batch, []

    def busy_second_time(session, selection, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("DELETE", {}, Exception("database is locked"))
        return real(session, selection, **kwargs)

    monkeypatch.setattr(message_deletion, "delete_batch", busy_second_time)
    result = _run(cli, "purge", "--before", "2026-06-01", "--include-reviewed", "--yes")
    assert result.exit_code == 2
    assert result.stderr == ("error: stopped after deleting 2 message(s): the database is busy "
                             "or unreachable (database is locked); run the command again to "
                             "delete the rest\n")
    assert len(_stored(db_session)) == 3  # 5 stored, the first batch of 2 went


def test_erasing_again_with_nothing_left_sweeps_changes_md(cli, db_session, make_version_dir):
    directory = make_version_dir("v2")
    registry.register_version(session=db_session, version_dir=directory)
    db_session.commit()
    _changes(directory, ["my PIN is 4321, call Anna"])
    result = _run(cli, "erase", "--sender", "+447911123456")  # no --yes: nothing to ask
    assert result.exit_code == 0, result.output
    assert result.stdout == ("erased 0 message(s) from +447911123456; example texts erased "
                             "from changes.md of v2\n")
    assert "4321" not in (directory / model_diff.CHANGES_MD).read_text(encoding="utf-8")


def test_a_stopped_run_is_in_the_audit_trail_with_what_it_deleted(world, db_session,
                                                                  db_session_factory,
                                                                  monkeypatch):
    """One event a run, brought up to date in each batch's transaction: a run stopped after
    its first batch is recorded with that batch's count."""
    from spamguard.services import audit

    monkeypatch.setattr(message_deletion, "BATCH", 2)
    batches: list[int] = []

    def stop_after_two(count):
        batches.append(count)
        if len(batches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        message_deletion.delete_messages(db_session_factory, Selection(before=CUTOFF),
                                         on_batch=stop_after_two, by="cron@host")
    [event] = audit.recent(db_session, action="messages")
    assert (event.actor, event.action) == ("cron@host", "messages.purge")
    assert event.details == {"messages": 4, "reviewed": 1, "before": CUTOFF.isoformat()}
