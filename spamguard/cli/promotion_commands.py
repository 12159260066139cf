"""``spamguard promotion hold / release / status``: keep ``spamguard retrain`` from promoting
(see :mod:`spamguard.services.promotion_hold`), and the lines ``rollback`` and ``promote``
print about a hold."""

from __future__ import annotations

import json

import click
from sqlalchemy.orm import Session

from spamguard.cli.context import CliContext, pass_ctx, transaction
from spamguard.services import promotion_hold
from spamguard.services.promotion_hold import Change

RELEASE = "`spamguard promotion release`"
HOLD_DOES = ("`spamguard retrain` still trains, compares and reports, but promotes nothing "
             f"until {RELEASE}")


def kept_line(change: Change) -> str:
    """Said when a hold was asked for while one is in force: the first one stays."""
    return (f"automatic promotion was already {promotion_hold.describe(change.hold)}; that "
            f"hold stays ({RELEASE} ends it)")


def rollback_hold(session: Session, *, before: str, after: str) -> str:
    """Put automatic promotion on hold after a rollback from ``before`` to ``after`` (in
    the rollback's transaction), and say so."""
    change = promotion_hold.hold(session, reason=f"rollback from {before} to {after}",
                                 by=promotion_hold.cli_user())
    if not change.changed:
        return kept_line(change)
    return (f"automatic promotion is now {promotion_hold.describe(change.hold)}, so the next "
            "`spamguard retrain` cannot undo this rollback: it still trains and reports, but "
            f"promotes nothing until {RELEASE}")


def still_held_note(session: Session) -> str | None:
    """After a switch by hand (``promote``, ``rollback --no-hold``): a note that retraining
    still will not promote, when a hold is in force."""
    held = promotion_hold.current(session)
    if held is None:
        return None
    return (f"note: automatic promotion is still {promotion_hold.describe(held)}; {RELEASE} "
            "lets retraining promote again")


def register(cli: click.Group) -> None:
    """Add the ``promotion`` group to ``cli``."""

    @cli.group("promotion")
    def promotion_group() -> None:
        """Hold or release automatic promotion by `spamguard retrain` (while held, it
        trains, compares and reports, but promotes nothing)."""

    @promotion_group.command("hold")
    @click.option("--reason", default=None, metavar="TEXT",
                  help="Why (shown with the hold everywhere; one line, 500 characters).")
    @pass_ctx
    def hold_command(ctx: CliContext, reason: str | None) -> None:
        """Put automatic promotion on hold (a hold in force already stays as it is)."""
        with transaction(ctx, create=False) as session:
            change = promotion_hold.hold(session, reason=reason, by=promotion_hold.cli_user())
            said = (f"automatic promotion is now {promotion_hold.describe(change.hold)}: "
                    f"{HOLD_DOES}") if change.changed else kept_line(change)
        click.echo(said)

    @promotion_group.command("release")
    @pass_ctx
    def release_command(ctx: CliContext) -> None:
        """Release the hold: `spamguard retrain` promotes again a candidate that passes."""
        with transaction(ctx, create=False) as session:
            change = promotion_hold.release(session, by=promotion_hold.cli_user())
            said = ("automatic promotion is not on hold; nothing changed" if not change.changed
                    else f"released the hold on automatic promotion "
                         f"({promotion_hold.describe(change.hold)}): `spamguard retrain` "
                         "promotes again a candidate that passes the comparison")
        click.echo(said)

    @promotion_group.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @pass_ctx
    def status_command(ctx: CliContext, as_json: bool) -> None:
        """Say whether automatic promotion is on hold: since when, by whom and why."""
        with transaction(ctx, create=False) as session:
            held = promotion_hold.current(session)
            if as_json:
                said = json.dumps(promotion_hold.as_json(held))
            elif held is not None:
                said = f"automatic promotion is {promotion_hold.describe(held)}: {HOLD_DOES}"
            else:
                said = ("automatic promotion is not on hold: `spamguard retrain` promotes a "
                        "candidate that passes the comparison")
                if (last := promotion_hold.last_released(session)) is not None:
                    said += (f" (last hold released {last.released_at:%Y-%m-%d %H:%M UTC} "
                             f"by {last.released_by})")
        click.echo(said)
