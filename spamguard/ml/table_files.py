"""Read a CSV or TSV file into rows the way its writer meant them: UTF-8 checked, the
delimiter guessed, quotes as CSV or a spreadsheet program wrote them, a lone carriage
return kept inside its message, and each row's first line known for error messages.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from spamguard.errors import DataError


def decode_utf8(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {exc.start}); "
                        "save the file as UTF-8") from None
    return text


def guess_delimiter(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    first = text.split("\n", 1)[0]
    return "\t" if "\t" in first else ","


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


# The csv module refuses fields over 128 KiB by default and raises a bare csv.Error. Raised
# once for the process (it only ever goes up, so other csv readers lose nothing), so a long
# field is read like a long plain-text line: training keeps it, the service's body limits
# apply where messages arrive.
MAX_FIELD_CHARS = 64 * 1024 * 1024


def read_rows(path: Path, source: bytes | None = None, delimiter: str | None = None
               ) -> tuple[str, list[list[str]], list[int]]:
    """Decode ``path`` (or ``source``) and split it into rows (by ``delimiter``, or the one
    the suffix or first line suggests).

    Returns:
        The delimiter, the rows, and the file line each row starts on (a quoted CSV
        message may span several lines, so errors name the line a user's editor shows).
    """
    text = decode_utf8(path, read_bytes(path) if source is None else source)
    delimiter = delimiter or guess_delimiter(path, text)
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
