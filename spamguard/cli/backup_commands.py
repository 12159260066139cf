"""``spamguard backup create / verify / restore``: the database and its model versions in one
folder (see :mod:`spamguard.services.backup` and :mod:`spamguard.services.backup_restore`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spamguard.cli.context import CliContext, pass_ctx
from spamguard.wording import megabytes


def _progress(line: str) -> None:
    click.echo(line, err=True)


def register(cli: click.Group) -> None:
    """Add the ``backup`` command group to ``cli``."""

    @cli.group("backup")
    def backup_group() -> None:
        """Back up the database and its model versions, check a backup, restore one."""

    @backup_group.command("create")
    @click.argument("folder", type=click.Path(path_type=Path))
    @click.option("--quiet", is_flag=True,
                  help="Print nothing when the backup is whole (for cron, which mails "
                       "any output); notes, warnings and errors still go to stderr.")
    @pass_ctx
    def create_command(ctx: CliContext, folder: Path, quiet: bool) -> None:
        """Write a backup into FOLDER (new; readable by you only): the database (SQLite's
        online backup, or pg_dump) and every model version its registry names, with a
        manifest of checksums. Safe while the service runs."""
        from spamguard.db import is_known_revision
        from spamguard.services.backup import create_backup

        made = create_backup(ctx.settings.resolved_database_url, folder,
                             log=(lambda line: None) if quiet else _progress, warn=_progress)
        revision = made.manifest["database"]["revision"]
        if not is_known_revision(revision):  # made by a newer release: only it can restore
            click.echo(f"note: the database is at revision {revision}, newer than this "
                       "spamguard knows: restore this backup with the release that upgraded "
                       "it (or a newer one)", err=True)
        for version, reason in made.missing:
            click.echo(f"warning: model version {version} not in the backup: {reason}",
                       err=True)
        database = made.manifest["database"]
        copied = sum(1 for e in made.manifest["models"] if e["copied"])
        size = sum(f["size"] for f in made.manifest["files"].values())
        if not quiet or made.missing:
            click.echo(f"backup written to {made.path}: {database['kind']} database at "
                       f"revision {database['revision']}, "
                       f"{database['counts'].get('messages', 0):,} message(s), {copied} "
                       f"model version(s), {megabytes(size)}")
        if made.missing:
            sys.exit(1)

    @backup_group.command("verify")
    @click.argument("folder", type=click.Path(path_type=Path))
    def verify_command(folder: Path) -> None:
        """Check a backup: every file against the manifest's checksums, and the database
        copy itself. Exit 1 if anything is wrong."""
        from spamguard.services.backup import verify_backup

        check = verify_backup(folder)
        for note in check.notes:
            click.echo(f"note: {note}", err=True)
        for problem in check.problems:
            click.echo(f"{folder}: {problem}")
        made = check.manifest
        if check.problems:
            click.echo(f"{folder}: {len(check.problems)} problem(s): do not restore from it")
            sys.exit(1)
        click.echo(f"{folder}: ok (made {made['created_at']} by spamguard "
                   f"{made.get('spamguard_version')}; {made['database']['kind']} database at "
                   f"revision {made['database'].get('revision')}; "
                   f"{len(made['files'])} file(s) checked)")

    @backup_group.command("restore")
    @click.argument("folder", type=click.Path(path_type=Path))
    @pass_ctx
    def restore_command(ctx: CliContext, folder: Path) -> None:
        """Restore a backup into a new, empty instance (SPAMGUARD_HOME /
        SPAMGUARD_DATABASE_URL): verifies it, copies its model versions into the models
        folder, restores the database and upgrades it to this spamguard's schema. Never
        overwrites: an instance that holds tables or the backup's versions is refused."""
        from spamguard.services.audit import cli_user
        from spamguard.services.backup_restore import restore_backup

        settings = ctx.settings
        done = restore_backup(folder, url=settings.resolved_database_url,
                              models_dir=settings.models_dir, by=cli_user(), log=_progress)
        upgraded = ("" if done.revision == done.head
                    else f", upgraded from {done.revision} to {done.head}")
        click.echo(f"restored {folder} (made {done.manifest['created_at']}): database"
                   f"{upgraded}, {len(done.versions)} model version(s) in "
                   f"{settings.models_dir}. The embedding cache starts empty: the first "
                   "classification loads the backbone.")
        for version, status, directory in done.missing:
            click.echo(f"warning: model version {version} ({status}) is not in the backup "
                       f"(it could not be copied when the backup was made): the restored "
                       f"registry still names {directory}", err=True)
        if done.missing:
            sys.exit(1)
