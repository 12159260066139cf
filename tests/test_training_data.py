"""Tests for spamguard.services.training_data (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, update

from spamguard.db import session_scope
from spamguard.errors import DataError
from spamguard.ml.data import LabelledData, text_hash
from spamguard.models import Review
from spamguard.services.training_data import (
    build_training_set,
    check_class_sizes,
    count_reviews_after,
    latest_reviews,
    max_review_id,
)
from tests.fixtures_retrain import store_reviews

BASE = LabelledData(
    ["Call now to WIN £100!", "call now to win £250", "see you at lunch", "Running late, sorry",
     "Your parcel is held, pay the fee at http://x.co"],
    np.array([1, 1, 0, 0, 1]), ["b:1", "b:2", "b:3", "b:4", "b:5"])


def _labels(training) -> dict[str, int]:
    return {text: int(label) for text, label in zip(training.data.texts, training.data.labels,
                                                     strict=True)}


def _build(factory, **kwargs):
    with session_scope(factory) as session:
        return build_training_set(session=session, base=BASE, **kwargs)


def test_base_only_counts_duplicates_once(db_session_factory) -> None:
    training = _build(db_session_factory, exclude=set())
    assert training.data.texts == ["Call now to WIN £100!", "see you at lunch",
                                   "Running late, sorry",
                                   "Your parcel is held, pay the fee at http://x.co"]
    assert training.counts["base_messages"] == 5 and training.counts["base_unique"] == 4
    assert training.counts["total"] == 4 and training.max_review_id is None


def test_base_label_conflict_keeps_first_copy_as_spam(db_session_factory) -> None:
    base = LabelledData(["Free entry today", "see you", "FREE ENTRY today!!"], np.array([0, 0, 1]))
    with session_scope(db_session_factory) as session:
        training = build_training_set(session=session, base=base, exclude=set())
    assert _labels(training) == {"Free entry today": 1, "see you": 0}
    assert training.data.origins == ["base:0", "base:1"]
    assert training.counts["base_unique"] == 2


def test_reviews_override_base_labels_and_add_new_texts(db_session_factory) -> None:
    store_reviews(db_session_factory, [("RUNNING LATE sorry!!", "spam"),
                                       ("brand new message", "ham"),
                                       ("see you at lunch", "ham")])
    training = _build(db_session_factory, exclude=set())
    labels = _labels(training)
    assert labels["RUNNING LATE sorry!!"] == 1 and "Running late, sorry" not in labels
    assert labels["brand new message"] == 0
    assert training.counts["reviews_overriding_base"] == 1
    assert training.counts["reviews_confirming_base"] == 1
    assert training.counts["reviewed_messages"] == 3 and training.counts["total"] == 5


def test_latest_review_decides(db_session_factory) -> None:
    (message_id,) = store_reviews(db_session_factory, [("is this spam or not", "spam")])
    with session_scope(db_session_factory) as session:
        first = session.scalar(select(Review.id).where(Review.message_id == message_id))
        session.execute(update(Review).values(is_current=False))
        session.add(Review(message_id=message_id, label="ham", is_current=True))
    with session_scope(db_session_factory) as session:
        assert [r.label for r in latest_reviews(session)] == ["ham"]
    assert _labels(_build(db_session_factory, exclude=set()))["is this spam or not"] == 0
    snapshot = _build(db_session_factory, exclude=set(), up_to_review=first)
    assert _labels(snapshot)["is this spam or not"] == 1


def test_same_text_reviewed_twice_counts_once(db_session_factory) -> None:
    store_reviews(db_session_factory, [("Free entry!! txt 8000", "spam"),
                                       ("free entry txt 9999", "ham")])
    training = _build(db_session_factory, exclude=set())
    assert _labels(training)["free entry txt 9999"] == 0
    assert "Free entry!! txt 8000" not in _labels(training)


def test_evaluation_texts_are_excluded(db_session_factory) -> None:
    store_reviews(db_session_factory, [("held out review", "ham")])
    exclude = {text_hash("see you at lunch!"), text_hash("held out review")}
    training = _build(db_session_factory, exclude=exclude)
    assert "see you at lunch" not in _labels(training)
    assert "held out review" not in _labels(training)
    assert training.counts["excluded_eval"] == 2


def test_review_counting(db_session_factory) -> None:
    with session_scope(db_session_factory) as session:
        assert max_review_id(session) is None and count_reviews_after(session, None) == 0
    store_reviews(db_session_factory, [("a", "ham"), ("b", "spam"), ("c", "ham")])
    with session_scope(db_session_factory) as session:
        top = max_review_id(session)
        assert count_reviews_after(session, None) == 3
        assert count_reviews_after(session, top - 1) == 1


def test_a_relabel_after_an_undo_counts_as_new_for_the_next_run(db_session_factory) -> None:
    """The undone review's id is not given out again (SQLite: AUTOINCREMENT), so a run that
    counted it still sees the relabel made after the undo as new."""
    from spamguard.models import TrainingRun
    from spamguard.services import reviews
    from spamguard.services.retrain_steps import take_snapshot

    first, second = store_reviews(db_session_factory, [("a", "ham"), ("b", "spam")])
    with session_scope(db_session_factory) as session:
        counted = max_review_id(session)
        session.add(TrainingRun(status="promoted", trigger="cron", max_review_id=counted))
    with session_scope(db_session_factory) as session:
        reviews.undo_review(session=session, review_id=counted)  # b's review, the newest
    with session_scope(db_session_factory) as session:
        relabel = reviews.add_review(session=session, message_id=second, label="ham",
                                     user_id=None)
        assert relabel.id > counted
    with session_scope(db_session_factory) as session:
        assert take_snapshot(session).new_reviews == 1


@pytest.mark.parametrize(("labels", "message"), [
    ([0] * 12 + [1] * 3, "3 spam"),
    ([1] * 12 + [0] * 2, "2 ham"),
])
def test_check_class_sizes(labels, message) -> None:
    data = LabelledData([str(i) for i in range(len(labels))], np.array(labels))
    with pytest.raises(DataError, match=f"too few training examples: {message}"):
        check_class_sizes(data, 10)
    check_class_sizes(data, 2)  # enough of each at a lower minimum


def test_also_train_messages_join_and_a_review_of_one_is_not_a_base_override(
        db_session_factory, tmp_path) -> None:
    from spamguard.ml.also_train import is_also_train, load_also_train

    extra = tmp_path / "extra.tsv"
    extra.write_text("ham\tYour login code is 123456\nspam\tParcel held, pay 1.99 now\n"
                     "spam\tsee you at lunch\n", encoding="utf-8")  # a base text: left out
    store_reviews(db_session_factory, [("your LOGIN code is 999999", "spam")])
    base = LabelledData(["see you at lunch", "WIN cash now"], np.array([0, 1]))
    with session_scope(db_session_factory) as session:
        training = build_training_set(session=session, base=base, exclude=set(),
                                      also=load_also_train([extra]))
    labels = _labels(training)
    assert labels["see you at lunch"] == 0  # the base data's label stands
    assert labels["your LOGIN code is 999999"] == 1 and labels["Parcel held, pay 1.99 now"] == 1
    assert sum(is_also_train(o) for o in training.data.origins) == 1  # the parcel message
    assert training.counts["also_train_messages"] == 3
    assert training.counts["base_unique"] == 2
    assert training.counts["reviews_overriding_base"] == 0  # it overrode an also-train text
    assert training.also_train_files[0]["total"] == 3
