"""``spamguard audit``: who changed what, and when (see :mod:`spamguard.services.audit`)."""

from __future__ import annotations

import click

from spamguard.cli.context import CliContext, pass_ctx, transaction
from spamguard.cli.ml_commands import json_line
from spamguard.services.audit import KINDS


def register(cli: click.Group) -> None:
    """Add ``audit`` to ``cli``."""

    @cli.command("audit")
    @click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
                  help="How many events, newest first.")
    @click.option("--kind", type=click.Choice(KINDS), default=None,
                  help="Only events of this kind.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
    @pass_ctx
    def audit_command(ctx: CliContext, limit: int, kind: str | None, as_json: bool) -> None:
        """Show who changed accounts, API keys, sender rules, the model in service,
        promotion holds or stored messages, and when (newest first; from the admin UI
        and the command line alike)."""
        from spamguard.services import audit

        with transaction(ctx, create=False) as session:
            events = audit.recent(session, limit=limit, action=kind)
            # json_line: a sender's U+2028 or U+0085 must not split an event's line.
            lines = [json_line(audit.as_json(e)) if as_json else audit.describe(e)
                     for e in events]
        if not lines and not as_json:
            click.echo("no changes recorded" + (f" of kind {kind}" if kind else ""))
        for line in lines:
            click.echo(line)
