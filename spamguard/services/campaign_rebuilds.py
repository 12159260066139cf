"""What each campaign rebuild did, for the campaigns page: a ``campaign_rebuilds`` row
written when ``spamguard campaigns rebuild`` starts and filled in when it ends (finished,
with what it found, or failed, with why).

Each call commits in its own transaction (``session_factory``), apart from the rebuild's:
a failed rebuild rolls its own work back, and its row must still say so.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from spamguard.errors import SpamguardError
from spamguard.models import CampaignRebuild
from spamguard.sqltypes import utcnow

KEPT = 100  # rows kept: the page shows the latest, the rest are for a look in the database


def started(session_factory: sessionmaker[Session]) -> int:
    """Record a rebuild starting now; return its row id (and drop all but the newest rows)."""
    with session_factory() as session, session.begin():
        row = CampaignRebuild(status="running", started_at=utcnow())
        session.add(row)
        session.flush()
        oldest_kept = row.id - KEPT + 1
        session.execute(delete(CampaignRebuild).where(CampaignRebuild.id < oldest_kept))
        return row.id


def finished(session_factory: sessionmaker[Session], rebuild_id: int, result) -> None:
    """Record what the rebuild ``rebuild_id`` found (a campaigns.RebuildResult)."""
    _end(session_factory, rebuild_id, status="finished", campaigns=result.campaigns,
         grouped_messages=result.grouped_messages, messages=result.messages)


def failed(session_factory: sessionmaker[Session], rebuild_id: int,
           exc: BaseException) -> None:
    """Record why the rebuild ``rebuild_id`` failed."""
    _end(session_factory, rebuild_id, status="failed", error=reason(exc))


def reason(exc: BaseException) -> str:
    """Why a rebuild failed, as the page says it (no traceback: that is in the log).

    A database error is the driver's error and its first line, as the service's log has
    it: SQLAlchemy's text adds the SQL and a link, and PostgreSQL's DETAIL line quotes the
    failing row (an SMS body and phone numbers), which every viewer would read here."""
    if isinstance(exc, SpamguardError):
        return exc.for_ui()
    if isinstance(exc, KeyboardInterrupt):
        return "it was interrupted"
    if isinstance(exc, DBAPIError):
        exc = exc.orig
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _end(session_factory: sessionmaker[Session], rebuild_id: int, **values) -> None:
    with session_factory() as session, session.begin():
        row = session.get(CampaignRebuild, rebuild_id)
        if row is not None:  # pruned meanwhile by 100 newer rebuilds: nothing to say
            for name, value in values.items():
                setattr(row, name, value)
            row.finished_at = utcnow()


def latest(session: Session) -> CampaignRebuild | None:
    """The newest rebuild's row, or None before the first."""
    return session.scalars(select(CampaignRebuild).order_by(CampaignRebuild.id.desc())
                           .limit(1)).first()
