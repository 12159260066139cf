"""``spamguard models`` (and ``models delete``, ``models prune``), ``promote``, ``rollback``
and ``cache prune``: the model version registry and the files its versions need. A
``rollback`` also puts automatic promotion on hold (:mod:`spamguard.cli.promotion_commands`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path, PurePath

import click
from sqlalchemy.orm import Session

from spamguard.cli.context import CliContext, NumberRange, pass_ctx, transaction
from spamguard.cli.promotion_commands import rollback_hold, still_held_note
from spamguard.config import MAX_TRAFFIC_DAYS, MAX_TRAFFIC_LIMIT, TRAFFIC_DAYS, TRAFFIC_LIMIT
from spamguard.models import ModelVersion
from spamguard.services import registry, version_cleanup
from spamguard.services.audit import cli_user
from spamguard.wording import counted, megabytes

# TEST: each version's own test split (versions trained on different data are not
# comparable on it); EVAL: the evaluation set retraining compares on, as it was at the
# version's latest comparison (it grows with `evalset add`, and its labels follow reviews,
# so EVAL N, its size then, tells rows measured on different sets apart).
COLUMNS = ("VERSION", "STATUS", "CREATED", "BACKBONE", "TEST F1", "TEST MCC", "TEST HAM FPR",
           "EVAL MCC", "EVAL HAM FPR", "EVAL N")


def _score(value: float | None) -> str:
    """Format a metric for the table."""
    return "-" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    """Format a rate as reports and the README do."""
    return "-" if value is None else f"{value:.2%}"


def version_row(version: ModelVersion) -> tuple[str, ...]:
    """Return one table row for ``version`` (ham false-positive rates in percent)."""
    test, evaluation = registry.headline_metrics(version), registry.headline_metrics(
        version, "eval")
    return (
        version.id,
        version.status,
        version.created_at.strftime("%Y-%m-%d %H:%M"),
        PurePath(version.backbone).name or version.backbone,
        *((_percent if name == "ham_fpr" else _score)(test[name])
          for name in registry.HEADLINE_METRICS),
        _score(evaluation["mcc"]), _percent(evaluation["ham_fpr"]),
        str(registry.eval_size(version) or "-"),
    )


def _json_row(version: ModelVersion) -> dict:
    """One ``models --json`` line: test-split headline metrics, and ``eval`` for retrained
    versions."""
    return {"version": version.id, "status": version.status,
            "created_at": version.created_at.isoformat(), "backbone": version.backbone,
            "directory": version.directory, "threshold": version.threshold,
            **registry.headline_metrics(version),
            "eval": registry.headline_metrics(version, "eval"),
            "eval_n": registry.eval_size(version)}


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...] = COLUMNS) -> str:
    """Align ``rows`` under ``header`` in plain-text columns."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _switch(ctx: CliContext, action: Callable[[Session], ModelVersion], verb: str, *,
            create: bool = False,
            then: Callable[[Session, str, str], str | None] | None = None) -> None:
    """Run a registry change in one transaction and report old and new active versions
    (``create``: a missing database may be made, as for registering a folder). ``then(session,
    before, after)`` runs in the same transaction (the hold a rollback puts in place) and
    returns a line to print after the report (``note: ...`` on stderr), or None."""
    with transaction(ctx, create=create) as session:
        before = registry.active_version(session)
        before_id = before.id if before else "none"
        version = action(session)
        said = then(session, before_id, version.id) if then else None
    if version.id == before_id:
        click.echo(f"{version.id} is already the active version; nothing changed")
    else:
        click.echo(f"{verb} {version.id} (was {before_id}); running services switch without "
                   "restart")
    if said:
        click.echo(said, err=said.startswith("note: "))


def _list_versions(ctx: CliContext, as_json: bool, show_all: bool = False) -> None:
    """``spamguard models``: the table, or JSON lines; deleted versions only with
    ``show_all`` (a nightly prune leaves one a night, and a list of them buries the rest),
    the table then saying how many it leaves out."""
    from spamguard.errors import NoDatabaseError

    try:
        with transaction(ctx, create=False) as session:
            versions = registry.list_versions(session)
            hidden = 0 if show_all else sum(v.status == "deleted" for v in versions)
            versions = [v for v in versions if show_all or v.status != "deleted"]
            rows = [_json_row(v) if as_json else version_row(v) for v in versions]
            held = None if as_json else still_held_note(session)
    except NoDatabaseError as exc:
        if as_json:  # a script must not mistake a wrong home for an empty registry
            raise
        click.echo(f"no model versions yet: {exc}")
        return
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    elif not rows and not hidden:
        click.echo("no model versions yet: run `spamguard train`")
    else:
        if rows:
            click.echo(format_table(rows))
        if hidden:
            click.echo(f"({counted(hidden, 'deleted version')} not shown: --all lists them)")
    if held:  # a forgotten hold keeps every retrained version out of service (a note,
        click.echo(held, err=True)  # on stderr as `promote`'s: stdout stays the table)


def _folder_line(folder: version_cleanup.VersionFolder, models_dir: Path, *,
                 dry_run: bool) -> str:
    """What happens (or would) to one deleted version's folder."""
    if folder.already_deleted:
        head = f"{folder.version_id} was already deleted"
        if not folder.removable:
            return f"{head}; nothing to do"
    else:
        head = f"{'would delete' if dry_run else 'deleted'} {folder.version_id}"
    if folder.removable:
        return f"{head}: {'would remove' if dry_run else 'removed'} {folder.directory} " \
               f"({megabytes(folder.size)})"
    if folder.inside:
        return f"{head}: its folder {folder.directory} was already gone"
    return (f"{head}: registry entry only; its folder {folder.directory} is outside "
            f"{models_dir} and stays where it is")


def _report(deletion: version_cleanup.Deletion, models_dir: Path, *, dry_run: bool,
            kept: str = "") -> None:
    """Say what became of each deleted version's folder (the folders were removed after
    the deletion committed), then a summary of the space freed; a folder that could not be
    removed is an error naming it, to be removed by hand (exit 2)."""
    failed = deletion.failed
    for folder in deletion.folders:
        if folder.version_id not in failed:
            click.echo(_folder_line(folder, models_dir, dry_run=dry_run))
    freed = megabytes(deletion.freed)
    versions = counted(deletion.newly_deleted, "model version")
    summary = (f"would delete {versions}, freeing {freed}" if dry_run
               else f"deleted {versions}, freed {freed}")
    click.echo(f"{summary}; {kept}" if kept else summary)
    for folder in deletion.folders:
        if folder.version_id in failed:
            click.echo(f"error: could not remove {folder.directory} "
                       f"({failed[folder.version_id]}): version {folder.version_id} is "
                       "deleted in the registry; remove the folder by hand", err=True)
    if failed:
        sys.exit(2)


def _at_least_one(_ctx: click.Context, _param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"must be at least 1 (got {value}): the newest version "
                                 "always stays")
    return value


def _same_folder(one: Path, two: Path) -> bool:
    try:
        return one.resolve() == two.resolve()
    except OSError:
        return False


def register(cli: click.Group) -> None:
    """Add ``models`` (with ``delete`` and ``prune``), ``promote``, ``rollback`` and
    ``cache prune`` to ``cli``."""

    @cli.group("models", invoke_without_command=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
    @click.option("--all", "show_all", is_flag=True,
                  help="Also list deleted versions (left out otherwise).")
    @click.pass_context
    def models_group(click_ctx: click.Context, as_json: bool, show_all: bool) -> None:
        """List model versions with their status and test metrics (no subcommand), or
        delete old ones (delete, prune)."""
        if click_ctx.invoked_subcommand is not None:
            if as_json or show_all:
                raise click.UsageError("--json and --all go with the list, not with a "
                                       "subcommand")
            return
        _list_versions(click_ctx.ensure_object(CliContext), as_json, show_all)

    @models_group.command("delete", short_help="Delete model versions (their registry "
                                               "entries stay, marked deleted).")
    @click.argument("version_ids", metavar="VERSION...", nargs=-1, required=True)
    @click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
    @pass_ctx
    def models_delete_command(ctx: CliContext, version_ids: tuple[str, ...],
                              dry_run: bool) -> None:
        """Delete model versions: their folders under SPAMGUARD_HOME/models are removed,
        their registry entries kept (marked deleted). The active version, the one rollback
        returns to and one a running retrain uses are refused."""
        models_dir = ctx.settings.models_dir
        deletion = version_cleanup.delete_versions(
            lambda: transaction(ctx, create=False), list(version_ids), models_dir,
            dry_run=dry_run, by=cli_user())
        _report(deletion, models_dir, dry_run=dry_run)

    @models_group.command("compare", short_help="Which recent verdicts a version would "
                                                "change, against the active one.")
    @click.argument("version_id", metavar="VERSION")
    @click.option("--against", metavar="VERSION", default=None,
                  help="Compare with this version instead of the active one.")
    @click.option("--days", type=NumberRange(0, MAX_TRAFFIC_DAYS, min_open=True),
                  default=TRAFFIC_DAYS, show_default=True,
                  help="Messages received in the last DAYS days.")
    @click.option("--limit", type=click.IntRange(1, MAX_TRAFFIC_LIMIT),
                  default=TRAFFIC_LIMIT, show_default=True,
                  help="At most this many of them, the newest.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @pass_ctx
    def models_compare_command(ctx: CliContext, version_id: str, against: str | None,
                               days: float, limit: int, as_json: bool) -> None:
        """Score the newest messages received in the last DAYS days (at most LIMIT; those a
        sender rule labelled left out) with VERSION and with the active version (or
        --against), and say which verdicts VERSION would change, each way, naming the
        messages by id, most changed first. Nothing is stored or switched."""
        from spamguard.cli.ml_commands import json_line, resolve_model_dir
        from spamguard.errors import ModelError
        from spamguard.ml.classifier import SpamClassifier
        from spamguard.services import traffic_diff

        try:
            served_dir = resolve_model_dir(ctx, against)
        except ModelError as exc:
            if against is None and "no active model" in str(exc):
                raise ModelError("no active model to compare with: give --against VERSION"
                                 ) from None
            raise
        other_dir = resolve_model_dir(ctx, version_id)
        with transaction(ctx, create=False) as session:
            traffic = traffic_diff.recent_traffic(session, days=days, limit=limit)
            active = registry.active_version(session)
            active_dir = Path(active.directory) if active is not None else None
        cache = ctx.settings.cache_dir
        served = SpamClassifier.load(served_dir, cache_root=cache)
        other = SpamClassifier.load(other_dir, cache_root=cache, reusable=served.encoder.backbone)
        # --against names the active version, or another one: then the output must not
        # call it active
        is_served = against is None or (active_dir is not None and _same_folder(
            served_dir, active_dir))
        diff = traffic_diff.compare(traffic, served, other, served=is_served)
        if as_json:
            click.echo(json_line(diff))
            return
        for line in traffic_diff.render_markdown(diff):
            click.echo(line.removeprefix("## "))

    @models_group.command("prune", short_help="Delete all but the N newest model versions "
                                              "(and those that must stay).")
    @click.option("--keep", type=int, required=True, metavar="N", callback=_at_least_one,
                  help="How many of the newest versions to keep (at least 1).")
    @click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
    @pass_ctx
    def models_prune_command(ctx: CliContext, keep: int, dry_run: bool) -> None:
        """Delete every model version but the N newest (by creation time), the active one,
        the one rollback returns to, the one active last before the active one (after a
        rollback, the one it left) and any a running retrain uses; as `models delete`."""
        with transaction(ctx, create=False) as session:
            pruning = registry.prune_versions(session=session, keep=keep, dry_run=dry_run,
                                              by=cli_user())
        keeps = "would keep" if dry_run else "kept"
        for version_id, reason in pruning.protected.items():
            click.echo(f"{keeps} {version_id}: {reason}")
        kept = f"{keeps} {len(pruning.newest) + len(pruning.protected)}: the " \
               f"{len(pruning.newest)} newest"
        if pruning.protected:
            kept += f" and {len(pruning.protected)} that must stay (above)"
        models_dir = ctx.settings.models_dir
        _report(version_cleanup.remove_folders(pruning.deleted, models_dir, dry_run=dry_run),
                models_dir, dry_run=dry_run, kept=kept)

    @cli.command("promote")
    @click.argument("version_id", metavar="VERSION")
    @pass_ctx
    def promote_command(ctx: CliContext, version_id: str) -> None:
        """Make VERSION the active model version (the current one is retired).

        VERSION is a registered version id, or a version folder (one with model.json, e.g.
        written by the Python API's train_model), which is registered first.
        """
        if not version_id.strip():  # Path("") is the working folder, named as "no version"
            raise click.BadParameter("give a version id or a version folder, not nothing",
                                     param_hint="VERSION")
        folder = Path(version_id)
        if "/" in version_id and not folder.exists():  # version ids hold no slash
            raise click.BadParameter(f"{version_id}: no such folder", param_hint="VERSION")

        def promote(session: Session) -> ModelVersion:
            target = version_id
            if folder.is_dir():  # a folder: register it (or say why it is no version)
                target = registry.register_version(session=session, version_dir=folder,
                                                   activate_if_none=False).id
            return registry.promote(session=session, version_id=target, by=cli_user())

        # A promotion by hand is a person's decision: a hold on automatic promotion stays
        # (and is named, so nobody is surprised that retraining promotes nothing).
        _switch(ctx, promote, "promoted", create=folder.is_dir(),
                then=lambda session, _before, _after: still_held_note(session))

    @cli.command("rollback")
    @click.option("--no-hold", is_flag=True,
                  help="Do not put automatic promotion on hold (by default the next "
                       "`spamguard retrain` cannot promote until `spamguard promotion "
                       "release`).")
    @pass_ctx
    def rollback_command(ctx: CliContext, no_hold: bool) -> None:
        """Re-activate the previously active model version, and put automatic promotion
        on hold so the next retraining does not undo the rollback (unless --no-hold)."""
        def hold(session: Session, before: str, after: str) -> str | None:
            if no_hold:
                return still_held_note(session)
            return rollback_hold(session, before=before, after=after)

        _switch(ctx, lambda s: registry.rollback(session=s, by=cli_user()), "rolled back to",
                then=hold)

    @cli.group("cache")
    def cache_group() -> None:
        """The embedding cache and exported ONNX graphs under SPAMGUARD_HOME/cache."""

    @cache_group.command("prune")
    @click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
    @pass_ctx
    def cache_prune_command(ctx: CliContext, dry_run: bool) -> None:
        """Remove cached embeddings and ONNX graphs of backbones no registered model
        version uses, and those of an older graph format or a replaced int8 recipe (files
        changed in the last 24 hours are kept)."""
        from spamguard.services.cache_prune import identities_in_use, prune_cache

        with transaction(ctx, create=False) as session:
            in_use = identities_in_use(session)
        result = prune_cache(ctx.settings.cache_dir, in_use, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        for path, size in result.removed:
            click.echo(f"{verb} {path} ({megabytes(size)})")
        for path in result.undescribed:
            click.echo(f"kept {path}: its space.json is damaged, so whose embeddings these "
                       "are cannot be told (a model using them rewrites it when it next runs; "
                       "delete the folder if none does)")
        freed, kept = megabytes(result.removed_bytes), megabytes(result.kept_bytes)
        click.echo(f"{verb} {len(result.removed)} cache entries ({freed}); kept "
                   f"{len(result.kept)} ({kept}): those of the {len(in_use)} backbone(s) "
                   "registered versions use, and any changed in the last 24 hours")
