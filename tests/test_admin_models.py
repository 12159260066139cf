"""Model pages: list, report, images, compare, promote, rollback, retrain button, runs."""

from __future__ import annotations

import numpy as np
import pytest

from spamguard.models import ModelVersion, TrainingRun
from spamguard.services import registry


def test_list_report_and_images(viewer_client, two_versions):
    first, second = two_versions
    listing = viewer_client.get("/admin/models").get_data(as_text=True)
    assert first in listing and second in listing and "Promote" not in listing
    report = viewer_client.get(f"/admin/models/{first}").get_data(as_text=True)
    assert "TF-IDF + SVM baseline" in report and "precision" in report
    assert "predicted spam" in report
    # A blended model's report has three columns: the blend, its BERT half, the baseline.
    assert report.count("<th>BERT head alone</th>") == 1
    assert report.count('<td class="num">') >= 3 * 7
    for name in ("lexical.json", "lexical.safetensors"):
        assert viewer_client.get(f"/admin/models/{first}/files/{name}").status_code == 404
    image = viewer_client.get(f"/admin/models/{first}/files/pr_curve.png")
    assert image.status_code == 200 and image.data[:4] == b"\x89PNG"
    for name in ("model.json", "head.safetensors", "..%2Fmodel.json", "report.json"):
        assert viewer_client.get(f"/admin/models/{first}/files/{name}").status_code == 404
    assert viewer_client.get("/admin/models/nope").status_code == 404


def _row(page: str, version_id: str) -> str:
    """The models list's table row of ``version_id``."""
    row = page[page.index(f'href="/admin/models/{version_id}"'):]
    return row[:row.index("</tr>")]


def test_the_list_shows_evaluation_set_numbers_and_warns_before_promoting_a_rejected_one(
        admin_client, two_versions, db_session_factory):
    """A candidate the gate rejected could look better than the active model on its own
    test split; the list shows the evaluation-set numbers it was judged by, and Promote
    says it was rejected."""
    first, second = two_versions
    with db_session_factory() as session:
        version = session.get(ModelVersion, second)
        version.metrics = {**(version.metrics or {}),
                           "eval": {"mcc": 0.9486, "ham_fpr": 0.0042, "spam_f1": 0.95,
                                    "n": 717}}
        version.status = "rejected"
        session.commit()
    page = admin_client.get("/admin/models").get_data(as_text=True)
    row = _row(page, second)
    assert ('<td class="num hide-sm">0.949</td><td class="num hide-sm">0.42%</td>'
            '<td class="num hide-sm">717</td>') in row
    assert f"Retraining rejected {second} (it did worse on the evaluation set" in row
    assert '<td class="num hide-sm">–</td><td class="num hide-sm">–</td>' in _row(page, first)
    assert "Eval is the evaluation set retraining compares candidates on" in page


def test_a_rejected_version_promoted_then_rolled_back_still_says_it_was_rejected(
        admin_client, two_versions, db_session_factory):
    """Promoting a rejected version and rolling back leaves it 'retired'; the run that
    rejected it still stands, so the list says so and Promote warns again."""
    from spamguard.models import TrainingRun

    first, second = two_versions
    with db_session_factory() as session:
        session.get(ModelVersion, second).status = "retired"
        session.add(TrainingRun(status="rejected", trigger="cli", candidate_version_id=second))
        session.commit()
        # A --force promotion and a dry run that failed the gate count too; passing ones not.
        for status, passed in (("promoted", False), ("dry_run", False), ("promoted", True),
                               ("dry_run", True)):
            session.add(TrainingRun(status=status, trigger="cli", candidate_version_id=first,
                                    counts={"decision": {"passed": passed}}))
            assert registry.rejected_by_retraining(session) == (
                {second, first} if not passed else {second}), (status, passed)
            session.rollback()
    page = admin_client.get("/admin/models").get_data(as_text=True)
    row = _row(page, second)
    assert "retired</span> <span class=\"muted small\">rejected by retraining</span>" in row
    assert f"Retraining rejected {second} (it did worse on the evaluation set" in row
    assert "rejected" not in _row(page, first)


def test_compare(viewer_client, two_versions):
    first, second = two_versions
    page = viewer_client.get(f"/admin/models/compare?a={first}&b={second}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and first in text and second in text and "MCC" in text
    assert viewer_client.get(f"/admin/models/compare?a={first}&b=zzz").status_code == 404
    for query in ("", f"?a={first}", f"?a={first}&b="):  # a hand-made URL missing a version
        page = viewer_client.get(f"/admin/models/compare{query}")
        assert page.status_code == 400
        assert "compare needs two versions" in page.get_data(as_text=True)
    same = viewer_client.get(f"/admin/models/compare?a={first}&b={first}")
    assert same.status_code == 400
    assert f"compare needs two different versions; both are {first}" in same.get_data(
        as_text=True)


def test_promote_and_rollback_are_admin_only(admin_client, moderator_client, two_versions,
                                             db_session_factory):
    first, second = two_versions
    assert moderator_client.post(f"/admin/models/{second}/promote").status_code == 403
    assert moderator_client.post("/admin/models/rollback").status_code == 403
    done = admin_client.post(f"/admin/models/{second}/promote", follow_redirects=True)
    assert f"Version {second} is now active" in done.get_data(as_text=True)
    with db_session_factory() as session:
        assert session.get(ModelVersion, second).status == "active"
    back = admin_client.post("/admin/models/rollback", follow_redirects=True)
    assert f"version {first} is active again" in back.get_data(as_text=True)
    again = admin_client.post("/admin/models/rollback", follow_redirects=True)
    page = again.get_data(as_text=True)
    assert "no previously active version" in page
    # From a live audit: the button was there, and erred only after its dialog.
    assert ('disabled title="No version was active before the active one, or it was deleted">'
            'Roll back') in page
    admin_client.post(f"/admin/models/{second}/promote")
    assert "data-confirm=\"Roll back to the version" in admin_client.get(
        "/admin/models").get_data(as_text=True)
    # The UI's hint names its own button, not a command line.
    assert f"to re-activate {second}, active before it, promote it" in page
    missing = admin_client.post("/admin/models/ghost/promote", follow_redirects=True)
    page = missing.get_data(as_text=True)
    assert "no model version &#39;ghost&#39;" in page
    assert "spamguard promote" not in page and "spamguard models" not in page


def test_promoting_the_active_version_again_says_it_was_already_active(
        admin_client, two_versions, db_session_factory):
    """A second tab's (or another admin's) stale "Promote" of the version now active."""
    _, second = two_versions
    first_tab = admin_client.post(f"/admin/models/{second}/promote", follow_redirects=True)
    assert f"Version {second} is now active." in first_tab.get_data(as_text=True)
    with db_session_factory() as session:
        activated_at = session.get(ModelVersion, second).activated_at
    again = admin_client.post(f"/admin/models/{second}/promote", follow_redirects=True)
    page = again.get_data(as_text=True)
    assert f"Version {second} was already active; nothing changed." in page
    assert "is now active" not in page
    with db_session_factory() as session:
        version = session.get(ModelVersion, second)
        assert version.status == "active" and version.activated_at == activated_at


def test_retrain_button_launches_background_job(admin_client, moderator_client, monkeypatch):
    import subprocess
    import sys

    calls = []

    class FakePopen:
        def __init__(self, args, **kwargs):
            calls.append((args, kwargs))
            self.pid = 31337

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    assert moderator_client.post("/admin/models/retrain").status_code == 403
    response = admin_client.post("/admin/models/retrain", follow_redirects=True)
    assert "process 31337" in response.get_data(as_text=True)
    (args, kwargs), = calls
    # "Retrain now" trains on one new review or more (the gate still compares)
    assert args == [sys.executable, "-m", "spamguard", "retrain", "--trigger", "ui",
                    "--min-new-reviews", "1", "--started-by", "admin"]
    assert kwargs["start_new_session"] and "SPAMGUARD_DATABASE_URL" in kwargs["env"]


@pytest.fixture
def started_jobs(monkeypatch) -> list[dict]:
    """Jobs "started" by the admin UI: their environments. Each is alive (it is this
    process) and has not taken its lock yet."""
    import os
    import subprocess

    envs: list[dict] = []

    class FakePopen:
        def __init__(self, args, **kwargs):
            envs.append(kwargs["env"])
            self.pid = os.getpid()

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    return envs


def test_a_second_press_while_the_first_job_starts_starts_nothing(
        admin_client, db_session_factory, monkeypatch, started_jobs):
    """The job takes its lock seconds after it starts: two presses in that time started two
    jobs (the second logged "locked"). The request now takes the lock first, names the
    job as its owner, and the job takes it over by a token in its environment."""
    import os
    import socket

    from spamguard.models import Lock
    from spamguard.services import locks, retrain_jobs

    calls = started_jobs
    first = admin_client.post("/admin/models/retrain", follow_redirects=True)
    assert "Retraining started in the background" in first.get_data(as_text=True)
    assert 'data-poll="5"' in first.get_data(as_text=True)  # before its row
    second = admin_client.post("/admin/models/retrain", follow_redirects=True)
    assert "Not started: a retraining is already running" in second.get_data(as_text=True)
    (env,) = calls
    name, _, token = env[locks.HANDOVER_ENV].partition(":")
    assert name == retrain_jobs.RETRAIN_LOCK
    with db_session_factory() as session:
        owner = locks.Owner.parse(session.get(Lock, name).owner)
    assert (owner.host, owner.pid, owner.token) == (socket.gethostname(), os.getpid(), token)
    # The job's own acquire takes the reserved lock over (once), where anyone else is refused.
    with pytest.raises(locks.LockHeldError):
        locks.acquire(session_factory=db_session_factory, name=name, ttl=60)
    monkeypatch.setenv(locks.HANDOVER_ENV, env[locks.HANDOVER_ENV])
    lease = locks.acquire(session_factory=db_session_factory, name=name, ttl=60)
    assert locks.HANDOVER_ENV not in os.environ and lease.owner.token != token
    lease.release()


def test_a_reserved_lock_whose_job_died_is_free_at_once(admin_client, db_session_factory,
                                                        monkeypatch):
    import subprocess

    class DeadJob:
        def __init__(self, args, **kwargs):
            self.pid = 2 ** 22 + 12345  # above pid_max: no such process

    monkeypatch.setattr(subprocess, "Popen", DeadJob)
    for _ in range(2):
        pressed = admin_client.post("/admin/models/retrain", follow_redirects=True)
        assert "Retraining started in the background" in pressed.get_data(as_text=True)


def test_retrain_button_says_when_a_run_already_holds_the_lock(admin_client,
                                                               db_session_factory,
                                                               monkeypatch):
    import subprocess

    from spamguard.services import locks, retrain_jobs

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("job started"))
    with locks.acquire(session_factory=db_session_factory, name=retrain_jobs.RETRAIN_LOCK,
                       ttl=600):
        response = admin_client.post("/admin/models/retrain", follow_redirects=True)
    text = response.get_data(as_text=True)
    assert "Not started: a retraining is already running" in text and "held by pid" in text


def _running_run(factory, *, pid: int) -> int:
    import socket

    with factory() as session:
        run = TrainingRun(status="running", trigger="ui", pid=pid, host=socket.gethostname())
        session.add(run)
        session.commit()
        return run.id


def test_runs_table_says_a_run_is_in_progress_and_watches_for_its_end(viewer_client,
                                                                     db_session_factory):
    import os

    from spamguard.services import locks, retrain_jobs

    _running_run(db_session_factory, pid=os.getpid())
    with db_session_factory() as session:
        session.add(TrainingRun(status="promoted", trigger="cron", summary="F1 0.91 -> 0.93",
                                counts={"flips": {"ham -> spam": 3, "spam -> ham": 1}}))
        session.commit()
    with locks.acquire(session_factory=db_session_factory, name=retrain_jobs.RETRAIN_LOCK,
                       ttl=600):  # held by this process, as the run row says
        page = viewer_client.get("/admin/models").get_data(as_text=True)
    # Said, with a link to check again; admin.js asks for the page meanwhile (it never
    # reloads itself: WCAG 2.2.1).
    assert ('<span class="running" role="status" data-poll="5">A run is in progress; this '
            'page says when it has finished. <a href="/admin/models">Check again</a></span>'
            ) in page
    assert 'http-equiv="refresh"' not in page and "F1 0.91 -&gt; 0.93" in page
    assert "What changed" in page and "ham -&gt; spam" in page
    assert retrain_jobs.STOPPED not in page
    with db_session_factory() as session:
        for run in session.query(TrainingRun):
            run.status = "failed" if run.status == "running" else run.status
        session.commit()
    assert "data-poll" not in viewer_client.get("/admin/models").get_data(as_text=True)


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("lock", ["dead owner", "expired", "gone", "another run's"])
def test_a_killed_run_shows_as_stopped_and_the_page_stops_refreshing(
        viewer_client, db_session_factory, lock):
    """After kill -9 the row still says running; its lock (dead owner, expired, released)
    says it is not, and the page believes the lock. The row itself is left for the next
    retrain to mark failed."""
    import os
    import socket
    from datetime import timedelta

    from spamguard.models import Lock
    from spamguard.services import retrain_jobs
    from spamguard.sqltypes import utcnow

    dead = _dead_pid()
    run_id = _running_run(db_session_factory, pid=dead)
    now, host = utcnow(), socket.gethostname()
    owner, expires = {
        "dead owner": (f"{host}:{dead}:t0", now + timedelta(minutes=10)),
        "expired": (f"elsewhere:{dead}:t0", now - timedelta(seconds=1)),
        "another run's": (f"{host}:{os.getpid()}:t1", now + timedelta(minutes=10)),
    }.get(lock, (None, None))
    with db_session_factory() as session:
        if owner:
            session.add(Lock(name=retrain_jobs.RETRAIN_LOCK, owner=owner, acquired_at=now,
                             expires_at=expires))
        session.commit()
    page = viewer_client.get("/admin/models").get_data(as_text=True)
    # A live lock of another run means a run is in progress (one just started writes its
    # row a few seconds after taking the lock): the page watches for its end.
    refreshes = lock == "another run's"
    assert ("data-poll" in page) == refreshes
    assert ("A run is in progress" in page) == refreshes
    assert retrain_jobs.STOPPED in page
    with db_session_factory() as session:
        assert session.get(TrainingRun, run_id).status == "running"  # not rewritten


def test_a_ui_retrain_still_records_the_dead_run_whose_lock_it_took_over(
        admin_client, db_session_factory, monkeypatch, started_jobs):
    """A retraining killed with kill -9 leaves its lock behind; the next run records whose
    lock it took over (counts.cleanup.lock_taken_over_from, test_retrain). Since 487376b
    "Retrain now" takes the lock in the web request (reserve -> acquire, whose Lease with
    took_over is dropped) and the job only takes over the reservation (a Lease without
    took_over): a UI run no longer records it."""
    import socket
    from datetime import timedelta

    from spamguard.models import Lock
    from spamguard.services import locks, retrain_jobs
    from spamguard.sqltypes import utcnow

    dead = locks.Owner(socket.gethostname(), 2 ** 22 + 4242, "deadbeef")
    with db_session_factory() as session:
        now = utcnow()
        session.add(Lock(name=retrain_jobs.RETRAIN_LOCK, owner=str(dead), acquired_at=now,
                         expires_at=now + timedelta(hours=1)))
        session.commit()
    envs = started_jobs
    pressed = admin_client.post("/admin/models/retrain", follow_redirects=True)
    assert "Retraining started" in pressed.get_data(as_text=True)
    for key in (locks.HANDOVER_ENV, locks.TOOK_OVER_ENV):  # the job's environment
        monkeypatch.setenv(key, envs[0][key])
    lease = locks.acquire(session_factory=db_session_factory,
                          name=retrain_jobs.RETRAIN_LOCK, ttl=60)  # what the job does
    try:
        assert lease.took_over == str(dead)
    finally:
        lease.release()


def test_a_version_id_no_version_can_have_is_a_404(admin_client):
    """From a live audit: a NUL in a version id was a 500 on PostgreSQL."""
    for path in ("/admin/models/%00", "/admin/models/compare?a=%00&b=x",
                 f"/admin/models/{'v' * 65}"):
        assert admin_client.get(path).status_code == 404, path
    assert admin_client.post("/admin/models/%00/promote").status_code == 404


def test_a_deleted_version_is_shown_as_such_and_cannot_be_promoted(admin_client, two_versions,
                                                                  db_session_factory):
    from spamguard.db import session_scope
    from spamguard.services import registry

    first, second = two_versions
    with session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=[second])
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert '<span class="badge deleted">deleted</span>' in _row(page, second)
    assert "Promote" not in _row(page, second) and "Promote" not in _row(page, first)
    assert "Compare two versions" not in page  # one version left with a report
    assert "A deleted version's files were removed" in page
    detail = admin_client.get(f"/admin/models/{second}").get_data(as_text=True)
    assert "<dt>Deleted</dt>" in detail and "Promote" not in detail
    # A stale page's button (or a hand-made request) is refused, in the UI's words.
    refused = admin_client.post(f"/admin/models/{second}/promote", follow_redirects=True)
    text = refused.get_data(as_text=True)
    assert (f"version {second} was deleted and cannot be promoted again; choose another "
            "version") in text and "spamguard" not in text.split("<main", 1)[-1]
    with db_session_factory() as session:
        assert session.get(ModelVersion, first).status == "active"
        assert session.get(ModelVersion, second).status == "deleted"


def test_roll_back_is_off_when_it_would_return_to_a_deleted_version(admin_client, two_versions,
                                                                   db_session_factory):
    first, second = two_versions
    admin_client.post(f"/admin/models/{second}/promote")
    assert 'data-confirm="Roll back to the version' in admin_client.get(
        "/admin/models").get_data(as_text=True)
    with db_session_factory() as session:  # as after deleting further back in the chain
        session.get(ModelVersion, first).status = "deleted"
        session.commit()
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert ('disabled title="No version was active before the active one, or it was deleted">'
            'Roll back') in page
    back = admin_client.post("/admin/models/rollback", follow_redirects=True)
    assert (f"version {second} rolls back to {first}, which was deleted; promote another "
            "version instead") in back.get_data(as_text=True)
    with db_session_factory() as session:
        assert session.get(ModelVersion, second).status == "active"


def test_a_retrained_versions_page_shows_its_run_and_what_changed(
        viewer_client, two_versions, db_session_factory):
    """The run that made a version and its changes.json (metrics against the model then
    active, flip examples with their messages escaped) are on the version's own page; a
    version trained by hand shows no such section."""
    from spamguard.models import TrainingRun
    from spamguard.services import model_diff

    first, second = two_versions
    texts = ["<script>alert(1)</script> WIN cash", "see you at 6", "call 0800 now"]
    changes = model_diff.compare(
        texts=texts, y_true=np.array([1, 0, 1]), new_scores=np.array([0.9, 0.8, 0.2]),
        new_threshold=0.5, old_scores=np.array([0.1, 0.2, 0.3]), old_threshold=0.5)
    changes["versions"] = {"active": first, "candidate": second}
    changes["decision"] = {"outcome": "rejected", "reason": "mcc is worse"}
    changes["traffic"] = {
        "since": "2026-11-26T04:00:00+00:00", "days": 7, "limit": 2000, "messages": 40,
        "in_period": 95, "oldest": "2026-12-01T17:42:09+00:00",
        "left_out_by_sender_rule": 2, "versions": {"active": first, "other": second},
        "spam": {"active": 10, "other": 12}, "changed": 3,
        "reviewed": {"messages": 5, "active_agrees": 4, "other_agrees": 5},
        "ham_to_spam": {"count": 2, "texts": 1, "reviewed_as_after": 1,
                        "reviewed_as_before": 0, "message_ids": [12]},
        "spam_to_ham": {"count": 1, "reviewed_as_after": 0, "reviewed_as_before": 0,
                        "message_ids": [9]}}
    with db_session_factory() as session:
        model_diff.write_changes(session.get(ModelVersion, second).path, changes)
        session.add(TrainingRun(status="rejected", trigger="cron", candidate_version_id=second,
                                summary=f"retrain: rejected {second}: mcc is worse"))
        session.commit()
    page = viewer_client.get(f"/admin/models/{second}").get_data(as_text=True)
    section = page[page.index('id="retraining"'):page.index("</section>")]
    assert "Training run #" in section and "(cron, started" in section
    assert f"retrain: rejected {second}: mcc is worse" in section
    assert f'href="/admin/models/{first}">{first}</a>, the model then active' in section
    assert "ham to spam: 2 (1 fixed, 1 broken)" in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt; WIN cash" in section
    assert "<script>alert" not in page
    assert "<th>mcc</th>" in section
    assert "Recent traffic: 3 of 40 verdicts would change" in section
    assert "of 95 in the period, so only those received from 2026-12-01 17:42 UTC" in section
    assert "ham to spam: 2 (1 distinct text), most changed first, one per text: " in section
    assert '<a href="/admin/messages/12">#12</a></li>' in section
    assert 'id="retraining"' not in viewer_client.get(f"/admin/models/{first}").get_data(
        as_text=True)


def test_a_run_just_started_is_not_called_no_runs(viewer_client, db_session_factory):
    """Right after Retrain now, the run holds the lock but has not written its row yet: the
    empty runs table says a run is starting, not "No training runs yet" (a browser audit)."""
    import os
    import socket
    from datetime import timedelta

    from spamguard.models import Lock
    from spamguard.services import retrain_jobs
    from spamguard.sqltypes import utcnow

    assert "No training runs yet." in viewer_client.get("/admin/models").get_data(as_text=True)
    with db_session_factory() as session:
        session.add(Lock(name=retrain_jobs.RETRAIN_LOCK,
                         owner=f"{socket.gethostname()}:{os.getpid()}:t1", acquired_at=utcnow(),
                         expires_at=utcnow() + timedelta(minutes=10)))
        session.commit()
    page = viewer_client.get("/admin/models").get_data(as_text=True)
    assert "A run is starting: its row appears here within a few seconds." in page
    assert "No training runs yet." not in page


def test_retrain_now_asks_first(admin_client):
    """Retrain now may replace the model in service on its own: the browser asks first."""
    page = admin_client.get("/admin/models").get_data(as_text=True)
    button = page[page.index('action="/admin/models/retrain"'):]
    assert 'data-confirm="Retrain now? The new model replaces the active one' in \
        button[:button.index("</form>")]
