"""Evaluation reports: metrics, a terminal summary, and report.json/.md plus two plots."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics

TARGET_NAMES = ["ham", "spam"]
MODEL_NAME = "spamguard"
BASELINE_NAME = "TF-IDF + SVM"
Result = Mapping[str, Any]  # what evaluate() returns
REPORT_FILES = {
    "json": "report.json",
    "markdown": "report.md",
    "pr_curve": "pr_curve.png",
    "confusion_matrix": "confusion_matrix.png",
}


def _pct(value: float | None) -> str:
    """Format a share as a percentage."""
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _dec(value: float | None) -> str:
    """Format a score as a 4-decimal number (3 would round 0.9996 up to a perfect 1.000)."""
    return "n/a" if value is None else f"{value:.4f}"


# (label, key in the evaluate() dict, formatter): shared by the Markdown and terminal tables.
HEADLINE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("spam precision", "spam_precision", _pct),
    ("spam recall", "spam_recall", _pct),
    ("spam F1", "spam_f1", _pct),
    ("accuracy", "accuracy", _pct),
    ("MCC", "mcc", _dec),
    ("ROC AUC", "roc_auc", _dec),
    ("ham FPR", "ham_fpr", _pct),
    ("threshold", "threshold", lambda v: f"{v:g}"),
]


def _json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and non-finite floats into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _ranking_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """Compute the threshold-free metrics, undefined (None) unless both classes occur."""
    if len(np.unique(y)) < 2:
        return {"roc_auc": None, "average_precision": None}
    auc, ap = metrics.roc_auc_score(y, scores), metrics.average_precision_score(y, scores)
    return {"roc_auc": auc, "average_precision": ap}


def evaluate(
    y_true: Sequence[int] | np.ndarray,
    spam_scores: Sequence[float] | np.ndarray,
    threshold: float,
    *,
    probabilities: bool = True,
) -> dict[str, Any]:
    """Score spam predictions (score >= threshold means spam) against true labels.

    Args:
        y_true: True labels, 0 = ham, 1 = spam.
        spam_scores: One score per message, higher = more spam.
        threshold: Decision threshold on the scores.
        probabilities: Whether the scores are probabilities (checked to lie in [0, 1]);
            pass False for unbounded scores such as an SVM decision function.

    Returns:
        A JSON-safe dict of metrics; ``roc_auc`` and ``average_precision`` are None when
        ``y_true`` holds one class only, ``ham_fpr`` is None when it holds no ham.
    """
    y = np.asarray(y_true, dtype=int)
    scores = np.asarray(spam_scores, dtype=float)
    if y.shape != scores.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"need equal-length 1-d labels and scores, got {y.shape}, {scores.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (ham) or 1 (spam)")
    # The tolerance admits float32 softmax output that rounds a hair past 0 or 1.
    if probabilities and (scores.min() < -1e-6 or scores.max() > 1 + 1e-6):
        raise ValueError("probabilities=True but scores fall outside [0, 1]")
    pred = (scores >= threshold).astype(int)
    report_args = {"labels": [0, 1], "target_names": TARGET_NAMES, "zero_division": 0}
    report = metrics.classification_report(y, pred, output_dict=True, **report_args)
    text = metrics.classification_report(y, pred, digits=3, **report_args)
    (tn, fp), (fn, tp) = metrics.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    return _json_safe(
        {
            "classification_report": report,
            "classification_report_text": text,
            "accuracy": metrics.accuracy_score(y, pred),
            # Undefined, not 0, where a class is missing: "n/a" in reports, not "0.00%".
            "mcc": metrics.matthews_corrcoef(y, pred) if 0 < y.sum() < y.size else None,
            **_ranking_metrics(y, scores),
            "ham_fpr": fp / (fp + tn) if fp + tn else None,
            "spam_precision": report["spam"]["precision"] if tp + fp else None,
            "spam_recall": report["spam"]["recall"] if tp + fn else None,
            "spam_f1": report["spam"]["f1-score"] if tp + fn else None,
            "confusion_matrix": {"labels": TARGET_NAMES, "matrix": [[tn, fp], [fn, tp]]},
            "n": int(y.size),
            "n_spam": int(y.sum()),
            "n_ham": int(y.size - y.sum()),
            "threshold": float(threshold),
            "scores": "probability" if probabilities else "decision_function",
        }
    )


def _headline_rows(models: Sequence[Result]) -> list[list[str]]:
    """Build the headline rows (label, then one cell per model)."""
    rows = [[label, *(fmt(m[key]) for m in models)] for label, key, fmt in HEADLINE]
    rows.append(["messages (spam)", *(f"{m['n']} ({m['n_spam']})" for m in models)])
    return rows


def named_results(model: Result, baseline: Result | None,
                  components: Mapping[str, Result] | None = None, *,
                  baseline_name: str = BASELINE_NAME) -> list[tuple[str, Result]]:
    """Pair each present result with its display name: the model, its components (such as
    the BERT head alone), then the baseline (reports and the admin model page)."""
    pairs = [(MODEL_NAME, model), *(components or {}).items()]
    if baseline is not None:
        pairs.append((baseline_name, baseline))
    return pairs


def _text_row(row: Sequence[str], widths: Sequence[int]) -> str:
    """Pad a row: the label left-aligned, the numbers right-aligned."""
    cells = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
    return "  ".join([row[0].ljust(widths[0]), *cells[1:]])


def render_summary(model: Result, baseline: Result | None = None,
                   components: Mapping[str, Result] | None = None) -> str:
    """Render a short plain-text comparison table for the terminal.

    Args:
        model: Result of ``evaluate`` for the spamguard model.
        baseline: Result of ``evaluate`` for the TF-IDF + SVM baseline, if any.
        components: Results of parts of the model on their own, by display name.

    Returns:
        The table as a multi-line string without a trailing newline.
    """
    named = named_results(model, baseline, components)
    rows = [["metric", *(name for name, _ in named)]]
    rows += _headline_rows([m for _, m in named])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [_text_row(row, widths) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    """Render a value as one Markdown table cell."""
    nested = isinstance(value, Mapping | list | tuple)
    text = json.dumps(_json_safe(value)) if nested else str(_json_safe(value))
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Render rows (the first is the header) as Markdown table lines."""
    lines = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return lines


def measured_on(model: Result, data_file: str | Path | None = None,
                test_part: str = "test split") -> str:
    """What the numbers are measured on, for headings: "test split: 673 messages, 79
    spam" (``test_part``: a retraining candidate's is the evaluation set), or the file's
    name (``spamguard report --data``)."""
    where = test_part if data_file is None else Path(data_file).name
    return f"{where}: {model['n']} messages, {model['n_spam']} spam"


def _markdown(title: str, named: Sequence[tuple[str, Result]], info: Mapping[str, Any],
              measured: str) -> str:
    """Build the text of report.md."""
    lines = [f"# {title}", ""]
    if info:
        lines += ["## Data and run", "", *_md_table([["key", "value"], *info.items()]), ""]
    lines += [f"## Headline ({measured})", ""]
    lines += _md_table(
        [["metric", *(name for name, _ in named)], *_headline_rows([m for _, m in named])]
    )
    lines += ["", f"![Precision-recall curves]({REPORT_FILES['pr_curve']})", ""]
    lines += ["## Classification reports", ""]
    for name, m in named:
        lines += [f"### {name} (threshold {m['threshold']:g})", "", "```text"]
        lines += [m["classification_report_text"].rstrip(), "```", ""]
    lines += ["## Confusion matrices", ""]
    for name, m in named:
        cm = m["confusion_matrix"]["matrix"]
        rows = [
            ["", "predicted ham", "predicted spam"],
            ["true ham", *cm[0]],
            ["true spam", *cm[1]],
        ]
        lines += [f"### {name}", "", *_md_table(rows), ""]
    lines += [f"![Confusion matrices]({REPORT_FILES['confusion_matrix']})", ""]
    return "\n".join(lines)


def _save(fig: Figure, path: Path) -> None:
    """Render a figure to PNG with the Agg canvas."""
    # A bare Figure never joins pyplot's registry: nothing global to close, GC frees it.
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def _plot_pr(
    path: Path,
    y_true: np.ndarray,
    curves: Sequence[tuple[str, np.ndarray, Result]],
) -> None:
    """Plot precision-recall curves on one axes, each operating point marked."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for (name, scores, result), marker in zip(curves, ("o", "^", "s"), strict=False):
        if result["n_spam"] and result["n_ham"]:
            precision, recall, _ = metrics.precision_recall_curve(y_true, scores)
            ap = result["average_precision"]
            (line,) = ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.4f})")
            if result["spam_precision"] is None:  # nothing predicted spam: no such point
                continue
            point = (result["spam_recall"], result["spam_precision"])
            label = f"{name} at threshold {result['threshold']:g}"
            ax.plot(*point, marker, ms=8, color=line.get_color(), label=label)
    ax.set(xlabel="spam recall", ylabel="spam precision", title="Precision-recall (spam)")
    ax.set(xlim=(0, 1.01), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
    _save(fig, path)


def _plot_confusion(path: Path, named: Sequence[tuple[str, Result]]) -> None:
    """Plot the confusion matrices side by side."""
    fig = Figure(figsize=(4.2 * len(named), 4), layout="constrained")
    axes = fig.subplots(1, len(named), squeeze=False)[0]
    for ax, (name, result) in zip(axes, named, strict=True):
        matrix = np.asarray(result["confusion_matrix"]["matrix"])
        display = metrics.ConfusionMatrixDisplay(matrix, display_labels=TARGET_NAMES)
        display.plot(ax=ax, colorbar=False, values_format="d", cmap="Blues")
        ax.set_title(f"{name} (threshold {result['threshold']:g})")
    _save(fig, path)


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    model: Result,
    baseline: Result | None = None,
    y_true: Sequence[int] | np.ndarray,
    model_scores: Sequence[float] | np.ndarray,
    baseline_scores: Sequence[float] | np.ndarray | None = None,
    info: Mapping[str, Any] | None = None,
    components: Sequence[tuple[str, Result, Sequence[float] | np.ndarray]] = (),
    extra: Mapping[str, Any] | None = None,
    data_file: str | Path | None = None,
    test_part: str = "test split",
) -> dict[str, Path]:
    """Write report.json, report.md, pr_curve.png and confusion_matrix.png.

    Args:
        out_dir: Directory to write into (created if missing).
        title: Report title.
        model: Result of ``evaluate`` for the spamguard model.
        baseline: Result of ``evaluate`` for the baseline, if any.
        y_true: True labels the results were computed on (for the curves).
        model_scores: The model's spam scores on ``y_true``.
        baseline_scores: The baseline's scores; needed when ``baseline`` is given.
        info: Key/value facts about the run (data counts, duplicates removed, ...).
        components: ``(name, result, scores)`` of parts of the model on their own (the
            BERT head alone in a blended model), shown between the model and baseline.
        extra: Further top-level entries of report.json (such as ``overlap``).
        data_file: The labelled file the results were measured on, when not the
            version's own test split (``spamguard report --data``). report.json records
            ``split`` ("test", or None with a file) and ``data_file``; report.md's headline
            says which, with the message and spam counts.
        test_part: What the test part is called there ("test split"; retraining gives its
            candidates the evaluation set as their test part), and report.json's ``split``
            ("test" for the test split, else these words).

    Returns:
        Paths by kind: ``json``, ``markdown``, ``pr_curve``, ``confusion_matrix``.
    """
    if (baseline is None) != (baseline_scores is None):
        raise ValueError("pass baseline and baseline_scores together")
    y = np.asarray(y_true, dtype=int)
    named = named_results(model, baseline, {name: result for name, result, _ in components})
    all_scores = [model_scores, *(scores for _, _, scores in components)]
    if baseline_scores is not None:
        all_scores.append(baseline_scores)
    curves = [
        (n, np.asarray(s, dtype=float), m) for (n, m), s in zip(named, all_scores, strict=True)
    ]
    if any(scores.shape != y.shape for _, scores, _ in curves):
        raise ValueError("y_true and every score array must have the same length")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in REPORT_FILES.items()}
    info = dict(info or {})
    split = "test" if test_part == "test split" else test_part
    payload = {"title": title, "split": split if data_file is None else None,
               "data_file": None if data_file is None else str(data_file),
               "info": info, "model": model, "baseline": baseline,
               "components": {name: result for name, result, _ in components},
               **(extra or {})}
    payload["files"] = REPORT_FILES
    text = json.dumps(_json_safe(payload), indent=2, allow_nan=False)
    paths["json"].write_text(text + "\n", encoding="utf-8")
    markdown = _markdown(title, named, info, measured_on(model, data_file, test_part))
    paths["markdown"].write_text(markdown, encoding="utf-8")
    _plot_pr(paths["pr_curve"], y, curves)
    _plot_confusion(paths["confusion_matrix"], named)
    return paths
