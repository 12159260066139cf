"""``spamguard serve``, ``classify-pending`` and ``api-key``: the service's commands."""

from __future__ import annotations

import click

from spamguard.cli.context import CliContext, pass_ctx
from spamguard.services.apikeys import SCOPE_HELP, SCOPES
from spamguard.services.audit import cli_user
from spamguard.wording import counted


def register(cli: click.Group) -> None:
    """Add ``serve``, ``classify-pending`` and the ``api-key`` group to ``cli``."""
    cli.add_command(serve_command)
    cli.add_command(classify_pending_command)
    cli.add_command(api_key_group)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for all interfaces).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Gunicorn worker processes [default: usable cores (a container's "
                   "CPU quota counted), between 2 and 4].")
@click.option("--timeout", type=click.IntRange(10, 3600), default=120, show_default=True,
              help="Seconds a request may take (the first one in a worker loads the model).")
@pass_ctx
def serve_command(ctx: CliContext, host: str, port: int, workers: int | None,
                  timeout: int) -> None:
    """Run the web service (webhook, JSON API, admin) with gunicorn."""
    from spamguard.db import new_sqlite_removed_on_failure
    from spamguard.serving import (
        check_address,
        check_ready,
        default_workers,
        gunicorn_options,
        host_port,
        run_gunicorn,
    )

    settings = ctx.settings
    with new_sqlite_removed_on_failure(settings.resolved_database_url):  # a taken port
        check_ready(settings)
        check_address(host, port)
    workers = workers or default_workers()
    click.echo(f"spamguard: serving on http://{host_port(host, port)} with "
               f"{counted(workers, 'worker')} (home {settings.home})", err=True)
    run_gunicorn(settings, gunicorn_options(host=host, port=port, workers=workers,
                                            timeout=timeout))


@click.command("classify-pending")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Classify at most this many messages [default: all].")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--quiet", is_flag=True,
              help="Print nothing unless something was classified or went wrong (cron mails "
                   "every output).")
@pass_ctx
def classify_pending_command(ctx: CliContext, limit: int | None, batch_size: int,
                             quiet: bool) -> None:
    """Classify stored messages that have no verdict yet, with the active model."""
    from spamguard.cli.context import session_factory_for
    from spamguard.errors import ModelError
    from spamguard.services import messages, registry
    from spamguard.services.model_provider import ModelProvider

    # A plain session: classify_pending commits batch by batch.
    with session_factory_for(ctx, create=False) as factory, factory() as session:
        if not messages.count_pending(session=session):
            # The usual case from cron: no model load (about 10 s) for it, but still an
            # error when no version is active, which the service could not classify with.
            if registry.active_version(session) is None:
                raise ModelError(_no_model_reason(session, None))
            if not quiet:
                click.echo("no pending messages")
            return
        # The service's runtime and quantisation: its verdicts match the service's. A load
        # failure is this command's one error line, not also the service's JSON event.
        provider = ModelProvider.from_settings(ctx.settings, check_seconds=0, log_events=False)
        classifier = provider.get(session=session)
        if classifier is None:
            raise ModelError(_no_model_reason(session, provider.last_error))
        done = messages.classify_pending(session=session, classifier=classifier,
                                         limit=limit, batch_size=batch_size)
        left = messages.count_pending(session=session)
    if done or left or not quiet:
        click.echo(f"classified {done} pending message(s) with {classifier.version}; "
                   f"{left} still pending")


def _no_model_reason(session, load_error: str | None) -> str:
    """Why there is no model to classify with, and what to run."""
    from spamguard.services import registry

    if registry.active_version(session) is not None:  # there is one, but it failed to load
        return load_error or "the active model version could not be loaded"
    versions = registry.list_versions(session)
    if not versions:
        return "no active model could be loaded: run `spamguard train` first"
    candidates = [v.id for v in versions if v.status == "candidate"]
    run = (f"`spamguard promote {candidates[0]}` (the newest candidate)" if candidates
           else "`spamguard promote VERSION`")
    return (f"no model version is active ({len(versions)} registered, none active): run "
            f"{run}, or choose another from `spamguard models`")


@click.group("api-key")
def api_key_group() -> None:
    """Create, list and revoke JSON API keys."""


@api_key_group.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="What the key may do; repeat for more than one (default: all). "
                   + "; ".join(f"{name}: {text}" for name, text in SCOPE_HELP.items()) + ".")
@pass_ctx
def api_key_create(ctx: CliContext, name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key called NAME and print it (it is shown only this once)."""
    from spamguard.cli.context import transaction
    from spamguard.services import apikeys

    with transaction(ctx) as session:
        row, plaintext = apikeys.create_api_key(session=session, name=name,
                                                scopes=scopes or None, by=cli_user())
        key_id, held = row.id, ", ".join(apikeys.key_scopes(row))
    click.echo(plaintext)
    click.echo(f"API key {key_id} ({name}, may: {held}) created; store it now, it cannot be "
               "shown again", err=True)


@api_key_group.command("list")
@pass_ctx
def api_key_list(ctx: CliContext) -> None:
    """List API keys (prefix, name, scopes, created, last used, revoked) — never the keys."""
    from spamguard.cli.context import transaction
    from spamguard.cli.model_commands import format_table
    from spamguard.services import apikeys

    def when(value) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    with transaction(ctx, create=False) as session:
        rows = [(str(k.id), k.key_prefix, k.name, ",".join(apikeys.key_scopes(k)),
                 when(k.created_at), when(k.last_used_at), when(k.revoked_at))
                for k in apikeys.list_api_keys(session=session)]
    if not rows:
        click.echo("no API keys yet: run `spamguard api-key create NAME`")
        return
    click.echo(format_table(rows, ("ID", "PREFIX", "NAME", "SCOPES", "CREATED", "LAST USED",
                                   "REVOKED")))


@api_key_group.command("revoke")
@click.argument("key_ref", metavar="ID_OR_PREFIX")
@pass_ctx
def api_key_revoke(ctx: CliContext, key_ref: str) -> None:
    """Revoke an API key by its id or prefix (requests with it get 401 at once)."""
    from spamguard.cli.context import transaction
    from spamguard.services import apikeys
    from spamguard.sqltypes import as_utc

    with transaction(ctx, create=False) as session:
        row, revoked_now = apikeys.revoke_api_key(session=session, key_ref=key_ref,
                                                   by=cli_user())
        described = f"API key {row.id} ({row.name}, {row.key_prefix})"
        if revoked_now:
            click.echo(f"revoked {described}")
        else:
            when = as_utc(row.revoked_at).strftime("%Y-%m-%d %H:%M UTC")
            click.echo(f"{described} was already revoked on {when}")
