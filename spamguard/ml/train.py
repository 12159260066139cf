"""Train a head on cached backbone embeddings, pick a threshold, report, save a version."""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.utils.class_weight import compute_class_weight
from tqdm.auto import tqdm

from spamguard.errors import ModelError
from spamguard.ml.also_train import also_train_note, is_also_train
from spamguard.ml.backbone import Backbone, load_backbone
from spamguard.ml.blend import Blend, head_logit
from spamguard.ml.classifier import LABEL_MAP, SpamClassifier, build_inputs
from spamguard.ml.data import (
    LabelledData,
    Split,
    always_train_count,
    check_trainable,
    data_hash,
    dedupe,
    split,
)
from spamguard.ml.embeddings import CachedEncoder, setting_problem, show_progress
from spamguard.ml.features import FEATURE_NAMES
from spamguard.ml.head import BertArch
from spamguard.ml.threshold import choose_threshold
from spamguard.ml.version_files import DEFAULT_POOLING

HEAD_ALONE = "BERT head alone"
# What picks the epoch whose weights fit_head keeps: the lowest validation loss (the
# recipe), or the highest ROC AUC / average precision of the spam logit on validation.
SELECTIONS = {"loss": None, "auc": roc_auc_score, "ap": average_precision_score}


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


@dataclass
class HeadFit:
    """A trained head and how training went."""

    head: BertArch
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)


def class_weights(labels: np.ndarray, sample_weight: np.ndarray | None = None) -> torch.Tensor:
    """Balanced class weights, as in the recipe (about [0.58, 3.7] on the SMS data).

    With ``sample_weight``, classes are balanced by their summed weights (sklearn's rule,
    ``total / (2 * class total)``), so weighting some messages up does not tilt the loss
    towards their class as a whole.
    """
    if sample_weight is None:
        weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    else:
        totals = np.array([sample_weight[labels == c].sum() for c in (0, 1)], dtype=np.float64)
        if not np.all(totals > 0):
            raise ValueError("class weights need messages of both classes")
        weights = totals.sum() / (2 * totals)
    return torch.tensor(weights, dtype=torch.float32)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block.

    The head's matrices (32 x 400 by 400 x 512) are far too small to share between
    threads: on 2 cores one thread trained the default head in 1.8 s against 11-19 s with
    two while anything else ran on the machine (2026-12-01), and as fast when it was
    quiet. One thread also makes the trained bytes the same on any number of cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             config: TrainConfig, progress: bool | None = None, *,
             select: str = "loss", sample_weight: np.ndarray | None = None) -> HeadFit:
    """Train BERT_Arch with class-weighted NLLLoss; keep the weights of the best val loss
    (or of the best val ranking, ``select``).

    Runs on one torch thread (:func:`one_thread`).

    Args:
        x_train, y_train: head inputs and 0/1 labels to learn from.
        x_val, y_val: held-out inputs and labels that pick the best epoch.
        config: optimiser and head settings.
        progress: show a bar over epochs (None: only on a terminal).
        select: what picks the kept epoch (:data:`SELECTIONS`): "loss" (the recipe) or the
            highest validation ROC AUC ("auc") or average precision ("ap") of the spam
            logit, recorded in the history as ``val_auc``/``val_ap`` (cross-validation's
            candidates). Patience counts epochs since the best; ties keep the earlier one.
        sample_weight: one weight per training message (None: all 1, the recipe's loss
            exactly). Validation loss is never weighted.

    Returns:
        The best head (in eval mode) with its epoch and loss history (best_val_loss is the
        kept epoch's validation loss).
    """
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, not {select!r}")
    with one_thread():
        return _fit_head(x_train, y_train, x_val, y_val, config, progress, select,
                         sample_weight)


@dataclass
class _HeadTraining:
    """A fresh head with its data, loss, optimiser and batch-order generator (seeded)."""

    head: BertArch
    xt: torch.Tensor
    yt: torch.Tensor
    loss_fn: torch.nn.NLLLoss
    optimiser: torch.optim.Optimizer
    generator: torch.Generator
    sample_weight: torch.Tensor | None = None  # per training message; None: the recipe

    @classmethod
    def start(cls, x_train: np.ndarray, y_train: np.ndarray, config: TrainConfig,
              sample_weight: np.ndarray | None = None) -> _HeadTraining:
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        xt, yt = torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(y_train)
        head = BertArch(xt.shape[1], hidden=config.hidden, dropout=config.dropout)
        head.set_scaling(xt)
        weights = None
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (len(y_train),) or not np.all(sample_weight > 0):
                raise ValueError("sample_weight needs one positive weight per training message")
            weights = torch.from_numpy(sample_weight.astype(np.float32))
        loss_fn = torch.nn.NLLLoss(weight=class_weights(y_train, sample_weight))
        # foreach: the arithmetic of the per-tensor loop PyTorch picks on a CPU, bit for bit
        # (same weights), in fewer calls: the head trains in 4.5 s instead of 5.7 s (11
        # epochs, mean-last3 input; fused=True would be faster still but rounds differently).
        optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay, foreach=True)
        return cls(head, xt, yt, loss_fn, optimiser, generator, weights)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The class-weighted NLL of a batch; with sample weights, their weighted mean
        (NLLLoss's own mean divides by the batch's summed class weights, and so does this)."""
        log_probs, labels = self.head(self.xt[batch]), self.yt[batch]
        if self.sample_weight is None:
            return self.loss_fn(log_probs, labels)
        per_message = torch.nn.functional.nll_loss(log_probs, labels, reduction="none")
        weights = self.sample_weight[batch] * self.loss_fn.weight[labels]
        return (weights * per_message).sum() / weights.sum()

    def epoch(self, batch_size: int) -> float:
        """One pass over shuffled batches (gradient norm clipped at 1.0); the mean loss."""
        self.head.train()
        order = torch.randperm(len(self.xt), generator=self.generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            self.optimiser.zero_grad()
            loss = self.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
            self.optimiser.step()
            total += float(loss.detach()) * len(batch)
        self.head.eval()
        return total / len(self.xt)


def _fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              config: TrainConfig, progress: bool | None, select: str = "loss",
              sample_weight: np.ndarray | None = None) -> HeadFit:
    run = _HeadTraining.start(x_train, y_train, config, sample_weight)
    head = run.head
    xv, yv = torch.from_numpy(x_val.astype(np.float32)), torch.from_numpy(y_val)
    best = HeadFit(head=head, best_epoch=-1, best_val_loss=float("inf"))
    best_state, best_score = None, float("inf")  # lower is better: loss or -AUC / -AP
    show = show_progress(progress, config.epochs)
    for epoch in tqdm(range(config.epochs), desc="training head", unit="epoch", disable=not show):
        train_loss = run.epoch(config.batch_size)
        with torch.inference_mode():
            log_probs = head(xv)
            val_loss = float(run.loss_fn(log_probs, yv))
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        score = val_loss
        if SELECTIONS[select] is not None:
            record[f"val_{select}"] = float(SELECTIONS[select](y_val,
                                                               head_logit(log_probs.numpy())))
            score = -record[f"val_{select}"]
        best.history.append(record)
        if score < best_score:
            best_score, best.best_val_loss, best.best_epoch = score, val_loss, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif epoch - best.best_epoch >= config.patience:
            break  # the selection measure has stopped improving; the best weights are kept
    head.load_state_dict(best_state)
    head.eval()
    return best


def fit_head_epochs(x: np.ndarray, y: np.ndarray, epochs: int, config: TrainConfig) -> BertArch:
    """:func:`fit_head`'s training (same seed, same steps) for exactly ``epochs`` epochs with
    no validation part, keeping the last weights (cross-validation's refit). On fit_head's
    own training data with its best epoch count + 1 it returns the head fit_head kept."""
    with one_thread():
        run = _HeadTraining.start(x, y, config)
        for _ in range(epochs):
            run.epoch(config.batch_size)
    return run.head


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
                also_train_files: Sequence[dict[str, Any]] = ()) -> TrainResult:
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

    Returns:
        The trained classifier, its directory, metadata and a printable summary.
    """
    from spamguard.ml import report as reporting
    from spamguard.ml.baseline import TfidfSvmBaseline

    config = config or TrainConfig()
    say = log or (lambda _line: None)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    for folder in (models_dir, cache_root):  # an unwritable place fails now, not after training
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
    unique, stats = dedupe(data)
    check_trainable(unique, data_source or "training data")
    marked = (np.array([always_train(origin) for origin in unique.origins], dtype=bool)
              if always_train and unique.origins else None)
    parts = split(unique, seed=config.split_seed, always_train=marked)
    kept = always_train_count(unique, marked)
    if marked is not None and marked.any() and not kept:
        say(f"train: note: too few other messages to split, so the {int(marked.sum())} "
            "that would always train are split with them")
    say(f"train: {len(unique)} distinct messages ({stats.removed} duplicates grouped): "
        f"{len(parts.train)} train" + (f" ({kept} of them always)" if kept else "")
        + f", {len(parts.val)} validation, {len(parts.test)} test")
    if stats.label_conflicts:  # otherwise only report.md would tell
        say(f"train: note: {stats.label_conflicts} duplicate(s) of a text had the other label; "
            "each such text is trained as spam (the spam label wins)")
    if not isinstance(backbone, Backbone):
        say("train: loading the backbone")
        backbone = load_backbone(backbone, cache_root=cache_root)
    if problem := setting_problem(backbone, config.pooling, config.max_length):
        raise ModelError(problem)
    timing["load_backbone_s"] = time.perf_counter() - started
    encoder = CachedEncoder(backbone, cache_root, pooling=config.pooling,
                            max_length=config.max_length, batch_size=config.batch_size)
    features = list(FEATURE_NAMES) if config.features else []
    mark = time.perf_counter()
    say(f"train: embedding {len(unique)} messages with {backbone.name} (cached ones are "
        "not run again)")
    inputs = {name: build_inputs(encoder, getattr(parts, name).texts, features, progress)
              for name in ("train", "val", "test")}
    timing["embed_s"] = time.perf_counter() - mark
    say(f"train: {encoder.computed} texts run through the backbone in "
        f"{timing['embed_s']:.1f} s; training the head")
    mark = time.perf_counter()
    sample_weight, weight = None, 1.0
    weighs = weighted or always_train
    heavy = (np.array([weighs(o) for o in parts.train.origins], dtype=bool)
             if kept else np.zeros(len(parts.train), dtype=bool))
    if heavy.any():
        weight = review_weight(always_train_weight, int(heavy.sum()), int((~heavy).sum()))
    if weight != 1.0:
        sample_weight = np.where(heavy, weight, 1.0)
    fit = fit_head(inputs["train"], parts.train.labels, inputs["val"], parts.val.labels,
                   config, progress, sample_weight=sample_weight)
    timing["train_head_s"] = time.perf_counter() - mark

    metadata = _metadata(backbone, config, features, fit, parts, stats, data, data_source)
    if also_train_files:
        metadata["data"]["also_train"] = {
            "files": list(also_train_files),
            "in_training": int(sum(is_also_train(o) for o in parts.train.origins))}
    if kept:
        metadata["data"]["always_train"] = kept
        metadata["data"]["always_train_weight"] = round(weight, 4)
        metadata["data"]["always_train_weight_asked"] = always_train_weight
    mark = time.perf_counter()
    say("train: fitting the TF-IDF + SVM baseline, choosing the threshold, writing the report")
    # The report's baseline; with lexical=True the same fitted model is the lexical half.
    baseline = TfidfSvmBaseline(random_state=config.seed).fit(
        parts.train.texts, parts.train.labels, sample_weight=sample_weight)
    timing["baseline_s"] = time.perf_counter() - mark
    classifier = SpamClassifier(backbone=backbone, head=fit.head, metadata=metadata,
                                cache_root=cache_root, batch_size=config.batch_size)
    head_only = {name: classifier.head_proba(inputs[name]) for name in ("val", "test")}
    boundary = 0.5
    if config.lexical:
        blend = Blend.fit(head_logit(classifier.head_log_probs(inputs["val"])),
                          baseline.decision_function(parts.val.texts), parts.val.labels)
        metadata["blend"] = blend.to_json()
        classifier = SpamClassifier(backbone=backbone, head=fit.head, metadata=metadata,
                                    cache_root=cache_root, batch_size=config.batch_size,
                                    lexical=baseline)
        boundary = blend.boundary
    val_scores = classifier.proba_from_inputs(inputs["val"], parts.val.texts)
    threshold, selection = choose_threshold(parts.val.labels, val_scores, config.max_ham_fpr,
                                            boundary)
    metadata["threshold"], metadata["threshold_selection"] = threshold, selection
    test_scores = classifier.proba_from_inputs(inputs["test"], parts.test.texts)

    baseline_scores = baseline.decision_function(parts.test.texts)
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
    timing["total_s"] = time.perf_counter() - started
    metadata["timing"] = {k: round(v, 3) for k, v in timing.items()}
    metadata["timing"]["backbone_texts_embedded"] = encoder.computed

    models_dir = Path(models_dir)
    version = new_version_id(metadata["data"]["hash"])
    metadata["version"] = version
    with tempfile.TemporaryDirectory() as tmp:
        files = reporting.write_report(
            tmp, title=f"spamguard model {version}", model=model_eval, baseline=baseline_eval,
            y_true=parts.test.labels, model_scores=test_scores, baseline_scores=baseline_scores,
            info=report_info(metadata), components=components)
        directory = classifier.save(models_dir / version,
                                    extra_files={Path(p).name: Path(p) for p in files.values()})
    summary = reporting.render_summary(model_eval, baseline_eval,
                                       {name: result for name, result, _ in components})
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
              parts: Split, stats, data: LabelledData, source: str) -> dict[str, Any]:
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
