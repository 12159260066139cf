"""Retraining data: the base data set plus every reviewed message, minus the evaluation set.

Messages are keyed by normalised text (:func:`spamguard.ml.data.text_hash`), so a review
overrides the base label of the same text, near-identical copies count once, and nothing
whose text is in the evaluation set is ever trained on.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spamguard.errors import DataError
from spamguard.ml.also_train import AlsoTrain, is_also_train, with_also_train
from spamguard.ml.data import LABEL_NAMES, LabelledData, dedupe, text_hash
from spamguard.models import Message, Review

LABEL_IDS = {name: i for i, name in enumerate(LABEL_NAMES)}
REVIEW_ORIGIN = "review:"  # origin of a reviewed message: review:<message id>


@dataclass(frozen=True)
class ReviewedMessage:
    """A message with the label of its latest review."""

    message_id: int
    review_id: int
    text: str
    label: str
    text_hash: str  # stored with the message (normalised text; migrations keep it current)


def max_review_id(session: Session) -> int | None:
    """Return the highest review id (None when there are no reviews)."""
    return session.scalar(select(func.max(Review.id)))


def count_reviews_after(session: Session, review_id: int | None) -> int:
    """Count reviews newer than ``review_id`` (all of them when None)."""
    query = select(func.count(Review.id))
    if review_id is not None:
        query = query.where(Review.id > review_id)
    return int(session.scalar(query) or 0)


def latest_reviews(session: Session, *, up_to: int | None = None) -> list[ReviewedMessage]:
    """Return each reviewed message with its latest review (by id, at most ``up_to``).

    A retraining run reads them once and hands them to both :func:`build_training_set` and
    :func:`spamguard.services.evalset.load_evalset`, so both see the same snapshot.
    """
    latest = select(Review.message_id, func.max(Review.id).label("review_id"))
    if up_to is not None:
        latest = latest.where(Review.id <= up_to)
    latest = latest.group_by(Review.message_id).subquery()
    rows = session.execute(
        select(Message.id, Review.id, Message.body, Review.label, Message.text_hash)
        .join(latest, latest.c.message_id == Message.id)
        .join(Review, Review.id == latest.c.review_id)
        .order_by(Review.id)
    )
    return [ReviewedMessage(*row) for row in rows]


@dataclass
class TrainingSet:
    """The labelled messages a candidate trains on, and how they were assembled."""

    data: LabelledData
    max_review_id: int | None
    counts: dict[str, Any] = field(default_factory=dict)
    also_train_files: list[dict[str, Any]] = field(default_factory=list)  # their records


def build_training_set(*, session: Session, base: LabelledData, exclude: Collection[str],
                       up_to_review: int | None = None,
                       reviews: list[ReviewedMessage] | None = None,
                       also: AlsoTrain | None = None) -> TrainingSet:
    """Merge ``base`` and ``also`` with the reviewed messages, latest review winning, minus
    ``exclude``.

    Args:
        session: database session to read reviews from.
        base: the base labelled data set.
        exclude: text hashes of the evaluation set.
        up_to_review: ignore reviews newer than this id (a stable snapshot); None: all.
        reviews: the :func:`latest_reviews` up to ``up_to_review``, if already read.
        also: the also-train files' messages (a text also in ``base`` keeps the base's
            origin, so it is split with the base data).

    Returns:
        One message per normalised text, with counts for the training run's record.
    """
    origins = base.origins or [f"base:{i}" for i in range(len(base))]
    also = also or AlsoTrain()
    # ml.data.dedupe: one message per normalised text, the first copy stays, spam wins.
    unique, stats = dedupe(with_also_train(LabelledData(base.texts, base.labels, origins),
                                           also))
    merged: dict[str, tuple[str, int, str]] = {
        text_hash(text): (text, int(label), origin)
        for text, label, origin in zip(unique.texts, unique.labels, unique.origins, strict=True)}
    base_unique = sum(not is_also_train(origin) for _, _, origin in merged.values())
    if reviews is None:
        reviews = latest_reviews(session, up_to=up_to_review)
    overridden = confirmed = 0
    for review in reviews:
        key, label = review.text_hash, LABEL_IDS[review.label]
        previous = merged.get(key)
        if (previous is not None and not previous[2].startswith(REVIEW_ORIGIN)
                and not is_also_train(previous[2])  # counted as base texts only
                and key not in exclude):  # evaluation texts are counted by the eval set
            overridden += previous[1] != label
            confirmed += previous[1] == label
        merged[key] = (review.text, label, f"{REVIEW_ORIGIN}{review.message_id}")
    excluded = [key for key in exclude if key in merged]
    for key in excluded:
        del merged[key]
    texts = [text for text, _, _ in merged.values()]
    labels = np.asarray([label for _, label, _ in merged.values()], dtype=np.int64)
    data = LabelledData(texts, labels, [origin for _, _, origin in merged.values()])
    counts = {
        "base_messages": len(base), "base_unique": base_unique,
        **({"also_train_messages": len(also)} if len(also) else {}),
        "base_label_conflicts": stats.label_conflicts,
        "reviewed_messages": len(reviews), "reviews_overriding_base": overridden,
        "reviews_confirming_base": confirmed,
        "excluded_eval": len(excluded), **data.counts(),
    }
    return TrainingSet(data, up_to_review, counts, list(also.files))


def check_class_sizes(data: LabelledData, minimum: int) -> None:
    """Raise DataError when spam or ham has fewer than ``minimum`` examples."""
    counts = data.counts()
    short = [f"{counts[name]} {name}" for name in LABEL_NAMES if counts[name] < minimum]
    if short:
        raise DataError(
            f"too few training examples: {' and '.join(short)} (need at least {minimum} of "
            "each; add labelled data or reviews, or lower SPAMGUARD_RETRAIN_MIN_PER_CLASS)")
