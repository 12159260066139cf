"""Holding automatic promotion: while a hold is in force, ``spamguard retrain`` trains,
compares and registers its candidate with its report (as ``--dry-run`` does) but never
promotes it.

Why: after an operator's ``rollback`` (the served model misbehaved), the next nightly run
trained a candidate from the same data, found it not worse than the older model now active,
and promoted it: the rollback was undone overnight. ``rollback`` now puts a hold in place,
and only a person releases it (``spamguard promotion release``, or the admin UI's
Release). Promoting by hand (``promote``, ``retrain --force``) is a person's decision too
and works while held; the hold stays.

At most one hold is in force (a unique constraint, see :class:`PromotionHold`); holding
while held keeps the first hold, releasing when not held changes nothing, and neither is an
error. Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spamguard.errors import SpamguardError
from spamguard.models import PromotionHold
from spamguard.services import audit, registry
from spamguard.services.audit import cli_user  # noqa: F401 (callers import it from here)
from spamguard.sqltypes import utcnow

MAX_REASON = 500  # characters kept of a reason (one line in every summary that names it)
MAX_BY = 255  # promotion_holds.created_by / released_by


@dataclass
class Change:
    """What :func:`hold` or :func:`release` did: ``hold`` is the hold concerned (the one
    kept, made or released; None: there was none to release), ``changed`` whether this
    call made or released it."""

    hold: PromotionHold | None
    changed: bool


def clean_reason(reason: str | None, what: str = "reason") -> str | None:
    """The reason as one line (spaces and line breaks folded), at most :data:`MAX_REASON`
    characters; None when empty. One with a NUL character is refused (SpamguardError, its
    ``what`` named): PostgreSQL text cannot hold it (a 500 page), SQLite kept it."""
    if reason and "\x00" in reason:
        raise SpamguardError(f"the {what} contains a NUL character", field=what)
    folded = " ".join((reason or "").split())[:MAX_REASON].rstrip()
    return folded or None


def current(session: Session) -> PromotionHold | None:
    """The hold in force, or None (as committed when the statement runs, not as this
    session last saw it)."""
    return session.scalars(select(PromotionHold).where(PromotionHold.active.is_(True))
                           .execution_options(populate_existing=True)).first()


def last_released(session: Session) -> PromotionHold | None:
    """The hold released last, or None (for ``promotion status``)."""
    return session.scalars(select(PromotionHold).where(PromotionHold.released_at.is_not(None))
                           .order_by(PromotionHold.released_at.desc(),
                                     PromotionHold.id.desc()).limit(1)).first()


def _serialise(session: Session) -> None:
    """Make a hold wait for a retraining that is committing its promotion, and the other
    way round: both lock the active version's row first (PostgreSQL; SQLite's write lock),
    with :func:`spamguard.services.registry.locked_active_id`. A hold that comes first is
    then seen by the run; one that comes second holds the next."""
    registry.locked_active_id(session)


def hold(session: Session, *, reason: str | None, by: str) -> Change:
    """Put automatic promotion on hold; when a hold is in force already, keep it (its
    reason and author stay) and return it with ``changed`` False."""
    _serialise(session)
    held = current(session)
    if held is not None:
        return Change(held, False)
    new = PromotionHold(created_at=utcnow(), created_by=by[:MAX_BY],
                        reason=clean_reason(reason), active=True)
    try:
        with session.begin_nested():  # another hold committed meanwhile: keep that one
            session.add(new)
            session.flush()
    except IntegrityError:
        held = current(session)
        if held is None:
            raise
        return Change(held, False)
    audit.record(session, actor=by, action="promotion.hold", reason=new.reason)
    return Change(new, True)


def release(session: Session, *, by: str) -> Change:
    """Release the hold in force (it stays as history); with none, change nothing and
    return ``Change(None, False)``."""
    _serialise(session)
    held = current(session)
    if held is None:
        return Change(None, False)
    held.active, held.released_at, held.released_by = None, utcnow(), by[:MAX_BY]
    session.flush()
    audit.record(session, actor=by, action="promotion.release")
    return Change(held, True)


def describe(held: PromotionHold) -> str:
    """``on hold since 2026-12-04 03:15 UTC by alice (why)``: what every message about a
    hold says after "automatic promotion"."""
    said = f"on hold since {held.created_at:%Y-%m-%d %H:%M UTC} by {held.created_by}"
    return f"{said} ({held.reason})" if held.reason else said


def as_json(held: PromotionHold | None) -> dict:
    """``promotion status --json``: whether held and, if so, since when, by whom and why."""
    if held is None:
        return {"held": False}
    return {"held": True, "id": held.id, "since": held.created_at.isoformat(),
            "by": held.created_by, "reason": held.reason}
