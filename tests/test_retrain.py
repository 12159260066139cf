"""Tests for spamguard.services.retrain on the tiny backbone (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy import func, select

from spamguard.db import session_scope
from spamguard.ml.classifier import SpamClassifier
from spamguard.models import AuditEvent, EvalExample, ModelVersion, TrainingRun
from spamguard.services import locks, model_diff, registry
from spamguard.services.retrain import LOCK_NAME
from tests.fixtures_retrain import (
    DATABASE_FAILURES,
    REFUSED,
    ConnectionRefused,
    base_rows,
    copy_version,
    database_fails,
    inverting_reviews,
    store_reviews,
    write_labelled,
)

NEW_HAM = ["the meeting moved to thursday afternoon", "bring the blue folder tomorrow",
           "mum says dinner is at seven", "can you feed the cat tonight"]


def _install_active(settings, factory, source: Path) -> str:
    """Make a copy of ``source`` the active version."""
    directory = copy_version(source, settings.models_dir)
    with session_scope(factory) as session:
        version = registry.register_version(session=session, version_dir=directory)
        registry.promote(session=session, version_id=version.id)
        return version.id


def _runs(factory) -> list[TrainingRun]:
    with session_scope(factory) as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))


def _status(factory, version_id: str) -> str:
    with session_scope(factory) as session:
        return registry.get_version(session, version_id).status


def _active_id(factory) -> str | None:
    with session_scope(factory) as session:
        active = registry.active_version(session)
        return active.id if active else None


def test_first_run_without_active_model_promotes(retrain, db_session_factory) -> None:
    outcome = retrain(trigger="cron")
    assert outcome.status == "promoted" and outcome.exit_code == 0
    assert _active_id(db_session_factory) == outcome.candidate_version
    assert outcome.summary.startswith("retrain: promoted ") and "\n" not in outcome.summary
    (run,) = _runs(db_session_factory)
    assert (run.status, run.trigger, run.candidate_version_id) == (
        "promoted", "cron", outcome.candidate_version)
    assert run.finished_at >= run.started_at and run.pid and run.host
    assert run.report_path == str(outcome.report_path) and Path(run.report_path).is_file()
    assert run.counts["eval_set"]["total"] == 17 and run.counts["training"]["excluded_eval"] == 17
    changes = model_diff.load_changes(outcome.report_path.parent)
    assert changes["active"] is None and changes["candidate"]["n"] == 17
    assert changes["decision"]["outcome"] == "promoted" and "17 messages" in changes["evalset"]
    assert model_diff.load_changes(outcome.report_path.parent / "nothing-here") is None


def test_a_run_reads_the_reviews_once(retrain, db_session_factory, monkeypatch) -> None:
    """The evaluation set and the training set see one read of the reviews (one snapshot)."""
    from spamguard.services import evalset, retrain_steps, training_data

    store_reviews(db_session_factory, [(NEW_HAM[0], "ham"), (NEW_HAM[1], "ham")])
    reads = []
    real = training_data.latest_reviews

    def counted(*args, **kwargs):
        reads.append(kwargs.get("up_to"))
        return real(*args, **kwargs)

    for module in (training_data, evalset, retrain_steps):
        monkeypatch.setattr(module, "latest_reviews", counted)
    outcome = retrain(min_new_reviews=0)
    assert outcome.status == "promoted"
    assert len(reads) == 1 and reads[0] is not None
    assert outcome.counts["training"]["reviewed_messages"] == 2


def test_reviewed_messages_always_train(retrain, db_session_factory) -> None:
    """Moderator labels go to the candidate's training part, never its validation part
    (where a few hard legitimate messages would raise the threshold; README)."""
    def split_of(outcome) -> dict:
        return json.loads((outcome.report_path.parent / "model.json").read_text())["data"]

    before = split_of(retrain(min_new_reviews=0))
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    lines: list[str] = []
    after = split_of(retrain(min_new_reviews=0, force=True, log=lines.append))
    assert not [line for line in lines if "holds no reviewed message" in line]  # promoted
    assert "always_train" not in before and after["always_train"] == len(NEW_HAM)
    for part in ("val", "test"):  # drawn from the same base messages as before
        assert after["split"][part] == before["split"][part]
    assert after["split"]["train"]["ham"] == before["split"]["train"]["ham"] + len(NEW_HAM)


def test_skips_when_too_few_new_reviews(retrain, db_session_factory) -> None:
    retrain()
    store_reviews(db_session_factory, [(NEW_HAM[0], "ham"), (NEW_HAM[1], "ham")])
    outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("skipped", 0)
    assert outcome.summary == "retrain: skipped: 2 new review(s) since the last run (need 3)"
    assert _runs(db_session_factory)[-1].status == "skipped"
    assert retrain(min_new_reviews=2).status == "promoted"
    # "Retrain now" asks for one: with none new it must not promote a copy of the model
    again = retrain(min_new_reviews=1)
    assert (again.status, again.summary) == (
        "skipped", "retrain: skipped: 0 new review(s) since the last run (need 1)")


def test_promotes_a_better_candidate_and_reports_flips(
        retrain, retrain_settings, db_session_factory, bad_model_dir) -> None:
    bad_id = _install_active(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    outcome = retrain()
    assert outcome.status == "promoted", outcome.summary
    assert _active_id(db_session_factory) == outcome.candidate_version
    assert _status(db_session_factory, bad_id) == "retired"
    run = _runs(db_session_factory)[-1]
    assert run.active_version_id == bad_id == outcome.active_version
    assert run.counts["new_reviews"] == 4
    assert run.counts["flips"]["total"] > 0 and run.counts["flips"]["fixed"] > 0
    changes = json.loads((outcome.report_path.parent / "changes.json").read_text())
    assert changes["candidate"]["mcc"] > changes["active"]["mcc"]
    kind = "ham_to_spam" if changes["flips"]["ham_to_spam"]["count"] else "spam_to_ham"
    assert changes["flips"][kind]["examples"][0]["text"]
    assert "## Flips:" in outcome.report_path.read_text()


def test_never_promotes_over_a_version_it_was_not_compared_with(
        retrain, retrain_settings, db_session_factory, bad_model_dir, monkeypatch) -> None:
    """An operator's rollback while the run trains: the candidate was compared with the old
    active version, so it is kept unpromoted and the run fails (exit 1: retry next time)."""
    from spamguard.services import retrain as retrain_module

    first = retrain()
    bad_id = _install_active(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    train = retrain_module.train_candidate

    def train_while_the_operator_rolls_back(*args, **kwargs):
        candidate = train(*args, **kwargs)
        with session_scope(db_session_factory) as session:
            registry.rollback(session=session)
        return candidate

    monkeypatch.setattr(retrain_module, "train_candidate", train_while_the_operator_rolls_back)
    outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("failed", 1), outcome.summary
    assert "active version changed during the run" in outcome.summary
    assert f"{bad_id} -> {first.candidate_version}" in outcome.summary
    assert _active_id(db_session_factory) == first.candidate_version
    assert _status(db_session_factory, outcome.candidate_version) == "candidate"
    run = _runs(db_session_factory)[-1]
    assert run.status == "failed" and run.max_review_id is None
    assert run.candidate_version_id == outcome.candidate_version
    monkeypatch.setattr(retrain_module, "train_candidate", train)
    again = retrain()  # the reviews were not used up: the next run compares with A
    assert again.active_version == first.candidate_version
    assert again.status in {"promoted", "rejected"}, again.summary


def test_rejects_a_worse_candidate(retrain, db_session_factory) -> None:
    first = retrain()
    store_reviews(db_session_factory, inverting_reviews(db_session_factory))
    lines: list[str] = []
    outcome = retrain(log=lines.append)
    assert (outcome.status, outcome.exit_code) == ("rejected", 3), outcome.summary
    assert "mcc is worse" in outcome.summary
    # judged on base data alone: the run says how to let the gate see today's traffic
    assert [line for line in lines if "evaluation set holds no reviewed message" in line]
    assert _active_id(db_session_factory) == first.candidate_version
    assert _status(db_session_factory, outcome.candidate_version) == "rejected"
    assert outcome.report_path.is_file()
    run = _runs(db_session_factory)[-1]
    assert run.status == "rejected" and run.counts["decision"]["passed"] is False
    # The reviews were used: without new ones the next run skips rather than repeats.
    assert retrain().status == "skipped"


def test_force_promotes_and_dry_run_never_does(retrain, db_session_factory) -> None:
    first = retrain(by="ops@host")
    store_reviews(db_session_factory, inverting_reviews(db_session_factory))
    dry = retrain(dry_run=True)
    assert (dry.status, dry.exit_code) == ("dry_run", 0)
    assert "would reject" in dry.summary and "evaluation set mcc" in dry.summary
    assert _active_id(db_session_factory) == first.candidate_version
    dry_forced = retrain(dry_run=True, force=True)
    assert dry_forced.summary.startswith(
        f"retrain: dry run, would reject {dry_forced.candidate_version}, though --force "
        "promotes it anyway (registered as rejected): evaluation set mcc")
    assert _active_id(db_session_factory) == first.candidate_version
    with db_session_factory() as session:  # registered as the gate said, not as --force
        assert session.get(ModelVersion, dry_forced.candidate_version).status == "rejected"
    forced = retrain(force=True, by="ops@host")
    assert forced.status == "promoted" and "promoted anyway (--force)" in forced.summary
    assert _active_id(db_session_factory) == forced.candidate_version
    # The audit trail: the gate's promotion is retraining's, a forced one its operator's.
    with session_scope(db_session_factory) as session:
        assert list(session.execute(select(AuditEvent.actor, AuditEvent.target)
                                    .where(AuditEvent.action == "model.promote")
                                    .order_by(AuditEvent.id))) == [
            ("retrain", first.candidate_version), ("ops@host", forced.candidate_version)]


def test_evaluation_set_stays_fixed_and_is_never_trained_on(
        retrain, retrain_settings, db_session_factory) -> None:
    def stored() -> list[tuple[str, str]]:
        with session_scope(db_session_factory) as session:
            return list(session.execute(select(EvalExample.text_hash, EvalExample.label)))

    first = retrain()
    before = stored()
    # A different base file later must not re-choose the set.
    write_labelled(Path(retrain_settings.base_data), base_rows()[5:])
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    second = retrain()
    assert stored() == before and len(before) == 17
    for outcome in (first, second):
        trained = SpamClassifier.load(outcome.report_path.parent).metadata["data"]
        assert trained["counts"]["input"]["total"] == outcome.counts["training"]["total"]
        assert outcome.counts["eval_set"]["total"] == 17


def test_the_candidate_is_tested_on_the_evaluation_set_and_trains_on_the_rest(
        retrain) -> None:
    """The candidate's test part is the evaluation set the gate compares on; the rest is
    split into training and validation only (a three-way split used to leave it 70% of
    the base data, so it trained on less than the active model had)."""
    outcome = retrain(min_new_reviews=0)
    data = SpamClassifier.load(outcome.report_path.parent).metadata["data"]
    evalset_size = outcome.counts["eval_set"]["total"]
    assert data["held_out"] == {"messages": evalset_size}
    assert data["split"]["test"]["total"] == evalset_size
    assert (data["split"]["train"]["total"] + data["split"]["val"]["total"]
            == outcome.counts["training"]["total"])
    assert data["split"]["val"]["total"] / outcome.counts["training"]["total"] == (
        pytest.approx(0.15 / 0.85, abs=0.06))
    report = (outcome.report_path.parent / "report.md").read_text()
    assert f"given apart ({evalset_size}: retraining's evaluation set)" in report
    assert f"## Headline (retraining's evaluation set: {evalset_size} messages" in report
    recorded = json.loads((outcome.report_path.parent / "report.json").read_text())
    assert recorded["split"] == "retraining's evaluation set"
    metadata = SpamClassifier.load(outcome.report_path.parent).metadata
    assert metadata["metrics"]["test"]["n"] == evalset_size


def test_too_few_examples_of_a_class_fails_clearly(
        retrain, retrain_settings, db_session_factory) -> None:
    write_labelled(Path(retrain_settings.base_data),
                   [row for row in base_rows() if row[0] == 0] + base_rows()[:3])
    outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("failed", 2)
    assert "too few training examples" in outcome.summary
    run = _runs(db_session_factory)[-1]
    assert run.status == "failed" and "spam" in run.error and run.finished_at
    assert _active_id(db_session_factory) is None


def test_lock_contention_reports_locked(retrain, db_session_factory) -> None:
    with locks.acquire(session_factory=db_session_factory, name=LOCK_NAME, ttl=60):
        outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("locked", 4)
    assert "held by pid" in outcome.summary and _runs(db_session_factory) == []
    assert retrain().status == "promoted"


def test_next_run_cleans_up_after_a_dead_one(
        retrain, retrain_settings, db_session_factory) -> None:
    dead = locks.Owner("elsewhere", 1, "dead")
    locks.acquire(session_factory=db_session_factory, name=LOCK_NAME, ttl=-1, owner=dead)
    with session_scope(db_session_factory) as session:
        session.add(TrainingRun(status="running", trigger="cron", pid=999999, host="gone"))
    leftover = retrain_settings.models_dir / ".tmp-20260101-000000-abcdef-999999"
    leftover.mkdir(parents=True)
    (leftover / "head.safetensors").write_bytes(b"half")
    # A machine sharing the models folder may be writing this one right now: left alone.
    elsewhere = retrain_settings.models_dir / ".tmp-20260101-000001-abcdef@web-2-4242"
    elsewhere.mkdir()
    outcome = retrain()
    assert outcome.status == "promoted"
    assert not leftover.exists() and elsewhere.exists()
    stale, current = _runs(db_session_factory)
    assert stale.status == "failed" and "interrupted" in stale.error
    assert current.counts["cleanup"]["lock_taken_over_from"] == str(dead)
    assert current.counts["cleanup"]["tmp_dirs_removed"] == [leftover.name]


@pytest.mark.parametrize(("orig", "exit_code", "said"), DATABASE_FAILURES)
def test_a_database_failing_while_registering_is_one_line(
        retrain, retrain_settings, db_session_factory, monkeypatch, caplog, orig,
        exit_code, said) -> None:
    """Registering, recording the run's end and releasing the lock all fail: one line, and
    the next run cleans up as after a dead run."""
    from datetime import timedelta

    from sqlalchemy import update

    from spamguard.models import Lock
    from spamguard.sqltypes import utcnow

    error = orig()
    database_fails(monkeypatch, error, from_stage="registering")
    lines: list[str] = []
    with caplog.at_level("WARNING"):
        outcome = retrain(log=lines.append)
    assert (outcome.status, outcome.exit_code) == ("failed", exit_code)
    assert outcome.summary == f"retrain: failed: {said}"
    assert lines[-1] == (f"retrain: note: the run's end could not be recorded ({said}); "
                         "the next run records it as failed")
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [
        (f"could not release lock 'retrain' ({error}); it expires by itself within 3600 s",
         None)]
    monkeypatch.undo()  # the database is back
    (run,) = _runs(db_session_factory)
    candidate = Path(run.counts["candidate_dir"])
    assert run.status == "running" and candidate.is_dir()
    with session_scope(db_session_factory) as session:  # the lock expires
        session.execute(update(Lock).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert retrain().counts["cleanup"]["unregistered_candidates_removed"] == [candidate.name]
    assert _runs(db_session_factory)[0].status == "failed" and not candidate.exists()


@pytest.mark.parametrize("at", ["lock", "start"])
def test_a_database_failing_before_the_run_starts_is_one_line(retrain, db_session_factory,
                                                              monkeypatch, at) -> None:
    """Taking the lock or recording the run fails: no row to record it in, one line."""
    from sqlalchemy.exc import OperationalError

    from spamguard.services import retrain as retrain_module

    if at == "lock":
        database_fails(monkeypatch, ConnectionRefused(REFUSED))
    else:
        def start(self, trigger):
            raise OperationalError("INSERT", {}, ConnectionRefused(REFUSED))

        monkeypatch.setattr(retrain_module._Retrain, "_start", start)
    outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.summary == f"retrain: failed: the database does not answer: {REFUSED}"
    monkeypatch.undo()
    assert _runs(db_session_factory) == []


def test_temporary_version_folders_name_their_writer() -> None:
    import os
    import socket

    from spamguard.ml.classifier import temporary_name, temporary_writer

    name = temporary_name("20261201-000000-abcdef")
    assert temporary_writer(name) == (socket.gethostname(), os.getpid())
    assert temporary_writer(".tmp-20261201-000000-abcdef@web-2-77") == ("web-2", 77)
    assert temporary_writer(".tmp-20261201-000000-abcdef-77") == (None, 77)  # older name
    assert temporary_writer(".tmp-odd") == (None, None)


def test_rollback_restores_the_previous_version(retrain, db_session_factory) -> None:
    first = retrain()
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    second = retrain(force=True)
    assert _active_id(db_session_factory) == second.candidate_version
    with session_scope(db_session_factory) as session:
        assert registry.rollback(session=session).id == first.candidate_version
    assert _status(db_session_factory, second.candidate_version) == "retired"
    with session_scope(db_session_factory) as session:
        stored = session.get(ModelVersion, second.candidate_version)
        assert stored.metrics["eval"]["n"] == 17  # eval-set metrics kept in the registry


def test_the_compared_version_keeps_its_evaluation_set_numbers(retrain,
                                                                db_session_factory) -> None:
    """A version trained by `spamguard train` has no evaluation-set metrics of its own: the
    comparison's are stored on it, so the models list shows both sides of the gate."""
    first = retrain()
    with session_scope(db_session_factory) as session:  # as `spamguard train` registers it
        stored = session.get(ModelVersion, first.candidate_version)
        stored.metrics = {k: v for k, v in stored.metrics.items() if k != "eval"}
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    second = retrain(force=True)
    run = _runs(db_session_factory)[-1]
    assert run.active_version_id == first.candidate_version
    with session_scope(db_session_factory) as session:
        compared = session.get(ModelVersion, first.candidate_version).metrics["eval"]
        candidate = session.get(ModelVersion, second.candidate_version).metrics["eval"]
    assert compared == run.counts["metrics"]["active"] and compared["n"] == 17
    assert candidate == run.counts["metrics"]["candidate"]


def test_a_learnt_evaluation_message_is_left_out_of_the_comparison(retrain,
                                                                    db_session_factory):
    """A reviewed message the active model was trained on, added to the evaluation set by
    id afterwards, is left out of the next comparison (and said so), not scored."""
    from spamguard.services.evalset import add_reviewed

    retrain()
    ids = store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    second = retrain(force=True)
    assert _active_id(db_session_factory) == second.candidate_version
    with session_scope(db_session_factory) as session:  # learnt by the active model
        assert add_reviewed(session=session, message_ids=[ids[0]]).trained_on == 1
    lines: list[str] = []
    third = retrain(force=True, log=lines.append)
    assert third.counts["eval_set"]["left_out_learnt_by_active"] == 1
    assert any("1 evaluation message(s) left out of this comparison" in line
               for line in lines), lines
    assert third.counts["metrics"]["candidate"]["n"] == 17  # the 17 base messages only


def test_service_switches_to_the_promoted_model_without_restart(
        retrain, retrain_settings, db_session_factory) -> None:
    provider_module = pytest.importorskip("spamguard.services.model_provider")
    first = retrain()
    provider = provider_module.ModelProvider(check_seconds=0,
                                             cache_root=retrain_settings.cache_dir)
    with session_scope(db_session_factory) as session:
        assert provider.get(session=session).version == first.candidate_version
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    second = retrain(force=True)
    with session_scope(db_session_factory) as session:
        classifier = provider.get(session=session)
    assert classifier.version == second.candidate_version and provider.loads == 2
    assert classifier.classify(["WIN a prize now"])[0]["label"] in {"spam", "ham"}


def test_rejects_bad_arguments(retrain) -> None:
    from spamguard.errors import SpamguardError

    with pytest.raises(SpamguardError, match="trigger"):
        retrain(trigger="web")
    with pytest.raises(SpamguardError, match="metric"):
        retrain(metric="ham_fpr")


def test_config_from_keeps_the_recipe_of_versions_made_before_the_blend() -> None:
    from spamguard.services.retrain_steps import config_from

    old = {"config": {"pooling": "mean", "lr": 0.001, "max_length": 128}}
    assert config_from(old).lexical is False and config_from(old).lr == 0.001
    new = {"config": {"pooling": "mean", "lr": 0.0003, "lexical": True}}
    assert config_from(new).lexical is True
    assert config_from(None).lexical is True  # no active version: today's default


def test_config_from_keeps_the_pooling_a_version_loads_with() -> None:
    """A version's top-level pooling and max length are what loading reads; one without a
    "config" entry (made by hand, imported) must not be retrained with today's default."""
    from spamguard.services.retrain_steps import config_from

    bare = config_from({"pooling": "mean", "max_length": 64})
    assert (bare.pooling, bare.max_length) == ("mean", 64)
    recorded = config_from({"pooling": "mean", "config": {"pooling": "cls", "lr": 3e-4}})
    assert recorded.pooling == "cls"  # the recorded training settings win
    assert config_from(None).pooling == "mean-last3"


def _train_active_on_base(settings, factory, tiny_backbone) -> str:
    """`spamguard train` on the base file: the active version records it as its source."""
    from spamguard.ml.data import load_labelled
    from spamguard.ml.train import TrainConfig, train_model

    result = train_model(load_labelled(settings.base_data_path), models_dir=settings.home,
                         cache_root=None, backbone=tiny_backbone, config=TrainConfig(epochs=3),
                         data_source=str(settings.base_data_path), progress=False)
    return _install_active(settings, factory, result.directory)


def test_the_evaluation_set_avoids_what_the_active_model_was_trained_on(
        retrain, retrain_settings, db_session_factory, tiny_backbone) -> None:
    from spamguard.ml.data import text_hash
    from spamguard.ml.evaluation import version_split

    active = _train_active_on_base(retrain_settings, db_session_factory, tiny_backbone)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    lines: list[str] = []
    retrain(log=lines.append)
    with session_scope(db_session_factory) as session:
        chosen = set(session.scalars(select(EvalExample.text_hash)))
        directory = Path(registry.get_version(session, active).directory)
    parts = version_split(json.loads((directory / "model.json").read_text()))
    seen = {text_hash(t) for t in parts.train.texts + parts.val.texts}
    assert chosen and not chosen & seen
    # 20% was asked; its test texts are the unseen ones (all of them when they are fewer:
    # a split that keeps near-exact copies together can make the test part larger)
    unseen = {text_hash(t) for t in parts.test.texts}
    everything = len(parts.train) + len(parts.val) + len(parts.test)
    assert chosen <= unseen and len(chosen) == min(len(unseen), math.ceil(0.2 * everything))
    assert not any("could not be rebuilt" in line for line in lines)


def test_an_evaluation_set_chosen_blind_says_so(
        retrain, retrain_settings, db_session_factory, tiny_backbone) -> None:
    _train_active_on_base(retrain_settings, db_session_factory, tiny_backbone)
    # The file the active version was trained on has changed since: its split is lost.
    write_labelled(Path(retrain_settings.base_data), base_rows()[3:])
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    lines: list[str] = []
    retrain(log=lines.append)
    assert any("could not be rebuilt" in line and "favours it" in line for line in lines)
    with session_scope(db_session_factory) as session:
        assert session.scalar(select(func.count()).select_from(EvalExample)) == 17


def test_a_missing_base_file_fails_even_when_the_run_would_skip(
        retrain, retrain_settings, db_session_factory) -> None:
    assert retrain().status == "promoted"
    Path(retrain_settings.base_data).unlink()
    outcome = retrain()  # no new reviews: it used to say "skipped" every night
    assert outcome.status == "failed" and outcome.exit_code == 2
    assert "base.tsv" in outcome.summary


def test_a_changed_base_file_is_trained_on_without_new_reviews(
        retrain, retrain_settings, db_session_factory) -> None:
    first = retrain()
    assert retrain().status == "skipped"  # nothing new
    write_labelled(Path(retrain_settings.base_data), base_rows()[:-4])
    lines: list[str] = []
    outcome = retrain(log=lines.append)
    assert outcome.status in ("promoted", "rejected")
    assert any("base data" in line and "changed since the last run" in line for line in lines)
    assert outcome.counts["base_data_hash"] != first.counts["base_data_hash"]
    assert retrain().status == "skipped"  # and then it is the last run's base again


def test_a_models_folder_that_cannot_be_written_fails_before_training(
        retrain, retrain_settings, db_session_factory) -> None:
    retrain_settings.home.mkdir(parents=True, exist_ok=True)
    retrain_settings.models_dir.write_text("not a folder")  # as a read-only mount would
    lines: list[str] = []
    outcome = retrain(log=lines.append)
    assert outcome.status == "failed" and outcome.exit_code == 2
    assert "cannot write model versions in " in outcome.summary
    assert "retrain: training" not in lines  # found before the hours of work, not after


def test_a_full_disk_is_one_line_and_exit_2(retrain, db_session_factory, monkeypatch,
                                            caplog) -> None:
    import errno

    from spamguard.services import retrain_steps

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/models/x")

    monkeypatch.setattr(retrain_steps, "train_model", full)
    with caplog.at_level("ERROR"):
        outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("failed", 2)
    assert outcome.summary == "retrain: failed: No space left on device: /srv/models/x"
    assert "Traceback" not in caplog.text


def test_a_full_disk_while_writing_the_candidate_is_one_line_and_exit_2(
        retrain, retrain_settings, db_session_factory, monkeypatch, caplog) -> None:
    """safetensors' error of a full disk is no OSError: it still says one line, exit 2,
    and leaves no temporary folder."""
    from safetensors import SafetensorError

    from spamguard.ml import classifier as classifier_module

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr(classifier_module, "save_file", full)
    with caplog.at_level("ERROR"):
        outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("failed", 2)
    models = retrain_settings.models_dir
    assert outcome.summary.startswith("retrain: failed: cannot write model version ")
    assert outcome.summary.endswith(f" to {models}: No space left on device")
    assert "Traceback" not in caplog.text
    assert list(models.iterdir()) == []


def test_a_warm_retrain_never_loads_the_encoder(retrain, db_session_factory, monkeypatch,
                                               db_backend) -> None:
    """Every text cached (reviews of texts trained on before): the candidate's training and
    its evaluation beside the active version use the deferred backbone unloaded."""
    if db_backend != "sqlite":
        pytest.skip("one backend is enough")
    from spamguard.ml import backbone as backbone_module

    assert retrain(trigger="cron").status == "promoted"  # loads, remembers, fills the cache
    store_reviews(db_session_factory,
                  [(text, "spam" if label else "ham") for label, text in base_rows()[:3]])
    loads = []
    real = backbone_module._load_now
    monkeypatch.setattr(backbone_module, "_load_now",
                        lambda *args: loads.append(args) or real(*args))
    second = retrain(force=True)
    assert second.status in ("promoted", "rejected"), second.summary
    assert second.counts["timing"]["backbone_texts_embedded"] == 0
    assert loads == []


def test_review_weight_counts_reviewed_messages_more(retrain_settings, db_session_factory,
                                                     one_torch_thread) -> None:
    """SPAMGUARD_RETRAIN_REVIEW_WEIGHT reaches the training run: the same reviews with a
    weight of 20 make a different head, and the weight is recorded in model.json."""
    from dataclasses import replace

    from spamguard.services.retrain import run_retrain

    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    heads = {}
    for weight in (1.0, 20.0):
        settings = replace(retrain_settings, retrain_review_weight=weight)
        outcome = run_retrain(session_factory=db_session_factory, settings=settings,
                              min_new_reviews=0, force=True, progress=False)
        directory = outcome.report_path.parent
        data = json.loads((directory / "model.json").read_text())["data"]
        others = data["split"]["train"]["total"] - len(NEW_HAM)
        assert data["always_train"] == len(NEW_HAM) and data["always_train_weight_asked"] == weight
        expected = min(weight, others / len(NEW_HAM))
        assert data["always_train_weight"] == pytest.approx(expected, abs=1e-4)
        assert (data["always_train_weight"] > 1) == (weight > 1)  # the cap leaves room
        heads[weight] = (directory / "head.safetensors").read_bytes()
    assert heads[1.0] != heads[20.0]


def test_retraining_says_when_base_duplicates_disagree(retrain, retrain_settings) -> None:
    """As spamguard train does: copies of a base text with both labels are named in a note
    (the spam label wins) and counted in the run's training counts."""
    rows = base_rows()
    spam_text = next(text for label, text in rows if label == 1)
    write_labelled(Path(retrain_settings.base_data), [*rows, (0, spam_text.upper())])
    lines: list[str] = []
    outcome = retrain(log=lines.append)
    assert outcome.counts["training"]["base_label_conflicts"] == 1
    assert ("retrain: note: 1 duplicate(s) of a base text had the other label; each such "
            "text is trained as spam (the spam label wins)") in lines


def _hold(factory, reason: str = "rollback from A to B", by: str = "alice") -> None:
    from spamguard.services import promotion_hold

    with session_scope(factory) as session:
        promotion_hold.hold(session, reason=reason, by=by)


def _held(factory) -> bool:
    from spamguard.services import promotion_hold

    with session_scope(factory) as session:
        return promotion_hold.current(session) is not None


def test_a_hold_keeps_a_better_candidate_unpromoted_until_force(
        retrain, retrain_settings, db_session_factory, bad_model_dir) -> None:
    """After a rollback the next run must not undo it: under a hold the run trains,
    compares and registers its candidate with its report, as a dry run, and says so; exit
    0 (nothing for cron to do). --force is an operator's decision: it promotes, and the
    hold stays."""
    bad_id = _install_active(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    _hold(db_session_factory, reason="<b>checking</b> the | new model")
    outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("dry_run", 0), outcome.summary
    assert outcome.summary.startswith("retrain: held: automatic promotion on hold since ")
    assert (" UTC by alice (<b>checking</b> the | new model); the candidate would be "
            f"promoted: {outcome.candidate_version}: evaluation set mcc ") in outcome.summary
    assert "\n" not in outcome.summary
    assert _active_id(db_session_factory) == bad_id
    assert _status(db_session_factory, outcome.candidate_version) == "candidate"
    run = _runs(db_session_factory)[-1]
    assert (run.status, run.summary) == ("dry_run", outcome.summary)
    assert run.counts["decision"]["passed"] and run.counts["decision"]["held"].startswith(
        "on hold since ")
    report = outcome.report_path.read_text()
    assert "**Decision: held, would promote** (automatic promotion on hold since " in report
    assert "&lt;b&gt;checking&lt;/b&gt; the &#124; new model" in report  # escaped
    assert "<b>" not in report
    assert _held(db_session_factory)

    forced = retrain(force=True)
    assert (forced.status, forced.exit_code) == ("promoted", 0), forced.summary
    assert forced.summary.startswith(f"retrain: promoted {forced.candidate_version}: ")
    assert ("promoted although automatic promotion is on hold (--force); the hold stays: "
            "`spamguard promotion release` ends it") in forced.summary
    assert _active_id(db_session_factory) == forced.candidate_version
    assert _held(db_session_factory)


def test_a_hold_keeps_exit_3_for_a_worse_candidate(retrain, db_session_factory) -> None:
    """Also for the run the admin UI's Retrain now starts (its arguments)."""
    first = retrain()
    store_reviews(db_session_factory, inverting_reviews(db_session_factory))
    _hold(db_session_factory)
    outcome = retrain(trigger="ui", min_new_reviews=1)
    assert (outcome.status, outcome.exit_code) == ("dry_run", 3), outcome.summary
    assert (" by alice (rollback from A to B); the candidate would be rejected: "
            f"{outcome.candidate_version}: evaluation set mcc ") in outcome.summary
    assert "mcc is worse" in outcome.summary
    assert _active_id(db_session_factory) == first.candidate_version
    assert _status(db_session_factory, outcome.candidate_version) == "rejected"
    assert "**Decision: held, would reject**" in outcome.report_path.read_text()
    assert (_runs(db_session_factory)[-1].status, _runs(db_session_factory)[-1].trigger) == (
        "dry_run", "ui")


def _hold_once_decided(monkeypatch, factory, decided: str) -> None:
    """Have an operator put a hold in place right after the gate decided ``decided`` (and
    saw no hold), before the run commits."""
    from spamguard.services import retrain as retrain_module

    decide = retrain_module.decide

    def decide_then_the_operator_holds(*args, **kwargs):
        gate = decide(*args, **kwargs)
        assert gate.outcome == decided and gate.held is None
        _hold(factory, reason="spam wave", by="bob")
        return gate

    monkeypatch.setattr(retrain_module, "decide", decide_then_the_operator_holds)


def test_a_hold_put_in_place_after_the_decision_is_obeyed(
        retrain, retrain_settings, db_session_factory, bad_model_dir, monkeypatch) -> None:
    """The hold is read again as the run commits: one put in place after the gate decided
    to promote (a `promotion hold`, which leaves the active version as it is) keeps the
    candidate unpromoted, and its report says so."""
    bad_id = _install_active(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    _hold_once_decided(monkeypatch, db_session_factory, "promoted")
    outcome = retrain()
    assert (outcome.status, outcome.exit_code) == ("dry_run", 0), outcome.summary
    assert " by bob (spam wave); the candidate would be promoted: " in outcome.summary
    assert _active_id(db_session_factory) == bad_id
    assert "**Decision: held, would promote**" in outcome.report_path.read_text()
    assert _runs(db_session_factory)[-1].counts["decision"]["held"]


def test_a_hold_put_in_place_before_a_rejection_makes_it_a_held_run(
        retrain, db_session_factory, monkeypatch) -> None:
    """As with a hold there from the start (above): a worse candidate under a hold that
    came while the run trained is a held run (dry_run, exit 3), not a plain rejection."""
    first = retrain()
    store_reviews(db_session_factory, inverting_reviews(db_session_factory))
    _hold_once_decided(monkeypatch, db_session_factory, "rejected")
    outcome = retrain(trigger="ui", min_new_reviews=1)
    assert (outcome.status, outcome.exit_code) == ("dry_run", 3), outcome.summary
    assert " by bob (spam wave); the candidate would be rejected: " in outcome.summary
    assert _active_id(db_session_factory) == first.candidate_version
    assert _status(db_session_factory, outcome.candidate_version) == "rejected"
    assert "**Decision: held, would reject**" in outcome.report_path.read_text()
    assert _runs(db_session_factory)[-1].status == "dry_run"


def test_a_hold_committed_while_the_run_commits_is_never_overtaken(
        retrain, retrain_settings, db_session_factory, bad_model_dir, monkeypatch) -> None:
    """From a review: on SQLite the run read the hold, then took the write lock only to
    register its candidate, so a `promotion hold` could commit in between and the run still
    promoted after it. The run's commit and a hold are now one after the other on both
    databases: a hold that commits first is obeyed, one that waits comes after."""
    import threading

    from spamguard.services import retrain as retrain_module

    bad_id = _install_active(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    record = retrain_module.record_versions
    errors: list[BaseException] = []
    held_first = threading.Event()  # the hold committed before the run registered anything

    def hold_meanwhile() -> None:
        try:
            _hold(db_session_factory, reason="spam wave", by="bob")
        except BaseException as exc:  # noqa: BLE001  (asserted below)
            errors.append(exc)

    operator = threading.Thread(target=hold_meanwhile)

    def record_while_the_operator_holds(*args, **kwargs):
        operator.start()  # the hold was read (none); the candidate is not registered yet
        operator.join(1.0)
        if not operator.is_alive():
            held_first.set()
        return record(*args, **kwargs)

    monkeypatch.setattr(retrain_module, "record_versions", record_while_the_operator_holds)
    outcome = retrain()
    operator.join(30)
    assert not errors and _held(db_session_factory)
    if held_first.is_set() and outcome.status == "promoted":
        pytest.fail("a hold committed before the run's promotion was overtaken by it")
    assert outcome.status == "promoted", outcome.summary  # the hold waited: it came second
    assert _active_id(db_session_factory) == outcome.candidate_version != bad_id


def test_a_relative_home_records_an_absolute_report_path(
        retrain_settings, db_session_factory, one_torch_thread, tmp_path, monkeypatch) -> None:
    """SPAMGUARD_HOME defaults to ./instance: the run's report path (the summary, the
    training_runs row, which backup restore moves) must not depend on the folder cron ran
    in, as the version's own registered folder does not."""
    import dataclasses

    from spamguard.services.retrain import run_retrain

    monkeypatch.chdir(tmp_path)
    settings = dataclasses.replace(retrain_settings, home=Path("instance"))
    outcome = run_retrain(session_factory=db_session_factory, settings=settings,
                          trigger="cron", progress=False)
    assert outcome.status == "promoted"
    (run,) = _runs(db_session_factory)
    assert Path(run.report_path).is_absolute()
    assert run.report_path == str(tmp_path.resolve() / "instance" / "models"
                                  / outcome.candidate_version / "changes.md")
    assert f"report {run.report_path}" in outcome.summary
    monkeypatch.chdir("/")
    assert Path(run.report_path).is_file()


def test_a_home_other_than_the_active_versions_is_noted(
        retrain, retrain_settings, db_session_factory, one_torch_thread, tmp_path) -> None:
    """Cron with the PostgreSQL URL but another SPAMGUARD_HOME (not in the env file, or
    another folder) finds the right registry: the run says where the active version is."""
    import dataclasses

    from spamguard.services.retrain import run_retrain

    first = retrain(trigger="cron")
    assert first.status == "promoted"
    lines: list[str] = []
    retrain(log=lines.append)  # the same home: nothing to note
    assert not any("not in this SPAMGUARD_HOME" in line for line in lines)
    other = dataclasses.replace(retrain_settings, home=tmp_path / "elsewhere")
    outcome = run_retrain(session_factory=db_session_factory, settings=other,
                          progress=False, log=lines.append)
    assert outcome.status == "skipped"  # a note, not a refusal
    active_folder = (retrain_settings.home / "models").resolve()
    assert (f"retrain: note: the active version is in {active_folder}, not in this "
            f"SPAMGUARD_HOME's models folder ({(tmp_path / 'elsewhere' / 'models').resolve()})"
            ) in "\n".join(lines)


def test_a_message_erased_while_the_run_trains_leaves_the_candidates_changes_md(
        retrain, retrain_settings, db_session_factory, bad_model_dir, monkeypatch) -> None:
    """The erase's own sweep comes before the candidate is registered, so the run sweeps
    its candidate as it registers it: the example is written, then redacted."""
    from spamguard.services import message_deletion, retrain_steps
    from spamguard.services import retrain as retrain_module
    from spamguard.services.example_redaction import ERASED
    from spamguard.services.message_deletion import Selection

    _install_active(retrain_settings, db_session_factory, bad_model_dir)
    secret = "it's Dana, my new number is 07700 900461, call me tonight"
    ids = store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM]
                        + [(secret, "ham")])
    real = retrain_steps.evaluate_and_report

    def evaluate_then_erase(candidate, **kwargs):
        changes = real(candidate, **kwargs)
        # As if the evaluation set had held the review: its text among the examples.
        changes["flips"]["ham_to_spam"]["examples"].insert(
            0, {"text": secret, "true_label": "ham", "old_probability": 0.1,
                "new_probability": 0.9})
        message_deletion.delete_messages(db_session_factory, Selection(message_ids=(ids[-1],)))
        return changes

    monkeypatch.setattr(retrain_module, "evaluate_and_report", evaluate_then_erase)
    lines: list[str] = []
    outcome = retrain(log=lines.append)

    assert outcome.status == "promoted", outcome.summary
    directory = outcome.report_path.parent
    changes = json.loads((directory / "changes.json").read_text())
    first = changes["flips"]["ham_to_spam"]["examples"][0]
    assert first["text"] == ERASED and first["erased"] is True
    assert secret not in (directory / "changes.md").read_text()
    assert any("messages erased during the run" in line for line in lines)
