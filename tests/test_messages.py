"""services.messages: persistence first, idempotency (also under races), pending and draining."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import event, func, select

from spamguard.models import Message, Verdict
from spamguard.services import messages, registry


class FakeClassifier:
    """A stand-in with the classifier's serving interface (fast, countable, breakable)."""

    def __init__(self, version: str, probability: float = 0.9, fail: bool = False) -> None:
        self.version, self.threshold = version, 0.5
        self.probability, self.fail, self.calls = probability, fail, 0

    def predict_proba(self, texts):
        self.calls += 1
        if self.fail:
            raise RuntimeError("model broke")
        return np.full(len(texts), self.probability)

    def label_for(self, p: float) -> str:
        return "spam" if p >= self.threshold else "ham"


@pytest.fixture
def version_id(db_session, make_version_dir) -> str:
    version = registry.register_version(session=db_session,
                                        version_dir=make_version_dir("v1"))
    db_session.commit()
    return version.id


@pytest.fixture(params=["on-conflict-do-nothing", "catch-integrity-error"])
def store_path(request, monkeypatch) -> str:
    """Both ways of storing: the PostgreSQL/SQLite upsert and the other databases' path."""
    if request.param == "catch-integrity-error":
        monkeypatch.setattr(messages, "_insert_ignoring_duplicates", lambda session: None)
    return request.param


def ingest(session, classifier, external_id="SM1", body="Win a prize now", **kwargs):
    return messages.ingest(session=session, classifier=classifier, gateway="twilio",
                           external_id=external_id, sender="+1", recipient="+2", body=body,
                           **kwargs)


def counts(session) -> tuple[int, int]:
    return (session.scalar(select(func.count()).select_from(Message)),
            session.scalar(select(func.count()).select_from(Verdict)))


def test_ingest_commits_message_then_verdict(db_session, db_session_factory, version_id):
    result = ingest(db_session, FakeClassifier(version_id))
    assert result.created and not result.pending
    assert result.verdict.label == "spam" and result.verdict.threshold == 0.5
    assert result.verdict.latency_ms >= 0
    with db_session_factory() as other:  # committed: another session sees both rows
        stored = other.get(Message, result.message.id)
        assert stored.model_label == "spam" and stored.model_version_id == version_id
        assert stored.text_hash and counts(other) == (1, 1)
        # The queue's distance, from this model's threshold (migration 0009).
        assert stored.threshold_distance == pytest.approx(
            abs(result.verdict.spam_probability - 0.5))
    assert result.message.threshold_distance == stored.threshold_distance


def test_no_classifier_keeps_message_pending(db_session, version_id):
    result = ingest(db_session, None)
    assert result.pending and result.verdict is None
    assert counts(db_session) == (1, 0)


def test_failing_classifier_keeps_message_pending(db_session, version_id):
    result = ingest(db_session, FakeClassifier(version_id, fail=True))
    assert result.pending
    assert counts(db_session) == (1, 0)


def test_retry_returns_first_row_and_classifies_if_pending(db_session, version_id,
                                                            store_path):
    first = ingest(db_session, None)
    again = ingest(db_session, FakeClassifier(version_id))
    assert not again.created and again.message.id == first.message.id
    assert not again.pending
    assert counts(db_session) == (1, 1)
    third = ingest(db_session, FakeClassifier(version_id))
    assert third.verdict is None and counts(db_session) == (1, 1)


def test_messages_without_external_id_are_all_kept(db_session, version_id, store_path):
    ingest(db_session, None, external_id=None)
    ingest(db_session, None, external_id=None)
    assert counts(db_session) == (2, 0)


def test_concurrent_retries_store_one_message(db_session_factory, db_backend, version_id,
                                              store_path):
    """Eight threads deliver the same MessageSid at once: one row, one verdict."""
    barrier, errors = threading.Barrier(8), []

    def deliver() -> None:
        try:
            with db_session_factory() as session:
                barrier.wait()
                ingest(session, FakeClassifier(version_id), external_id="SM-race")
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    with db_session_factory() as session:
        assert counts(session) == (1, 1)


def test_insert_first_looks_up_only_on_conflict(db_session, db_session_factory, version_id,
                                                monkeypatch, store_path):
    """A new message costs one INSERT; a delivery stored by another session (a retry, or a
    race between workers) hits the unique index and the existing row is returned."""
    real_find = messages.find_message
    calls = []

    def counting_find(**kwargs):
        calls.append(1)
        return real_find(**kwargs)

    monkeypatch.setattr(messages, "find_message", counting_find)
    with db_session_factory() as other:
        first = ingest(other, None, external_id="SM-late")
    assert first.created and calls == []
    result = ingest(db_session, FakeClassifier(version_id), external_id="SM-late")
    assert not result.created and calls == [1] and counts(db_session) == (1, 1)


def test_classify_pending_completes_in_batches(db_session, version_id):
    for i in range(7):
        ingest(db_session, None, external_id=f"SM{i}")
    classifier = FakeClassifier(version_id, probability=0.1)
    assert messages.classify_pending(session=db_session, classifier=classifier, limit=3,
                                     batch_size=2) == 3
    assert messages.count_pending(session=db_session) == 4
    assert messages.classify_pending(session=db_session, classifier=classifier,
                                     batch_size=2) == 4
    assert messages.count_pending(session=db_session) == 0
    labels = db_session.scalars(select(Verdict.label)).all()
    assert labels == ["ham"] * 7


def test_classify_pending_stops_when_model_fails(db_session, version_id):
    ingest(db_session, None)
    broken = FakeClassifier(version_id, fail=True)
    assert messages.classify_pending(session=db_session, classifier=broken) == 0
    assert broken.calls == 1 and messages.count_pending(session=db_session) == 1


class PickyClassifier(FakeClassifier):
    """Fails on any batch holding a message with POISON in it."""

    def predict_proba(self, texts):
        self.calls += 1
        if any("POISON" in t for t in texts):
            raise RuntimeError("model broke on one message")
        return np.full(len(texts), self.probability)


def test_one_bad_message_does_not_hold_back_the_others(db_session, version_id):
    for i, body in enumerate(["hi", "POISON here", "lunch?", "ok", "bye"]):
        ingest(db_session, None, external_id=f"SM{i}", body=body)
    picky = PickyClassifier(version_id, probability=0.1)
    assert messages.classify_pending(session=db_session, classifier=picky, batch_size=4) == 4
    pending = db_session.scalars(select(Message.body).where(
        Message.verdict_status == "pending")).all()
    assert pending == ["POISON here"]


def test_a_broken_model_stops_after_a_few_single_tries(db_session, version_id):
    for i in range(10):
        ingest(db_session, None, external_id=f"SM{i}")
    broken = FakeClassifier(version_id, fail=True)
    assert messages.classify_pending(session=db_session, classifier=broken, batch_size=8) == 0
    assert broken.calls == 1 + messages.SINGLE_FAILURES_TO_STOP
    assert messages.count_pending(session=db_session) == 10


def test_get_message_loads_verdicts(db_session, version_id):
    result = ingest(db_session, FakeClassifier(version_id))
    db_session.expunge_all()
    message = messages.get_message(session=db_session, message_id=result.message.id)
    assert [v.label for v in message.verdicts] == ["spam"]
    assert messages.get_message(session=db_session, message_id=10**6) is None


def test_retried_delivery_is_not_a_failed_statement(db_session, version_id):
    """On PostgreSQL and SQLite a retry is ON CONFLICT DO NOTHING, not a duplicate-key error
    (PostgreSQL logs every failed statement as an ERROR in the server log)."""
    engine, failed = db_session.get_bind(), []

    def record(context) -> None:
        failed.append(context.original_exception)

    event.listen(engine, "handle_error", record)
    try:
        first = ingest(db_session, None, external_id="SM-retry")
        again = ingest(db_session, FakeClassifier(version_id), external_id="SM-retry")
    finally:
        event.remove(engine, "handle_error", record)
    assert first.created and not again.created and again.message.id == first.message.id
    assert failed == [] and counts(db_session) == (1, 1)


@pytest.mark.parametrize(("sender", "digits"), [
    ("+447911123456", "447911123456"), ("+44 7911 123456", "447911123456"),
    ("+44 (7911) 123-456", "447911123456"), ("447911123456", "447911123456"),
    ("BARCLAYS", None), ("1555", None), ("+1 555", None), ("+44\u00a07911\u00a0123456",
                                                           "447911123456"),
    ("\u0664\u0664\u0667\u0669\u0661\u0661\u0661\u0662\u0663\u0664\u0665\u0666", None),
])
def test_a_stored_sender_keeps_its_phone_number_digits(db_session, store_path, sender,
                                                       digits):
    """Both ways a message is stored (the insert ignoring duplicates, the ORM's) fill in
    the digits the sender filter looks up; a name, a short code or other digits than
    ASCII have none."""
    stored = messages.ingest(session=db_session, classifier=None, gateway="twilio",
                             external_id="SM1", sender=sender, recipient="+2", body="hi")
    assert stored.message.sender_digits == digits


def _refusing(session, monkeypatch, refusals: int, after_seconds: float = 0.0) -> list[int]:
    """Make the session's INSERT fail ``refusals`` times as SQLite's immediate "database is
    locked" (a commit overtook its snapshot, a checkpoint was emptying the log)."""
    import sqlite3
    import time

    from sqlalchemy.exc import OperationalError

    real, tries = session.scalars, []

    def scalars(statement, *args, **kwargs):
        if getattr(statement, "is_insert", False):
            tries.append(1)
            if len(tries) <= refusals:
                time.sleep(after_seconds)
                raise OperationalError("INSERT", {}, sqlite3.OperationalError(
                    "database is locked"))
        return real(statement, *args, **kwargs)

    monkeypatch.setattr(session, "scalars", scalars)
    monkeypatch.setattr(messages, "STORE_PAUSE_SECONDS", 0)
    return tries


def test_a_store_sqlite_refuses_at_once_is_tried_again(db_session, db_backend, version_id,
                                                        monkeypatch):
    if db_backend != "sqlite":
        pytest.skip("SQLite's immediate refusals")
    tries = _refusing(db_session, monkeypatch, refusals=messages.STORE_TRIES - 1)
    result = ingest(db_session, FakeClassifier(version_id))
    assert result.created and len(tries) == messages.STORE_TRIES
    assert counts(db_session) == (1, 1)


def test_a_refusal_that_lasts_or_comes_after_the_busy_timeout_is_not_tried_again(
        db_session, db_backend, version_id, monkeypatch):
    from sqlalchemy.exc import OperationalError

    if db_backend != "sqlite":
        pytest.skip("SQLite's immediate refusals")
    tries = _refusing(db_session, monkeypatch, refusals=10 ** 6)
    with pytest.raises(OperationalError):
        ingest(db_session, FakeClassifier(version_id))
    assert len(tries) == messages.STORE_TRIES
    monkeypatch.setattr(messages, "REFUSED_AT_ONCE_SECONDS", 0.01)
    slow = _refusing(db_session, monkeypatch, refusals=1, after_seconds=0.05)
    with pytest.raises(OperationalError):  # it waited out the busy timeout: the caller's 503
        ingest(db_session, FakeClassifier(version_id), external_id="SM2")
    assert len(slow) == 1 and counts(db_session) == (0, 0)
