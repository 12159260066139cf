"""Spot checks: how often the model in service is wrong where nobody looked.

The review queue shows the messages closest to the threshold first, which is where labels
teach the model most, but a moderator working it never sees what the model is confidently
wrong about: on present-day messages the shipped model scores "Hi mum, new number" scams
0.002-0.14 and some legitimate delivery notices over 0.99 (bench/fresh_sms.tsv). A spot
check draws one message at random, uniformly, from the active model's unreviewed verdicts
of one label (spam or ham; by default a label chosen at random and not shown, so the
moderator is not nudged to agree with the model) and keeps the draw in
``spot_check_draws`` until it is decided or skipped; :func:`estimates` turns the decided
draws into the share of such verdicts that are wrong, with a 95% Wilson interval, and
counts the skips.

What the estimate means: among messages the active model labelled spam (or ham) that no
moderator had reviewed when they were drawn, the share that a moderator labelled otherwise.
A draw counts once its message has a label from anyone (the spot checker, or another
moderator who got there first: leaving those out would leave out the queue's uncertain,
often wrong, ones), judged by the message's current label, so a later correction counts
too. Skipped draws are left out and counted: skipping hard ones biases the estimate, and
the page shows how many were skipped. The queue's reviews are not in it (not a random
sample).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spamguard.models import LABELS, SPOT_CHECK_MODES, Message, SpotCheckDraw
from spamguard.services import registry
from spamguard.sqltypes import utcnow

CONFIDENCE = 0.95
MODES = SPOT_CHECK_MODES  # the tabs: "any" (blind, from either label), or one label, shown


def _drawable(version_id: str, verdict: str) -> list:
    """WHERE clauses for the messages a spot check of ``verdict`` may draw: not those a
    sender rule labelled (services.sender_rules), which say nothing of the model, and
    would make it look better the more of an allowed sender's messages come in."""
    return [Message.review_label.is_(None), Message.model_version_id == version_id,
            Message.model_label == verdict, Message.sender_rule.is_(None)]


def _by_index(query, *, descending: bool = False):
    """Order a query of :func:`_drawable` messages by id the way ``ix_messages_spot_check``
    holds them. Ordering by ``review_label`` and ``sender_rule`` first changes nothing
    (both are NULL in all of them) but keeps PostgreSQL off the primary key: for ``ORDER
    BY id LIMIT 1`` it would walk ``pk_messages`` from the first message, through every
    older model's (100,000 rows: 54 ms in bench/admin_pages.py, growing with the history),
    where the index needs one descent (0.1 ms)."""
    if descending:
        return query.order_by(Message.review_label.desc(), Message.sender_rule.desc(),
                              Message.id.desc())
    return query.order_by(Message.review_label, Message.sender_rule, Message.id)


def _check(verdict: str, allowed: tuple[str, ...] = LABELS) -> None:
    if verdict not in allowed:
        raise ValueError(f"verdict must be one of {', '.join(allowed)}")


# The spot-check page counts what is left up to this many (a count reads one index entry
# per message: about 0.2 us each, so a million would cost 200 ms on every page load).
LEFT_SHOWN_UP_TO = 10_000


def drawable_count(session: Session, version_id: str, verdict: str, *,
                   up_to: int | None = None) -> int:
    """How many unreviewed messages the version labelled ``verdict`` (read from the index
    ``ix_messages_spot_check`` alone); with ``up_to``, at most ``up_to + 1`` are counted,
    so more than ``up_to`` means "more than that"."""
    _check(verdict)
    return _count(session, select(Message.id).where(*_drawable(version_id, verdict)), up_to)


def _count(session: Session, ids, up_to: int | None) -> int:
    """How many rows ``ids`` selects; with ``up_to``, at most ``up_to + 1``."""
    if up_to is not None:
        ids = ids.limit(up_to + 1)
    return session.scalar(select(func.count()).select_from(ids.subquery())) or 0


def older_verdicts(session: Session, version_id: str, *, up_to: int) -> int:
    """Unreviewed messages with a verdict of another model version than ``version_id``
    (counted up to ``up_to + 1``): after a promotion they are the backlog, and a spot
    check, which estimates the model in service, does not draw them."""
    return _count(session, select(Message.id).where(
        Message.review_label.is_(None), Message.model_label.is_not(None),
        Message.model_version_id.is_distinct_from(version_id)), up_to)  # NULL: deleted


def any_drawable(session: Session, version_id: str, verdict: str) -> bool:
    """Whether the version labelled any unreviewed message ``verdict`` (one index seek)."""
    _check(verdict)
    query = _by_index(select(Message.id).where(*_drawable(version_id, verdict))).limit(1)
    return session.scalar(query) is not None


# Random ids tried per query, and queries, before a draw counts and offsets instead.
SAMPLE_BATCH = 64
SAMPLE_BATCHES = 4
COUNT_TRIES = 5  # counts and offsets, each after verdicts changed between the two


def draw(session: Session, verdict: str, *, rng: random.Random | None = None
         ) -> Message | None:
    """A message drawn uniformly at random from the active model's unreviewed verdicts
    labelled ``verdict``; None when there is no active model or no such message.

    Rejection sampling by id: the first and last such message's ids come from the index,
    then random ids between them are tried, in batches of :data:`SAMPLE_BATCH`, and the
    first that is such a message is drawn. Every such message is equally likely (each try
    hits each id with the same chance), and the time does not grow with their number while
    they are not rare among the ids between. If :data:`SAMPLE_BATCHES` batches miss (they
    are under about 1% of those ids), it counts them and reads the k-th by id from the
    index instead: also uniform, slower (about 1 ms per 10,000 on SQLite). Never
    ``ORDER BY random()``, which sorts them all, nor a random id with "the next one at or
    after it", which favours messages after gaps."""
    _check(verdict)
    active = registry.active_version(session)
    if active is None:
        return None
    rng = rng or random.SystemRandom()
    where = _drawable(active.id, verdict)
    ids = select(Message.id).where(*where)
    first = session.scalar(_by_index(ids).limit(1))
    if first is None:
        return None
    last = session.scalar(_by_index(ids, descending=True).limit(1))
    # Separate statements see separate snapshots (PostgreSQL's READ COMMITTED, SQLite
    # outside a write): a moderator's label or undo in between can leave no range (last
    # below first, or nothing left), and one between the count and the offset can put k
    # past the end. Each case counts and offsets (again), which stays uniform.
    message_id = (_try_random_ids(session, where, first, last, rng)
                  if last is not None and last >= first else None)
    for _ in range(COUNT_TRIES):
        if message_id is not None:
            break
        total = drawable_count(session, active.id, verdict)
        if not total:
            return None
        message_id = session.scalar(_by_index(ids).offset(rng.randrange(total)).limit(1))
    return session.get(Message, message_id) if message_id is not None else None


def _try_random_ids(session: Session, where: list, first: int, last: int,
                    rng: random.Random) -> int | None:
    """The first of up to SAMPLE_BATCH x SAMPLE_BATCHES random ids in [first, last] that
    matches ``where``, in the order they were drawn; None if none does."""
    for _ in range(SAMPLE_BATCHES):
        tries = [rng.randint(first, last) for _ in range(SAMPLE_BATCH)]
        hits = set(session.scalars(select(Message.id).where(Message.id.in_(set(tries)),
                                                            *where)))
        for message_id in tries:
            if message_id in hits:
                return message_id
    return None


def _close(session: Session, row: SpotCheckDraw, outcome: str) -> bool:
    """Close a draw, guarded in the same statement against a request of another tab:
    "labelled" only if its message has a label now (a label wins over an earlier skip or
    expiry); "skipped" or "expired" only if it is still open and its message unlabelled.
    True when it was closed this way."""
    labelled = select(Message.id).where(Message.id == row.message_id,
                                        Message.review_label.is_not(None)).exists()
    statement = update(SpotCheckDraw).where(SpotCheckDraw.id == row.id)
    if outcome == "labelled":
        statement = statement.where(labelled)
    else:
        statement = statement.where(SpotCheckDraw.outcome.is_(None), ~labelled)
    closed = session.execute(statement.values(outcome=outcome, closed_at=utcnow())
                             .execution_options(synchronize_session=False)).rowcount
    session.expire(row)
    return bool(closed)


def open_draw(session: Session, user_id: int, mode: str) -> SpotCheckDraw | None:
    """The user's open draw in ``mode`` (a unique index allows one)."""
    _check(mode, MODES)
    return session.scalars(select(SpotCheckDraw).where(
        SpotCheckDraw.user_id == user_id, SpotCheckDraw.mode == mode,
        SpotCheckDraw.outcome.is_(None))).first()


def settle(session: Session, row: SpotCheckDraw) -> bool:
    """Close an open draw that can no longer be decided: as labelled if someone labelled
    its message (it counts, by that label), as expired if its model is no longer active.
    True when it is closed (by this call or by another request meanwhile)."""
    if _close(session, row, "labelled"):
        return True
    active = registry.active_version(session)
    if active is None or row.model_version_id != active.id:
        _close(session, row, "expired") or _close(session, row, "labelled")
    return row.outcome is not None


def reopen_draws(session: Session, message_id: int) -> None:
    """A message's last label was undone: draws of it closed as labelled go back into the
    sample, open again (the moderator's newer open draw in that tab, not yet decided, is
    expired to make room). Otherwise an undone queue decision would drop from the sample a
    message the queue found uncertain, the kind most often wrong."""
    rows = list(session.scalars(select(SpotCheckDraw).where(
        SpotCheckDraw.message_id == message_id, SpotCheckDraw.outcome == "labelled")))
    for row in rows:
        newer = open_draw(session, row.user_id, row.mode)
        if newer is not None:
            newer.outcome, newer.closed_at = "expired", utcnow()
            session.flush()
        row.outcome, row.closed_at = None, None
        session.flush()


def current_draw(session: Session, user_id: int, mode: str, *,
                 rng: random.Random | None = None) -> SpotCheckDraw | None:
    """The user's open draw in ``mode`` if it can still be decided, else a new one.

    ``mode`` "any" draws blind: first a label, spam or ham with equal chances among those
    with messages left, then a message of it. None when nothing is left to draw. Two page
    loads at once: the unique index lets one draw stand, and the other is rolled back and
    shows it. The caller commits."""
    row = open_draw(session, user_id, mode)
    if row is not None and not settle(session, row):
        return row
    active = registry.active_version(session)
    if active is None:
        return None
    rng = rng or random.SystemRandom()
    labels = [mode] if mode != "any" else \
        [label for label in LABELS if any_drawable(session, active.id, label)]
    message = draw(session, rng.choice(labels), rng=rng) if labels else None
    if message is None:
        return None
    row = SpotCheckDraw(user_id=user_id, verdict=message.model_label, mode=mode,
                        message_id=message.id, model_version_id=message.model_version_id,
                        drawn_at=utcnow())
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # another request of this user and tab drew first
        session.rollback()
        return open_draw(session, user_id, mode)
    return row


def close_draw(session: Session, row: SpotCheckDraw, outcome: str) -> bool:
    """Close a draw as "labelled" (its message has a label now) or "skipped" (it is open
    and its message unlabelled); False when that does not hold (see :func:`_close`)."""
    if outcome not in ("labelled", "skipped"):
        raise ValueError("a draw is closed as labelled or skipped")
    return _close(session, row, outcome)


@dataclass(frozen=True)
class Estimate:
    """Spot checks of one verdict label: how many decided, how many wrong, the 95%
    interval of the wrong share, and how many draws were skipped."""

    verdict: str
    checked: int
    wrong: int
    low: float | None  # Wilson interval of the wrong share; None when nothing was checked
    high: float | None
    skipped: int = 0

    @property
    def wrong_share(self) -> float | None:
        return self.wrong / self.checked if self.checked else None


def wilson_interval(wrong: int, checked: int) -> tuple[float | None, float | None]:
    """The 95% Wilson score interval of ``wrong / checked`` (scipy); (None, None) for 0."""
    if not checked:
        return None, None
    from scipy.stats import binomtest  # only these pages need it; keep service start fast

    ci = binomtest(wrong, checked).proportion_ci(confidence_level=CONFIDENCE,
                                                  method="wilson")
    return float(ci.low), float(ci.high)


def estimates(session: Session, version_id: str) -> list[Estimate]:
    """Spot checks of the version's verdicts, per verdict label (spam first).

    A message counts once, however many moderators drew it, and only if some draw of it
    was not skipped."""
    counted = SpotCheckDraw.outcome.is_(None) | (SpotCheckDraw.outcome == "labelled")
    checked = (select(SpotCheckDraw.verdict, Message.review_label,
                      func.count(SpotCheckDraw.message_id.distinct()))
               .join(Message, Message.id == SpotCheckDraw.message_id)
               .where(SpotCheckDraw.model_version_id == version_id, counted,
                      Message.review_label.is_not(None))
               .group_by(SpotCheckDraw.verdict, Message.review_label))
    counts: dict[str, list[int]] = {label: [0, 0] for label in LABELS}
    for verdict, label, n in session.execute(checked):
        counts[verdict][0] += n
        if label != verdict:
            counts[verdict][1] += n
    skips = dict(session.execute(
        select(SpotCheckDraw.verdict, func.count())
        .where(SpotCheckDraw.model_version_id == version_id,
               SpotCheckDraw.outcome == "skipped")
        .group_by(SpotCheckDraw.verdict)).all())
    return [Estimate(verdict, n, wrong, *wilson_interval(wrong, n), skipped=skips.get(verdict, 0))
            for verdict, (n, wrong) in counts.items()]


def undecided(session: Session, version_id: str) -> int:
    """Messages of the version's draws still open and unlabelled: on a moderator's screen,
    or left in a tab nobody came back to (as telling as a skip, and counted nowhere else).
    One number for both labels: per label it would give away a blind draw's verdict."""
    return session.scalar(
        select(func.count(SpotCheckDraw.message_id.distinct()))
        .join(Message, Message.id == SpotCheckDraw.message_id)
        .where(SpotCheckDraw.model_version_id == version_id, SpotCheckDraw.outcome.is_(None),
               Message.review_label.is_(None))) or 0
