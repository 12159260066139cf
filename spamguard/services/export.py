"""Export stored messages with their labels: moderators' labels as a file that ``spamguard
train --data`` and ``report --data`` read (your own traffic as training or test data), or
every message with its verdict for analysis elsewhere.

CSV (header ``label,text,...``; the loader takes ``label`` and ``text`` and ignores the
other columns) or JSON lines. Message texts are written exactly as stored, so a file read
back gives the same texts; a spreadsheet may take a text that starts with ``=``, ``+``,
``-`` or ``@`` for a formula (README's ``export`` row says how to open one safely). Senders and
recipients are personal data and are left out unless asked for.

Rows are read in id order, a batch at a time, so memory stays flat for a large table, and
all from one snapshot of the database (:func:`read_one_snapshot`), so the file is the
messages of one moment, whatever the service stores or moderators label meanwhile.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spamguard.db import POSTGRES_SNAPSHOT_READ
from spamguard.models import Message

FORMATS = ("csv", "jsonl")
BATCH = 2000
COLUMNS = ("label", "text", "message_id", "received_at", "model_label", "spam_probability",
           "sender_rule", "model_version")
PARTIES = ("sender", "recipient")  # with ``with_parties`` only


@dataclass
class Selection:
    """Which messages to export: ``reviewed_only`` (those with a moderator's label: a file
    to train on), received in ``[since, until)`` when given."""

    reviewed_only: bool = True
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list:
        clauses = []
        if self.reviewed_only:
            clauses.append(Message.review_label.is_not(None))
        if self.since is not None:
            clauses.append(Message.received_at >= self.since)
        if self.until is not None:
            clauses.append(Message.received_at < self.until)
        return clauses


@dataclass
class ExportCounts:
    """What an export wrote: messages by label ("" for no moderator's label), and, in CSV,
    those left out because their text is blank (the loader refuses an empty text)."""

    labels: Counter = field(default_factory=Counter)
    blank: int = 0

    @property
    def written(self) -> int:
        return sum(self.labels.values())


def read_one_snapshot(session: Session) -> None:
    """Make everything ``session`` reads until its transaction ends come from one moment:
    the count and the rows agree, and a message labelled or stored meanwhile is wholly in
    or out. Call it before the session's first query.

    PostgreSQL: a REPEATABLE READ, read-only transaction (under the default READ COMMITTED
    every batch saw the newest rows). SQLite: an explicit ``BEGIN``; Python's sqlite3
    begins a transaction only before a write, so each SELECT read the newest data, and a
    read transaction in WAL mode keeps its snapshot without stopping the service's writes.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN")
    else:
        session.connection(execution_options=POSTGRES_SNAPSHOT_READ)


def count(session: Session, selection: Selection) -> int:
    """How many messages ``selection`` picks (for a progress bar)."""
    return int(session.scalar(select(func.count()).select_from(Message)
                              .where(*selection.where())) or 0)


def _messages(session: Session, selection: Selection) -> Iterator[Message]:
    """The selected messages in id order, read ``BATCH`` at a time (keyset pagination:
    no long-running cursor, and no OFFSET that rereads the rows before it)."""
    after = 0
    while True:
        batch = list(session.scalars(select(Message).where(*selection.where(),
                                                           Message.id > after)
                                     .order_by(Message.id).limit(BATCH)))
        yield from batch
        if len(batch) < BATCH:
            return
        after = batch[-1].id
        session.expunge_all()  # keep the session's identity map small


def record(message: Message, *, with_parties: bool) -> dict[str, Any]:
    """One message as exported: the moderator's label as ``label`` (None when none; CSV
    writes an empty cell for None)."""
    row = {"label": message.review_label, "text": message.body, "message_id": message.id,
           "received_at": message.received_at.isoformat(), "model_label": message.model_label,
           "spam_probability": message.spam_probability, "sender_rule": message.sender_rule,
           "model_version": message.model_version_id}
    if with_parties:
        row.update(sender=message.sender, recipient=message.recipient)
    return row


# Characters that JSON leaves raw in a string but that end a line for many readers
# (Python's str.splitlines, JavaScript before ES2019): escaped, so one message is one line.
_LINE_ENDS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(row: dict[str, Any]) -> str:
    """``row`` as one line of JSON (non-ASCII characters kept as they are, except those
    some readers take for a line break)."""
    return json.dumps(row, ensure_ascii=False).translate(_LINE_ENDS) + "\n"


def write(session: Session, out: IO[str], *, selection: Selection, fmt: str = "csv",
          with_parties: bool = False,
          on_message: Callable[[], None] | None = None) -> ExportCounts:
    """Write the selected messages to ``out`` (opened with ``newline=""`` for CSV);
    ``on_message`` is called once per message read (a progress bar)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    columns = COLUMNS + (PARTIES if with_parties else ())
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n") \
        if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    counts = ExportCounts()
    for message in _messages(session, selection):
        if on_message is not None:
            on_message()
        row = record(message, with_parties=with_parties)
        if writer is None:
            out.write(json_line(row))
        elif message.body.strip():
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        else:  # training and classify refuse an empty text, and this file is for them
            counts.blank += 1
            continue
        counts.labels[row["label"] or ""] += 1
    return counts
