"""Evaluate a saved model version on a labelled file, beside the TF-IDF baseline."""

from __future__ import annotations

import json
from pathlib import Path

from spamguard.errors import DataError, ModelError
from spamguard.ml import report as reporting
from spamguard.ml.baseline import TfidfSvmBaseline
from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.data import LabelledData, Split, data_hash, dedupe, load_labelled, split


def stored_report(directory: Path) -> tuple[str, Path]:
    """The summary and Markdown path of the report written when the version was trained."""
    path = Path(directory) / "report.json"
    if not path.exists():
        raise ModelError(f"{directory} has no report.json")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        summary = reporting.render_summary(stored["model"], stored.get("baseline"),
                                           stored.get("components"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # damaged by hand or disk
        raise ModelError(f"{path}: unreadable report ({type(exc).__name__}: {exc}); "
                         "`spamguard report --data FILE` writes a new one") from None
    return summary, Path(directory) / "report.md"


def version_split(metadata: dict) -> Split | None:
    """Rebuild the version's train/validation/test split from its recorded source, if still
    identical (None when it is gone, changed, no longer reads, or was not one file: a
    retrained version's data came from the database too)."""
    data_info = metadata.get("data", {})
    source = Path(data_info.get("source") or "")
    if not source.is_file():
        return None
    try:
        data = load_labelled(source)
        if data_hash(data) != data_info.get("hash"):
            return None
        unique, _ = dedupe(data)
        return split(unique, seed=metadata.get("config", {}).get("split_seed", 2018))
    except DataError:
        return None


def training_split(metadata: dict) -> LabelledData | None:
    """The version's training split (None as for :func:`version_split`: the report then
    shows no baseline)."""
    parts = version_split(metadata)
    return parts.train if parts is not None else None


def evaluate_version(directory: Path, data_path: Path, out: Path) -> tuple[str, Path]:
    """Score ``data_path`` with the version and (when its training data is at hand) the
    baseline trained on the same training split; write the report to ``out``.

    Returns:
        The terminal summary and the path of ``report.md``.
    """
    classifier = SpamClassifier.load(directory)
    test = load_labelled(data_path)
    scores = classifier.predict_proba(test.texts)
    model_eval = reporting.evaluate(test.labels, scores, classifier.threshold)
    # A blended version carries the baseline, fitted on its training split, as its
    # lexical half; otherwise refit it from the recorded training data, if still there.
    baseline = classifier.lexical
    train = None if baseline is not None else training_split(classifier.metadata)
    if train is not None:
        baseline = TfidfSvmBaseline(random_state=classifier.metadata.get("seed", 0))
        baseline.fit(train.texts, train.labels)
    baseline_eval = baseline_scores = None
    if baseline is not None:
        baseline_scores = baseline.decision_function(test.texts)
        baseline_eval = reporting.evaluate(test.labels, baseline_scores, 0.0,
                                           probabilities=False)
    info = {"model version": classifier.version, "evaluated on": str(data_path),
            "messages": len(test),
            "baseline": "trained on the version's training split" if baseline is not None
            else "not shown: the version's training data is no longer at its recorded path"}
    files = reporting.write_report(
        out, title=f"spamguard model {classifier.version} on {data_path.name}",
        model=model_eval, baseline=baseline_eval, y_true=test.labels, model_scores=scores,
        baseline_scores=baseline_scores, info=info)
    return reporting.render_summary(model_eval, baseline_eval), files["markdown"]
