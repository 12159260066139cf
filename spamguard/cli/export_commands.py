"""``spamguard export``: stored messages and their labels to a file (see
:mod:`spamguard.services.export`)."""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import click

from spamguard.cli.context import CliContext, Day, is_terminal, pass_ctx, transaction
from spamguard.errors import SpamguardError
from spamguard.services import export


def _day(value: datetime | None, *, end: bool) -> datetime | None:
    """A UTC day from the command line as the start of that day (``end``: of the next,
    so the day given is included; None after 9999-12-31)."""
    from spamguard.services import message_queries  # not at import: --help stays quick

    if value is None:
        return None
    return message_queries.end_of(value.date()) if end else message_queries.start_of(
        value.date())


def summary(counts: export.ExportCounts, where: str) -> str:
    """The line on stderr once the file is written."""
    by_label = ", ".join(f"{counts.labels[label]:,} {label or 'not reviewed'}"
                         for label in ("spam", "ham", "") if counts.labels[label])
    said = f"exported {counts.written:,} message(s)" + (f" ({by_label})" if by_label else "")
    said += f" to {where}"
    if counts.blank:
        said += (f"; left out {counts.blank:,} with a blank text, which training and "
                 "classify refuse")
    return said


def register(cli: click.Group) -> None:
    """Add ``export`` to ``cli``."""

    @cli.command("export")
    @click.argument("out", required=False, default="-", metavar="[FILE|-]")
    @click.option("--all", "all_messages", is_flag=True,
                  help="Every message, not only those with a moderator's label (their "
                       "label cell is empty: not a file to train on).")
    @click.option("--since", type=Day(), default=None,
                  metavar="YYYY-MM-DD", help="Messages received on this UTC day or later.")
    @click.option("--until", type=Day(), default=None,
                  metavar="YYYY-MM-DD", help="Messages received on this UTC day or before.")
    @click.option("--format", "fmt", type=click.Choice(export.FORMATS), default="csv",
                  show_default=True, help="csv: header label,text,... (what `spamguard "
                                          "train --data` reads); jsonl: one object a line.")
    @click.option("--with-senders", is_flag=True,
                  help="Add each message's sender and recipient (personal data: left out "
                       "by default).")
    @click.option("--force", is_flag=True, help="Replace FILE if it exists.")
    @pass_ctx
    def export_command(ctx: CliContext, out: str, all_messages: bool, since, until,
                       fmt: str, with_senders: bool, force: bool) -> None:
        """Write stored messages with their labels to FILE (default: standard output).

        By default only messages a moderator labelled, as CSV that `spamguard train
        --data FILE` and `spamguard report --data FILE` read: your own traffic as
        training or test data. In the order they were stored; the moderator's current
        label; UTF-8."""
        selection = export.Selection(reviewed_only=not all_messages,
                                     since=_day(since, end=False), until=_day(until, end=True))
        if selection.since and selection.until and selection.since >= selection.until:
            raise SpamguardError("--since is after --until: no message could match")
        target = None if out == "-" else Path(out)
        if target is not None and (target.is_symlink() or target.exists()
                                   and not target.is_file()):
            # The finished file is moved into place: a link, device or folder there would
            # be replaced, not written through (/dev/stdout is a link).
            raise SpamguardError(f"{target} is not a regular file: it would be replaced, not "
                                 "written to; give - for standard output, or the file a "
                                 "link points to")
        if target is not None and target.exists() and not force:
            raise SpamguardError(f"{target} exists; choose another name, or --force to "
                                 "replace it")
        if target is not None and not target.parent.is_dir():
            raise SpamguardError(f"cannot write {target}: no folder {target.parent}")
        with transaction(ctx, create=False) as session:
            export.read_one_snapshot(session)
            total = export.count(session, selection)
            counts = _write(session, target, selection, fmt, with_senders, total)
        click.echo(summary(counts, "standard output" if target is None else str(target)),
                   err=True)


def _write(session, target: Path | None, selection: export.Selection, fmt: str,
           with_senders: bool, total: int) -> export.ExportCounts:
    """Write to standard output, or to a temporary file beside ``target`` that replaces it
    once complete (an export that fails leaves no half-written file)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="msg", desc="export", file=sys.stderr,
              disable=not (is_terminal(sys.stderr) and total > 5000)) as bar:
        write = lambda out: export.write(session, out, selection=selection, fmt=fmt,  # noqa: E731
                                         with_parties=with_senders, on_message=bar.update)
        if target is None:
            # UTF-8 whatever the locale says, as the file and as the loader reads it: a
            # text stdout of another encoding failed on the first "£" or emoji, half-way.
            sys.stdout.flush()
            binary = getattr(sys.stdout, "buffer", None)
            if binary is None:  # a stream of text only (replaced by a caller): as it is
                return write(sys.stdout)
            counts = write(_Utf8(binary))
            binary.flush()
            return counts
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                             suffix=".part")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                counts = write(out)
                out.flush()
                os.fsync(out.fileno())  # on disk before it takes the name (a crash after)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return counts


class _Utf8:
    """A text stream writing UTF-8 to a binary one (standard output's), with no newline
    translation: what ``csv`` and ``json`` need of ``out``. (A TextIOWrapper around
    ``sys.stdout.buffer`` would close it when collected.)"""

    def __init__(self, binary) -> None:
        self.binary = binary

    def write(self, text: str) -> int:
        self.binary.write(text.encode("utf-8"))
        return len(text)
