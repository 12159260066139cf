"""``spamguard messages purge / erase``: deleting stored messages, for a retention period or
a person's request (see :mod:`spamguard.services.message_deletion`)."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timedelta

import click

from spamguard.cli.context import (
    CliContext,
    Day,
    is_terminal,
    pass_ctx,
    session_factory_for,
)
from spamguard.db import is_sqlite
from spamguard.errors import SpamguardError
from spamguard.sqltypes import MAX_ID


def _confirm(question: str, yes: bool) -> None:
    """Ask first at a terminal; elsewhere (cron) only ``--yes`` goes ahead."""
    if yes:
        return
    if not is_terminal(sys.stdin):
        raise SpamguardError("deleting messages cannot be undone: add --yes to confirm "
                             "(or --dry-run to count them)")
    click.confirm(f"{question} This cannot be undone", abort=True)


def _run(ctx: CliContext, selection, *, dry_run: bool, yes: bool, what: str):
    """Count, ask, delete with a progress bar; return (selected, reviewed among them,
    reviewed kept by the selection, Deleted or None on a dry run, the versions that
    learnt a text it takes: Deleted.learnt_by, or on a dry run
    :func:`message_deletion.would_be_learnt`)."""
    from sqlalchemy.exc import OperationalError
    from tqdm.auto import tqdm

    from spamguard.db import database_unavailable, first_line, session_scope
    from spamguard.services import message_deletion
    from spamguard.services.audit import cli_user

    with session_factory_for(ctx, create=False) as factory:
        with session_scope(factory) as session:
            total, reviewed = message_deletion.count(session, selection)
            kept = message_deletion.kept_reviewed(session, selection)
            learnt = (message_deletion.would_be_learnt(session, selection)
                      if dry_run and reviewed else [])  # a review row means a reviewed one
        if dry_run:
            return total, reviewed, kept, None, learnt
        if total:  # with none, the run only sweeps changes.md (see delete_in): no question
            _confirm(f"Delete {total:,} message(s) {what}?", yes)
        deleted = [0]

        def batch_done(count: int) -> None:
            deleted[0] += count
            bar.update(count)

        with tqdm(total=total, unit="msg", desc="delete", file=sys.stderr,
                  disable=not (is_terminal(sys.stderr) and total > message_deletion.BATCH)
                  ) as bar:
            try:
                done = message_deletion.delete_messages(factory, selection,
                                                        on_batch=batch_done, by=cli_user())
            except OperationalError as exc:
                if not database_unavailable(exc):
                    raise
                raise SpamguardError(
                    f"stopped after deleting {deleted[0]:,} message(s): the database is busy "
                    f"or unreachable ({first_line(exc)}); run the command again to delete the rest"
                ) from exc
        return total, reviewed, kept, done, done.learnt_by


def summary(verb: str, what: str, *, total: int, reviewed: int, kept: int, done,
            dry_run: bool, learnt: list[str] | tuple[str, ...] = ()) -> str:
    """The line ``purge`` and ``erase`` print."""
    count = done.messages if done else total
    reviewed = done.reviewed if done else reviewed
    said = (f"{'would ' + verb if dry_run else verb + 'd'} {count:,} message(s) {what}"
            + (f" ({reviewed:,} reviewed)" if reviewed else ""))
    if kept:
        said += f"; kept {kept:,} reviewed (moderators' labels: --include-reviewed deletes them)"
    if done:
        if done.campaigns_recounted or done.campaigns_removed:
            said += (f"; campaigns: {len(done.campaigns_recounted):,} recounted, "
                     f"{len(done.campaigns_removed):,} removed (left empty)")
        if done.eval_examples:
            said += f"; {done.eval_examples:,} evaluation-set example(s) removed"
        if done.redacted_versions:
            said += ("; example texts erased from changes.md of "
                     + ", ".join(done.redacted_versions))
    if learnt:
        from spamguard.services.message_deletion import learnt_note

        said += "; " + learnt_note(learnt, these=dry_run)
    return said


def register(cli: click.Group) -> None:
    """Add the ``messages`` group to ``cli``."""

    @cli.group("messages")
    def messages_group() -> None:
        """Delete stored messages: a retention period, or erasing a person's messages."""

    @messages_group.command("purge")
    @click.option("--older-than", "days", type=click.IntRange(min=1), metavar="DAYS",
                  help="Messages received more than DAYS days ago.")
    @click.option("--before", type=Day(), metavar="YYYY-MM-DD",
                  help="Messages received before this UTC day.")
    @click.option("--include-reviewed", is_flag=True,
                  help="Delete messages a moderator labelled too (kept by default: they "
                       "teach retraining).")
    @click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
    @click.option("--yes", is_flag=True, help="Do not ask first (needed when not at a "
                                              "terminal, e.g. from cron).")
    @pass_ctx
    def purge_command(ctx: CliContext, days: int | None, before: datetime | None,
                      include_reviewed: bool, dry_run: bool, yes: bool) -> None:
        """Delete messages received before a time, with their verdicts and reviews (a
        retention period; by received_at, which a JSON API caller may have given)."""
        from spamguard.services.message_deletion import Selection
        from spamguard.services.message_queries import start_of
        from spamguard.sqltypes import utcnow

        if (days is None) == (before is None):
            raise click.UsageError("give one of --older-than DAYS or --before YYYY-MM-DD")
        try:
            cutoff = utcnow() - timedelta(days=days) if days else start_of(before.date())
        except OverflowError:
            raise click.UsageError(f"--older-than {days}: too many days") from None
        if cutoff > utcnow() + timedelta(days=1):  # a year typo would purge every message
            raise click.UsageError(
                f"--before {cutoff:%Y-%m-%d} is in the future: every message stored so far "
                "was received before it; give a day that has passed")
        what = f"received before {cutoff:%Y-%m-%d %H:%M} UTC"
        selection = Selection(before=cutoff, keep_reviewed=not include_reviewed)
        total, reviewed, kept, done, learnt = _run(ctx, selection, dry_run=dry_run, yes=yes,
                                                   what=what)
        click.echo(summary("purge", what, total=total, reviewed=reviewed, kept=kept,
                           done=done, dry_run=dry_run, learnt=learnt))

    @messages_group.command("erase")
    @click.option("--sender", help="Every message from this sender: a phone number however "
                                   "it was written, a name or short code exactly.")
    @click.option("--message-id", "message_ids", type=click.IntRange(1, MAX_ID), multiple=True,
                  metavar="ID", help="This message (repeatable).")
    @click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
    @click.option("--yes", is_flag=True, help="Do not ask first (needed when not at a "
                                              "terminal).")
    @pass_ctx
    def erase_command(ctx: CliContext, sender: str | None, message_ids: tuple[int, ...],
                      dry_run: bool, yes: bool) -> None:
        """Erase messages for good, reviewed ones included: everything from a sender (a
        person's request), or messages by id. Their text also leaves the evaluation set
        and model versions' changes.md where no other message has it."""
        from spamguard.services.message_deletion import Selection

        if (sender is None) == (not message_ids):
            raise click.UsageError("give --sender SENDER or --message-id ID (not both)")
        if sender is not None and not sender.strip():
            raise click.UsageError("--sender is empty")
        sender = sender.strip() if sender is not None else None
        what = (f"from {sender}" if sender is not None
                else "with id " + ", ".join(map(str, sorted(set(message_ids)))))
        selection = Selection(sender=sender, message_ids=tuple(sorted(set(message_ids))))
        missing = _missing_ids(ctx, selection.message_ids)
        total, reviewed, kept, done, learnt = _run(ctx, selection, dry_run=dry_run, yes=yes,
                                                   what=what)
        said = summary("erase", what, total=total, reviewed=reviewed, kept=kept, done=done,
                       dry_run=dry_run, learnt=learnt)
        if missing:
            shown = ", ".join(map(str, missing[:MAX_MISSING_SHOWN]))
            more = (f" and {len(missing) - MAX_MISSING_SHOWN:,} more"
                    if len(missing) > MAX_MISSING_SHOWN else "")
            said += f"; {len(missing):,} id(s) not found: {shown}{more}"
        click.echo(said)
        if sender is not None and total:  # with nothing from them, a rule note puzzles
            _rule_note(ctx, sender)
        if done is not None and done.messages and is_sqlite(ctx.settings.resolved_database_url):
            click.echo("note: their text stays in the database file (its text index, free "
                       "pages and write-ahead log) until `spamguard db compact`", err=True)


MAX_MISSING_SHOWN = 20  # ids named in erase's summary; more are counted


def _missing_ids(ctx: CliContext, ids: tuple[int, ...]) -> list[int]:
    """Those of ``ids`` no stored message has (before the erase: the summary names them)."""
    if not ids:
        return []
    from sqlalchemy import select

    from spamguard.cli.context import transaction
    from spamguard.models import Message
    from spamguard.services.example_redaction import chunks

    found: set[int] = set()
    with transaction(ctx, create=False) as session:
        for chunk in chunks(list(ids)):
            found.update(session.scalars(select(Message.id).where(Message.id.in_(chunk))))
    return [i for i in ids if i not in found]


def _rule_note(ctx: CliContext, sender: str) -> None:
    """Say so when a sender rule for this sender remains (the operator's, not a message)."""
    from spamguard.cli.context import transaction
    from spamguard.services import sender_rules

    with transaction(ctx, create=False) as session:
        rule = sender_rules.find_rule(session, sender)
        if rule is not None:
            click.echo(f"note: the sender rule for {rule.sender} ({rule.action}) stays; "
                       "remove it with: spamguard senders remove "
                       f"{shlex.quote(rule.sender)}", err=True)
