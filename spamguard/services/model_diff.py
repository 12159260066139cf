"""What changed between the active model and a candidate, on the fixed evaluation set.

Writes ``changes.json`` and ``changes.md`` into the candidate's version directory: the
headline metrics of both, how many evaluation messages flip label, and examples of each
kind of flip. SMS text in ``changes.md`` is HTML-escaped, so a viewer that renders the
Markdown cannot be made to run a message's markup.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from spamguard.ml.report import evaluate

CHANGES_JSON = "changes.json"
CHANGES_MD = "changes.md"
METRICS = ("mcc", "spam_f1", "spam_precision", "spam_recall", "ham_fpr", "accuracy", "roc_auc")
# (name, old prediction, new prediction): "ham_to_spam" means the candidate now says spam.
FLIP_KINDS = (("ham_to_spam", 0, 1), ("spam_to_ham", 1, 0))
EXAMPLES_PER_KIND = 5


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Keep the metrics a comparison shows."""
    return {name: evaluation.get(name) for name in (*METRICS, "n", "n_spam", "threshold")}


def flips(texts: list[str], y_true: np.ndarray, old_scores: np.ndarray, old_threshold: float,
          new_scores: np.ndarray, new_threshold: float) -> dict[str, Any]:
    """Count the messages whose predicted label differs, with examples of each kind.

    Returns:
        ``{"total", "fixed", "broken", "<kind>": {"count", "fixed", "broken", "examples"}}``;
        a flip is *fixed* when the candidate's label is now the true one, *broken* otherwise.
    """
    old = (old_scores >= old_threshold).astype(int)
    new = (new_scores >= new_threshold).astype(int)
    result: dict[str, Any] = {"total": int((old != new).sum())}
    for name, before, after in FLIP_KINDS:
        index = np.flatnonzero((old == before) & (new == after))
        fixed = index[y_true[index] == after]
        # Show the most confident changes first: they say most about what the model learnt.
        ranked = index[np.argsort(-np.abs(new_scores[index] - old_scores[index]), kind="stable")]
        result[name] = {
            "count": int(len(index)), "fixed": int(len(fixed)),
            "broken": int(len(index) - len(fixed)),
            "examples": [{"text": texts[i], "true_label": "spam" if y_true[i] else "ham",
                          "old_probability": round(float(old_scores[i]), 4),
                          "new_probability": round(float(new_scores[i]), 4)}
                         for i in ranked[:EXAMPLES_PER_KIND]],
        }
    result["fixed"] = sum(result[name]["fixed"] for name, _, _ in FLIP_KINDS)
    result["broken"] = sum(result[name]["broken"] for name, _, _ in FLIP_KINDS)
    return result


def compare(*, texts: list[str], y_true: np.ndarray, new_scores: np.ndarray,
            new_threshold: float, old_scores: np.ndarray | None = None,
            old_threshold: float | None = None) -> dict[str, Any]:
    """Evaluate the candidate (and the active model, when given) on the same messages.

    Returns:
        ``{"candidate": metrics, "active": metrics | None, "flips": ... | None}``.
    """
    y_true = np.asarray(y_true, dtype=int)
    changes: dict[str, Any] = {
        "eval_messages": int(len(y_true)),
        "candidate": headline(evaluate(y_true, new_scores, new_threshold)),
        "active": None, "flips": None,
    }
    if old_scores is not None and old_threshold is not None:
        changes["active"] = headline(evaluate(y_true, old_scores, old_threshold))
        changes["flips"] = flips(texts, y_true, old_scores, old_threshold, new_scores,
                                 new_threshold)
    return changes


def _cell(value: Any) -> str:
    """Format a metric for the Markdown table."""
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


_MARKDOWN = str.maketrans({c: f"\\{c}" for c in "\\`*_[]()!~"})  # <, > and & by html


def _escape(text: str) -> str:
    """Escape an SMS for a Markdown table cell: HTML, pipes and newlines, and Markdown's
    own syntax, so a message cannot become a link or an image (which a viewer would load)
    when ``changes.md`` is rendered."""
    return (html.escape(text.translate(_MARKDOWN), quote=False).replace("|", "&#124;")
            .replace("\r", " ").replace("\n", " "))


def render_markdown(changes: dict[str, Any]) -> str:
    """Render ``changes`` (plus its ``decision`` and ``versions``) as ``changes.md``."""
    versions, decision = changes.get("versions", {}), changes.get("decision", {})
    lines = [f"# Changes: {versions.get('active') or 'no active model'} -> "
             f"{versions.get('candidate')}", ""]
    if decision:
        outcome = decision.get("outcome")
        would, held = "promote" if decision.get("passed") else "reject", ""
        if decision.get("held"):  # as the run's own line says it; the hold's reason escaped
            outcome, held = f"held, would {would}", (
                f" (automatic promotion {_escape(decision['held'])})")
        elif outcome == "dry_run":  # as the run's own line says it: what a real run would do
            outcome = f"dry run, would {would}"
        lines += [f"**Decision: {outcome}**{held} - {decision.get('reason', '')}", ""]
    if changes.get("evalset"):
        lines += [changes["evalset"], ""]
    lines += ["| metric | active | candidate |", "|---|---|---|"]
    active = changes.get("active") or {}
    # Thresholds differ per version, so a flip can happen while p(spam) barely moves.
    lines += [f"| {name} | {_cell(active.get(name))} | {_cell(changes['candidate'].get(name))} |"
              for name in (*METRICS, "threshold")]
    flipped = changes.get("flips")
    if not flipped:
        return "\n".join([*lines, "", "No active model to compare with.", ""])
    lines += ["", f"## Flips: {flipped['total']} of {changes['eval_messages']} messages change "
                  f"label ({flipped['fixed']} fixed, {flipped['broken']} broken)", ""]
    for name, _, _ in FLIP_KINDS:
        kind = flipped[name]
        lines += [f"### {name.replace('_', ' ')}: {kind['count']} ({kind['fixed']} fixed, "
                  f"{kind['broken']} broken)", ""]
        if kind["examples"]:
            lines += ["| true label | old p(spam) | new p(spam) | message |", "|---|---|---|---|"]
            lines += [f"| {e['true_label']} | {e['old_probability']:.3f} | "
                      f"{e['new_probability']:.3f} | {_escape(e['text'])} |"
                      for e in kind["examples"]]
            lines.append("")
    if changes.get("traffic"):
        from spamguard.services.traffic_diff import render_markdown as traffic_lines

        lines += traffic_lines(changes["traffic"])
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_changes(directory: Path, changes: dict[str, Any]) -> Path:
    """Write ``changes.json`` and ``changes.md`` into ``directory``; return the .md path."""
    directory = Path(directory)
    _write_atomic(directory / CHANGES_JSON, json.dumps(changes, indent=2, ensure_ascii=False))
    _write_atomic(directory / CHANGES_MD, render_markdown(changes))
    return directory / CHANGES_MD


def flip_counts(changes: dict[str, Any]) -> dict[str, int] | None:
    """Summarise the flips for ``training_runs.counts`` (no message text)."""
    flipped = changes.get("flips")
    if not flipped:
        return None
    return {"total": flipped["total"], "fixed": flipped["fixed"], "broken": flipped["broken"],
            **{name: flipped[name]["count"] for name, _, _ in FLIP_KINDS}}


def load_changes(directory: Path | str) -> dict[str, Any] | None:
    """Read a version's ``changes.json`` (None when it has none, e.g. trained by hand)."""
    path = Path(directory) / CHANGES_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
