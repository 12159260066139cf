"""``spamguard db upgrade``, ``db current`` and ``db compact``: create, upgrade and inspect
the schema, and give back the space deleted messages held."""

from __future__ import annotations

import sys

import click

from spamguard.cli.context import CliContext, pass_ctx
from spamguard.db import (
    make_engine,
    missing_sqlite_file,
    safe_url,
    schema_status,
    upgrade_schema,
)


def register(cli: click.Group) -> None:
    """Add the ``db`` command group to ``cli``."""

    @cli.group("db")
    def db_group() -> None:
        """Create, upgrade and inspect the database schema, and compact the database."""

    @db_group.command("upgrade")
    @pass_ctx
    def upgrade_command(ctx: CliContext) -> None:
        """Create the database or upgrade its schema to the newest revision."""
        url = ctx.settings.resolved_database_url
        upgrade_schema(url)
        engine = make_engine(url)
        try:
            status = schema_status(engine)
        finally:
            engine.dispose()
        click.echo(f"database {safe_url(url)} is at revision {status.current} (newest)")

    @db_group.command("current")
    @click.option("--check", is_flag=True, help="Exit with status 1 unless the schema is current.")
    @pass_ctx
    def current_command(ctx: CliContext, check: bool) -> None:
        """Show the database's schema revision and whether it needs upgrading."""
        url = ctx.settings.resolved_database_url
        missing = missing_sqlite_file(url)
        if missing is not None:
            click.echo(f"{safe_url(url)}: no database yet ({missing} does not exist): run "
                       "`spamguard db upgrade`")
            sys.exit(1 if check else 0)
        engine = make_engine(url)
        try:
            status = schema_status(engine)
        finally:
            engine.dispose()
        at = status.current or "empty"
        if status.is_current:
            click.echo(f"{safe_url(url)}: at {at} (up to date)")
            return
        advice = "run `spamguard db upgrade`" if status.known else "upgrade spamguard"
        click.echo(f"{safe_url(url)}: at {at}, newest is {status.head}: {advice}")
        if check:
            sys.exit(1)

    @db_group.command("compact")
    @pass_ctx
    def compact_command(ctx: CliContext) -> None:
        """Give back the space deleted messages held. On SQLite: merge the text index,
        rebuild the file and empty its write-ahead log, so erased text is gone from the
        file (writes wait meanwhile). On PostgreSQL: VACUUM spamguard's tables."""
        from sqlalchemy.exc import OperationalError

        from spamguard.cli.context import session_factory_for
        from spamguard.db import database_unavailable, first_line
        from spamguard.errors import SpamguardError
        from spamguard.services.compaction import compact
        from spamguard.wording import megabytes

        url = ctx.settings.resolved_database_url
        with session_factory_for(ctx, create=False) as factory:
            try:
                done = compact(factory.kw["bind"])
            except OperationalError as exc:
                if not database_unavailable(exc):
                    # A read-only file or URI, a full disk (VACUUM writes a whole copy):
                    # SQLite rolled it back, one line says why.
                    raise SpamguardError(f"{safe_url(url)}: not compacted: {first_line(exc)}"
                                         ) from exc
                raise SpamguardError(
                    f"{safe_url(url)}: not compacted: the database is busy or unreachable "
                    f"({first_line(exc)}); nothing changed, run it again when the service is quiet"
                ) from exc
        if done.warnings:
            raise SpamguardError(
                f"{safe_url(url)}: VACUUM warned for {len(done.warnings)} of "
                f"{len(done.tables)} tables, whose space may not be reusable: "
                f"{'; '.join(done.warnings[:3])} (a role that does not own the tables "
                "cannot vacuum them: run it as the one that runs `spamguard db upgrade`)")
        if done.backend != "sqlite":
            click.echo(f"{safe_url(url)}: vacuumed {len(done.tables)} tables in "
                       f"{done.seconds:.1f} s; the space of deleted rows is reusable "
                       "(VACUUM FULL, which locks each table, would rewrite them)")
            return
        sizes = ""
        if done.bytes_before is not None and done.bytes_after is not None:
            sizes = f": {megabytes(done.bytes_before)} -> {megabytes(done.bytes_after)}"
        index = "text index merged, " if done.index_merged else ""
        click.echo(f"{safe_url(url)}: compacted in {done.seconds:.1f} s{sizes} "
                   f"({index}file rebuilt)")
        if not done.log_emptied:
            click.echo("note: a reader kept the write-ahead log from being emptied, and it "
                       "may still hold deleted text: run `spamguard db compact` again when "
                       "the service is quiet", err=True)
