"""``spamguard retrain`` and ``spamguard evalset``: thin wrappers over the retrain services."""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime

import click

from spamguard.cli.context import (
    CliContext,
    NumberRange,
    pass_ctx,
    session_factory_for,
    transaction,
)
from spamguard.models import RUN_TRIGGERS
from spamguard.sqltypes import MAX_ID


def _stop_on_sigterm() -> None:
    """Turn SIGTERM (systemd stop, timeouts) into SystemExit so the run records it."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def register(cli: click.Group) -> None:
    """Add ``retrain`` and the ``evalset`` group to ``cli``."""
    from spamguard.config import GATE_METRICS

    @cli.command("retrain")
    @click.option("--force", is_flag=True,
                  help="Train even with few new reviews, and promote whatever the comparison, "
                       "even while automatic promotion is on hold (the hold stays).")
    @click.option("--dry-run", is_flag=True, help="Train and report, never promote.")
    @click.option("--trigger", type=click.Choice(RUN_TRIGGERS), default="cli",
                  show_default=True, help="Who started the run (recorded).")
    @click.option("--min-new-reviews", type=click.IntRange(0), default=None,
                  help="Skip when fewer reviews are new since the last run "
                       "[default: SPAMGUARD_RETRAIN_MIN_NEW_REVIEWS or 20].")
    @click.option("--margin", type=NumberRange(0, 1), default=None,
                  help="How much worse on the metric the candidate may be "
                       "[default: SPAMGUARD_RETRAIN_MARGIN or 0].")
    @click.option("--metric", type=click.Choice(GATE_METRICS), default=None,
                  help="Metric compared on the evaluation set "
                       "[default: SPAMGUARD_RETRAIN_METRIC or mcc].")
    # The admin UI's "Retrain now" names the account that pressed it (the audit trail).
    @click.option("--started-by", default=None, hidden=True)
    @pass_ctx
    def retrain_command(ctx: CliContext, force: bool, dry_run: bool, trigger: str,
                        min_new_reviews: int | None, margin: float | None,
                        metric: str | None, started_by: str | None) -> None:
        """Train a candidate from base data + reviews; promote it if it is not worse.

        While automatic promotion is on hold (`spamguard promotion status`), it trains,
        compares and reports, but promotes only with --force (the hold stays).

        Exit codes: 0 promoted, skipped, dry run, or held with a candidate that would be
        promoted; 1 failed; 2 needs a fix (data, settings); 3 rejected (held or not); 4
        another run holds the lock.
        """
        from spamguard.errors import SpamguardError
        from spamguard.services.audit import cli_user
        from spamguard.services.retrain import run_retrain

        _stop_on_sigterm()
        click.echo(f"retrain: started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC "
                   f"(pid {os.getpid()})", err=True)  # cron logs have no timestamps
        try:
            # create=False: a mistyped SPAMGUARD_HOME must not start a new instance.
            with session_factory_for(ctx, create=False) as factory:
                outcome = run_retrain(
                    session_factory=factory, settings=ctx.settings, force=force,
                    dry_run=dry_run, trigger=trigger, min_new_reviews=min_new_reviews,
                    margin=margin, metric=metric, log=lambda line: click.echo(line, err=True),
                    by=cli_user(), started_by=started_by)
        except SpamguardError as exc:  # before the run could start: still one summary line
            click.echo(f"retrain: failed: {exc}")
            sys.exit(exc.exit_code)
        except (SystemExit, KeyboardInterrupt):  # SIGTERM or Ctrl-C: the log still gets a line
            click.echo("retrain: failed: interrupted (recorded as failed in training_runs)")
            raise
        click.echo(outcome.summary)
        sys.exit(outcome.exit_code)

    # A usage error (`--metric foo`) also ends stdout with "retrain: failed: ..." (cli/__init__).
    retrain_command.summary_prefix = "retrain"

    @cli.group("evalset")
    def evalset_group() -> None:
        """The fixed evaluation set retraining compares models on."""

    @evalset_group.command("show")
    @pass_ctx
    def show_command(ctx: CliContext) -> None:
        """Print the evaluation set's size by label and source."""
        from spamguard.services.evalset import load_evalset

        with transaction(ctx, create=False) as session:
            click.echo(load_evalset(session).describe())

    @evalset_group.command("add")
    @click.option("--message-id", "message_ids", type=click.IntRange(1, MAX_ID),
                  multiple=True, help="A reviewed message to add (repeatable).")
    @click.option("--from-reviews", "count", type=click.IntRange(0), default=0,
                  help="Also add this many other reviewed messages, chosen at random.")
    @pass_ctx
    def add_command(ctx: CliContext, message_ids: tuple[int, ...], count: int) -> None:
        """Add reviewed messages to the evaluation set (they are no longer trained on)."""
        from spamguard.ml.classifier import read_metadata
        from spamguard.ml.data import load_labelled
        from spamguard.services import registry
        from spamguard.services.evalset import add_reviewed, ensure_evalset, load_evalset
        from spamguard.services.retrain_steps import away_from

        if not message_ids and not count:
            raise click.UsageError("give --message-id ID or --from-reviews N")
        settings = ctx.settings
        with transaction(ctx, create=False) as session:
            active = registry.active_version(session)
            away = away_from(lambda: read_metadata(active.path) if active else None,
                             active.id if active else None,
                             lambda line: click.echo(f"note: {line}", err=True))
            # Choose the base part first (as `retrain` would), so added messages never
            # stand in for it.
            ensure_evalset(session=session, base=load_labelled(settings.base_data_path),
                           fraction=settings.evalset_fraction, exclude=away)
            result = add_reviewed(session=session, message_ids=message_ids, count=count)
            skipped = (f" ({result.already} not: the same text is in the set already)"
                       if result.already else "")
            click.echo(f"added {result.added} reviewed message(s){skipped}; "
                       f"{load_evalset(session).describe()}")
            if count and result.added < count and not result.unseen_left:
                click.echo("note: --from-reviews takes only reviewed messages the active "
                           "model was not trained on (it would be favoured on the others), "
                           "and no more are left; add reviewed messages before a retraining "
                           "trains on them, e.g. just before the scheduled run "
                           "(docs/retraining.md)", err=True)
            if result.trained_on:
                click.echo(f"warning: the active model was trained on {result.trained_on} of "
                           "the messages given by --message-id, so the gate favours it on "
                           "them", err=True)
            if result.added and not result.base_checked:
                click.echo(f"note: the active model's base training data ({active.id}) could "
                           "not be rebuilt (its recorded data file is gone or changed, or it "
                           "was retrained), so the added messages were checked only against "
                           "the reviews it learnt; any it was trained on in its base data "
                           "favour it at the gate", err=True)
