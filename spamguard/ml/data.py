"""Load, validate, normalise, deduplicate and split labelled SMS data.

One reader serves training (labelled files) and classification (unlabelled input), so a
message is read the same way wherever it comes from.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spamguard.errors import DataError

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


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


# The csv module refuses fields over 128 KiB by default and raises a bare csv.Error. Raised
# once for the process (it only ever goes up, so other csv readers lose nothing), so a long
# field is read like a long plain-text line: training keeps it, the service's body limits
# apply where messages arrive.
MAX_FIELD_CHARS = 64 * 1024 * 1024


def _read_rows(path: Path, source: bytes | None = None, delimiter: str | None = None
               ) -> tuple[str, list[list[str]], list[int]]:
    """Decode ``path`` (or ``source``) and split it into rows (by ``delimiter``, or the one
    the suffix or first line suggests).

    Returns:
        The delimiter, the rows, and the file line each row starts on (a quoted CSV
        message may span several lines, so errors name the line a user's editor shows).
    """
    text = _decode(path, _read_bytes(path) if source is None else source)
    delimiter = delimiter or _delimiter(path, text)
    if csv.field_size_limit() < MAX_FIELD_CHARS:
        csv.field_size_limit(MAX_FIELD_CHARS)
    text, restore = _shield_lone_cr(text)
    try:
        # Quotes are CSV syntax; in a TSV, only where a spreadsheet program put them.
        rows, lines = _parse_csv(path, text, delimiter) if delimiter == "," \
            else _parse_tsv(text, delimiter)
    except _RowError as exc:
        raise DataError(f"{path}:{exc.line}: {exc.reason}") from None
    if restore:
        rows = [[restore(cell) for cell in row] for row in rows]
    return delimiter, rows, lines


class _RowError(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line, self.reason = line, reason


def _parse(text: str, delimiter: str, *, strict: bool) -> tuple[list[list[str]], list[int]]:
    """CSV rows and the line each starts on; :class:`_RowError` names the line of a bad
    row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=strict)
    rows, lines, lines_read = [], [], 0
    try:
        for row in reader:
            lines.append(lines_read + 1)
            rows.append(row)
            lines_read = reader.line_num
    except csv.Error as exc:
        start = lines_read + 1 if "end of data" in str(exc) else reader.line_num
        raise _RowError(start, str(exc)) from None
    return rows, lines


def _parse_csv(path: Path, text: str, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """Parse strictly, refusing a CSV whose last quoted message is never closed: csv's
    lenient reading would make one message of the rest of the file. A file with other
    quirks strict mode refuses, such as ``"Hello" he said``, is parsed again leniently and
    loads as it always did, unless a message then runs over several lines: that is a quote
    left open (``1,"Sorry I'll call later``), which swallowed the rows up to the next quote
    into one message with one label (an audit: 2 training rows vanished, exit 0)."""
    try:
        return _parse(text, delimiter, strict=True)
    except _RowError as exc:
        if "end of data" in exc.reason:
            raise DataError(f"{path}:{exc.line}: a quote opened in this row is never closed "
                            "(the file ends inside it)") from None
        stray = exc
    rows, lines = _parse(text, delimiter, strict=False)
    ends = [*(start - 1 for start in lines[1:]), text.count("\n") + 1]
    for row, start, end in zip(rows, lines, ends, strict=True):
        # A message over several lines that ends on the line strict reading stumbled on:
        # its quote ran on to a later message's quote (a legitimate multi-line message
        # elsewhere in the file, beside an unrelated quirk, still loads).
        if start < end and start <= stray.line <= end and any(
                "\n" in cell or "\r" in cell for cell in row):
            raise DataError(
                f"{path}:{start}: a quote opened in this row runs on to line {stray.line} "
                f"({stray.reason} there): probably a quote left open here, which would "
                "merge the rows between into this message; close it, or double the quotes "
                "inside a quoted message")
    return rows, lines


_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")  # where csv ends a line


def _parse_tsv(text: str, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """TSV rows and the line each starts on.

    Read as csv.QUOTE_NONE reads it (a row a line, split at every tab, quotes kept as
    they are: SMS bodies routinely start or end with a bare quote), unless the file was
    saved by a spreadsheet program (:func:`_spreadsheet_rows`).
    """
    pieces = _LINE_BREAK.split(text)
    lines, ends = pieces[0::2], [*pieces[1::2], ""]
    if lines[-1] == "":  # the text ends with a line break (or is empty)
        lines.pop()
        ends.pop()
    sheet = _spreadsheet_rows(lines, ends, delimiter)
    if sheet is not None:
        return sheet
    return ([line.split(delimiter) if line else [] for line in lines],
            list(range(1, len(lines) + 1)))


def _spreadsheet_rows(lines: list[str], ends: list[str], delimiter: str
                      ) -> tuple[list[list[str]], list[int]] | None:
    """The rows of a TSV saved by a spreadsheet program, or None if it was not saved so.

    Excel and LibreOffice quote a field that holds a quote, tab or line break:
    ``He said "hi" twice`` is saved as ``"He said ""hi"" twice"``. A TSV counts as saved so
    when

    - every quote in it belongs to such a quoted field: one that starts with a quote, ends
      with one followed by a tab or the end of its row, and doubles every quote between.
      A spreadsheet quotes every field with a quote in it, so one bare quote anywhere
      (``Gud ni8"``, line 139 of the shipped data set) means the file's quotes are the
      messages' own, and it is read as it always was;
    - and it shows quoting: a quoted field with a quote, tab or line break inside, or a
      first row (a header) of quoted names only ("quote all text cells").

    Then every quoted field is unquoted. A quoted field runs on over the next lines only
    in a table of two or more columns and only if it holds no tab: each line it covers
    would be a row short of columns on its own.
    """
    if not any('"' in line for line in lines):
        return None
    multiline = delimiter in lines[0]
    rows: list[list[str]] = []
    starts: list[int] = []
    shown = False
    i = 0
    while i < len(lines):
        starts.append(i + 1)
        row: list[str] = []
        line, pos, quoted, plain = lines[i], 0, 0, 0
        while line:
            if line.startswith('"', pos):
                field = _quoted_field(lines, ends, i, pos, delimiter, multiline)
                if field is None:
                    return None
                cell, i, pos, inside = field
                line = lines[i]
                quoted += 1
                shown = shown or inside
                end = pos if pos < len(line) else -1  # just after it: a tab or the row's end
            else:
                end = line.find(delimiter, pos)
                cell = line[pos:] if end < 0 else line[pos:end]
                if '"' in cell:
                    return None
                plain += bool(cell)
            row.append(cell)
            if end < 0:
                break
            pos = end + 1
        shown = shown or (not rows and quoted > 0 and not plain)
        rows.append(row)
        i += 1
    return (rows, starts) if shown else None


def _quoted_field(lines: list[str], ends: list[str], i: int, pos: int, delimiter: str,
                  multiline: bool) -> tuple[str, int, int, bool] | None:
    """The spreadsheet-quoted field whose opening quote is at ``lines[i][pos]``.

    Returns:
        Its text, the line and position just after its closing quote, and whether it
        shows quoting (a quote, tab or line break inside); None if it is not one.
    """
    first, start, seek, parts = i, pos + 1, pos + 1, []
    while True:
        line = lines[i]
        q = line.find('"', seek)
        if q < 0:  # the field goes on over the line break
            rest = line[start:]
            if not multiline or delimiter in rest or i + 1 == len(lines):
                return None
            parts += [rest, ends[i]]
            i, start, seek = i + 1, 0, 0
        elif line.startswith('""', q):
            seek = q + 2
        elif q + 1 < len(line) and line[q + 1] != delimiter:
            return None  # a quote inside that is not doubled
        else:
            last = line[start:q]
            if i > first and delimiter in last:
                return None
            inner = "".join(parts) + last
            inside = i > first or '"' in inner or delimiter in inner
            return inner.replace('""', '"'), i, q + 1, inside


_LONE_CR = re.compile(r"\r(?!\n)")


def _shield_lone_cr(text: str):
    """Hide carriage returns that are not part of a line ending from the csv module.

    csv ends a row at a lone ``\r``, so an SMS body holding one (old phones send them)
    would split its row in two. In a file whose lines end in ``\n`` or ``\r\n``, a lone
    ``\r`` is part of a message: it is swapped for a character the text does not contain
    and put back in each cell. (A file with no ``\n`` at all uses ``\r`` as its line
    ending, and is left alone; so is one with more lone ``\r`` than ``\n``: its rows end in
    ``\r`` and a ``\n`` is a line break inside a message.)

    Returns:
        The text to parse, and the function that restores a cell (None: nothing hidden).
    """
    lone = len(_LONE_CR.findall(text))
    if not lone or lone >= text.count("\n"):  # CR line endings (maybe a line break in a cell)
        return text, None
    stand_in = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)
    return _LONE_CR.sub(stand_in, text), lambda cell: cell.replace(stand_in, "\r")


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
    delimiter, rows, lines = _read_rows(path, source)
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
    delimiter = _delimiter(path, text)
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
    raw = _read_bytes(path) if source is None else source
    text = _decode(path, raw)
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
    delimiter, rows, lines = _read_rows(path, raw, {"csv": ",", "tsv": "\t"}.get(input_format))
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
          always_train: np.ndarray | None = None) -> Split:
    """Stratified split: ``train_size`` for training, the rest halved into val and test.

    Call on deduplicated data, so no normalised text lands on both sides.

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
    if always_train_count(data, marked):
        rest = split(data.subset(np.flatnonzero(~marked)), seed=seed, train_size=train_size)
        extra = data.subset(np.flatnonzero(marked))
        train = LabelledData(rest.train.texts + extra.texts,
                             np.concatenate([rest.train.labels, extra.labels]),
                             rest.train.origins + extra.origins)
        return Split(train, rest.val, rest.test)
    check_trainable(data)
    index = np.arange(len(data))
    # Imported here: the web service uses this module (text_hash) and needs no scikit-learn.
    from sklearn.model_selection import train_test_split

    try:
        train_idx, rest_idx = train_test_split(
            index, train_size=train_size, random_state=seed, stratify=data.labels)
        val_idx, test_idx = train_test_split(
            rest_idx, test_size=0.5, random_state=seed, stratify=data.labels[rest_idx])
    except ValueError as exc:  # a class too small to reach both validation and test
        counts = data.counts()
        raise DataError(f"cannot split {counts['ham']} ham and {counts['spam']} spam into "
                        f"train, validation and test with both classes in each ({exc}); "
                        "add labelled messages") from None
    return Split(data.subset(train_idx), data.subset(val_idx), data.subset(test_idx))


def data_hash(data: LabelledData) -> str:
    """Hex SHA-256 of the labelled texts, order-independent."""
    digest = hashlib.sha256()
    for line in sorted(f"{label}\t{text}" for text, label in zip(data.texts, data.labels,
                                                                    strict=True)):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()
