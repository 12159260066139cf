"""The admin UI's "Retrain now" button starting the real ``spamguard retrain`` job."""

from __future__ import annotations

import time

import pytest

from spamguard.models import AuditEvent, TrainingRun
from tests.fixtures_retrain import base_rows, store_reviews, write_labelled


def test_retrain_button_runs_the_real_job_and_the_page_shows_its_outcome(
        db_backend, admin_client, db_session_factory, monkeypatch, tmp_path):
    if db_backend != "sqlite":
        pytest.skip("one backend is enough for the subprocess round trip")
    base = write_labelled(tmp_path / "base.tsv", base_rows())
    # The job inherits this environment (plus the app's home and database URL).
    monkeypatch.setenv("SPAMGUARD_BASE_DATA", str(base))
    monkeypatch.setenv("SPAMGUARD_EVALSET_FRACTION", "0.2")
    monkeypatch.setenv("SPAMGUARD_RETRAIN_MIN_PER_CLASS", "8")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    # "Retrain now" trains on one new review or more (fewer than the scheduled minimum)
    store_reviews(db_session_factory, [("the meeting moved to thursday afternoon", "ham")])
    started = admin_client.post("/admin/models/retrain", follow_redirects=True)
    assert started.status_code == 200

    deadline = time.monotonic() + 180
    run = None
    while time.monotonic() < deadline:
        with db_session_factory() as session:
            run = session.query(TrainingRun).order_by(TrainingRun.id.desc()).first()
            if run is not None and run.status != "running":
                break
        time.sleep(1)
    assert run is not None and run.status in {"promoted", "rejected"}, (
        run and (run.status, run.error, run.summary))
    assert run.trigger == "ui" and run.candidate_version_id
    if run.status == "promoted":  # the gate promoted it; the audit trail says who asked
        with db_session_factory() as session:
            promotion = (session.query(AuditEvent).filter_by(action="model.promote")
                         .order_by(AuditEvent.id.desc()).first())
        assert promotion.actor == "retrain (started by admin)"
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert run.candidate_version_id in page and run.status in page
