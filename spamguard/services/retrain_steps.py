"""The steps of one retraining run (see :mod:`spamguard.services.retrain` for the order)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from spamguard.config import Settings
from spamguard.errors import SpamguardError
from spamguard.ml.also_train import AlsoTrain, is_also_train
from spamguard.ml.backbone import Backbone, load_backbone
from spamguard.ml.classifier import SpamClassifier, read_metadata, temporary_writer
from spamguard.ml.data import LabelledData
from spamguard.ml.embeddings import CachedEncoder
from spamguard.ml.train import TrainConfig, train_model
from spamguard.models import ModelVersion, TrainingRun
from spamguard.services import model_diff, registry, traffic_diff
from spamguard.services.evalset import EvalSet, ensure_evalset, learnt_by
from spamguard.services.locks import pid_alive
from spamguard.services.traffic_diff import Traffic
from spamguard.services.training_data import (
    REVIEW_ORIGIN,
    TrainingSet,
    build_training_set,
    check_class_sizes,
    count_reviews_after,
    latest_reviews,
    max_review_id,
)
from spamguard.sqltypes import utcnow

COMPLETED = ("promoted", "rejected")  # runs whose reviews count as used
HEAD_THREADS = 1


@dataclass
class Snapshot:
    """The state a run starts from: active version and reviews."""

    active_id: str | None
    active_dir: Path | None
    active_metadata: dict[str, Any] | None
    max_review_id: int | None
    new_reviews: int
    last_base_hash: str | None = None  # the base data the last completed run trained on
    last_also_train_hash: str | None = None  # its also-train files (None: none recorded)


def take_snapshot(session: Session) -> Snapshot:
    """Read the active version and count reviews newer than the last completed run's."""
    active = registry.active_version(session)
    last = session.scalars(select(TrainingRun).where(TrainingRun.status.in_(COMPLETED))
                           .order_by(TrainingRun.id.desc()).limit(1)).first()
    new = count_reviews_after(session, last.max_review_id if last else None)
    return Snapshot(
        active_id=active.id if active else None,
        active_dir=active.path if active else None,
        active_metadata=read_metadata(active.path) if active else None,
        max_review_id=max_review_id(session), new_reviews=new,
        last_base_hash=(last.counts or {}).get("base_data_hash") if last else None,
        last_also_train_hash=(last.counts or {}).get("also_train_hash") if last else None)


def clean_leftovers(*, session_factory: sessionmaker[Session], models_dir: Path,
                    max_age_s: float) -> dict[str, Any]:
    """Mark dead runs failed; delete dead runs' temporary and never-registered version folders.

    Call only while holding the retrain lock: then no other run is alive, so every
    ``running`` row belongs to a process that died or lost its lock.
    """
    with session_factory() as session, session.begin():
        stale = list(session.scalars(select(TrainingRun).where(TrainingRun.status == "running")))
        for run in stale:
            run.status, run.finished_at = "failed", utcnow()
            run.error = (f"interrupted: pid {run.pid} on {run.host} stopped before finishing "
                         "(found by the next run); the active model was not changed")
            run.summary = f"retrain: failed: {run.error}"
        failed = session.scalars(select(TrainingRun).where(TrainingRun.status == "failed"))
        candidates = {Path(d).name for run in failed
                      if (d := (run.counts or {}).get("candidate_dir"))}
        registered = set(session.scalars(select(ModelVersion.id)))
    orphans = []
    for name in sorted(candidates - registered):
        folder = Path(models_dir) / name
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            orphans.append(name)
    removed = []
    here = socket.gethostname()
    for tmp in sorted(Path(models_dir).glob(".tmp-*")):
        host, pid = temporary_writer(tmp.name)
        age = time.time() - tmp.stat().st_mtime
        # A live pid may be a `spamguard train` writing right now, and another machine's
        # pid cannot be checked from here: leave those unless ancient.
        writing = host not in (None, here) or (pid is not None and pid_alive(pid))
        if writing and age < max_age_s:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    return {"stale_runs_failed": [run.id for run in stale], "tmp_dirs_removed": removed,
            "unregistered_candidates_removed": orphans}


def check_writable(folder: Path) -> None:
    """Fail before the training, not after it, when no version can be written (a read-only
    mount, a full disk, another user's folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SpamguardError(f"cannot write model versions in {folder}: "
                             f"{exc.strerror or exc}") from None


def away_from(metadata: Callable[[], dict[str, Any] | None], version: str | None,
              note: Callable[[str], None]) -> Callable[[], set[str]]:
    """The ``exclude`` of :func:`~spamguard.services.evalset.ensure_evalset`: the texts the
    active version saw, rebuilt (its ``metadata()`` read) only if a set is chosen; when
    they cannot be, ``note`` says that the set may favour that version."""
    from spamguard.ml.evaluation import texts_seen_by

    def texts() -> set[str]:
        seen = texts_seen_by(metadata())
        if seen is None:
            note(f"the active model's training data ({version}) could not be rebuilt, so "
                 "the new evaluation set may hold texts it was trained on; that favours it "
                 "in comparisons until it is replaced")
        return seen or set()

    return texts


def prepare_data(*, session_factory: sessionmaker[Session], settings: Settings,
                 snapshot: Snapshot, base: LabelledData, also: AlsoTrain | None = None,
                 log: Callable[[str], None] = lambda _line: None,
                 ) -> tuple[TrainingSet, EvalSet]:
    """Choose the evaluation set if needed and merge the reviews into the ``base`` data
    and the ``also`` (also-train) messages. The evaluation set comes from ``base`` alone.

    The evaluation set is chosen once, on the first run, away from the texts the active
    model has seen, so the comparison does not favour it (:func:`away_from`).
    """
    with session_factory() as session, session.begin():
        reviews = latest_reviews(session, up_to=snapshot.max_review_id)  # read once, for both
        evalset, _ = ensure_evalset(session=session, base=base,
                                    fraction=settings.evalset_fraction,
                                    up_to_review=snapshot.max_review_id, reviews=reviews,
                                    exclude=away_from(lambda: snapshot.active_metadata,
                                                      snapshot.active_id,
                                                      lambda line: log(f"retrain: note: {line}")),
                                    learnt=learnt_by(session, snapshot.active_id))
        if evalset.left_out_learnt:
            log(f"retrain: note: {evalset.left_out_learnt} evaluation message(s) left out of "
                "this comparison: they were added to the set after the active model was "
                "trained on them, so it would be favoured on them")
        training = build_training_set(session=session, base=base, exclude=evalset.hashes,
                                      up_to_review=snapshot.max_review_id, reviews=reviews,
                                      also=also)
    check_class_sizes(training.data, settings.retrain_min_per_class)
    return training, evalset


def config_from(metadata: dict[str, Any] | None) -> TrainConfig:
    """The active version's training settings (same pooling and length hit the cache).

    A version trained before the TF-IDF + SVM blend existed records no ``lexical``: it is
    retrained as it was made, head only (``spamguard train`` makes a blended one). One
    trained before near-exact copies were kept together (no ``group_near_duplicates``) is
    retrained with them kept together: that is how data is split, not the model's recipe.
    """
    recorded = (metadata or {}).get("config") or {}
    known = {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in recorded.items() if k in known}
    if recorded:
        settings.setdefault("lexical", False)
    for key in ("pooling", "max_length"):  # what loading reads, also in a version without
        if key in (metadata or {}):         # "config": never today's default instead
            settings.setdefault(key, metadata[key])
    return TrainConfig(**settings)


def backbone_location(metadata: dict[str, Any] | None, settings: Settings) -> str | None:
    """Where the active version's backbone lives (or the configured default)."""
    if metadata:
        recorded = metadata.get("backbone", {})
        return recorded.get("name")
    return settings.backbone or None


@dataclass
class Candidate:
    """A trained, complete (renamed into place) but not yet registered version."""

    directory: Path
    classifier: SpamClassifier
    backbone: Backbone
    timing: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    flip_counts: dict[str, int] | None = None

    @property
    def version(self) -> str:
        return self.classifier.version

    def write_changes(self, changes: dict[str, Any], gate: Gate, evalset: EvalSet) -> None:
        """Write changes.json/.md into the version directory."""
        changes["decision"] = gate.as_dict()
        changes["evalset"] = evalset.describe()
        self.report_path = model_diff.write_changes(self.directory, changes)
        self.flip_counts = model_diff.flip_counts(changes)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_candidate(training: TrainingSet, *, settings: Settings, snapshot: Snapshot,
                    progress: bool | None, evalset: EvalSet | None = None) -> Candidate:
    """Train a version on ``training`` with the active version's backbone and settings.

    With a non-empty ``evalset``, that set is the candidate's test part (its report is on
    the messages the gate compares on) and the training data is split into training and
    validation only, so the candidate learns from as much base data as the active model
    did (a three-way split left it 70% of what was left, and its test part unused).
    """
    started = time.perf_counter()
    backbone = load_backbone(backbone_location(snapshot.active_metadata, settings),
                             cache_root=settings.cache_dir)
    config, counts = config_from(snapshot.active_metadata), training.counts
    # New texts go through the backbone first, on every core, into the cache ...
    encoder = CachedEncoder(backbone, settings.cache_dir, pooling=config.pooling,
                            max_length=config.max_length, batch_size=config.batch_size)
    encoder(training.data.texts, progress=progress)
    embedded_s = time.perf_counter() - started
    # ... then the small head trains on one thread: on a busy 2-core machine two threads
    # spin-wait on each other and were measured up to 20 times slower (bench/retrain.py).
    with torch_threads(HEAD_THREADS):
        result = train_model(
            training.data, models_dir=settings.models_dir, cache_root=settings.cache_dir,
            backbone=backbone, config=config, progress=progress,
            # Reviewed and also-train messages always train; validation and test come from
            # the base data. Reviews count more (SPAMGUARD_RETRAIN_REVIEW_WEIGHT).
            always_train=lambda origin: (origin.startswith(REVIEW_ORIGIN)
                                         or is_also_train(origin)),
            weighted=lambda origin: origin.startswith(REVIEW_ORIGIN),
            always_train_weight=settings.retrain_review_weight,
            also_train_files=training.also_train_files,
            held_out=evalset.as_data() if evalset is not None and len(evalset) else None,
            data_source=f"{settings.base_data_path} + {counts['reviewed_messages']} reviewed "
                        "messages" + (f" + {counts['also_train_messages']} also-train "
                                      "messages" if counts.get("also_train_messages") else "")
                        + f" - {counts['excluded_eval']} evaluation messages")
    timing = {**result.metadata["timing"], "load_and_embed_s": embedded_s,
              "backbone_texts_embedded": encoder.computed,
              "train_total_s": time.perf_counter() - started}
    # Absolute, as the registry records the folder: the report path goes into the run's row
    # and summary, which must not depend on the folder a command ran in (home ./instance).
    return Candidate(result.directory.resolve(), result.classifier, backbone,
                     timing={k: round(v, 3) for k, v in timing.items()})


def evaluate_and_report(candidate: Candidate, *, snapshot: Snapshot, evalset: EvalSet,
                        settings: Settings, traffic: Traffic | dict[str, Any] | None = None,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the candidate and the active version on the evaluation set and compare, and
    on ``traffic`` (recent messages) say which verdicts the candidate would change.

    ``traffic`` may also be :func:`traffic_diff.failed`'s entry (reading it failed). The
    traffic comparison only informs (the gate never reads it): if scoring it fails (a
    message the tokenizer or a model cannot take, as one the service leaves pending), the
    run goes on and says so on ``log`` and in changes.md."""
    started = time.perf_counter()
    data = evalset.as_data()
    new_scores = candidate.classifier.predict_proba(data.texts)
    old_scores = old_threshold = None
    if snapshot.active_dir is not None:
        # The candidate was trained on the active version's backbone: reuse it (load
        # checks the hash, so a mismatch still fails with a clear message).
        active = SpamClassifier.load(snapshot.active_dir, cache_root=settings.cache_dir,
                                     backbone=candidate.backbone)
        old_scores, old_threshold = active.predict_proba(data.texts), active.threshold
    changes = model_diff.compare(texts=data.texts, y_true=data.labels, new_scores=new_scores,
                                 new_threshold=candidate.classifier.threshold,
                                 old_scores=old_scores, old_threshold=old_threshold)
    changes["versions"] = {"active": snapshot.active_id, "candidate": candidate.version}
    if snapshot.active_dir is not None and isinstance(traffic, dict):
        changes["traffic"] = traffic  # reading it failed
    elif snapshot.active_dir is not None and traffic is not None:  # none: said too
        traffic_started = time.perf_counter()
        try:
            changes["traffic"] = traffic_diff.compare(traffic, active, candidate.classifier)
        except Exception as exc:  # informs only: never the reason a run fails
            changes["traffic"] = traffic_diff.failed("scoring", exc)
            if log is not None:
                log(traffic_diff.failure_note("scoring", exc))
        candidate.timing["traffic_s"] = round(time.perf_counter() - traffic_started, 3)
    candidate.timing["evaluate_s"] = round(time.perf_counter() - started, 3)
    return changes


@dataclass
class Gate:
    """The promotion decision and why."""

    outcome: str  # promoted, rejected, dry_run
    passed: bool
    reason: str
    forced: bool = False  # promoted although it failed (--force); in a dry run: would be
    # Automatic promotion was on hold (services.promotion_hold.describe: "on hold since ...
    # by ... (why)"): recorded as a dry run, whatever the comparison said.
    held: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, version: str) -> str:
        """One line for the terminal and the run's row."""
        if self.held:
            return (f"retrain: held: automatic promotion {self.held}; the candidate would be "
                    f"{'promoted' if self.passed else 'rejected'}: {version}: {self.reason}")
        head = f"{self.outcome} {version}"
        if self.outcome == "dry_run":
            head = f"dry run, would {'promote' if self.passed else 'reject'} {version}"
            if self.forced:  # --force with --dry-run: say what the real run would do
                head += ", though --force promotes it anyway (registered as rejected)"
        return f"retrain: {head}: {self.reason}"


def _worse(candidate: dict[str, Any], active: dict[str, Any], metric: str,
           margin: float) -> tuple[bool, str]:
    """Compare on ``metric`` (higher is better) and ham FPR (must not rise)."""
    new, old = candidate.get(metric), active.get(metric)
    new_fpr, old_fpr = candidate.get("ham_fpr") or 0.0, active.get("ham_fpr") or 0.0
    if new is None or old is None:
        return True, f"{metric} is undefined on the evaluation set"
    worse = new < old - margin - 1e-12
    fpr_up = new_fpr > old_fpr + 1e-12
    reason = (f"evaluation set {metric} {new:.4f} vs active {old:.4f} (margin {margin:g}), "
              f"ham FPR {new_fpr:.2%} vs {old_fpr:.2%}")
    if worse or fpr_up:
        reason += " - " + " and ".join(
            part for part, bad in ((f"{metric} is worse", worse), ("ham FPR is higher", fpr_up))
            if bad)
    return worse or fpr_up, reason


def decide(changes: dict[str, Any], *, metric: str, margin: float, force: bool,
           dry_run: bool, held: str | None = None) -> Gate:
    """Promote when not worse on ``metric`` by more than ``margin`` and ham FPR not higher.

    ``held``: automatic promotion is on hold (its description): the run is recorded as a
    dry run, unless ``force`` (an operator's explicit decision) promotes it anyway, which
    leaves the hold in place.
    """
    candidate, active = changes["candidate"], changes["active"]
    if active is None:
        value = candidate.get(metric)
        passed, reason = True, (f"no active model; {metric} "
                                f"{'undefined' if value is None else f'{value:.4f}'}")
    else:
        worse, reason = _worse(candidate, active, metric, margin)
        passed = not worse
    flipped = changes.get("flips")
    if flipped:
        reason += (f"; {flipped['total']} flips ({flipped['fixed']} fixed, "
                   f"{flipped['broken']} broken)")
    if dry_run:
        return Gate("dry_run", passed, reason, forced=force and not passed)
    if held and not force:
        return Gate("dry_run", passed, reason, held=held)
    if held:  # the hold's own words (its reason) stay out of the report's decision line
        reason += ("; promoted although automatic promotion is on hold (--force); the hold "
                   "stays: `spamguard promotion release` ends it")
    if not passed and force:
        return Gate("promoted", passed, reason + "; promoted anyway (--force)", forced=True)
    return Gate("promoted" if passed else "rejected", passed, reason)


def record_versions(session: Session, directory: Path, gate: Gate,
                    eval_metrics: dict[str, Any], *, promote: bool,
                    compared_with: str | None = None,
                    compared_metrics: dict[str, Any] | None = None,
                    by: str = "retrain") -> ModelVersion:
    """Register the candidate (rejected if it failed the gate) and promote it if ``promote``
    (the gate said so and nothing since has made that decision stale).

    The candidate's evaluation-set metrics are kept in the registry as ``metrics["eval"]``,
    and so are those of the version it was compared with (``compared_with``: the active
    one), from this comparison: a version trained by `spamguard train` has no other, and
    the models list would otherwise show a rejected candidate's numbers beside none.
    ``by``: the audit trail's actor of the promotion (``retrain``, or who ran ``--force``).
    """
    # A promotion (passed, or forced) is a candidate until promoted; a dry run registers as
    # the gate said, whatever --force would have done.
    status = "candidate" if gate.passed or gate.outcome == "promoted" else "rejected"
    version = registry.register_version(session=session, version_dir=directory,
                                        activate_if_none=False, status=status)
    version.metrics = {**(version.metrics or {}), "eval": eval_metrics}
    compared = session.get(ModelVersion, compared_with) if compared_with else None
    if compared is not None and compared_metrics:
        compared.metrics = {**(compared.metrics or {}), "eval": compared_metrics}
    if promote:
        registry.promote(session=session, version_id=version.id, by=by)
    return version

