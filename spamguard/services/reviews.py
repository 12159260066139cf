"""Moderators' decisions: a review per decision, the newest one current, history kept.

``messages.review_label``/``reviewed_at`` mirror the current review so lists and the queue
never join ``reviews``. Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Boolean, Integer, Select, String, Text, func, insert, literal, select, update
from sqlalchemy.orm import Session

from spamguard.db import sqlite_write_lock
from spamguard.errors import SpamguardError
from spamguard.models import LABELS, Message, Review
from spamguard.services import spot_checks
from spamguard.sqltypes import UTCDateTime, utcnow

MAX_NOTE_CHARS = 2000


class ReviewError(SpamguardError):
    """A review that cannot be recorded or undone."""


class CountChanged(Exception):  # noqa: N818 - not an error: the caller asks again
    """A bulk relabel found another number of messages than the moderator confirmed
    (messages arrived or were labelled in between); nothing was labelled."""

    def __init__(self, found: int, expected: int) -> None:
        super().__init__(f"{found} messages match, not the {expected} confirmed")
        self.found, self.expected = found, expected


class ReviewsChanged(Exception):  # noqa: N818 - not an error: the caller asks again
    """A moderator labelled (or took back a label of) one of the messages of a bulk relabel
    after the confirmation showed them; nothing was labelled."""


def reviews_seen(session: Session, ids: list[int]) -> tuple[int, int | None]:
    """How many of ``ids`` carry a moderator's label now, and the newest review id among
    them (None: none ever reviewed): what a bulk relabel's confirmation showed."""
    labelled, newest = 0, None
    for start in range(0, len(ids), 5000):
        chunk = ids[start:start + 5000]
        labelled += session.scalar(select(func.count()).select_from(Message).where(
            Message.id.in_(chunk), Message.review_label.is_not(None))) or 0
        top = session.scalar(select(func.max(Review.id)).where(Review.message_id.in_(chunk)))
        newest = top if newest is None or (top is not None and top > newest) else newest
    return labelled, newest


class ReviewConflict(ReviewError):
    """The message was reviewed after the moderator was shown it, so the decision was not
    recorded (see :class:`Seen`)."""

    def __init__(self, message_id: int, review: Review | None,
                 seen: Seen | None = None) -> None:
        super().__init__(f"message {message_id} was reviewed after it was shown to you")
        self.message_id = message_id
        self.review = review  # the latest review now (None: the one shown was undone)
        self.seen = seen  # what the moderator was shown

    def agrees_with(self, label: str) -> bool:
        """The message carries ``label`` now: the refused decision would change nothing."""
        return self.review is not None and self.review.label == label

    @property
    def went_back(self) -> bool:
        """The review shown was undone and an older one is the latest again (the message
        page shows a labelled message; the queue only unlabelled ones)."""
        shown = self.seen.latest_review_id if self.seen is not None else None
        return shown is not None and self.review is not None and self.review.id < shown


@dataclass(frozen=True)
class Seen:
    """What a moderator was shown of a message: the id of its latest review then, or None
    when it had none. A decision made with it is recorded only if that is still so, which
    makes the queue optimistic without a version column (a new review always gets a higher
    id than the message's others; undo deletes the review it takes back). The queue shows
    unreviewed messages, so its forms carry None. Ids are never reused, so a review made
    after an undo is not mistaken for the one undone: PostgreSQL takes them from a sequence,
    and on SQLite ``reviews`` is an AUTOINCREMENT table (migration 0004)."""

    latest_review_id: int | None

    @classmethod
    def parse(cls, value: str | None) -> Seen:
        """Read a form's ``seen`` field: "none", or the id of the latest review shown."""
        from spamguard.sqltypes import parse_id

        if value == "none":
            return cls(None)
        try:
            return cls(parse_id(value or ""))
        except ValueError:
            raise ValueError("the page was out of date (reload it)") from None


def _check(label: str, note: str | None) -> str | None:
    if label not in LABELS:
        raise ReviewError(f"label must be one of {', '.join(LABELS)}")
    note = (note or "").strip()
    if "\x00" in note:  # PostgreSQL text cannot hold it
        raise ReviewError("note contains a NUL character")
    if len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"note is longer than {MAX_NOTE_CHARS} characters")
    return note or None


def add_review(*, session: Session, message_id: int, label: str, user_id: int | None,
               note: str | None = None, seen: Seen | None = None) -> Review:
    """Record a decision on one message; the previous current review is superseded.

    With ``seen``, raise :class:`ReviewConflict` instead when someone reviewed the message
    after the moderator was shown it (the caller rolls back)."""
    note = _check(label, note)
    message = _lock_message(session, message_id)
    if message is None:
        raise ReviewError(f"no message {message_id}")
    if seen is not None:
        _check_unchanged(session, message_id, seen)
    # Clear the old flag first: the partial unique index allows one current review.
    session.execute(update(Review).where(Review.message_id == message_id, Review.is_current)
                    .values(is_current=False).execution_options(synchronize_session="fetch"))
    now = utcnow()
    review = Review(message_id=message_id, user_id=user_id, label=label, note=note,
                    created_at=now, is_current=True)
    session.add(review)
    message.review_label, message.reviewed_at = label, now
    session.flush()
    return review


def _lock_message(session: Session, message_id: int) -> Message | None:
    """Load the message and lock its row until the transaction ends (PostgreSQL: SELECT ...
    FOR UPDATE; SQLite serialises writers anyway). Two moderators deciding the same message
    at once (the queue shows everyone the most uncertain first) then take turns, and the
    later decision becomes current, instead of the loser hitting the one-current-review
    index with an error. SQLite ignores FOR UPDATE: there its write lock is taken first, so
    a message deleted meanwhile (``spamguard messages erase``) is found gone here, not by
    the review's writes (a StaleDataError)."""
    sqlite_write_lock(session, Message.review_label, message_id)
    query = (select(Message).where(Message.id == message_id).with_for_update()
             .execution_options(populate_existing=True))
    return session.scalars(query).first()


def _check_unchanged(session: Session, message_id: int, seen: Seen) -> None:
    """Raise :class:`ReviewConflict` unless the message's latest review is still the one seen.

    The check is a write (a no-op UPDATE of the message, guarded by it), not a read: on
    PostgreSQL the row is locked already, but SQLite ignores FOR UPDATE, and two moderators
    shown the same message would both pass a read before either wrote. The UPDATE waits for
    SQLite's write lock and then sees what the other one committed."""
    latest = (select(func.max(Review.id)).where(Review.message_id == message_id)
              .scalar_subquery())
    unchanged = latest.is_(None) if seen.latest_review_id is None \
        else latest == seen.latest_review_id
    claimed = session.execute(update(Message).where(Message.id == message_id, unchanged)
                              .values(review_label=Message.review_label)
                              .execution_options(synchronize_session=False)).rowcount
    if not claimed:
        raise ReviewConflict(message_id, latest_review(session, message_id), seen)


def latest_review(session: Session, message_id: int) -> Review | None:
    """Return the message's newest review (the current one), or None."""
    return session.scalars(select(Review).where(Review.message_id == message_id)
                           .order_by(Review.id.desc()).limit(1)).first()


def latest_review_id(session: Session, message_id: int) -> int | None:
    """Return the id of the message's newest review, or None: what :class:`Seen` records."""
    return session.scalar(select(func.max(Review.id)).where(Review.message_id == message_id))


def undo_review(*, session: Session, review_id: int) -> Message:
    """Take back a current review: the one before it (if any) becomes current again."""
    review = session.get(Review, review_id)
    if review is not None:  # re-read under the lock: a concurrent decision may have won
        _lock_message(session, review.message_id)
        review = session.scalars(select(Review).where(Review.id == review_id)
                                 .execution_options(populate_existing=True)).first()
    if review is None or not review.is_current:
        raise ReviewError("only the current review of a message can be undone")
    message = review.message
    session.delete(review)
    session.flush()
    previous = latest_review(session, message.id)
    if previous is None:
        message.review_label, message.reviewed_at = None, None
        session.flush()
        spot_checks.reopen_draws(session, message.id)
    else:
        previous.is_current = True
        message.review_label, message.reviewed_at = previous.label, previous.created_at
    session.flush()
    return message


_UNSEEN = object()


def bulk_relabel(*, session: Session, ids: Select | list[int], label: str,
                 user_id: int | None, note: str | None = None,
                 expected: int | None = None, newest_review: object = _UNSEEN) -> int:
    """Label many messages at once (ids, or a ``SELECT id`` subquery); return the count.

    Set-based: three statements whatever the number of messages, so relabelling
    everything a filter matches stays fast on tens of thousands of rows. ``expected``: the
    count the moderator confirmed; if the ids found now are another number, raise
    :class:`CountChanged` and label nothing (the ids are read once, here, and exactly those
    are labelled). ``newest_review``: the newest review id among them that the
    confirmation showed (:func:`reviews_seen`); if a moderator labelled one of them since,
    or took a label back, raise :class:`ReviewsChanged` and label nothing (an audit: a
    selection relabel silently replaced a label another moderator had just given).
    """
    note = _check(label, note)
    target = select(Message.id).where(Message.id.in_(ids)) if isinstance(ids, list) else ids
    target_ids = sorted(session.scalars(target))  # lock in id order: no deadlocks
    if expected is not None and len(target_ids) != expected:
        raise CountChanged(len(target_ids), expected)
    if not target_ids:
        return 0
    chunks = [target_ids[i:i + 5000] for i in range(0, len(target_ids), 5000)]
    # Locked before the reviews are compared. PostgreSQL: FOR UPDATE, as _lock_message, in
    # id order (no deadlocks); SQLite ignores it and takes its write lock instead.
    sqlite_write_lock(session, Message.review_label, target_ids[0])
    for chunk in chunks:  # bounded IN lists for every backend
        session.execute(select(Message.id).where(Message.id.in_(chunk)).order_by(Message.id)
                        .with_for_update())
    if newest_review is not _UNSEEN and reviews_seen(session, target_ids)[1] != newest_review:
        raise ReviewsChanged()
    now = utcnow()
    for chunk in chunks:
        session.execute(update(Review).where(Review.message_id.in_(chunk), Review.is_current)
                        .values(is_current=False).execution_options(synchronize_session=False))
        rows = select(Message.id, literal(user_id, Integer), literal(label, String),
                      literal(note, Text), literal(now, UTCDateTime()), literal(True, Boolean)
                      ).where(Message.id.in_(chunk))
        session.execute(insert(Review).from_select(
            ["message_id", "user_id", "label", "note", "created_at", "is_current"], rows))
        session.execute(update(Message).where(Message.id.in_(chunk))
                        .values(review_label=label, reviewed_at=now)
                        .execution_options(synchronize_session=False))
    session.expire_all()
    return len(target_ids)


def review_history(session: Session, message_id: int) -> list[Review]:
    """Return every review of a message, oldest first."""
    return list(session.scalars(select(Review).where(Review.message_id == message_id)
                                .order_by(Review.id)))


def count_reviews(session: Session) -> int:
    """Count every review ever recorded."""
    return session.scalar(select(func.count()).select_from(Review)) or 0
