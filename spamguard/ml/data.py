"""Load, validate, normalise, deduplicate and split labelled SMS data.

One reader serves training (labelled files) and classification (unlabelled input), so a
message is read the same way wherever it comes from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spamguard.errors import DataError

LABELS = {"ham": 0, "spam": 1, "0": 0, "1": 1}
LABEL_NAMES = ("ham", "spam")
TEXT_HEADERS = {"text", "message", "body", "sms"}
LABEL_HEADERS = {"label", "class", "category", "is_spam"}

_PUNCT = re.compile(r"[^\w\s]+")
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


@dataclass
class LabelledData:
    """Texts with integer labels (0 ham, 1 spam) and where each came from."""

    texts: list[str]
    labels: np.ndarray
    origins: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index) -> LabelledData:
        """Return the rows at ``index`` (a sequence of positions)."""
        index = list(index)
        origins = [self.origins[i] for i in index] if self.origins else []
        return LabelledData([self.texts[i] for i in index], self.labels[index], origins)

    def counts(self) -> dict[str, int]:
        """Count messages by label."""
        spam = int(self.labels.sum())
        return {"total": len(self), "ham": len(self) - spam, "spam": spam}


def normalise(text: str) -> str:
    """Return the key two messages share when they are the same text in different dress.

    Case, punctuation, spacing and the digits of a number (claim codes, prices, phone
    numbers) are ignored, so one campaign's copies count as one message.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _DIGITS.sub("0", _PUNCT.sub(" ", text))
    return _SPACE.sub(" ", text).strip()


def text_hash(text: str) -> str:
    """Hex SHA-256 of the normalised text."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {exc.start}); "
                        "save the file as UTF-8") from None
    return text


def _delimiter(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    first = text.split("\n", 1)[0]
    return "\t" if "\t" in first else ","


def _read_rows(path: Path, source: bytes | None = None) -> tuple[str, list[list[str]]]:
    """Decode ``path`` (or ``source``) and split it into rows."""
    if source is None:
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    text = _decode(path, source)
    delimiter = _delimiter(path, text)
    # Quote handling only for CSV: SMS bodies in TSV routinely start with a bare quote.
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    return delimiter, list(reader)


def _find_columns(path: Path, header: list[str]) -> tuple[int, int] | None:
    names = [h.strip().lower() for h in header]
    label = next((i for i, n in enumerate(names) if n in LABEL_HEADERS), None)
    text = next((i for i, n in enumerate(names) if n in TEXT_HEADERS), None)
    if label is None and text is None:
        return None
    if label is None or text is None:
        missing = "label" if label is None else "text"
        raise DataError(f"{path}:1: header has no {missing} column (found: {', '.join(names)})")
    return label, text


def load_labelled(path: str | Path, source: bytes | None = None) -> LabelledData:
    """Read a TSV/CSV of labelled messages, with or without a header.

    Without a header the columns are ``label`` then ``text``. Labels are ``ham``/``spam``
    or ``0``/``1``.

    Raises:
        DataError: naming the file, line and problem.
    """
    path = Path(path)
    _, rows = _read_rows(path, source)
    columns = _find_columns(path, rows[0]) if rows else None
    start = 2 if columns else 1
    label_col, text_col = columns or (0, 1)
    body = rows[1:] if columns else rows
    texts, labels, origins = [], [], []
    for lineno, row in enumerate(body, start=start):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) <= max(label_col, text_col):
            raise DataError(f"{path}:{lineno}: expected a label and a text column, "
                            f"found {len(row)} column(s)")
        label = row[label_col].strip().lower()
        if label not in LABELS:
            raise DataError(f"{path}:{lineno}: unknown label {row[label_col]!r} "
                            "(expected ham/spam or 0/1)")
        text = row[text_col]
        if len(row) > 2 and not columns:
            text = "\t".join(row[text_col:])  # an unquoted tab inside the message
        if not text.strip():
            raise DataError(f"{path}:{lineno}: empty text")
        texts.append(text.strip())
        labels.append(LABELS[label])
        origins.append(f"{path.name}:{lineno}")
    if not texts:
        raise DataError(f"{path}: no messages found")
    return LabelledData(texts, np.asarray(labels, dtype=np.int64), origins)


def load_texts(path: str | Path, source: bytes | None = None) -> list[str]:
    """Read messages to classify: plain text (one a line) or CSV/TSV with a ``text`` header.

    Raises:
        DataError: naming the file, line and problem.
    """
    path = Path(path)
    raw = path.read_bytes() if source is None else source
    text = _decode(path, raw)
    first = text.split("\n", 1)[0]
    is_table = path.suffix.lower() in {".csv", ".tsv"} or (
        "\t" in first or "," in first) and "text" in [
        c.strip().lower() for c in re.split(r"[\t,]", first)]
    if not is_table:
        return [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    _, rows = _read_rows(path, raw)
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "text" not in header:
        raise DataError(f"{path}:1: a CSV/TSV input needs a header with a 'text' column")
    col = header.index("text")
    texts = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) <= col:
            raise DataError(f"{path}:{lineno}: row has no text column")
        texts.append(row[col])
    return texts


@dataclass
class DedupeStats:
    """What deduplication did, for the report."""

    input: int
    unique: int
    removed: int
    label_conflicts: int


def dedupe(data: LabelledData) -> tuple[LabelledData, DedupeStats]:
    """Keep one message per normalised text; on conflicting labels spam wins.

    Returns:
        The deduplicated data and the counts behind it.
    """
    first: dict[str, int] = {}
    labels = data.labels.copy()
    conflicts = 0
    for i, text in enumerate(data.texts):
        key = normalise(text)
        if key not in first:
            first[key] = i
        elif labels[first[key]] != labels[i]:
            conflicts += 1
            labels[first[key]] = max(labels[first[key]], labels[i])
    index = sorted(first.values())
    out = LabelledData([data.texts[i] for i in index], labels[index],
                       [data.origins[i] for i in index] if data.origins else [])
    return out, DedupeStats(len(data), len(out), len(data) - len(out), conflicts)


@dataclass
class Split:
    """Train, validation and test parts of one deduplicated data set."""

    train: LabelledData
    val: LabelledData
    test: LabelledData


MIN_PER_CLASS = 5


def check_trainable(data: LabelledData, source: str = "data") -> None:
    """Refuse data with too few messages of a class to split and train on."""
    counts = data.counts()
    for name in LABEL_NAMES:
        if counts[name] < MIN_PER_CLASS:
            raise DataError(f"{source}: only {counts[name]} distinct {name} message(s) after "
                            f"removing duplicates; need at least {MIN_PER_CLASS} of each class")


def split(data: LabelledData, *, seed: int = 2018, train_size: float = 0.7) -> Split:
    """Stratified split: ``train_size`` for training, the rest halved into val and test.

    Call on deduplicated data, so no normalised text lands on both sides.
    """
    check_trainable(data)
    index = np.arange(len(data))
    # Imported here: the web service uses this module (text_hash) and needs no scikit-learn.
    from sklearn.model_selection import train_test_split

    train_idx, rest_idx = train_test_split(
        index, train_size=train_size, random_state=seed, stratify=data.labels)
    val_idx, test_idx = train_test_split(
        rest_idx, test_size=0.5, random_state=seed, stratify=data.labels[rest_idx])
    return Split(data.subset(train_idx), data.subset(val_idx), data.subset(test_idx))


def data_hash(data: LabelledData) -> str:
    """Hex SHA-256 of the labelled texts, order-independent."""
    digest = hashlib.sha256()
    for line in sorted(f"{label}\t{text}" for text, label in zip(data.texts, data.labels,
                                                                    strict=True)):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()
