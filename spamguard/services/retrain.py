"""``spamguard retrain``: turn moderators' reviews into a candidate model and promote it
only if it is not worse than the active one on the fixed evaluation set, and automatic
promotion is not on hold (:mod:`spamguard.services.promotion_hold`).

Fault safety rests on three rules: one run at a time (the ``retrain`` lock); a version
directory is complete before the database hears of it (``train_model`` writes a temporary
folder and renames it); and registering, promoting and finishing the run's row happen in one
transaction. A run killed anywhere leaves the active model as it was; the next run marks
the dead run failed and removes its temporary folders.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from spamguard.config import GATE_METRICS, Settings
from spamguard.db import database_error
from spamguard.errors import NEEDS_A_PERSON, LockHeldError, SpamguardError
from spamguard.ml.also_train import (
    AlsoTrain,
    also_train_note,
    load_also_train,
    retraining_paths,
)
from spamguard.ml.data import LabelledData, data_hash, load_labelled
from spamguard.models import RUN_TRIGGERS, TrainingRun
from spamguard.services import locks, promotion_hold, registry, traffic_diff
from spamguard.services.evalset import EvalSet
from spamguard.services.example_redaction import ERASED, redact_orphan_examples
from spamguard.services.retrain_jobs import RETRAIN_LOCK as LOCK_NAME
from spamguard.services.retrain_steps import (
    Candidate,
    Gate,
    Snapshot,
    check_writable,
    clean_leftovers,
    decide,
    evaluate_and_report,
    prepare_data,
    record_versions,
    take_snapshot,
    train_candidate,
)
from spamguard.services.training_data import TrainingSet
from spamguard.sqltypes import utcnow

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_REJECTED, EXIT_LOCKED = 0, 1, 2, 3, 4
EXIT_CODES = {"promoted": EXIT_OK, "skipped": EXIT_OK, "dry_run": EXIT_OK,
              "rejected": EXIT_REJECTED, "locked": EXIT_LOCKED}
PAUSE_ENV, PAUSE_SECONDS_ENV = "SPAMGUARD_TEST_PAUSE_AT", "SPAMGUARD_TEST_PAUSE_SECONDS"
logger = logging.getLogger(__name__)


@dataclass
class RetrainOutcome:
    """How a run ended: what a scheduler, the CLI and the admin UI need."""

    status: str  # promoted, rejected, skipped, dry_run, failed, locked
    exit_code: int
    summary: str  # one line
    report_path: Path | None = None
    run_id: int | None = None
    candidate_version: str | None = None
    active_version: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)


def checkpoint(stage: str, lease: locks.Lease | None, log: Callable[[str], None]) -> None:
    """Renew the lock between stages; pause here when the test hook names ``stage``."""
    if lease is not None:
        lease.renew()
    log(f"retrain: {stage}")
    if os.environ.get(PAUSE_ENV) == stage:
        # Test hook: a test kills the process here to prove a crash leaves the model intact.
        log(f"retrain: paused at {stage} (pid {os.getpid()})")
        time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "60")))


def run_retrain(*, session_factory: sessionmaker[Session], settings: Settings,
                force: bool = False, dry_run: bool = False, trigger: str = "cli",
                min_new_reviews: int | None = None, metric: str | None = None,
                margin: float | None = None, progress: bool | None = None,
                log: Callable[[str], None] | None = None,
                by: str | None = None, started_by: str | None = None) -> RetrainOutcome:
    """Run one retraining: skip, or train a candidate, compare it and promote or reject it.

    Args:
        session_factory: sessions on a database whose schema is current.
        settings: instance settings (models and cache folders, base data, retrain_*).
        force: ignore the new-review minimum and promote whatever the comparison says,
            even while automatic promotion is on hold (the hold stays).
        dry_run: train and report, but never promote (the candidate stays a candidate).
            A hold on automatic promotion (services.promotion_hold) makes every run one,
            recorded as ``dry_run`` with a "retrain: held: ..." summary.
        trigger: who started the run: cli, cron or ui.
        min_new_reviews, metric, margin: override the settings of the same name.
        progress: tqdm bars while training (None: only on a terminal).
        log: receives one line per stage (None: the module logger).
        by: who runs it (``user@host``): the audit trail names them for a promotion made
            with ``force``, a person's decision; an automatic one is by ``retrain``.
        started_by: the admin UI account that pressed "Retrain now": the gate's promotion
            is then by ``retrain (started by NAME)``.

    Returns:
        The outcome; ``exit_code`` is 0 promoted/skipped/dry run/held (a candidate that
        would be promoted), 3 rejected (or held, with a candidate that would be rejected),
        4 locked, 2 a problem the operator must fix, 1 any other failure.
    """
    if trigger not in RUN_TRIGGERS:
        raise SpamguardError(f"trigger must be one of {', '.join(RUN_TRIGGERS)}")
    metric = metric or settings.retrain_metric
    if metric not in GATE_METRICS:
        raise SpamguardError(f"metric must be one of {', '.join(GATE_METRICS)}")
    settings = replace(
        settings, retrain_metric=metric,
        retrain_margin=settings.retrain_margin if margin is None else margin,
        retrain_min_new_reviews=(settings.retrain_min_new_reviews if min_new_reviews is None
                                 else min_new_reviews))
    log = log or logger.info
    try:
        lease = locks.acquire(session_factory=session_factory, name=LOCK_NAME,
                              ttl=settings.retrain_lock_ttl)
    except LockHeldError as exc:
        return RetrainOutcome("locked", EXIT_LOCKED, f"retrain: locked: {exc}")
    except SQLAlchemyError as exc:  # no lock, no run's row: nothing to record
        if (error := database_error(exc)) is None:
            raise
        return RetrainOutcome("failed", error.exit_code, f"retrain: failed: {error}")
    with lease:
        job = _Retrain(session_factory, settings, lease, log, force=force, dry_run=dry_run,
                       progress=progress, by=by, started_by=started_by)
        return job.run(trigger)


def _one_line(exc: Exception) -> tuple[str, int] | None:
    """The line and exit code that tell all of ``exc``: a full, read-only or forbidden disk
    (2), a database that does not answer (1) or fails otherwise (2); None for anything else
    (a bug, another I/O error), whose traceback is logged."""
    if isinstance(exc, OSError) and exc.errno in NEEDS_A_PERSON:
        return (f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)), EXIT_USER_ERROR
    if isinstance(exc, SQLAlchemyError) and (error := database_error(exc)) is not None:
        return str(error), error.exit_code
    return None


class _Retrain:
    """One run's state, so each step stays a short method."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings,
                 lease: locks.Lease, log: Callable[[str], None], *, force: bool,
                 dry_run: bool, progress: bool | None, by: str | None = None,
                 started_by: str | None = None) -> None:
        self.session_factory, self.settings, self.lease, self.log = (
            session_factory, settings, lease, log)
        self.force, self.dry_run, self.progress = force, dry_run, progress
        # The audit trail's actor of this run's promotion: with --force, whoever forced it;
        # else the gate, and who asked for the run from the admin UI.
        self.promoted_by = (by if force and by else None) or (
            f"retrain (started by {started_by})" if started_by else "retrain")
        self.counts: dict[str, Any] = {}
        self.run_id: int | None = None
        self.active_id: str | None = None  # the version the candidate is compared with
        self.committed = False  # the run's end is in the database (never rewrite it)
        self.report: tuple[dict[str, Any], Any] = ({}, None)  # changes.md's changes, eval set

    def run(self, trigger: str) -> RetrainOutcome:
        """Clean up after dead runs, record this run, do it, and record how it ended."""
        try:
            cleaned = clean_leftovers(session_factory=self.session_factory,
                                      models_dir=self.settings.models_dir,
                                      max_age_s=self.settings.retrain_lock_ttl)
            if self.lease.took_over:
                cleaned["lock_taken_over_from"] = self.lease.took_over
            self.counts["cleanup"] = cleaned
            self.run_id = self._start(trigger)
        except SQLAlchemyError as exc:  # no run's row yet to record it in
            if (error := database_error(exc)) is None:
                raise
            return self._failed(str(error), error.exit_code)
        try:
            with self.lease.kept_alive():
                outcome = self._work()
        except SpamguardError as exc:
            outcome = self._failed(str(exc), exc.exit_code)
        except Exception as exc:  # any bug, I/O or database error: record it
            if said := _one_line(exc):
                logger.debug("retrain failed", exc_info=True)  # one line is the whole story
                outcome = self._failed(*said)
            else:
                logger.exception("retrain failed")
                outcome = self._failed(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
        except BaseException:  # Ctrl-C, SIGTERM (the CLI raises SystemExit): record and stop
            if not self.committed:  # a signal just after the commit must not undo its record
                self._finish(self._failed("interrupted", EXIT_FAILED))
            raise
        if not self.committed:  # the decision paths finish inside their transaction
            outcome = self._finish(outcome)
        return outcome

    def _start(self, trigger: str) -> int:
        with self.session_factory() as session, session.begin():
            run = TrainingRun(trigger=trigger, status="running", started_at=utcnow(),
                              pid=os.getpid(), host=socket.gethostname()[:255],
                              counts=self.counts, summary="retrain: starting")
            session.add(run)
            session.flush()
            return run.id

    def _note_another_home(self, active_dir: Path | None) -> None:
        """On PostgreSQL a wrong SPAMGUARD_HOME finds the right registry: say where the active
        version is when that is not this home's models folder (the new version goes here,
        trained from a cold embedding cache, where the service may not read it)."""
        if not active_dir:
            return
        models_dir = Path(self.settings.models_dir).resolve()
        folder = Path(active_dir).resolve().parent
        if folder != models_dir:
            self.log(f"retrain: note: the active version is in {folder}, not in this "
                     f"SPAMGUARD_HOME's models folder ({models_dir}); if SPAMGUARD_HOME is "
                     "not the service's (check the env file), the new version is written "
                     "where the service may not find it")

    def _work(self) -> RetrainOutcome:
        checkpoint("snapshot", self.lease, self.log)
        with self.session_factory() as session, session.begin():
            snapshot = take_snapshot(session)
            session.get(TrainingRun, self.run_id).active_version_id = snapshot.active_id
        self._note_another_home(snapshot.active_dir)
        self.counts["new_reviews"], self.active_id = snapshot.new_reviews, snapshot.active_id
        base, also, named_by = self._read_data(snapshot)
        skipped = self._skip(snapshot)
        if skipped is not None:
            return skipped
        check_writable(self.settings.models_dir)
        if len(also):  # unset, the setting names nothing: say what training keeps
            self.log(f"retrain: note: {also_train_note(also.files)} always in training "
                     f"({named_by})")
        checkpoint("data", self.lease, self.log)
        training, evalset = prepare_data(session_factory=self.session_factory,
                                         settings=self.settings, snapshot=snapshot,
                                         base=base, also=also, log=self.log)
        self.counts.update(training=training.counts, eval_set=evalset.counts())
        if training.counts["base_label_conflicts"]:  # as spamguard train says
            self.log(f"retrain: note: {training.counts['base_label_conflicts']} duplicate(s) "
                     "of a base text had the other label; each such text is trained as spam "
                     "(the spam label wins)")
        checkpoint("training", self.lease, self.log)
        candidate = train_candidate(training, settings=self.settings, snapshot=snapshot,
                                    progress=self.progress, evalset=evalset)
        # Recorded before anything can fail, so the next run can delete an unregistered
        # candidate left by a run that died between training and registering.
        self.counts["candidate_dir"] = str(candidate.directory)
        with self.session_factory() as session, session.begin():
            session.get(TrainingRun, self.run_id).counts = dict(self.counts)
        checkpoint("evaluating", self.lease, self.log)
        gate = self._judge(candidate, snapshot, evalset, training)
        checkpoint("registering", self.lease, self.log)
        return self._record(candidate, snapshot, gate)

    def _read_data(self, snapshot: Snapshot) -> tuple[LabelledData, AlsoTrain, str]:
        """The base data and the also-train files (and what named them), with their hashes
        in the run's counts.

        Read every night, skip or not: a missing or broken base file fails now (exit 2),
        not on the night enough reviews have come in, and a changed one is trained on.
        """
        base = load_labelled(self.settings.base_data_path)
        named = self.settings.also_train_paths
        named_by = ("SPAMGUARD_ALSO_TRAIN" if named is not None
                    else f"the active version {snapshot.active_id}'s model.json")
        also = load_also_train(retraining_paths(named, snapshot.active_metadata), named_by)
        self.counts["base_data_hash"] = data_hash(base)
        self.counts["also_train_hash"] = also.hash
        return base, also, named_by

    def _skip(self, snapshot: Snapshot) -> RetrainOutcome | None:
        """The "skipped" outcome when too few reviews are new and no data changed; None
        (and a note when data changed) to go on."""
        changed = []
        if snapshot.last_base_hash is not None:
            if snapshot.last_base_hash != self.counts["base_data_hash"]:
                changed.append(f"the base data ({self.settings.base_data_path})")
            # A run from before also-train files existed trained on none of them.
            if (snapshot.last_also_train_hash or AlsoTrain().hash) != self.counts[
                    "also_train_hash"]:
                changed.append("the also-train files")
        need = self.settings.retrain_min_new_reviews
        if not snapshot.active_id or self.force or snapshot.new_reviews >= need:
            return None
        if not changed:
            return self._outcome("skipped", f"retrain: skipped: {snapshot.new_reviews} "
                                 f"new review(s) since the last run (need {need})")
        self.log(f"retrain: note: {' and '.join(changed)} changed since the last run: "
                 f"training with {snapshot.new_reviews} new review(s)")
        return None

    def _judge(self, candidate: Candidate, snapshot: Snapshot, evalset: EvalSet,
               training: TrainingSet) -> Gate:
        """Compare the candidate with the active model, decide, write changes.md, and keep
        the comparison in the run's counts."""
        changes = evaluate_and_report(candidate, snapshot=snapshot, evalset=evalset,
                                      settings=self.settings, traffic=self._traffic(snapshot),
                                      log=self.log)
        if traffic := changes.get("traffic"):
            named = " (changes.md names them)" if traffic.get("changed") else ""
            self.log(f"retrain: {traffic_diff.summary(traffic)}{named}")
        gate = decide(changes, metric=self.settings.retrain_metric,
                      margin=self.settings.retrain_margin, force=self.force,
                      dry_run=self.dry_run, held=self._held())
        candidate.write_changes(changes, gate, evalset)
        self.report = (changes, evalset)  # rewritten if a hold comes before the commit
        if ((gate.outcome == "rejected" or (gate.held and not gate.passed))
                and training.counts["reviewed_messages"]
                and not evalset.sources.get("review")):
            self.log("retrain: note: the evaluation set holds no reviewed message, so the "
                     "candidate was judged on the base data alone; once moderators have "
                     "labelled a few hundred messages, `spamguard evalset add --from-reviews "
                     "50` lets the gate weigh today's traffic too (docs/retraining.md)")
        self.counts.update(metrics={"active": changes["active"],
                                    "candidate": changes["candidate"]},
                           flips=candidate.flip_counts, decision=gate.as_dict(),
                           traffic=traffic_diff.counts(changes.get("traffic")),
                           timing=candidate.timing)
        return gate

    def _traffic(self, snapshot: Snapshot) -> traffic_diff.Traffic | dict[str, Any] | None:
        """The recent messages to compare the candidate with the active model on (None:
        no active model, or turned off by ``SPAMGUARD_RETRAIN_TRAFFIC_LIMIT=0``; a
        :func:`traffic_diff.failed` entry when reading them failed: it only informs, so a
        database error here is said, not the run's failure)."""
        if snapshot.active_id is None or not self.settings.retrain_traffic_limit:
            return None
        try:
            with self.session_factory() as session:
                return traffic_diff.recent_traffic(
                    session, days=self.settings.retrain_traffic_days,
                    limit=self.settings.retrain_traffic_limit)
        except SQLAlchemyError as exc:
            self.log(traffic_diff.failure_note("reading", exc))
            return traffic_diff.failed("reading", exc)

    def _held(self) -> str | None:
        """Whether automatic promotion is on hold (its description), read before the
        decision so the report says so; :meth:`_record` looks again as it commits."""
        with self.session_factory() as session:
            held = promotion_hold.current(session)
            return promotion_hold.describe(held) if held else None

    def _hold_since_decided(self, session: Session, candidate: Candidate,
                            gate: Gate) -> Gate:
        """A hold put in place while the run trained or evaluated (with a rollback, which
        changes the active version, the run fails as stale instead): the promotion or
        rejection it decided becomes a held run, as if the hold had been there from the
        start, and its report and counts say so. Read after the active version's row is
        locked, which ``promotion hold`` locks too, so a hold is either seen here or comes
        after."""
        if gate.outcome == "dry_run" or self.force:
            return gate
        held = promotion_hold.current(session)
        if held is None:
            return gate
        gate = replace(gate, outcome="dry_run", held=promotion_hold.describe(held))
        changes, evalset = self.report
        candidate.write_changes(changes, gate, evalset)
        self.counts["decision"] = gate.as_dict()
        return gate

    def _record(self, candidate: Candidate, snapshot: Snapshot, gate: Gate) -> RetrainOutcome:
        """Register (and promote or reject) the candidate and finish the run atomically."""
        with self.session_factory() as session, session.begin():
            now_active = registry.locked_active_id(session)
            stale = now_active != snapshot.active_id and gate.outcome != "dry_run"
            if not stale:
                gate = self._hold_since_decided(session, candidate, gate)
            summary = f"{gate.summary(candidate.version)}; report {candidate.report_path}"
            outcome = self._outcome(gate.outcome, summary, candidate=candidate.version,
                                    report=candidate.report_path)
            if gate.held:  # nothing for a scheduler to do, unless the candidate was worse
                outcome.exit_code = EXIT_OK if gate.passed else EXIT_REJECTED
            if stale:
                # Someone promoted or rolled back while this run trained: the comparison was
                # made against a model that is no longer served. Keep the candidate (with its
                # report) unpromoted and let the next run compare with the model in service.
                outcome = self._failed(
                    f"the active version changed during the run ({snapshot.active_id or 'none'}"
                    f" -> {now_active or 'none'}); candidate {candidate.version} was compared "
                    "with the old one, so it is kept unpromoted; the next run compares again",
                    EXIT_FAILED)
                outcome.candidate_version = candidate.version
                outcome.report_path = candidate.report_path
            record_versions(session, candidate.directory, gate,
                            self.counts["metrics"]["candidate"],
                            promote=gate.outcome == "promoted" and not stale,
                            compared_with=snapshot.active_id,
                            compared_metrics=self.counts["metrics"]["active"],
                            by=self.promoted_by)
            # Messages erased while this run trained: their deletion swept the versions
            # registered then, not this candidate, whose examples were read before.
            if redact_orphan_examples(session, (candidate.version,)):
                self.log(f"retrain: note: messages erased during the run: their texts in "
                         f"{candidate.version}'s changes.md are now {ERASED}")
            self._write_finish(session, outcome, max_review_id=None if outcome.status ==
                               "failed" else snapshot.max_review_id)
            session.flush()
            checkpoint("committing", None, self.log)  # killed here: nothing above commits
        self.committed = True
        return outcome

    def _outcome(self, status: str, summary: str, *, candidate: str | None = None,
                 report: Path | None = None) -> RetrainOutcome:
        return RetrainOutcome(status, EXIT_CODES[status], summary, report, self.run_id,
                              candidate, self.active_id, self.counts)

    def _failed(self, error: str, exit_code: int) -> RetrainOutcome:
        outcome = RetrainOutcome("failed", exit_code, f"retrain: failed: {error}",
                                 run_id=self.run_id, counts=self.counts)
        outcome.counts["error"] = error
        return outcome

    def _finish(self, outcome: RetrainOutcome) -> RetrainOutcome:
        """Record how the run ended; return the outcome, a failure if the database fails now
        (down, a full disk: said in one line; the row stays ``running`` until the next run
        records it as failed)."""
        try:
            with self.session_factory() as session, session.begin():
                self._write_finish(session, outcome, max_review_id=None)
        except SQLAlchemyError as exc:
            if (error := database_error(exc)) is None:
                raise
            logger.debug("recording the run's end failed", exc_info=True)
            self.log(f"retrain: note: the run's end could not be recorded ({error}); the "
                     "next run records it as failed")
            return outcome if outcome.status == "failed" else self._failed(
                str(error), error.exit_code)
        return outcome

    def _write_finish(self, session: Session, outcome: RetrainOutcome, *,
                      max_review_id: int | None) -> None:
        run = session.get(TrainingRun, self.run_id)
        run.status, run.finished_at, run.summary = outcome.status, utcnow(), outcome.summary
        run.counts = dict(self.counts)
        run.max_review_id = max_review_id
        run.report_path = str(outcome.report_path) if outcome.report_path else None
        run.error = self.counts.get("error")
        if outcome.candidate_version:
            run.candidate_version_id = outcome.candidate_version
