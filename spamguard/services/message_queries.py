"""Read-side queries over messages: filtered, paginated lists and the review queue.

Every list is ordered newest first (``received_at, id``), which the composite indexes in
:mod:`spamguard.models` serve together with each filter's own column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, and_, false, func, or_, select
from sqlalchemy.orm import Session, selectinload

from spamguard.ml.data import WORDLESS_HASH
from spamguard.models import LABELS, Message
from spamguard.senders import phone_digits
from spamguard.services import text_search
from spamguard.sqltypes import MAX_INTEGER_ID, parse_id

REVIEW_STATES = ("spam", "ham", "reviewed", "unreviewed")
MAX_PER_PAGE = 200


MAX_PAGE = 100_000  # a larger page number is clamped (its offset would overflow SQL)


class FilterError(ValueError):
    """A filter value that cannot be understood (shown to the user); ``fields``: the
    arguments at fault (one, or two that contradict each other)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


@dataclass(frozen=True)
class MessageFilter:
    """What a message list shows; empty fields do not filter."""

    model_label: str = ""  # spam | ham | pending
    review: str = ""  # one of REVIEW_STATES
    disagreement: bool = False  # reviewed, and the moderator's label differs from the model's
    min_p: float | None = None
    max_p: float | None = None
    since: date | None = None
    until: date | None = None  # inclusive day
    sender: str = ""
    q: str = ""  # substring of the body
    campaign_id: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str],
                  names: Mapping[str, str] | None = None) -> MessageFilter:
        """Parse query-string arguments; raise :class:`FilterError` naming a bad one: by
        ``names[argument]`` where given (the admin form's labels, "P(spam) from"), else by
        the argument ("min_p")."""
        n = _Names(names or {})
        model_label = _choice(args, "model_label", (*LABELS, "pending"), n)
        review = _choice(args, "review", REVIEW_STATES, n)
        min_p, max_p = _probability(args, "min_p", n), _probability(args, "max_p", n)
        if None not in (min_p, max_p) and min_p > max_p:  # would silently match nothing
            raise FilterError(f"{n['min_p']} {min_p:g} is above {n['max_p']} {max_p:g}: no "
                              "probability is in that range", "min_p", "max_p")
        since, until = _day(args, "since", n), _day(args, "until", n)
        if None not in (since, until) and since > until:
            raise FilterError(f"{n['since']} {since} is after {n['until']} {until}: no day is "
                              "in that range", "since", "until")
        return cls(
            model_label=model_label, review=review,
            disagreement=args.get("disagreement", "") in {"1", "on", "true", "yes"},
            min_p=min_p, max_p=max_p, since=since, until=until,
            sender=_text(args, "sender", 255, n), q=_text(args, "q", 200, n),
            campaign_id=_campaign(args, n),
        )

    def as_args(self) -> dict[str, str]:
        """Return the non-empty fields as query-string arguments (for links and forms)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            # Not `value in (None, "", False)`: 0.0 == False, so max_p=0 was dropped from
            # every link and form, and "All N matching" would have relabelled everything.
            if value is None or value is False or value == "":
                continue
            out[f.name] = "1" if value is True else str(value)
        return out

    @property
    def is_empty(self) -> bool:
        return not self.as_args()

    def describe(self) -> list[str]:
        """The filter in words, one condition a line, for a page that acts on it."""
        said = []
        if self.model_label:
            said.append("waiting for a verdict" if self.model_label == "pending"
                        else f"the model said {self.model_label}")
        if self.review in LABELS:
            said.append(f"a moderator said {self.review}")
        elif self.review:
            said.append(self.review)
        if self.disagreement:
            said.append("the moderator's label differs from the model's")
        if self.min_p is not None:
            said.append(f"spam probability at least {self.min_p:g}")
        if self.max_p is not None:
            said.append(f"spam probability at most {self.max_p:g}")
        if self.since:
            said.append(f"received on or after {self.since} (UTC)")
        if self.until:
            said.append(f"received on or before {self.until} (UTC)")
        if self.sender:
            said.append(f"from {self.sender}" + (" (the number written any way)"
                                                 if phone_digits(self.sender) else ""))
        if self.q:
            said.append(f"text contains \u201c{self.q}\u201d")
        if self.campaign_id:
            said.append(f"in campaign {self.campaign_id}")
        return said


class _Names(dict):
    """How errors name each argument: as given, else by the argument itself."""

    def __missing__(self, name: str) -> str:
        return name


def _text(args: Mapping[str, str], name: str, max_length: int, n: _Names) -> str:
    """A free-text filter, stripped. A longer one is refused, not cut: a cut search term
    matched messages without the rest of it, which a bulk relabel then labelled. No stored
    text holds a NUL (intake refuses it), PostgreSQL cannot take one, and FTS5 stops reading
    its query there, so one is a bad value rather than a 500."""
    value = args.get(name, "").strip()
    if len(value) > max_length:
        raise FilterError(f"{n[name]} is limited to {max_length} characters, not {len(value)}",
                          name)
    if "\x00" in value:
        raise FilterError(f"{n[name]} contains a NUL character, which no message holds", name)
    return value


def _choice(args: Mapping[str, str], name: str, allowed: Iterable[str], n: _Names) -> str:
    value = args.get(name, "").strip()
    if value and value not in allowed:
        raise FilterError(f"{n[name]} must be one of {', '.join(allowed)}", name)
    return value


def _number(args: Mapping[str, str], name: str, n: _Names) -> float | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        if not value.isascii() or "_" in value:  # float() also reads "٠.٩" and "0_5"
            raise ValueError(value)
        number = float(value)
    except ValueError:
        raise FilterError(f"{n[name]} must be a number, not {value!r}", name) from None
    if not math.isfinite(number):
        raise FilterError(f"{n[name]} must be a finite number, not {value!r}", name)
    return number


def _probability(args: Mapping[str, str], name: str, n: _Names) -> float | None:
    number = _number(args, name, n)
    if number is not None and not 0.0 <= number <= 1.0:
        raise FilterError(f"{n[name]} must be a spam probability from 0 to 1, not {number:g}",
                          name)
    return number


def _id(args: Mapping[str, str], name: str, n: _Names, *, max_id: int) -> int | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        return parse_id(value, max_id=max_id)
    except ValueError:
        raise FilterError(f"{n[name]} must be a positive whole number, not {value[:30]!r}",
                          name) from None


def _campaign(args: Mapping[str, str], n: _Names) -> int | None:
    """``campaign_id``, or ``campaign`` as people also write it (never silently ignored)."""
    # Campaign ids are INTEGER on PostgreSQL (they grow with campaigns, not messages).
    by_id = _id(args, "campaign_id", n, max_id=MAX_INTEGER_ID)
    by_name = _id(args, "campaign", n, max_id=MAX_INTEGER_ID)
    if None not in (by_id, by_name) and by_id != by_name:
        raise FilterError(f"{n['campaign']} {by_name} and {n['campaign_id']} {by_id} disagree: "
                          "give one", "campaign", "campaign_id")
    return by_name if by_id is None else by_id


def _day(args: Mapping[str, str], name: str, n: _Names) -> date | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{n[name]} must be a date like 2026-11-30, not {value!r}",
                          name) from None
    if day >= date.max:  # the day after it (the inclusive end) does not exist
        raise FilterError(f"{n[name]} must be before {date.max.isoformat()}", name)
    return day


def start_of(day: date) -> datetime:
    """The first instant of the UTC ``day``."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def end_of(day: date) -> datetime | None:
    """The first instant after the UTC ``day`` (an inclusive "until"), or None for the
    last day there is (9999-12-31 has no day after it: nothing is later)."""
    return None if day >= date.max else start_of(day + timedelta(days=1))


def from_sender(sender: str):
    """The condition "sent by ``sender``": every stored form of a phone number
    (:func:`~spamguard.senders.phone_digits`), a name or short code exactly as written.

    A row an older release stored after `spamguard db upgrade` and before its restart has
    no ``sender_digits`` (the column is filled in by this code's insert): it is matched by
    the forms a gateway sends, "+<digits>" and "<digits>", and ``sender`` as written."""
    digits = phone_digits(sender)
    if digits is None:
        return Message.sender == sender
    return or_(Message.sender_digits == digits,
               and_(Message.sender.in_(sorted({sender, digits, f"+{digits}"})),
                    Message.sender_digits.is_(None)))


def conditions(f: MessageFilter, *, indexed_search: bool = False,
               in_order: bool = False) -> list:
    """Build the SQL conditions for ``f`` (``indexed_search`` and ``in_order``: see
    text_search.body_contains)."""
    where: list = []
    if f.model_label == "pending":
        where.append(Message.verdict_status == "pending")
    elif f.model_label:
        where.append(Message.model_label == f.model_label)
    if f.review in LABELS:
        where.append(Message.review_label == f.review)
    elif f.review == "reviewed":
        where.append(Message.review_label.is_not(None))
    elif f.review == "unreviewed":
        where.append(Message.review_label.is_(None))
    if f.disagreement:
        where += [Message.review_label.is_not(None), Message.model_label.is_not(None),
                  Message.review_label != Message.model_label]
    if f.min_p is not None:
        where.append(Message.spam_probability >= f.min_p)
    if f.max_p is not None:
        where.append(Message.spam_probability <= f.max_p)
    if f.since:
        where.append(Message.received_at >= start_of(f.since))
    if f.until:
        where.append(Message.received_at < end_of(f.until))
    if f.sender:
        where.append(from_sender(f.sender))
    if f.q:
        where.append(text_search.body_contains(f.q, indexed=indexed_search,
                                               in_order=in_order))
    if f.campaign_id:
        where.append(Message.campaign_id == f.campaign_id)
    return where


def session_conditions(session: Session, f: MessageFilter, *, in_order: bool = False) -> list:
    """The conditions for ``f`` on this session's database (``in_order``: for a page)."""
    return conditions(f, indexed_search=bool(f.q) and text_search.has_index(session),
                      in_order=in_order)


def matching_ids(session: Session, f: MessageFilter) -> Select:
    """A ``SELECT id`` of the messages matching ``f`` (for bulk updates)."""
    return select(Message.id).where(*session_conditions(session, f))


def page_count(total: int, per_page: int) -> int:
    """Pages needed for ``total`` items (1 when there are none: an empty first page)."""
    return max(1, -(-total // per_page))


@dataclass(frozen=True)
class Page:
    """One page of a message list."""

    items: list[Message]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return page_count(self.total, self.per_page)

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def count_ids(session: Session, ids: list[int]) -> int:
    """Count the messages that exist among ``ids``."""
    query = select(func.count()).select_from(Message).where(Message.id.in_(ids))
    return session.scalar(query) or 0


def count_messages(session: Session, f: MessageFilter) -> int:
    """Count the messages matching ``f``."""
    query = select(func.count()).select_from(Message).where(*session_conditions(session, f))
    return session.scalar(query) or 0


def list_messages(session: Session, f: MessageFilter, *, page: int = 1,
                  per_page: int = 50) -> Page:
    """Return page ``page`` of the messages matching ``f``, newest first."""
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    page = max(1, page)
    query = (select(Message).where(*session_conditions(session, f, in_order=True))
             .order_by(Message.received_at.desc(), Message.id.desc())
             .limit(per_page).offset((page - 1) * per_page))
    return Page(list(session.scalars(query)), page, per_page, count_messages(session, f))


def review_queue(session: Session, *, limit: int = 20, exclude_ids: Iterable[int] = (),
                 where: Iterable = ()) -> list[Message]:
    """Return unreviewed messages, the closest to their own model's threshold first.

    Each verdict's distance from the threshold of the model that gave it is stored with the
    message (migration 0009), so a backlog scored by an earlier model is ranked by that
    model's threshold, not the one in service now. One range scan on
    ``ix_messages_review_queue``; ordering by ``review_label`` too (a constant here) lets
    PostgreSQL read the index in order rather than sort every unreviewed row. Messages
    still waiting for a verdict come after all classified ones, the oldest first.
    ``where``: more conditions (the queue leaves out messages others have claimed: see
    services.queue_claims), checked on the rows the scan reads.
    """
    base = [Message.review_label.is_(None), *where]
    excluded = list(exclude_ids)
    if excluded:
        base.append(Message.id.not_in(excluded))
    scored = (select(Message).where(*base, Message.threshold_distance.is_not(None))
              .order_by(Message.review_label, Message.threshold_distance, Message.id)
              .options(selectinload(Message.model_version)).limit(limit))
    rows = list(session.scalars(scored))
    if len(rows) < limit:
        pending = (select(Message).where(*base, Message.threshold_distance.is_(None))
                   .order_by(Message.received_at, Message.id).limit(limit - len(rows)))
        rows += list(session.scalars(pending))
    return rows


def queue_size(session: Session) -> int:
    """Count the messages not yet reviewed."""
    query = select(func.count()).select_from(Message).where(Message.review_label.is_(None))
    return session.scalar(query) or 0


def similar_messages(session: Session, message: Message, *, limit: int = 20) -> list[Message]:
    """Return other messages with the same normalised text or in the same campaign.

    A message with no words (emoji or punctuation only) matches none by its text: every
    such message has the same normalised text, empty.
    """
    same = (Message.text_hash == message.text_hash if message.text_hash != WORDLESS_HASH
            else false())
    if message.campaign_id is not None:
        same = or_(same, Message.campaign_id == message.campaign_id)
    query = (select(Message).where(and_(same, Message.id != message.id))
             .order_by(Message.received_at.desc(), Message.id.desc()).limit(limit))
    return list(session.scalars(query))
