"""``spamguard senders list / allow / block / remove``: sender rules from the command line
(see :mod:`spamguard.services.sender_rules`; the admin UI's Senders page does the same)."""

from __future__ import annotations

import json

import click

from spamguard.cli.context import CliContext, pass_ctx, transaction
from spamguard.services import sender_rules
from spamguard.services.promotion_hold import cli_user
from spamguard.services.sender_rules import DONE

FORGED = ("note: sender ids can be forged (names most easily), and a forged one gets the "
          "same pass; allow only senders your gateway vouches for")


def rule_json(rule) -> dict:
    """One rule as ``senders list --json`` prints it."""
    return {"sender": rule.sender, "action": rule.action,
            "label": sender_rules.LABEL_OF[rule.action], "note": rule.note,
            "set_by": rule.set_by, "set_at": rule.set_at.isoformat()}


def said_for(change: sender_rules.Change, action: str) -> str:
    """What ``allow`` / ``block`` print."""
    rule = change.rule
    label = sender_rules.LABEL_OF[action]
    what = f"{DONE[action]} {rule.sender}: {sender_rules.matches(rule.sender)} are {label}"
    if not change.changed:
        return f"{DONE[action]} already: {rule.sender}; nothing changed"
    if change.before is None:
        return f"{what} from now on (messages already classified keep their verdicts)"
    if change.before != action:
        return f"{what} from now on (it was {DONE[change.before]})"
    return f"{what}; note updated"


def register(cli: click.Group) -> None:
    """Add the ``senders`` group to ``cli``."""

    @cli.group("senders")
    def senders_group() -> None:
        """Allow or block senders whatever the model says (the model still scores their
        messages; its probability is kept)."""

    @senders_group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
    @pass_ctx
    def list_command(ctx: CliContext, as_json: bool) -> None:
        """List the sender rules, allowed senders first."""
        with transaction(ctx, create=False) as session:
            rules = sender_rules.list_rules(session)
            lines = ([json.dumps(rule_json(r)) for r in rules] if as_json else
                     [f"{r.action:<6} {r.sender:<24} {r.set_at:%Y-%m-%d %H:%M} {r.set_by}"
                      + (f"  ({r.note})" if r.note else "") for r in rules])
        if not rules and not as_json:
            click.echo("no sender rules: the model decides every message", err=True)
        for line in lines:
            click.echo(line)

    def rule_command(action: str):
        @click.argument("sender")
        @click.option("--note", default=None, metavar="TEXT",
                      help="Why (shown with the rule; one line, 500 characters). Left out, a "
                           "rule being changed keeps its note; --note '' clears it.")
        @pass_ctx
        def command(ctx: CliContext, sender: str, note: str | None) -> None:
            with transaction(ctx, create=False) as session:
                change = sender_rules.set_rule(session, sender=sender, action=action,
                                               note=note, by=cli_user())
                said = said_for(change, action)
            click.echo(said)
            if action == "allow" and change.changed:
                click.echo(FORGED, err=True)
        return command

    senders_group.command(
        "allow", help="Label every message from SENDER ham, whatever the model says. A phone "
                      "number matches however it is written; a name or short code matches "
                      "as written, capitals or not.")(rule_command("allow"))
    senders_group.command(
        "block", help="Label every message from SENDER spam, whatever the model says (matched "
                      "as for allow).")(rule_command("block"))

    @senders_group.command("remove")
    @click.argument("sender")
    @pass_ctx
    def remove_command(ctx: CliContext, sender: str) -> None:
        """Remove SENDER's rule: the model decides its messages again."""
        with transaction(ctx, create=False) as session:
            change = sender_rules.remove_rule(session, sender=sender, by=cli_user())
            said = (f"no rule matches {sender.strip()}; nothing changed" if not change.changed
                    else f"removed the rule for {change.rule.sender} (it was "
                         f"{DONE[change.before]}): the model decides its messages again")
        click.echo(said)
