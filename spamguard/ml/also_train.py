"""Labelled messages that always join the training part, never validation or test.

``spamguard train --also-train FILE`` and retraining's ``SPAMGUARD_ALSO_TRAIN`` add such
files to the training data: examples of traffic the main data set lacks (the shipped
``data/present_day.tsv``: present-day notices, personal messages and scams, where the
2010-2012 SMS Spam Collection has none). They only ever train, so the validation split that
sets the threshold and the test split that the report scores stay those of the main data,
and a report with them compares with one without them on the same messages.

Each message's origin becomes ``also-train:<file name>:<line>``, so training can tell them
from the main data's (``<file name>:<line>``) and from reviews (``review:<id>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spamguard.config import SHIPPED_ALSO_TRAIN
from spamguard.errors import DataError
from spamguard.ml.data import LabelledData, data_hash, load_labelled, normalise

ALSO_TRAIN_ORIGIN = "also-train:"


def is_also_train(origin: str) -> bool:
    """Whether a message's origin says it came from an also-train file."""
    return origin.startswith(ALSO_TRAIN_ORIGIN)


@dataclass
class AlsoTrain:
    """The messages of the also-train files, and a record of each file."""

    data: LabelledData = field(default_factory=lambda: LabelledData([], np.zeros(0, np.int64)))
    files: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def hash(self) -> str:
        """Hex SHA-256 of the labelled texts (order-independent, as the main data's)."""
        return data_hash(self.data)


def load_also_train(paths: Sequence[str | Path], named_by: str | None = None) -> AlsoTrain:
    """Read each file as ``spamguard train --data`` reads one (TSV/CSV, label and text).

    Raises:
        DataError: a file cannot be read, naming the file, line and problem, and
            ``named_by`` (what named the files, e.g. SPAMGUARD_ALSO_TRAIN) when given.
    """
    texts: list[str] = []
    labels: list[np.ndarray] = []
    origins: list[str] = []
    files = []
    for path in paths:
        try:
            data = load_labelled(path)
        except DataError as exc:
            if named_by is None:
                raise
            hint = ("; the shipped examples are named present-day, and none means no file"
                    if not Path(path).exists() and Path(path).parent == Path(".") else "")
            raise DataError(f"{exc} (named by {named_by}{hint})") from exc
        texts += data.texts
        labels.append(data.labels)
        origins += [ALSO_TRAIN_ORIGIN + origin for origin in data.origins]
        resolved = Path(path).resolve()
        shipped = next((name for name, file in SHIPPED_ALSO_TRAIN.items()
                        if file.resolve() == resolved), None)
        files.append({"path": str(resolved), **({"shipped": shipped} if shipped else {}),
                      "hash": data_hash(data), **data.counts()})
    joined = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return AlsoTrain(LabelledData(texts, joined.astype(np.int64), origins), files)


def also_train_note(files: Sequence[dict[str, Any]], in_training: int | None = None) -> str:
    """"470 messages of present_day.tsv (220 spam)": what the also-train files give;
    with ``in_training``, how many of them the training part kept."""
    names = ", ".join(Path(f["path"]).name for f in files)
    total = sum(f["total"] for f in files)
    spam = sum(f["spam"] for f in files)
    note = f"{total} messages of {names} ({spam} spam)"
    if in_training is not None and in_training != total:  # the others repeat a text
        note = f"{in_training} of the {note}; the others are copies of texts " \
               "already in the data"
    return note


def with_also_train(data: LabelledData, also: AlsoTrain) -> LabelledData:
    """``data`` followed by the also-train messages whose text it does not hold: a text in
    both is the main data's, label too, and is split with it. (Left in, the copy's label
    would win deduplication when spam, and relabel a validation or test message.)"""
    if not len(also):
        return data
    have = {normalise(text) for text in data.texts}
    extra = also.data.subset(i for i, text in enumerate(also.data.texts)
                             if normalise(text) not in have)
    origins = data.origins or [f"data:{i}" for i in range(len(data))]
    return LabelledData(data.texts + extra.texts,
                        np.concatenate([data.labels, extra.labels]),
                        origins + extra.origins)


def recorded_paths(metadata: dict[str, Any] | None) -> list[Path]:
    """The also-train files a version was trained with (model.json), in their order.

    A shipped file (``present-day``) is this install's copy, not the recorded path: that
    one is inside the install that trained the version (a venv's site-packages, a source
    checkout), gone after a reinstall elsewhere or a restore on another machine, where
    retraining would fail every night.
    """
    record = ((metadata or {}).get("data") or {}).get("also_train") or {}
    return [SHIPPED_ALSO_TRAIN[f["shipped"]] if f.get("shipped") in SHIPPED_ALSO_TRAIN
            else Path(f["path"]) for f in record.get("files", []) if f.get("path")]


def retraining_paths(named: list[Path] | None,
                     active_metadata: dict[str, Any] | None) -> list[Path]:
    """The also-train files a retraining run uses: those SPAMGUARD_ALSO_TRAIN names
    (``named``; [] for ``none``), or when it names none, those the active version was
    trained with, as retraining keeps the active version's other settings.

    Raises:
        DataError: a file the active version was trained with is gone.
    """
    if named is not None:
        return named
    paths = recorded_paths(active_metadata)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"the active model was trained with --also-train {missing[0]}, which "
                        "is gone; put it back, or set SPAMGUARD_ALSO_TRAIN to the files to "
                        "use (none for none)")
    return paths
