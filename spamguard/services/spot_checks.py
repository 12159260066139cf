"""Spot checks: how often the model in service is wrong where nobody looked.

The review queue shows the messages closest to the threshold first, which is where labels
teach the model most, but a moderator working it never sees what the model is confidently
wrong about: on present-day messages the shipped model scores "Hi mum, new number" scams
0.002-0.14 and some legitimate delivery notices over 0.99 (bench/fresh_sms.tsv). A spot
check draws one message at random, uniformly, from the active model's unreviewed verdicts
of one label (spam or ham). The moderator's label on it is stored with the verdict label it
checked (``reviews.spot_check_of``), and :func:`estimates` turns those into the share of
such verdicts that are wrong, with a 95% Wilson interval.

What the estimate means: among messages the active model labelled spam (or ham) that no
moderator had reviewed when they were drawn, the share a moderator labels otherwise. The
queue's reviews are not in it (they are not a random sample), and a later relabel of a
spot-checked message counts (its current label is the best truth known). Skipping drawn
messages makes the sample less random, so the page counts skips.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spamguard.models import LABELS, Message, Review
from spamguard.services import registry

CONFIDENCE = 0.95


def _drawable(version_id: str, verdict: str) -> list:
    """WHERE clauses for the messages a spot check of ``verdict`` may draw."""
    return [Message.review_label.is_(None), Message.model_version_id == version_id,
            Message.model_label == verdict]


def _check_verdict(verdict: str) -> None:
    if verdict not in LABELS:
        raise ValueError(f"verdict must be one of {', '.join(LABELS)}")


def drawable_count(session: Session, version_id: str, verdict: str) -> int:
    """How many unreviewed messages the version labelled ``verdict``."""
    _check_verdict(verdict)
    query = select(func.count()).select_from(Message).where(*_drawable(version_id, verdict))
    return session.scalar(query) or 0


def draw(session: Session, verdict: str, *, rng: random.Random | None = None
         ) -> Message | None:
    """A message drawn uniformly at random from the active model's unreviewed verdicts
    labelled ``verdict``; None when there is no active model or no such message.

    Counts them, then reads the k-th by id: one indexed count and one offset scan, no
    ``ORDER BY random()`` sort of the whole table, and every message equally likely (a
    random id with "the next one at or after it" would favour messages after gaps)."""
    _check_verdict(verdict)
    active = registry.active_version(session)
    if active is None:
        return None
    total = drawable_count(session, active.id, verdict)
    if not total:
        return None
    k = (rng or random.SystemRandom()).randrange(total)
    query = (select(Message).where(*_drawable(active.id, verdict))
             .order_by(Message.id).offset(k).limit(1))
    return session.scalars(query).first()


def is_drawable(session: Session, message: Message, verdict: str) -> bool:
    """Whether ``message`` could still be drawn for a spot check of ``verdict`` now."""
    active = registry.active_version(session)
    return (active is not None and message.review_label is None
            and message.model_version_id == active.id and message.model_label == verdict)


@dataclass(frozen=True)
class Estimate:
    """Spot checks of one verdict label: how many, how many wrong, and the 95% interval."""

    verdict: str
    checked: int
    wrong: int
    low: float | None  # Wilson interval of the wrong share; None when nothing was checked
    high: float | None

    @property
    def wrong_share(self) -> float | None:
        return self.wrong / self.checked if self.checked else None


def wilson_interval(wrong: int, checked: int) -> tuple[float | None, float | None]:
    """The 95% Wilson score interval of ``wrong / checked`` (scipy); (None, None) for 0."""
    if not checked:
        return None, None
    from scipy.stats import binomtest  # only the dashboard needs it; keep service start fast

    ci = binomtest(wrong, checked).proportion_ci(confidence_level=CONFIDENCE,
                                                  method="wilson")
    return float(ci.low), float(ci.high)


def estimates(session: Session, version_id: str) -> list[Estimate]:
    """Spot checks of the version's verdicts, per verdict label (spam first).

    A spot check counts as wrong when the message's current review label differs from the
    verdict it checked, so a later correction of the spot check's label counts too."""
    checked = (select(Review.spot_check_of, Message.review_label,
                      func.count(Review.message_id.distinct()))
               .join(Message, Message.id == Review.message_id)
               .where(Review.spot_check_of.is_not(None), Message.model_version_id == version_id,
                      Message.review_label.is_not(None))
               .group_by(Review.spot_check_of, Message.review_label))
    counts: dict[str, list[int]] = {label: [0, 0] for label in LABELS}
    for verdict, label, n in session.execute(checked):
        counts[verdict][0] += n
        if label != verdict:
            counts[verdict][1] += n
    return [Estimate(verdict, n, wrong, *wilson_interval(wrong, n))
            for verdict, (n, wrong) in counts.items()]
