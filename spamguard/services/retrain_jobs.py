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
from sqlalchemy.orm import Session

from spamguard.config import Settings
from spamguard.models import TrainingRun

RETRAIN_ARGS = ("retrain", "--trigger", "ui")
RETRAIN_LOCK = "retrain"  # the lock one retraining holds (spamguard.services.retrain)
CAMPAIGN_ARGS = ("campaigns", "rebuild")


def job_environment(settings: Settings) -> dict[str, str]:
    """Environment for a job: the parent's, plus the settings that locate this instance."""
    env = dict(os.environ)
    env["SPAMGUARD_HOME"] = str(Path(settings.home).resolve())
    env["SPAMGUARD_DATABASE_URL"] = settings.resolved_database_url
    return env


def launch(args: tuple[str, ...], *, settings: Settings, log_name: str) -> int:
    """Start ``python -m spamguard ARGS`` detached from this process; return its pid."""
    logs = Path(settings.home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / log_name, "ab") as log:
        process = subprocess.Popen(  # noqa: S603  (fixed argument list, no shell)
            [sys.executable, "-m", "spamguard", *args], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, env=job_environment(settings),
            start_new_session=True, close_fds=True)
    return process.pid


def start_retrain(*, settings: Settings) -> int:
    """Start ``spamguard retrain --trigger ui`` in the background; return its pid."""
    return launch(RETRAIN_ARGS, settings=settings, log_name="retrain-ui.log")


def retrain_running(session: Session) -> str | None:
    """Who holds the retrain lock, if a live run does (the UI says so instead of starting a
    job that would only exit "locked")."""
    from spamguard.models import Lock
    from spamguard.services import locks

    lock = session.get(Lock, RETRAIN_LOCK)
    return None if lock is None or locks.is_stale(lock) else locks.describe_holder(lock)


def start_campaign_rebuild(*, settings: Settings) -> int:
    """Start ``spamguard campaigns rebuild`` in the background; return its pid."""
    return launch(CAMPAIGN_ARGS, settings=settings, log_name="campaigns.log")


def recent_runs(session: Session, *, limit: int = 20) -> list[TrainingRun]:
    """Return the newest training runs first."""
    query = select(TrainingRun).order_by(TrainingRun.started_at.desc(), TrainingRun.id.desc())
    return list(session.scalars(query.limit(limit)))


def any_running(runs: list[TrainingRun]) -> bool:
    """Return True when one of ``runs`` has not finished (the page keeps refreshing)."""
    return any(run.status == "running" for run in runs)
