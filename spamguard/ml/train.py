"""Train a head on cached backbone embeddings, pick a threshold, report, save a version."""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spamguard.errors import ModelError
from spamguard.ml.also_train import also_train_note, is_also_train
from spamguard.ml.backbone import Backbone, load_backbone
from spamguard.ml.baseline_job import FittedBaseline, start_baseline
from spamguard.ml.blend import Blend, head_logit
from spamguard.ml.classifier import LABEL_MAP, SpamClassifier, build_inputs
from spamguard.ml.data import (
    DedupeStats,
    LabelledData,
    Split,
    always_train_count,
    check_trainable,
    data_hash,
    dedupe,
)
from spamguard.ml.embeddings import CachedEncoder, setting_problem
from spamguard.ml.features import FEATURE_NAMES
from spamguard.ml.head_fit import HeadFit, fit_head
from spamguard.ml.near_duplicates import (
    RATIO,
    group_counts,
    near_note,
    split_keeping_copies,
)
from spamguard.ml.threshold import choose_threshold
from spamguard.ml.version_files import DEFAULT_POOLING

HEAD_ALONE = "BERT head alone"


@dataclass
class TrainConfig:
    """Settings of one training run (all recorded in ``model.json``)."""

    pooling: str = DEFAULT_POOLING
    max_length: int = 128
    features: bool = True
    epochs: int = 40
    patience: int = 8
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    hidden: int = 512
    dropout: float = 0.1
    max_ham_fpr: float = 0.002
    lexical: bool = True  # blend in the TF-IDF + SVM model (spamguard.ml.blend)
    seed: int = 42
    split_seed: int = 2018
    # Keep near-exact copies on one side of the split (spamguard.ml.near_duplicates);
    # versions from before December 2026 record no such key and were split without it.
    group_near_duplicates: bool = True


@dataclass
class TrainResult:
    """What :func:`train_model` made."""

    classifier: SpamClassifier
    directory: Path
    metadata: dict[str, Any]
    summary: str


def review_weight(asked: float, marked: int, others: int) -> float:
    """The weight each always-training (reviewed) message gets: ``asked``, but no more than
    makes the marked messages together weigh as much as the ``others`` together, and never
    below 1.

    Reviews are the deployment's own traffic, so a few of them should count more than one
    2012 message each (README, "Present-day traffic"; bench/fresh_sms.py); the cap keeps a
    large backlog (a bulk-labelled campaign of thousands of near-identical texts) from
    drowning the base data.
    """
    if marked <= 0:
        return 1.0
    return max(1.0, min(float(asked), others / marked))


def new_version_id(seed_text: str) -> str:
    """A sortable, unique-enough id: UTC time plus a short hash."""
    import hashlib

    now = datetime.now(UTC)
    digest = hashlib.sha256(f"{now.isoformat()}|{seed_text}".encode()).hexdigest()[:6]
    return f"{now:%Y%m%d-%H%M%S}-{digest}"


def train_model(data: LabelledData, *, models_dir: str | Path, cache_root: str | Path | None,
                backbone: Backbone | str | None = None, config: TrainConfig | None = None,
                data_source: str = "", progress: bool | None = None,
                log: Callable[[str], None] | None = None,
                always_train: Callable[[str], bool] | None = None,
                always_train_weight: float = 1.0,
                weighted: Callable[[str], bool] | None = None,
                also_train_files: Sequence[dict[str, Any]] = (),
                held_out: LabelledData | None = None) -> TrainResult:
    """Deduplicate, split, embed (cached), train, pick a threshold, evaluate, save.

    Args:
        data: labelled messages (duplicates allowed; they are grouped here).
        models_dir: folder that receives the new version directory.
        cache_root: embedding cache folder (None: no cache).
        backbone: a loaded backbone, a name/directory, or None for the packaged default.
        config: training settings.
        data_source: where ``data`` came from, for the record.
        progress: progress bars (None: only on a terminal).
        log: receives one line per stage (the CLI prints them: without a terminal there
            are no progress bars, and a first training takes minutes).
        always_train: given a message's origin, whether it goes to the training part
            whatever the split (retraining: moderator-labelled messages; see
            :func:`~spamguard.ml.data.split`).
        always_train_weight: how much each of those messages counts in the head's and the
            SVM's training loss, against 1 for every other message (when the split could
            set them aside), capped by :func:`review_weight` so that together they weigh
            at most as much as the other training messages (a review never counts less
            than 1). The SVM applies the weight exactly; the head's loss is a weighted mean
            per batch, so there a review's pull is somewhat less than asked.
        weighted: which of the always-training messages take ``always_train_weight``
            (None: all of them); the others count 1. Retraining weights reviews, not the
            also-train files' messages (:mod:`spamguard.ml.also_train`).
        also_train_files: the record of each also-train file whose messages ``data``
            holds (:func:`~spamguard.ml.also_train.load_also_train`), kept in model.json.
        held_out: the test messages, when they are chosen apart (retraining's evaluation
            set, which the gate compares on): ``data`` is then split into training and
            validation only, in the recipe's proportion.

    Returns:
        The trained classifier, its directory, metadata and a printable summary.
    """
    config = config or TrainConfig()
    say = log or (lambda _line: None)
    started = time.perf_counter()
    for folder in (models_dir, cache_root):  # an unwritable place fails now, not after training
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
    prepared = _prepare(data, config, data_source, always_train, say, held_out)
    prepared_at = time.perf_counter()
    if not isinstance(backbone, Backbone):
        say("train: loading the backbone")
        backbone = load_backbone(backbone, cache_root=cache_root)
    if problem := setting_problem(backbone, config.pooling, config.max_length):
        raise ModelError(problem)
    run = _Run(config, prepared, backbone, cache_root, progress, say,
               timing={"prepare_s": prepared_at - started,
                       "load_backbone_s": time.perf_counter() - prepared_at})
    run.embed()
    sample_weight, weight = _sample_weights(prepared, weighted or always_train,
                                            always_train_weight)
    fit, baseline = run.fit_head_and_baseline(sample_weight)
    metadata = _metadata(backbone, config, run.features, fit, prepared.parts, prepared.stats,
                         data, data_source)
    _record_training_data(metadata, prepared, also_train_files, weight, always_train_weight)
    classifier, evaluations = run.evaluate(fit, metadata, baseline)
    run.timing["total_s"] = time.perf_counter() - started
    metadata["timing"] = {k: round(v, 3) for k, v in run.timing.items()}
    metadata["timing"]["backbone_texts_embedded"] = run.encoder.computed
    return _save(classifier, metadata, evaluations, prepared.parts, Path(models_dir))


@dataclass
class _Prepared:
    """The deduplicated messages, their split, and which of them always train."""

    unique: LabelledData
    stats: DedupeStats
    parts: Split
    kept: int  # always-training messages that the split did keep out of validation/test
    near_duplicates: dict[str, int] | None = None  # group_counts of the split's groups
    held_out: dict[str, int] | None = None  # the test messages given apart


def _prepare(data: LabelledData, config: TrainConfig, data_source: str,
             always_train: Callable[[str], bool] | None, say: Callable[[str], None],
             held_out: LabelledData | None = None) -> _Prepared:
    """Deduplicate and split (``held_out``: see :func:`train_model`), and say how."""
    unique, stats = dedupe(data)
    check_trainable(unique, data_source or "training data")
    marked = (np.array([always_train(origin) for origin in unique.origins], dtype=bool)
              if always_train and unique.origins else None)
    held = None if held_out is None else dedupe(held_out)[0]
    kept = always_train_count(unique, marked)
    parts, groups = split_keeping_copies(unique, seed=config.split_seed, always_train=marked,
                                         grouped=config.group_near_duplicates,
                                         with_test=held is None)
    if held is not None:
        parts.test = held
    if marked is not None and marked.any() and not kept:
        say(f"train: note: too few other messages to split, so the {int(marked.sum())} "
            "that would always train are split with them")
    say(f"train: {len(unique)} distinct messages ({stats.removed} duplicates grouped): "
        f"{len(parts.train)} train" + (f" ({kept} of them always)" if kept else "")
        + f", {len(parts.val)} validation, {len(parts.test)} test"
        + (" (given apart)" if held is not None else ""))
    near = None if groups is None else group_counts(groups)
    if near and near["groups"]:
        say(f"train: {near['messages']} near-exact copies in {near['groups']} groups, each "
            "group kept on one side of the split")
    elif config.group_near_duplicates and groups is None:
        say("train: note: the near-exact copies leave too few groups to put both classes "
            "in validation and test, so they were split one by one (copies may be on both "
            "sides)")
    if stats.label_conflicts:  # otherwise only report.md would tell
        say(f"train: note: {stats.label_conflicts} duplicate(s) of a text had the other label; "
            "each such text is trained as spam (the spam label wins)")
    return _Prepared(unique, stats, parts, kept, near,
                     None if held is None else {"messages": len(held)})


def _sample_weights(prepared: _Prepared, weighs: Callable[[str], bool] | None,
                    asked: float) -> tuple[np.ndarray | None, float]:
    """Each training message's loss weight (None: all 1) and the weight a weighted one got."""
    train = prepared.parts.train
    heavy = (np.array([weighs(o) for o in train.origins], dtype=bool)
             if prepared.kept else np.zeros(len(train), dtype=bool))
    weight = review_weight(asked, int(heavy.sum()), int((~heavy).sum())) if heavy.any() else 1.0
    return (np.where(heavy, weight, 1.0) if weight != 1.0 else None), weight


def _record_training_data(metadata: dict[str, Any], prepared: _Prepared,
                          also_train_files: Sequence[dict[str, Any]], weight: float,
                          asked: float) -> None:
    """Add the near-exact copies kept together, the also-train files and the
    always-training messages to model.json's data."""
    if prepared.near_duplicates is not None:
        metadata["data"]["near_duplicates"] = {**prepared.near_duplicates, "ratio": RATIO}
    if prepared.held_out is not None:
        metadata["data"]["held_out"] = prepared.held_out
    if also_train_files:
        metadata["data"]["also_train"] = {
            "files": list(also_train_files),
            "in_training": int(sum(is_also_train(o) for o in prepared.parts.train.origins))}
    if prepared.kept:
        metadata["data"]["always_train"] = prepared.kept
        metadata["data"]["always_train_weight"] = round(weight, 4)
        metadata["data"]["always_train_weight_asked"] = asked


@dataclass
class _Evaluations:
    """A trained model's test evaluations, the baseline's, and the BERT half's alone."""

    model: dict[str, Any]
    baseline: dict[str, Any]
    test_scores: np.ndarray
    baseline_scores: np.ndarray
    components: list[tuple[str, dict[str, Any], np.ndarray]]


@dataclass
class _Run:
    """One training run's backbone, inputs and timings, from embedding to evaluation."""

    config: TrainConfig
    prepared: _Prepared
    backbone: Backbone
    cache_root: str | Path | None
    progress: bool | None
    say: Callable[[str], None]
    timing: dict[str, float]
    encoder: CachedEncoder | None = None
    features: list[str] = field(default_factory=list)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)

    def embed(self) -> None:
        """Build each part's head inputs (cached embeddings are not computed again)."""
        config, parts = self.config, self.prepared.parts
        self.encoder = CachedEncoder(self.backbone, self.cache_root, pooling=config.pooling,
                                     max_length=config.max_length,
                                     batch_size=config.batch_size)
        self.features = list(FEATURE_NAMES) if config.features else []
        mark = time.perf_counter()
        self.say(f"train: embedding {len(self.prepared.unique)} messages with "
                 f"{self.backbone.name} (cached ones are not run again)")
        self.inputs = {name: build_inputs(self.encoder, getattr(parts, name).texts,
                                          self.features, self.progress)
                       for name in ("train", "val", "test")}
        self.timing["embed_s"] = time.perf_counter() - mark
        self.say(f"train: {self.encoder.computed} texts run through the backbone in "
                 f"{self.timing['embed_s']:.1f} s")

    def classifier(self, fit: HeadFit, metadata: dict[str, Any], lexical=None
                   ) -> SpamClassifier:
        return SpamClassifier(backbone=self.backbone, head=fit.head, metadata=metadata,
                              cache_root=self.cache_root, batch_size=self.config.batch_size,
                              lexical=lexical)

    def fit_head_and_baseline(self, sample_weight: np.ndarray | None
                              ) -> tuple[HeadFit, FittedBaseline]:
        """Train the head and, meanwhile in a child process when that pays
        (:mod:`spamguard.ml.baseline_job`), fit the TF-IDF + SVM baseline: the report's
        baseline and, with lexical=True, the blend's half."""
        config, parts, inputs = self.config, self.prepared.parts, self.inputs
        self.say("train: training the head, and the TF-IDF + SVM baseline alongside")
        mark = time.perf_counter()
        job = start_baseline(parts.train.texts, parts.train.labels, config.seed,
                             sample_weight, {"val": parts.val.texts, "test": parts.test.texts},
                             say=self.say)
        try:
            self.timing["baseline_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            fit = fit_head(inputs["train"], parts.train.labels, inputs["val"],
                           parts.val.labels, config, self.progress,
                           sample_weight=sample_weight)
            self.timing["train_head_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            baseline = job.result(self.say)
            # the time the baseline added: its fit, when done in this process; when a
            # child process fitted it during the head's training, its start and the wait
            self.timing["baseline_s"] += time.perf_counter() - mark
        finally:
            job.cancel()
        return fit, baseline

    def evaluate(self, fit: HeadFit, metadata: dict[str, Any], baseline: FittedBaseline
                 ) -> tuple[SpamClassifier, _Evaluations]:
        """Blend the head with the baseline (config.lexical), choose the threshold on
        validation, and evaluate on test; record it all in ``metadata``."""
        from spamguard.ml import report as reporting

        config, parts, inputs = self.config, self.prepared.parts, self.inputs
        self.say("train: choosing the threshold, writing the report")
        classifier = self.classifier(fit, metadata)
        head_only = {name: classifier.head_proba(inputs[name]) for name in ("val", "test")}
        boundary = 0.5
        if config.lexical:
            blend = Blend.fit(head_logit(classifier.head_log_probs(inputs["val"])),
                              baseline.scores["val"], parts.val.labels)
            metadata["blend"] = blend.to_json()
            classifier = self.classifier(fit, metadata, lexical=baseline.model)
            boundary = blend.boundary
        val_scores = classifier.proba_from_inputs(inputs["val"], parts.val.texts,
                                                  lexical_scores=baseline.scores["val"])
        threshold, selection = choose_threshold(parts.val.labels, val_scores,
                                                config.max_ham_fpr, boundary)
        metadata["threshold"], metadata["threshold_selection"] = threshold, selection
        test_scores = classifier.proba_from_inputs(inputs["test"], parts.test.texts,
                                                   lexical_scores=baseline.scores["test"])
        baseline_scores = baseline.scores["test"]
        model_eval = reporting.evaluate(parts.test.labels, test_scores, threshold)
        baseline_eval = reporting.evaluate(parts.test.labels, baseline_scores, 0.0,
                                           probabilities=False)
        val_eval = reporting.evaluate(parts.val.labels, val_scores, threshold)
        metadata["metrics"] = {"test": _headline(model_eval), "val": _headline(val_eval),
                               "baseline_test": _headline(baseline_eval)}
        components = []
        if config.lexical:  # what the BERT half scores on its own, with its own threshold
            head_threshold, _ = choose_threshold(parts.val.labels, head_only["val"],
                                                 config.max_ham_fpr)
            head_eval = reporting.evaluate(parts.test.labels, head_only["test"], head_threshold)
            metadata["metrics"]["head_test"] = _headline(head_eval)
            components.append((HEAD_ALONE, head_eval, head_only["test"]))
        return classifier, _Evaluations(model_eval, baseline_eval, test_scores,
                                        baseline_scores, components)


def _save(classifier: SpamClassifier, metadata: dict[str, Any], evaluations: _Evaluations,
          parts: Split, models_dir: Path) -> TrainResult:
    """Write the version folder with its report files; the result with a printable summary."""
    from spamguard.ml import report as reporting

    version = new_version_id(metadata["data"]["hash"])
    metadata["version"] = version
    with tempfile.TemporaryDirectory() as tmp:
        files = reporting.write_report(
            tmp, title=f"spamguard model {version}", model=evaluations.model,
            baseline=evaluations.baseline, y_true=parts.test.labels,
            model_scores=evaluations.test_scores, baseline_scores=evaluations.baseline_scores,
            info=report_info(metadata), components=evaluations.components,
            test_part="retraining's evaluation set" if metadata["data"].get("held_out")
            else "test split")
        directory = classifier.save(models_dir / version,
                                    extra_files={Path(p).name: Path(p) for p in files.values()})
    summary = reporting.render_summary(
        evaluations.model, evaluations.baseline,
        {name: result for name, result, _ in evaluations.components})
    return TrainResult(classifier, directory, metadata, summary)


def _headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "n_spam", "n_ham", "accuracy", "mcc", "roc_auc", "average_precision",
            "ham_fpr", "spam_precision", "spam_recall", "spam_f1", "threshold")
    return {k: evaluation.get(k) for k in keys}


def report_info(metadata: dict[str, Any]) -> dict[str, Any]:
    """The facts about a version that its report shows above the numbers."""
    data = metadata["data"]
    return {
        "model version": metadata.get("version", ""),
        "backbone": f"{metadata['backbone']['name']} ({metadata['backbone']['hash'][:12]}, "
                    f"hidden size {metadata['backbone']['hidden_size']})",
        "pooling / max length": f"{metadata['pooling']} / {metadata['max_length']} tokens",
        "message features": ", ".join(metadata["features"]) or "none",
        "score": "BERT head blended with TF-IDF + SVM (same training split)"
                 if metadata.get("blend") else "BERT head",
        "data": data.get("source", ""),
        "messages read": data["counts"]["input"]["total"],
        "duplicates removed (same normalised text)": data["dedupe"]["removed"],
        "label conflicts among duplicates (kept as spam)": data["dedupe"]["label_conflicts"],
        **({"near-exact copies kept on one side of the split": near_note(
               data["near_duplicates"])} if data.get("near_duplicates") else {}),
        **({"test messages": f"given apart ({data['held_out']['messages']}: retraining's "
                             "evaluation set)"} if data.get("held_out") else {}),
        "split train / val / test": " / ".join(str(data["split"][k]["total"])
                                                for k in ("train", "val", "test")),
        **({"always in training (also-train files)": also_train_note(
               data["also_train"]["files"], data["also_train"]["in_training"])}
           if data.get("also_train") else {}),
        "threshold (chosen on validation)": round(metadata["threshold"], 4),
        "best epoch / val loss": f"{metadata['training']['best_epoch']} / "
                                 f"{metadata['training']['best_val_loss']:.4f}",
    }


def _metadata(backbone: Backbone, config: TrainConfig, features: list[str], fit: HeadFit,
              parts: Split, stats: DedupeStats, data: LabelledData, source: str) -> dict[str, Any]:
    from importlib.metadata import version  # importing transformers for it costs 0.5 s

    import sklearn

    import spamguard

    return {
        "format": 1,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": {"name": backbone.name, "hash": backbone.hash,
                     "settings": backbone.settings, "hidden_size": backbone.hidden_size},
        "pooling": config.pooling,
        "max_length": config.max_length,
        "features": features,
        "input_dim": int(fit.head.fc1.in_features),
        "head": {"hidden": config.hidden, "dropout": config.dropout},
        "label_map": {str(k): v for k, v in LABEL_MAP.items()},
        "seed": config.seed,
        "config": asdict(config),
        "training": {"best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
                     "history": fit.history},
        "data": {
            "source": source,
            "hash": data_hash(data),
            "counts": {"input": data.counts(), "train": parts.train.counts()},
            "dedupe": asdict(stats),
            "split": {k: getattr(parts, k).counts() for k in ("train", "val", "test")},
        },
        "versions": {"spamguard": spamguard.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "transformers": version("transformers"),
                     "scikit-learn": sklearn.__version__},
    }
