"""A ``spamguard retrain`` process killed with SIGKILL mid-run leaves the active model working,
and the next run cleans up and succeeds (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from spamguard.db import session_scope
from spamguard.ml.classifier import SpamClassifier
from spamguard.models import Lock, ModelVersion, TrainingRun
from spamguard.services import registry, retrain_jobs
from spamguard.services.retrain import PAUSE_ENV, PAUSE_SECONDS_ENV
from tests.fixtures_retrain import store_reviews

PAUSE_TIMEOUT_S = 120


def _start_paused(env: dict[str, str], stage: str) -> subprocess.Popen:
    """Start ``python -m spamguard retrain --force`` and wait until it pauses at ``stage``."""
    env = {**env, PAUSE_ENV: stage, PAUSE_SECONDS_ENV: "300"}
    process = subprocess.Popen([sys.executable, "-m", "spamguard", "retrain", "--force"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    seen = []
    for line in process.stderr:  # the run logs one line per stage on stderr
        seen.append(line)
        if f"paused at {stage}" in line:
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    pytest.fail(f"retrain never paused at {stage}: {''.join(seen)[-2000:]}")


def _shown_status(factory, pid: int) -> tuple[str, str]:
    """(recorded, shown on the admin page) status of the run of process ``pid``."""
    with session_scope(factory) as session:
        run = session.scalars(select(TrainingRun).where(TrainingRun.pid == pid)).one()
        return run.status, retrain_jobs.shown_statuses(session, [run])[run.id]


@pytest.mark.parametrize("stage", ["training", "registering", "committing"])
def test_kill_9_mid_run_leaves_the_active_model_working(
        stage, retrain, retrain_settings, retrain_env, db_session_factory) -> None:
    first = retrain()
    store_reviews(db_session_factory, [("see you at the gym later", "ham")] * 3)
    process = _start_paused(retrain_env, stage)
    assert _shown_status(db_session_factory, process.pid) == ("running", "running")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()
    # The admin page stops showing it as running at once; its row waits for the next run.
    assert _shown_status(db_session_factory, process.pid) == ("running", retrain_jobs.STOPPED)

    with session_scope(db_session_factory) as session:
        active = registry.active_version(session)
        assert active.id == first.candidate_version
        assert session.scalars(select(ModelVersion.id)).all() == [first.candidate_version]
        assert session.get(Lock, "retrain") is not None  # the dead run's lock is left behind
        directory = active.path
    classifier = SpamClassifier.load(directory, cache_root=retrain_settings.cache_dir)
    assert classifier.classify(["WIN a £1000 prize now"])[0]["label"] in {"spam", "ham"}

    outcome = retrain(force=True)
    assert outcome.status == "promoted", outcome.summary
    assert list(retrain_settings.models_dir.glob(".tmp-*")) == []
    with session_scope(db_session_factory) as session:
        dead = session.scalars(select(TrainingRun).where(TrainingRun.pid == process.pid)).one()
        assert dead.status == "failed" and "interrupted" in dead.error
        assert registry.active_version(session).id == outcome.candidate_version
        registered = set(session.scalars(select(ModelVersion.id)))
    # no complete-but-unregistered candidate is left behind by the killed run
    assert {p.name for p in retrain_settings.models_dir.iterdir()} == registered


def test_sigterm_records_the_run_as_interrupted_and_frees_the_lock(
        retrain_env, db_session_factory) -> None:
    process = _start_paused(retrain_env, "data")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    last = process.stdout.read().strip().splitlines()[-1]  # the scheduler's log gets a line
    assert last.startswith("retrain: failed: interrupted")
    process.stdout.close()
    process.stderr.close()
    with session_scope(db_session_factory) as session:
        run = session.scalars(select(TrainingRun)).one()
        assert (run.status, run.error) == ("failed", "interrupted")
        assert session.get(Lock, "retrain") is None
