"""Start background jobs from the UI (retraining, campaign rebuilds) and list training runs.

A job is a detached ``python -m spamguard ...`` process: it outlives the web request and the
worker that started it, writes its own ``training_runs`` row, and any web worker can show
its progress by reading that table. Its output goes to a log file in ``<home>/logs``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from spamguard.config import Settings
from spamguard.models import Lock, TrainingRun
from spamguard.services import locks

# An admin who presses "Retrain now" wants a run now, not a "skipped: too few new reviews"
# (the scheduled runs keep that minimum); the comparison and the gate still apply. One new
# review is still needed: with none, the run would retrain on the same data and promote
# a copy of the active model.
RETRAIN_ARGS = ("retrain", "--trigger", "ui", "--min-new-reviews", "1")
RETRAIN_LOCK = "retrain"  # the lock one retraining holds (spamguard.services.retrain)
CAMPAIGN_ARGS = ("campaigns", "rebuild")
CAMPAIGN_LOCK = "campaigns"  # the lock one campaign rebuild holds (renewed while it runs)
STOPPED = "stopped (no heartbeat)"  # shown for a "running" row whose process is gone


def job_environment(settings: Settings) -> dict[str, str]:
    """Environment for a job: the parent's, plus the settings that locate this instance."""
    env = dict(os.environ)
    env["SPAMGUARD_HOME"] = str(Path(settings.home).resolve())
    env["SPAMGUARD_DATABASE_URL"] = settings.resolved_database_url
    return env


RESERVED_TTL = 120  # seconds a lock reserved for a job waits for the job to take it over


def launch(args: tuple[str, ...], *, settings: Settings, log_name: str,
           env: dict[str, str] | None = None) -> int:
    """Start ``python -m spamguard ARGS`` detached from this process (``env`` added to its
    environment); return its pid."""
    logs = Path(settings.home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / log_name, "ab") as log:
        process = subprocess.Popen(  # noqa: S603  (fixed argument list, no shell)
            [sys.executable, "-m", "spamguard", *args], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT,
            env={**job_environment(settings), **(env or {})},
            start_new_session=True, close_fds=True)
    return process.pid


def _start(args: tuple[str, ...], *, lock: str, settings: Settings,
           session_factory: sessionmaker[Session], log_name: str) -> int:
    """Take ``lock`` for the job, start it, and hand the lock over (see
    :func:`spamguard.services.locks.reserve`); LockHeldError if a live process holds it."""
    lease = locks.reserve(session_factory=session_factory, name=lock, ttl=RESERVED_TTL)
    try:
        pid = launch(args, settings=settings, log_name=log_name,
                     env=locks.handover_environment(lease))
    except BaseException:
        lease.release()
        raise
    locks.hand_over(lease, pid)
    return pid


def start_retrain(*, settings: Settings, session_factory: sessionmaker[Session],
                  by: str | None = None) -> int:
    """Start ``spamguard retrain --trigger ui --min-new-reviews 1`` in the background with
    the retrain lock already taken for it; return its pid. ``by``: the account that asked,
    which the audit trail names beside the gate for a promotion."""
    args = RETRAIN_ARGS + (("--started-by", by) if by else ())
    return _start(args, lock=RETRAIN_LOCK, settings=settings,
                  session_factory=session_factory, log_name="retrain-ui.log")


def retrain_running(session: Session) -> str | None:
    """Who holds the retrain lock, if a live run does (the UI says so instead of starting a
    job that would only exit "locked")."""
    return _running(session, RETRAIN_LOCK)


def campaign_rebuild_running(session: Session) -> str | None:
    """Who holds the campaign rebuild lock, if a live rebuild does."""
    return _running(session, CAMPAIGN_LOCK)


def _running(session: Session, name: str) -> str | None:
    lock = session.get(Lock, name)
    return None if lock is None or locks.is_stale(lock) else locks.describe_holder(lock)


def start_campaign_rebuild(*, settings: Settings,
                           session_factory: sessionmaker[Session]) -> int:
    """Start ``spamguard campaigns rebuild`` in the background with the campaign lock
    already taken for it; return its pid."""
    return _start(CAMPAIGN_ARGS, lock=CAMPAIGN_LOCK, settings=settings,
                  session_factory=session_factory, log_name="campaigns.log")


def recent_runs(session: Session, *, limit: int = 20) -> list[TrainingRun]:
    """Return the newest training runs first."""
    query = select(TrainingRun).order_by(TrainingRun.started_at.desc(), TrainingRun.id.desc())
    return list(session.scalars(query.limit(limit)))


def run_of_candidate(session: Session, version_id: str) -> TrainingRun | None:
    """The newest training run that made ``version_id`` (None for one trained by hand)."""
    query = (select(TrainingRun).where(TrainingRun.candidate_version_id == version_id)
             .order_by(TrainingRun.id.desc()).limit(1))
    return session.scalars(query).first()


def shown_statuses(session: Session, runs: list[TrainingRun]) -> dict[int, str]:
    """The status to show for each of ``runs``, by id: its recorded one, except that a
    ``running`` row whose process no longer holds a live retrain lock shows as
    :data:`STOPPED`.

    A run killed with ``kill -9`` cannot record its end; its row stays ``running`` until the
    next retrain marks it failed. Its lock tells the truth sooner: a live run renews it every
    third of its ttl, and :func:`locks.is_stale` sees a dead local owner at once. The row is
    not changed here (only a run holding the lock cleans up after others)."""
    lock = session.get(Lock, RETRAIN_LOCK)
    return {run.id: STOPPED if run.status == "running" and not _holds(lock, run)
            else run.status for run in runs}


def _holds(lock: Lock | None, run: TrainingRun) -> bool:
    """Return True when ``lock`` is live and (as far as can be told) held by ``run``."""
    if lock is None or locks.is_stale(lock):
        return False
    owner = locks.Owner.parse(lock.owner)
    if owner is None or run.pid is None:  # cannot tell whose it is: a live run holds it
        return True
    return owner.pid == run.pid and owner.host[:255] == run.host


def any_running(statuses: dict[int, str]) -> bool:
    """Return True when a run is still working (the page keeps refreshing): by
    :func:`shown_statuses`, so a dead run's row does not keep it reloading."""
    return any(status == "running" for status in statuses.values())
