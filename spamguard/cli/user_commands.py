"""``spamguard user create`` / ``set-password`` / ``list`` / ``enable`` / ``disable`` and
``spamguard campaigns rebuild``."""

from __future__ import annotations

import sys
from contextlib import suppress

import click

from spamguard.cli.context import (
    CliContext,
    NumberRange,
    is_terminal,
    pass_ctx,
    session_factory_for,
    transaction,
)
from spamguard.errors import LockHeldError, SpamguardError
from spamguard.models import ROLES
from spamguard.services import campaigns, users
from spamguard.services.audit import cli_user
from spamguard.wording import counted

# A rebuild renews its lock every third of this while it runs; a crashed one's lock is
# taken over at once on the same host (dead pid), after this long from another host.
CAMPAIGN_LOCK_TTL = 600
MAX_DAYS = 36_500  # campaigns rebuild --days: a century (more overflowed the date: a traceback)


def read_password(prompt: bool, username: str, *, reset: bool = False) -> str:
    """Ask twice at a hidden prompt on a terminal (again while refused: too short, the
    username, too common), else read the first line of stdin (checked when it is set)."""
    if prompt:
        label = f"New password for {username}" if reset else "Password"
        while True:
            password = click.prompt(label, hide_input=True, confirmation_prompt=True)
            try:
                users.validate_password(password, username=username)
            except users.UserError as exc:
                click.echo(f"{exc}; try again", err=True)
                continue
            return password
    line = sys.stdin.readline() if sys.stdin is not None else ""  # None: stdin closed
    if not line:
        raise SpamguardError("no password on standard input")
    try:
        line.encode("utf-8")
    except UnicodeError:  # undecodable bytes arrive as surrogates
        raise SpamguardError("the password on standard input is not valid UTF-8") from None
    return line.rstrip("\r\n")


def register(cli: click.Group) -> None:
    """Add the ``user`` and ``campaigns`` groups to ``cli``."""

    @cli.group("user")
    def user_group() -> None:
        """Manage admin UI accounts."""

    # The password rule as --help says it, made from the constants the check uses.
    rule = f"Password rule: {users.password_rule('NAME')}"

    @user_group.command("create", help="Create the account NAME; the password is asked for "
                        f"(or read from stdin).\n\nNAME: {users.username_rule()}\n\n{rule}")
    @click.argument("name")
    @click.option("--role", type=click.Choice(ROLES), default="moderator", show_default=True,
                  help="admin: everything; moderator: review and relabel; viewer: read only.")
    @pass_ctx
    def user_create(ctx: CliContext, name: str, role: str) -> None:
        password = read_password(is_terminal(sys.stdin), name)
        with transaction(ctx) as session:
            user = users.create_user(session=session, username=name, password=password,
                                     role=role, by=cli_user())
            click.echo(f"created {user.role} {user.username}")

    @user_group.command("set-password", help="Give the account NAME a new password, asked "
                        "for (or read from stdin); this also lifts a lock after failed "
                        f"logins.\n\n{rule}")
    @click.argument("name")
    @pass_ctx
    def user_set_password(ctx: CliContext, name: str) -> None:
        with transaction(ctx, create=False) as session:  # a missing database or account is
            users.find_user(session, name)  # said before the password is asked for
        password = read_password(is_terminal(sys.stdin), name, reset=True)
        with transaction(ctx, create=False) as session:
            user = users.set_password(session=session, username=name, password=password,
                                      by=cli_user())
            click.echo(f"new password set for {user.username}")

    @user_group.command("list")
    @pass_ctx
    def user_list(ctx: CliContext) -> None:
        """List the accounts: name, role, whether enabled, last login."""
        from spamguard.cli.model_commands import format_table

        with transaction(ctx, create=False) as session:
            rows = [(u.username, u.role, "enabled" if u.is_active else "disabled",
                     f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never")
                    for u in users.list_users(session)]
        click.echo(format_table(rows, ("NAME", "ROLE", "STATE", "LAST LOGIN")) if rows
                   else "no accounts yet: `spamguard user create NAME --role admin`")

    @user_group.command("set-role")
    @click.argument("name")
    @click.argument("role", type=click.Choice(ROLES))
    @pass_ctx
    def user_set_role(ctx: CliContext, name: str, role: str) -> None:
        """Give the account NAME the role ROLE (from its next request; the last enabled
        admin stays admin)."""
        with transaction(ctx, create=False) as session:
            user = users.set_role(session=session, username=name, role=role, by=cli_user())
            click.echo(f"{user.username} is now {user.role}")

    @user_group.command("unlock")
    @click.argument("name")
    @pass_ctx
    def user_unlock(ctx: CliContext, name: str) -> None:
        """Lift the lock on the account NAME after failed logins."""
        with transaction(ctx, create=False) as session:
            user, changed = users.unlock(session=session, username=name, by=cli_user())
            click.echo(f"unlocked {user.username}" if changed else
                       f"{user.username} was not locked: nothing changed")

    for verb, active in (("enable", True), ("disable", False)):
        @user_group.command(verb, help=f"{verb.capitalize()} the account NAME"
                            + ("; its open sessions end." if not active else
                               " (and lift a lock after failed logins)."))
        @click.argument("name")
        @pass_ctx
        def user_set_active(ctx: CliContext, name: str, active: bool = active,
                            verb: str = verb) -> None:
            with transaction(ctx, create=False) as session:
                user = users.set_active(session=session, username=name, active=active,
                                         by=cli_user())
                click.echo(f"{verb}d {user.username}")

    @user_group.command("delete")
    @click.argument("name")
    @click.option("--yes", is_flag=True, help="Do not ask first (needed when not at a "
                                              "terminal).")
    @pass_ctx
    def user_delete(ctx: CliContext, name: str, yes: bool) -> None:
        """Delete the account NAME: it can never log in again and its name is free. Its
        reviews stay, by "deleted account N" (disable it instead to keep the name on
        them). The last enabled admin cannot be deleted."""
        if not yes:
            if not is_terminal(sys.stdin):
                raise SpamguardError(f"deleting {name} cannot be undone: add --yes to "
                                     "confirm")
            click.confirm(f"Delete the account {name}? This cannot be undone", abort=True)
        with transaction(ctx, create=False) as session:
            deleted = users.delete_user(session=session, username=name, by=cli_user())
        click.echo(f"deleted {deleted.former}; its reviews ({deleted.reviews}) are kept, "
                   f"shown as by {deleted.shown_as!r}")

    @cli.group("campaigns")
    def campaigns_group() -> None:
        """Group near-identical messages into campaigns."""

    @campaigns_group.command("rebuild")
    @click.option("--similarity", type=NumberRange(0.0, 1.0),
                  default=campaigns.DEFAULT_SIMILARITY, show_default=True,
                  help="Cosine similarity of embeddings at or above which messages group.")
    @click.option("--min-size", type=click.IntRange(min=2), default=campaigns.DEFAULT_MIN_SIZE,
                  show_default=True, help="Smallest group that counts as a campaign.")
    @click.option("--days", type=click.IntRange(min=0, max=MAX_DAYS),
                  default=campaigns.DEFAULT_DAYS, show_default=True,
                  help="Look at messages of the last DAYS days (0: all).")
    @pass_ctx
    def campaigns_rebuild(ctx: CliContext, similarity: float, min_size: int, days: int) -> None:
        """Recompute all campaigns from the active model's (cached) embeddings.

        One rebuild at a time (the ``campaigns`` lock): each embeds and compares every
        recent message, so a second one at once would only double the work; it exits 4.
        """
        from spamguard.db import session_scope
        from spamguard.services import campaign_rebuilds, locks
        from spamguard.services.retrain_jobs import CAMPAIGN_LOCK

        with session_factory_for(ctx, create=False) as factory:
            try:
                lease = locks.acquire(session_factory=factory, name=CAMPAIGN_LOCK,
                                      ttl=CAMPAIGN_LOCK_TTL)
            except LockHeldError as exc:
                raise LockHeldError(f"a campaign rebuild is already running: {exc}") from None
            with lease, lease.kept_alive():
                # Recorded apart from the rebuild's own transaction, for the campaigns page.
                rebuild_id = campaign_rebuilds.started(factory)
                try:
                    with session_scope(factory) as session:
                        encoder = campaigns.active_encoder(session=session,
                                                           settings=ctx.settings)
                        result = campaigns.rebuild_campaigns(
                            session=session, encoder=encoder, similarity=similarity,
                            min_size=min_size, days=days or None)
                except BaseException as exc:
                    with suppress(Exception):  # (the database gone too): exc still shows
                        campaign_rebuilds.failed(factory, rebuild_id, exc)
                    raise
                campaign_rebuilds.finished(factory, rebuild_id, result)
        click.echo(f"{counted(result.campaigns, 'campaign')} holding "
                   f"{result.grouped_messages} of {counted(result.messages, 'message')} "
                   f"({counted(result.distinct_texts, 'distinct text')})")
