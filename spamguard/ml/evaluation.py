"""Evaluate a saved model version on a labelled file, beside the TF-IDF baseline."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spamguard.config import DEFAULT_DATA
from spamguard.errors import DataError, ModelError
from spamguard.ml import report as reporting
from spamguard.ml.also_train import (
    is_also_train,
    load_also_train,
    recorded_paths,
    with_also_train,
)
from spamguard.ml.baseline import TfidfSvmBaseline
from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.data import Split, data_hash, dedupe, load_labelled, text_hash
from spamguard.ml.near_duplicates import split_keeping_copies


def _read_stored(directory: Path) -> dict[str, Any]:
    """The version's stored ``report.json`` (ModelError when it is missing or damaged)."""
    path = Path(directory) / "report.json"
    if not path.exists():
        raise ModelError(f"{directory} has no report.json")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError) as exc:  # damaged by hand or disk
        raise _unreadable(path, exc) from None
    return stored


def _unreadable(path: Path, exc: Exception) -> ModelError:
    return ModelError(f"{path}: unreadable report ({type(exc).__name__}: {exc}); "
                      "`spamguard report --data FILE` writes a new one")


def stored_report(directory: Path) -> tuple[str, Path]:
    """The summary and Markdown path of the report written when the version was trained."""
    stored = _read_stored(directory)
    try:
        summary = reporting.render_summary(stored["model"], stored.get("baseline"),
                                           stored.get("components"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # damaged by hand or disk
        raise _unreadable(Path(directory) / "report.json", exc) from None
    return summary, Path(directory) / "report.md"


def stored_report_files(directory: Path) -> list[str]:
    """Names of the version's report files that exist: report.json, report.md and the
    images they show (those :data:`~spamguard.ml.report.REPORT_FILES` names, plus any
    others the stored report lists under ``files``, as long as they are plain names in
    the version directory)."""
    listed = _read_stored(directory).get("files")
    names = list(reporting.REPORT_FILES.values())
    if isinstance(listed, dict):
        names += [name for name in listed.values() if isinstance(name, str)
                  and name == Path(name).name and not name.startswith(".")
                  and name not in names]
    return [name for name in names if (Path(directory) / name).is_file()]


def copy_stored_report(directory: Path, out: Path) -> tuple[str, Path]:
    """Copy the version's stored report (:func:`stored_report_files`) into ``out``
    (created if missing; files of the same name there are replaced).

    Returns:
        The terminal summary and the path of the copied ``report.md``.
    """
    summary, _ = stored_report(directory)  # an unreadable report fails before any copy
    names = stored_report_files(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        source, target = Path(directory) / name, out / name
        if not (target.exists() and target.samefile(source)):  # --out is the version itself
            shutil.copyfile(source, target)
    return summary, out / reporting.REPORT_FILES["markdown"]


def version_split(metadata: dict) -> Split | None:
    """Rebuild the version's train/validation/test split from its recorded source (and
    ``--also-train`` files), if still identical (None when one is gone, changed, no longer
    reads, or was not one file: a retrained version's data came from the database too)."""
    data_info = metadata.get("data", {})
    source = Path(data_info.get("source") or "")
    if not source.is_file() and source.name == DEFAULT_DATA.name:
        # The shipped data, recorded where the install that trained the version had it (a
        # venv's site-packages, a checkout): gone after a reinstall elsewhere or a restore
        # on another machine. This install's copy is the same file if the hash below says so.
        source = DEFAULT_DATA
    also_paths = recorded_paths(metadata)  # --also-train files: always in training
    if not source.is_file() or not all(path.is_file() for path in also_paths):
        return None
    try:
        data = with_also_train(load_labelled(source), load_also_train(also_paths))
        if data_hash(data) != data_info.get("hash"):
            return None
        unique, _ = dedupe(data)
        marked = (np.array([is_also_train(o) for o in unique.origins], dtype=bool)
                  if also_paths else None)
        config = metadata.get("config", {})
        return split_keeping_copies(  # a version that records no grouping was split without
            unique, seed=config.get("split_seed", 2018), always_train=marked,
            grouped=config.get("group_near_duplicates", False))[0]
    except DataError:
        return None


def seen_texts(parts: Split) -> set[str]:
    """Normalised texts (:func:`~spamguard.ml.data.text_hash`) a version was trained or
    tuned on: its training and validation splits."""
    return {text_hash(text) for text in parts.train.texts + parts.val.texts}


def texts_seen_by(metadata: dict[str, Any] | None) -> set[str] | None:
    """:func:`seen_texts` of a version, rebuilt from its recorded data file; None if that is
    not possible (no file, a changed one, or a retrained version, whose data came from the
    database). No version (``None``) has seen nothing."""
    if metadata is None:
        return set()
    parts = version_split(metadata)
    return None if parts is None else seen_texts(parts)


def overlap_counts(texts: list[str], seen: set[str] | None) -> dict[str, Any]:
    """How many of ``texts`` (each copy counted) the version saw in training or validation;
    ``seen`` None (the training data could not be rebuilt): not checked."""
    if seen is None:
        return {"checked": False, "messages": len(texts), "seen": None}
    return {"checked": True, "messages": len(texts),
            "seen": sum(text_hash(text) in seen for text in texts)}


def overlap_note(overlap: dict[str, Any], data_path: Path) -> str | None:
    """One line for the terminal about ``overlap`` (None when there is none)."""
    if not overlap["checked"]:
        return (f"could not check {data_path} against this version's training and "
                "validation data (its recorded data file is gone or changed, or it was "
                "retrained with reviews); its numbers may overstate how it does on new "
                "messages")
    if overlap["seen"]:
        return (f"{overlap['seen']} of {overlap['messages']} messages in {data_path} were "
                "in this version's training or validation data; its numbers overstate how "
                "it does on new messages")
    return None


def _overlap_info(overlap: dict[str, Any]) -> str:
    """The overlap as a report.md cell."""
    if not overlap["checked"]:
        return "not checked: the version's training data could not be rebuilt"
    text = f"{overlap['seen']} of {overlap['messages']} messages"
    return text + (": the numbers overstate how it does on new messages"
                   if overlap["seen"] else "")


def evaluate_version(directory: Path, data_path: Path, out: Path,
                     note: Callable[[str], None] = lambda _line: None) -> tuple[str, Path]:
    """Score ``data_path`` with the version and (when its training data is at hand) the
    baseline trained on the same training split; write the report to ``out``. ``note``
    hears one line when messages of ``data_path`` were in the version's training or
    validation split, or when that could not be checked (the report records it too).

    Returns:
        The terminal summary and the path of ``report.md``.
    """
    classifier = SpamClassifier.load(directory)
    test = load_labelled(data_path)
    scores = classifier.predict_proba(test.texts)
    model_eval = reporting.evaluate(test.labels, scores, classifier.threshold)
    # Messages the version trained or tuned on score better than new ones would: counted.
    parts = version_split(classifier.metadata)
    overlap = overlap_counts(test.texts, None if parts is None else seen_texts(parts))
    line = overlap_note(overlap, data_path)
    if line is not None:
        note(line)
    # A blended version carries the baseline, fitted on its training split, as its
    # lexical half; otherwise refit it from the recorded training data, if still there.
    baseline = classifier.lexical
    train = None if baseline is not None or parts is None else parts.train
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
            "seen in training or validation": _overlap_info(overlap),
            "baseline": "trained on the version's training split" if baseline is not None
            else "not shown: the version's training data is no longer at its recorded path"}
    files = reporting.write_report(
        out, title=f"spamguard model {classifier.version} on {data_path.name}",
        model=model_eval, baseline=baseline_eval, y_true=test.labels, model_scores=scores,
        baseline_scores=baseline_scores, info=info, extra={"overlap": overlap},
        data_file=data_path)
    return reporting.render_summary(model_eval, baseline_eval), files["markdown"]
