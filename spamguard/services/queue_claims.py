"""Soft claims on the review queue: the message shown to a moderator is theirs for a while.

When the queue shows a moderator a message as their next one, it is claimed for them until
``claimed_until`` (``SPAMGUARD_QUEUE_CLAIM_SECONDS`` from then; renewed each time it is
shown again), and other moderators' queues pass over it. A claim ends when the message is
reviewed (the queue reads only unreviewed messages, and nothing here counts a claim on a
reviewed one), when its moderator skips it or is shown another message (:func:`release`),
when the account's sessions end (logout, disabled, a password reset) or it becomes a viewer
(services.users), or when it expires: expired claims are ignored everywhere, so nothing
stays hidden. A claim is soft: the message's own page still labels it (and says who has
it open), and the queue's "seen" check still refuses a second decision. Reviewing never
touches the claims table, so it takes no lock there. Migration 0012 says why claims are a
table of their own.

Times are the web workers' clocks (the ``now`` passed in), not the database's, so the
tests can move time without waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Integer, delete, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from spamguard.db import conflict_insert
from spamguard.models import Message, QueueClaim
from spamguard.services import message_queries
from spamguard.sqltypes import UTCDateTime

ATTEMPTS = 3  # queue reads before giving up when others claim every candidate meanwhile


def not_claimed_by_others(user_id: int | None, now: datetime) -> ColumnElement[bool]:
    """A condition on messages: no one but ``user_id`` holds an unexpired claim on it.

    A ``NOT IN`` over the few live claims, which the database reads once (SQLite: a list
    of them; PostgreSQL: a hashed subplan) beside the queue's range scan."""
    live = select(QueueClaim.message_id).where(QueueClaim.claimed_until > now)
    if user_id is not None:
        live = live.where(QueueClaim.user_id != user_id)
    return Message.id.not_in(live)


def claim(session: Session, *, message_id: int, user_id: int, now: datetime,
          seconds: int) -> bool:
    """Claim an unreviewed message for ``user_id`` until ``now + seconds``; return False
    (nothing written) when someone else holds an unexpired claim on it, or it was reviewed
    meanwhile.

    One statement, decided by the database: an INSERT of the claim that, when the message
    has one already, takes it over only if it is the same moderator's or has expired. Two
    moderators claiming at once cannot both win: on PostgreSQL the second waits on the
    first's row and then sees it (the WHERE is checked again on the committed row); on
    SQLite writers take turns, and the second runs after the first committed."""
    until = literal(now + timedelta(seconds=seconds), UTCDateTime())
    unreviewed = select(Message.id, literal(user_id, Integer), until).where(
        Message.id == message_id, Message.review_label.is_(None))
    statement = conflict_insert(session)(QueueClaim).from_select(
        ["message_id", "user_id", "claimed_until"], unreviewed)
    statement = statement.on_conflict_do_update(
        index_elements=[QueueClaim.message_id],
        set_={"user_id": statement.excluded.user_id,
              "claimed_until": statement.excluded.claimed_until},
        where=or_(QueueClaim.user_id == user_id, QueueClaim.claimed_until <= now))
    # RETURNING, not the row count: psycopg reports -1 for this INSERT ... SELECT.
    return session.scalar(statement.returning(QueueClaim.message_id)) is not None


def claim_first(session: Session, candidates: Sequence[Message], *, user_id: int,
                now: datetime, seconds: int) -> int | None:
    """Claim the first candidate no one else holds; end the moderator's other claims.

    Returns the index of the claimed candidate in ``candidates`` (None: none could be).
    Commits after each try and after the release, so that no transaction waits for a
    claim's lock while it holds another's: PostgreSQL keeps a lock on a row that ``ON
    CONFLICT ... WHERE`` passed over, and two moderators' queues trying each other's rows
    (or taking over each other's expired claims and then ending their own) could otherwise
    deadlock. A candidate deleted meanwhile is passed over: on PostgreSQL the claim's
    foreign-key check waits for the deletion and then fails."""
    for index, message in enumerate(candidates):
        try:
            with session.begin_nested():
                won = claim(session, message_id=message.id, user_id=user_id, now=now,
                            seconds=seconds)
        except IntegrityError:  # PostgreSQL: deleted meanwhile (a purge or an erase)
            won = False
        session.commit()
        if won:
            release(session, user_id=user_id, keep=message.id)
            session.commit()
            return index
    release(session, user_id=user_id)
    session.commit()
    return None


def release(session: Session, *, user_id: int, message_id: int | None = None,
            keep: int | None = None) -> None:
    """End the moderator's claim on ``message_id`` (None: every claim but ``keep``)."""
    statement = delete(QueueClaim).where(QueueClaim.user_id == user_id)
    if message_id is not None:
        statement = statement.where(QueueClaim.message_id == message_id)
    if keep is not None:
        statement = statement.where(QueueClaim.message_id != keep)
    session.execute(statement.execution_options(synchronize_session=False))


def own_claim(session: Session, *, user_id: int, now: datetime) -> int | None:
    """The message the moderator holds an unexpired claim on (the newest), if any."""
    return session.scalar(select(QueueClaim.message_id).where(
        QueueClaim.user_id == user_id, QueueClaim.claimed_until > now)
        .order_by(QueueClaim.claimed_until.desc()).limit(1))


def holder(session: Session, message_id: int, now: datetime) -> QueueClaim | None:
    """The unexpired claim on an unreviewed message, with its moderator (None: no one's)."""
    return session.scalars(select(QueueClaim).join(Message).where(
        QueueClaim.message_id == message_id, QueueClaim.claimed_until > now,
        Message.review_label.is_(None)).options(selectinload(QueueClaim.user))).first()


def held_by_others(session: Session, *, user_id: int | None, now: datetime) -> int:
    """Count the unreviewed messages other moderators hold unexpired claims on."""
    query = (select(func.count()).select_from(QueueClaim)
             .join(Message, Message.id == QueueClaim.message_id)
             .where(QueueClaim.claimed_until > now, Message.review_label.is_(None)))
    if user_id is not None:
        query = query.where(QueueClaim.user_id != user_id)
    return session.scalar(query) or 0


@dataclass(frozen=True)
class Next:
    """What the queue shows: the current message (claimed, for a moderator) and the ones
    after it."""

    current: Message | None
    upcoming: list[Message]


def next_for(session: Session, *, user_id: int | None, now: datetime, seconds: int,
             limit: int, exclude_ids: Iterable[int] = (), first: Iterable[int] = ()) -> Next:
    """Read the queue as ``user_id`` sees it and claim its first message for them.

    Messages others hold claims on are left out. The message the moderator was shown
    last comes first while their claim on it lasts (a reload shows the same message), after
    ``first``: ids to show first if they are still unreviewed (a message just undone).
    ``user_id`` None (a viewer, who cannot review) reads the queue without claiming or
    leaving anything out. A candidate someone else claimed between the read and the claim
    is passed over; if all were, the queue is read again (at most :data:`ATTEMPTS` times)."""
    excluded = set(exclude_ids)
    if user_id is not None:
        first = [*first, own_claim(session, user_id=user_id, now=now)]
    for _ in range(ATTEMPTS):
        candidates = _candidates(session, user_id=user_id, now=now, limit=limit,
                                 excluded=excluded, first=first)
        if user_id is None:
            return Next(candidates[0] if candidates else None, candidates[1:])
        index = claim_first(session, candidates, user_id=user_id, now=now, seconds=seconds)
        if index is not None:
            return Next(candidates[index], candidates[index + 1:])
        if not candidates:
            break
        excluded.update(m.id for m in candidates)
    return Next(None, [])


def _candidates(session: Session, *, user_id: int | None, now: datetime, limit: int,
                excluded: set[int], first: Iterable[int]) -> list[Message]:
    """The queue's next ``limit`` messages for ``user_id``, those of ``first`` ahead."""
    where = [not_claimed_by_others(user_id, now)] if user_id is not None else []
    items = message_queries.review_queue(session, limit=limit, exclude_ids=excluded,
                                         where=where)
    ahead = []
    for message_id in dict.fromkeys(i for i in first if i is not None):
        message = session.get(Message, message_id)
        if message is not None and message.review_label is None \
                and message_id not in excluded:
            ahead.append(message)
    chosen = {m.id for m in ahead}
    return [*ahead, *[m for m in items if m.id not in chosen]][:limit]
