"""Pick the decision threshold on validation data under a ham false-positive budget."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import matthews_corrcoef


def choose_threshold(labels: np.ndarray, scores: np.ndarray, max_ham_fpr: float
                     ) -> tuple[float, dict[str, Any]]:
    """Return the threshold with the best MCC among those that block at most
    ``max_ham_fpr`` of ham, and the numbers behind the choice.

    Blocking a customer's real message costs more than letting one spam through, so the
    false-positive budget is a constraint and MCC decides among what fits in it.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    ham = labels == 0
    candidates = np.unique(np.concatenate([scores, [0.5]]))
    best: tuple[float, float, float] | None = None
    for threshold in candidates:
        predicted = scores >= threshold
        fpr = float(predicted[ham].mean()) if ham.any() else 0.0
        if fpr > max_ham_fpr:
            continue
        mcc = float(matthews_corrcoef(labels, predicted.astype(int)))
        if best is None or mcc > best[1]:
            best = (float(threshold), mcc, fpr)
    if best is None:  # every candidate over budget: block nothing below the top score
        best = (float(np.nextafter(scores.max(), 1.0)), 0.0, 0.0)
    threshold, mcc, fpr = best
    return threshold, {"rule": "max validation MCC with ham FPR <= budget",
                       "max_ham_fpr": max_ham_fpr, "val_mcc": mcc, "val_ham_fpr": fpr}
