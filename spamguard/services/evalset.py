"""The fixed evaluation set: chosen once, stored in ``eval_examples``, never trained on.

Every candidate and the active model are scored on these same messages, so their numbers
compare. The set is a seeded, stratified sample of the deduplicated base data, made on the
first retraining; afterwards it only grows, by an explicit ``spamguard evalset add``.

Its labels follow the moderators, as the training data's do: when the latest review of a
text in the set (same normalised text) disagrees with the stored label, the review wins,
and a message added from a review that has since been undone is left out. Judging models
by a label the moderators have corrected would reward the model that repeats the mistake.
The stored rows never change, so a later review can change the label back.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from spamguard.errors import DataError, ModelError
from spamguard.ml.data import LABEL_NAMES, LabelledData, dedupe, text_hash
from spamguard.ml.version_files import read_metadata
from spamguard.models import EvalExample, Message, TrainingRun
from spamguard.services import registry
from spamguard.services.training_data import LABEL_IDS, ReviewedMessage, latest_reviews
from spamguard.sqltypes import as_utc

EVALSET_SEED = 2018


@dataclass
class EvalSet:
    """The stored evaluation messages, in insertion order."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    hashes: set[str] = field(default_factory=set)
    sources: Counter = field(default_factory=Counter)
    created_at: datetime | None = None
    relabelled: int = 0  # stored label overridden by the latest review of the same text
    left_out: int = 0  # added from a review that was undone since: no label to judge by
    left_out_learnt: int = 0  # added after the compared model learnt them (load_evalset)

    def __len__(self) -> int:
        return len(self.texts)

    def as_data(self) -> LabelledData:
        """Return the set as labelled data."""
        return LabelledData(list(self.texts), np.asarray(self.labels, dtype=np.int64))

    def counts(self) -> dict[str, int]:
        """Count messages by label and source."""
        spam = sum(self.labels)
        return {"total": len(self), "spam": spam, "ham": len(self) - spam,
                **{f"from_{source}": n for source, n in sorted(self.sources.items())},
                "relabelled_by_reviews": self.relabelled, "left_out_undone": self.left_out,
                "left_out_learnt_by_active": self.left_out_learnt}

    def describe(self) -> str:
        """One line for the terminal and reports."""
        c = self.counts()
        if not self.hashes:
            return ("evaluation set: empty (the first `spamguard retrain` or `evalset add` "
                    "chooses it)")
        since = f", chosen {self.created_at:%Y-%m-%d}" if self.created_at else ""
        changed = "".join(
            f"; {n} {what}" for n, what in ((self.relabelled, "relabelled by later reviews"),
                                            (self.left_out, "left out: review undone"),
                                            (self.left_out_learnt, "left out: added after "
                                             "the active model learnt them"))
            if n)
        return (f"evaluation set: {c['total']} messages ({c['spam']} spam, {c['ham']} ham; "
                f"{c.get('from_base', 0)} from base data, {c.get('from_review', 0)} from "
                f"reviews{since}{changed})")


def load_evalset(session: Session, *, up_to_review: int | None = None,
                 reviews: list[ReviewedMessage] | None = None,
                 learnt: Learnt | None = None) -> EvalSet:
    """Read the evaluation set with the moderators' current labels (module docstring).

    Args:
        session: database session.
        up_to_review: ignore reviews newer than this id (the run's snapshot); None: all.
        reviews: the ``latest_reviews`` up to ``up_to_review``, if already read.
        learnt: what the model being compared with was trained on (:func:`learnt_by`):
            messages added to the set after it learnt them are left out of the comparison
            (``left_out_learnt``), as it would be favoured on them.

    Returns:
        The set (empty when none was chosen yet). ``hashes`` holds every stored text, the
        left-out ones too, so none of them is ever trained on.
    """
    if reviews is None:
        reviews = latest_reviews(session, up_to=up_to_review)
    reviewed = {r.text_hash: LABEL_IDS[r.label] for r in reviews}  # by review id: latest wins
    evalset = EvalSet()
    for row in session.scalars(select(EvalExample).order_by(EvalExample.id)):
        evalset.hashes.add(row.text_hash)
        evalset.created_at = evalset.created_at or row.added_at
        label = reviewed.get(row.text_hash)
        if label is None and row.source == "review":
            evalset.left_out += 1
            continue
        if (learnt is not None and learnt.since is not None and row.text_hash in learnt.hashes
                and as_utc(row.added_at) >= learnt.since):
            evalset.left_out_learnt += 1
            continue
        if label is None:
            label = LABEL_IDS[row.label]
        evalset.relabelled += label != LABEL_IDS[row.label]
        evalset.texts.append(row.text)
        evalset.labels.append(label)
        evalset.sources[row.source] += 1
    return evalset


def choose_from_base(base: LabelledData, fraction: float, *, seed: int = EVALSET_SEED,
                     exclude: set[str] | frozenset[str] = frozenset()) -> LabelledData:
    """Return a seeded stratified sample of ``fraction`` of the deduplicated ``base``, taken
    from the messages whose normalised text is not in ``exclude`` (the texts the active
    model was trained or tuned on: scoring it on those would favour it in every comparison).
    When fewer than that are left, all of them are taken.
    """
    unique, _ = dedupe(base)
    if not 0 < fraction < 1:
        raise DataError(f"evaluation set fraction must be between 0 and 1, got {fraction}")
    pool = np.array([i for i, text in enumerate(unique.texts) if text_hash(text) not in exclude],
                    dtype=int)
    wanted = math.ceil(fraction * len(unique))  # as scikit-learn rounds a fractional size
    if len(pool) <= wanted:
        return unique.subset(pool.tolist())
    try:
        from sklearn.model_selection import train_test_split

        _, chosen = train_test_split(pool, test_size=wanted, random_state=seed,
                                     stratify=unique.labels[pool])
    except ValueError as exc:
        raise DataError(f"cannot choose an evaluation set from {len(pool)} base messages "
                        f"({int(unique.labels[pool].sum())} spam): {exc}") from None
    return unique.subset(sorted(chosen.tolist()))


def _insert(session: Session, texts: Sequence[str], labels: Sequence[int], source: str,
            known: set[str]) -> int:
    """Add the texts whose normalised form is not in ``known``; return how many."""
    added = 0
    for text, label in zip(texts, labels, strict=True):
        key = text_hash(text)
        if key in known:
            continue
        known.add(key)
        session.add(EvalExample(text_hash=key, text=text, label=LABEL_NAMES[int(label)],
                                source=source))
        added += 1
    session.flush()
    return added


def ensure_evalset(*, session: Session, base: LabelledData, fraction: float,
                   seed: int = EVALSET_SEED, up_to_review: int | None = None,
                   reviews: list[ReviewedMessage] | None = None,
                   exclude: Callable[[], set[str]] = set,
                   learnt: Learnt | None = None) -> tuple[EvalSet, bool]:
    """Return the evaluation set, choosing it from ``base`` if none exists yet, never from
    the texts ``exclude()`` returns (called only then; see :func:`choose_from_base`).

    ``up_to_review``, ``reviews`` and ``learnt`` are passed to :func:`load_evalset`.

    Returns:
        The set and whether it was created now. The caller commits.
    """
    evalset = load_evalset(session, up_to_review=up_to_review, reviews=reviews, learnt=learnt)
    if evalset.hashes:
        return evalset, False
    chosen = choose_from_base(base, fraction, seed=seed, exclude=exclude())
    if min(chosen.counts()["spam"], chosen.counts()["ham"]) < 1:
        raise DataError("the evaluation set needs spam and ham: add more base data")
    _insert(session, chosen.texts, chosen.labels.tolist(), "base", set())
    return load_evalset(session, up_to_review=up_to_review, reviews=reviews,
                        learnt=learnt), True


@dataclass
class Learnt:
    """The reviewed texts a version was trained on, and when its run started (an
    evaluation message added after that, with one of these texts, is one it learnt)."""

    hashes: set[str] = field(default_factory=set)
    since: datetime | None = None


def learnt_by(session: Session, version_id: str | None) -> Learnt:
    """The reviewed messages ``version_id`` was trained on (:class:`Learnt`).

    Retraining trains on every reviewed message outside the evaluation set, up to the
    newest review its run read (``training_runs.max_review_id``). Such a message added to
    the set later is one the version learnt and no candidate may learn, so the gate would
    favour the version on it (a lifecycle audit: after `evalset add --from-reviews 100`
    every candidate was rejected, the active model agreeing with 88 of 89 added labels, a
    mistaken one included, and candidates with 82). A version made by `spamguard train`,
    or registered from a folder, read no reviews.
    """
    if version_id is None:
        return Learnt()
    run = session.execute(
        select(TrainingRun.max_review_id, TrainingRun.started_at)
        .where(TrainingRun.candidate_version_id == version_id,
               TrainingRun.max_review_id.is_not(None))
        .order_by(TrainingRun.id.desc()).limit(1)).first()
    if run is None:
        return Learnt()
    return Learnt({r.text_hash for r in latest_reviews(session, up_to=run.max_review_id)},
                  as_utc(run.started_at))


def trained_on_by_active(session: Session) -> set[str]:
    """Normalised texts of the reviewed messages the active version was trained on
    (:func:`learnt_by`)."""
    active = registry.active_version(session)
    return learnt_by(session, active.id if active else None).hashes


def base_seen_by_active(session: Session) -> set[str] | None:
    """Normalised texts of the active version's base data it was trained or tuned on: its
    training and validation splits of the file `spamguard train` read (the shipped 2012
    set, say) with its ``--also-train`` files, rebuilt by
    :func:`~spamguard.ml.evaluation.texts_seen_by`. Canned replies are in that data and in
    live traffic alike. None when they cannot be rebuilt: the version's folder or recorded
    file is gone or changed, or it was retrained (its data came from the database too; the
    reviews it learnt are :func:`trained_on_by_active`). No active version: none.
    """
    from spamguard.ml.evaluation import texts_seen_by  # loads torch: only when adding

    active = registry.active_version(session)
    if active is None:
        return set()
    try:
        metadata = read_metadata(active.path)
    except ModelError:  # folder gone or model.json unreadable: its data cannot be known
        return None
    return texts_seen_by(metadata)


@dataclass
class Added:
    """What :func:`add_reviewed` did."""

    added: int
    already: int  # not added: the same normalised text is in the set already
    trained_on: int = 0  # added by id although the active version was trained on them
    unseen_left: int = 0  # reviewed messages the active version was not trained on, not added
    # False: the active version's base training data could not be rebuilt, so only the
    # reviews it learnt were checked (:func:`base_seen_by_active`), for the caller to say so
    base_checked: bool = True


def _refuse_unreviewed(session: Session, message_ids: Sequence[int],
                       reviewed: dict[int, ReviewedMessage]) -> None:
    """Raise DataError naming the ``message_ids`` that do not exist or have no review."""
    missing = [i for i in message_ids if i not in reviewed]
    if not missing:
        return
    exists = set(session.scalars(select(Message.id).where(Message.id.in_(missing))))
    unknown = [i for i in missing if i not in exists]
    raise DataError("; ".join(
        f"{what} {', '.join(map(str, ids))}" for what, ids in (
            ("no such message(s):", unknown),
            ("message(s) with no review:", [i for i in missing if i in exists]))
        if ids))


def add_reviewed(*, session: Session, message_ids: Sequence[int] = (), count: int = 0,
                 seed: int = EVALSET_SEED) -> Added:
    """Add reviewed messages to the evaluation set (they leave the training data).

    Args:
        session: database session (the caller commits).
        message_ids: these reviewed messages, by id (added even if the active version was
            trained on them: counted in ``trained_on``, for the caller to warn).
        count: also this many other reviewed messages, with distinct texts not yet in the
            set and not trained or tuned on by the active version, as reviews
            (:func:`trained_on_by_active`) or in its base data
            (:func:`base_seen_by_active`), chosen at random with ``seed``.
    """
    reviews = latest_reviews(session)
    known = load_evalset(session, reviews=reviews).hashes
    reviewed = {r.message_id: r for r in reviews}
    _refuse_unreviewed(session, message_ids, reviewed)
    base = base_seen_by_active(session)
    seen = trained_on_by_active(session) | (base or set())
    picked = [reviewed[i] for i in message_ids]
    trained_on = sum(r.text_hash in seen for r in picked)
    unseen_left = 0
    if count:
        taken = known | {r.text_hash for r in picked}
        pool = list({r.text_hash: r for r in reviewed.values()  # one per text: the latest
                     if r.text_hash not in taken and r.text_hash not in seen}.values())
        pool.sort(key=lambda r: r.message_id)  # the sample depends on the seed alone
        chosen = random.Random(seed).sample(pool, min(count, len(pool)))
        picked += chosen
        unseen_left = len(pool) - len(chosen)
    added = _insert(session, [r.text for r in picked], [LABEL_IDS[r.label] for r in picked],
                    "review", known)
    return Added(added, len(picked) - added, trained_on, unseen_left,
                 base_checked=base is not None)
