"""Load, validate, normalise, deduplicate and split labelled SMS data.

One reader serves training (labelled files) and classification (unlabelled input), so a
message is read the same way wherever it comes from.
"""

from __future__ import annotations

import csv
import hashlib
import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spamguard.errors import DataError
from spamguard.ml.table_files import decode_utf8, guess_delimiter, read_bytes, read_rows

LABELS = {"ham": 0, "spam": 1, "0": 0, "1": 1}
LABEL_NAMES = ("ham", "spam")
# Header names of the text and label columns, most preferred first: a file with both a
# "body" and a "text" column is read from "text", wherever each stands.
TEXT_HEADERS = ("text", "message", "body", "sms")
LABEL_HEADERS = ("label", "class", "category", "is_spam")

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
    numbers) are ignored, so one campaign's copies count as one message. So are HTML
    entities (the shipped data writes ``&lt;#&gt;`` where a live SMS has ``<#>``) and
    invisible format characters (zero-width spaces, soft hyphens: a spammer's way to make
    a known text look new, and ones the tokenizer drops too).
    """
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _DIGITS.sub("0", _PUNCT.sub(" ", text))
    return _SPACE.sub(" ", text).strip()


def text_hash(text: str) -> str:
    """Hex SHA-256 of the normalised text."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


# The text hash of a message with no word or number in it (only emoji or punctuation):
# "😂" and "??" share it without being the same message, so nothing groups by it.
WORDLESS_HASH = text_hash("")


def _row_text(path: Path, lineno: int, row: list[str], col: int, width: int,
              delimiter: str) -> str:
    """The text cell of ``row``; a row with more cells than ``width`` had the delimiter
    inside an unquoted message, which is put back when the text is the last column."""
    while len(row) > width and not row[-1].strip():
        row = row[:-1]  # a trailing delimiter, e.g. "1,hi,"
    if len(row) <= width:
        return row[col]
    if col == width - 1:
        return delimiter.join(row[col:])
    raise DataError(f"{path}:{lineno}: {len(row)} fields where {width} were expected; "
                    "quote messages that contain the delimiter")


def _first_named(names: list[str], wanted: tuple[str, ...]) -> int | None:
    """The position in ``names`` (lower-cased) of the first of ``wanted`` it has (the
    leftmost column of that name), or None."""
    return next((names.index(w) for w in wanted if w in names), None)


def _header_names(cells: list[str]) -> list[str]:
    """A first row's cells as names to match: stripped, lower-cased, and without their
    quotes when every name is quoted (``"label"``, ``"text"``: in a TSV whose quotes are
    kept, as its messages hold bare ones, or a first line read before any unquoting)."""
    names = [cell.strip() for cell in cells]
    if any(names) and all(len(n) > 1 and n[0] == n[-1] == '"' for n in names if n):
        names = [n[1:-1] for n in names]
    return [n.lower() for n in names]


def _find_columns(path: Path, header: list[str]) -> tuple[int, int] | None:
    names = _header_names(header)
    label = _first_named(names, LABEL_HEADERS)
    text = _first_named(names, TEXT_HEADERS)
    if label is None and text is None:
        return None
    if label is None or text is None:
        missing = "label" if label is None else "text"
        accepted = sorted(LABEL_HEADERS if label is None else TEXT_HEADERS)
        raise DataError(f"{path}:1: header has no {missing} column (found: {', '.join(names)}; "
                        f"name it {' or '.join(accepted)})")
    return label, text


def _refuse_swallowed_rows(path: Path, lineno: int, text: str, label_col: int, width: int,
                           delimiter: str) -> None:
    """Refuse a quoted message whose inner lines look like labelled rows of their own.

    ``ham,"Sorry I'll call later`` closed by a later ``ham,My TV is 55"`` is valid CSV:
    one message, with the first row's label, made of the rows between (a review found the
    strict-reading check misses it). A real message rarely has a line that starts like a
    row, with a label where the label column is."""
    lines = text.replace("\r\n", "\n").split("\n")
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split(delimiter)
        if len(cells) >= width and cells[label_col].strip().lower() in LABELS:
            raise DataError(
                f"{path}:{lineno}: the quoted message in this row runs over {len(lines)} "
                f"lines, and its line {number} looks like a row of its own ({line[:40]!r}): "
                "probably a quote left open; close it, or double the quotes inside a quoted "
                "message")


def load_labelled(path: str | Path, source: bytes | None = None) -> LabelledData:
    """Read a TSV/CSV of labelled messages, with or without a header.

    Without a header the columns are ``label`` then ``text``. Labels are ``ham``/``spam``
    or ``0``/``1``.

    Raises:
        DataError: naming the file, line and problem.
    """
    path = Path(path)
    delimiter, rows, lines = read_rows(path, source)
    columns = _find_columns(path, rows[0]) if rows else None
    width = len(rows[0]) if columns else 2
    label_col, text_col = columns or (0, 1)
    skip = 1 if columns else 0
    texts, labels, origins = [], [], []
    for lineno, row in zip(lines[skip:], rows[skip:], strict=True):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) <= max(label_col, text_col):
            raise DataError(f"{path}:{lineno}: expected a label and a text column, "
                            f"found {len(row)} column(s)")
        text = _row_text(path, lineno, row, text_col, width, delimiter)
        if "\n" in text and delimiter == ",":
            _refuse_swallowed_rows(path, lineno, text, label_col, max(width, 2), delimiter)
        label = row[label_col].strip().lower()
        if label not in LABELS:
            unlabelled = ("; a file from `spamguard export --all` has rows nobody labelled: "
                          "`export` without --all writes only labelled ones" if not label
                          else "")
            raise DataError(f"{path}:{lineno}: unknown label {row[label_col]!r} "
                            f"(expected ham/spam or 0/1{unlabelled})")
        if not text.strip():
            raise DataError(f"{path}:{lineno}: empty text")
        texts.append(text.strip())
        labels.append(LABELS[label])
        origins.append(f"{path.name}:{lineno}")
    if not texts:
        raise DataError(f"{path}: no messages found")
    return LabelledData(texts, np.asarray(labels, dtype=np.int64), origins)


_HEADER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,39}")
INPUT_FORMATS = ("auto", "text", "csv", "tsv")


def _looks_like_header(path: Path, text: str) -> bool:
    """Whether an input without a .csv/.tsv suffix starts with a table header: cells split
    by tab or comma, one of them a text column's name (``text``, ``message``, ``body``,
    ``sms``, as training reads) and each other one empty (pandas' index column) or a short
    name without spaces. A plain SMS such as "Text, me when you are free" is
    not one; a header with spaces in a name needs ``--format csv`` (or ``tsv``)."""
    first_line = text.split("\n", 1)[0].rstrip("\r")
    delimiter = guess_delimiter(path, text)
    cells = first_line.split(delimiter)
    if delimiter == "," and '"' in first_line:  # as the table is read: "label","text"
        try:
            cells = next(csv.reader([first_line], strict=True), [])
        except csv.Error:  # a quote left open or a stray one (Sure,"text me): no header
            return False
    names = _header_names(cells)
    return (len(names) > 1 and any(n in TEXT_HEADERS for n in names)
            and all(not n or _HEADER_NAME.fullmatch(n) for n in names))


def load_texts(path: str | Path, source: bytes | None = None, *,
               input_format: str = "auto", notice: Callable[[str], None] | None = None
               ) -> list[str]:
    """Read messages to classify: plain text (one a line) or CSV/TSV with a ``text`` header.

    Args:
        path: the file (or a name for ``source``, such as ``<stdin>``).
        source: the bytes, when they do not come from ``path``.
        input_format: ``auto`` (a .csv/.tsv suffix, or a first line that looks like a
            header with a text column, means a table), ``text``, ``csv`` or ``tsv``.
        notice: called with one line when ``auto`` took the input for a table because of
            its first line (a first message such as "Sure,text" looks like a header).

    Raises:
        DataError: naming the file, line and problem.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}")
    path = Path(path)
    raw = read_bytes(path) if source is None else source
    text = decode_utf8(path, raw)
    if input_format == "auto":
        is_table = path.suffix.lower() in {".csv", ".tsv"}
        if not is_table and _looks_like_header(path, text):
            is_table = True
            if notice is not None:
                first = text.split("\n", 1)[0].rstrip("\r")
                notice(f"reading {path} as a table with the header {first!r}; say "
                       "--format text to read one message a line")
    else:
        is_table = input_format != "text"
    if not is_table:
        # Lines end in \n or \r\n; a text with no \n at all ends its lines in \r.
        lines_of = text.split("\n") if "\n" in text else text.split("\r")
        return [line.rstrip("\r") for line in lines_of if line.strip()]
    delimiter, rows, lines = read_rows(path, raw, {"csv": ",", "tsv": "\t"}.get(input_format))
    header = _header_names(rows[0]) if rows else []
    # The first column training would read as the text (a `Label,Message` file trains, so
    # it classifies too, from the same column).
    col = _first_named(header, TEXT_HEADERS)
    if col is None:
        raise DataError(f"{path}:1: a CSV/TSV input needs a header with a text column "
                        f"(named {' or '.join(sorted(TEXT_HEADERS))}); a labelled file "
                        "without a header is evaluated with `spamguard report --data`")
    texts = []
    for lineno, row in zip(lines[1:], rows[1:], strict=True):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= col:
            raise DataError(f"{path}:{lineno}: {len(row)} field(s), but the header puts "
                            f"{header[col]!r} in column {col + 1}")
        text = _row_text(path, lineno, row, col, len(header), delimiter)
        if not text.strip():  # a row with other cells but no message: as training says
            raise DataError(f"{path}:{lineno}: empty text")
        texts.append(text)
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


MIN_PER_CLASS = 6  # fewer cannot always put both classes in validation and test


def check_trainable(data: LabelledData, source: str = "data") -> None:
    """Refuse data with too few messages of a class to split and train on."""
    counts = data.counts()
    short = [name for name in LABEL_NAMES if counts[name] < MIN_PER_CLASS]
    if short:  # name every class that is short: "0 spam" is the news in ham-only data
        found = " and ".join(f"{counts[name]} distinct {name}" for name in short)
        raise DataError(f"{source}: only {found} message(s) after removing duplicates; "
                        f"need at least {MIN_PER_CLASS} of each class")


def always_train_count(data: LabelledData, always_train: np.ndarray | None) -> int:
    """How many messages :func:`split` sets aside for training: the marked ones, or none
    when the unmarked ones are too few of a class to split."""
    if always_train is None or not np.any(always_train):
        return 0
    left = data.labels[~np.asarray(always_train, dtype=bool)]
    if min(int(left.sum()), len(left) - int(left.sum())) < MIN_PER_CLASS:
        return 0
    return int(np.sum(always_train))


def split(data: LabelledData, *, seed: int = 2018, train_size: float = 0.7,
          always_train: np.ndarray | None = None, groups: np.ndarray | None = None,
          with_test: bool = True) -> Split:
    """Stratified split: ``train_size`` for training, the rest halved into val and test.

    ``with_test=False`` (the test messages are given apart: retraining's evaluation set)
    makes no test part: training and validation keep the recipe's proportion (70 to 15).

    Call on deduplicated data, so no normalised text lands on both sides. ``groups`` (one
    id per message; :func:`spamguard.ml.near_duplicates.near_duplicate_groups`) keeps each
    group's messages on one side: the groups are split, stratified by whether a group
    holds spam, and a data set of lone messages is split exactly as without ``groups``.

    ``always_train`` (one bool per message) marks messages that go to training whatever
    the split; the others are split as usual and the marked ones join the training part.
    Retraining marks moderator-labelled messages: they are the traffic the model got wrong,
    and in validation a few legitimate ones the model still scores as spam raise the
    threshold far enough to lose most spam (bench/fresh_sms.py; README). When the others
    are too few to split, everything is split as usual (:func:`always_train_count` says
    which happened).
    """
    marked = None if always_train is None else np.asarray(always_train, dtype=bool)
    if marked is not None and len(marked) != len(data):
        raise ValueError(f"always_train has {len(marked)} flags for {len(data)} messages")
    if groups is not None and len(groups) != len(data):
        raise ValueError(f"groups has {len(groups)} ids for {len(data)} messages")
    if always_train_count(data, marked):
        others = np.flatnonzero(~marked)
        rest = split(data.subset(others), seed=seed, train_size=train_size,
                     groups=None if groups is None else groups[others], with_test=with_test)
        extra = data.subset(np.flatnonzero(marked))
        train = LabelledData(rest.train.texts + extra.texts,
                             np.concatenate([rest.train.labels, extra.labels]),
                             rest.train.origins + extra.origins)
        return Split(train, rest.val, rest.test)
    check_trainable(data)
    members, labels = group_units(data.labels, groups)
    # Imported here: the web service uses this module (text_hash) and needs no scikit-learn.
    from sklearn.model_selection import train_test_split

    units = np.arange(len(members))
    held = (1 - train_size) / 2  # the validation part's share, and the test part's
    try:
        if not with_test:
            train_idx, val_idx = train_test_split(
                units, test_size=held / (1 - held), random_state=seed, stratify=labels)
            test_idx = units[:0]
        else:
            train_idx, rest_idx = train_test_split(
                units, train_size=train_size, random_state=seed, stratify=labels)
            val_idx, test_idx = train_test_split(
                rest_idx, test_size=0.5, random_state=seed, stratify=labels[rest_idx])
        for part in (val_idx, test_idx) if with_test else (val_idx,):
            if len(set(labels[part].tolist())) < 2:  # stratifying a class of 2 groups can
                raise ValueError("a part got one class only")  # leave one side without it
    except ValueError as exc:  # a class too small to reach both validation and test
        counts = data.counts()
        parts = "train, validation and test" if with_test else "train and validation"
        raise DataError(f"cannot split {counts['ham']} ham and {counts['spam']} spam into "
                        f"{parts} with both classes in each ({exc}); "
                        "add labelled messages") from None
    return Split(*(data.subset([i for unit in part for i in members[unit]])
                   for part in (train_idx, val_idx, test_idx)))


def group_units(labels: np.ndarray, groups: np.ndarray | None
                ) -> tuple[list[list[int]], np.ndarray]:
    """What :func:`split` deals out: each message alone, or each group's positions (in
    order of the group's first one) with the group's label (spam if any is)."""
    if groups is None:
        return [[i] for i in range(len(labels))], labels
    members: dict[int, list[int]] = {}
    for i, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(i)
    units = list(members.values())
    return units, np.array([labels[unit].max() for unit in units], dtype=np.int64)


def data_hash(data: LabelledData) -> str:
    """Hex SHA-256 of the labelled texts, order-independent."""
    digest = hashlib.sha256()
    for line in sorted(f"{label}\t{text}" for text, label in zip(data.texts, data.labels,
                                                                    strict=True)):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()
