"""``spamguard backup restore``: a backup into a new, empty instance.

Restoring never overwrites: the target database must hold no table (a missing SQLite file,
or a new PostgreSQL database) and no model version folder of the backup may exist under
the target's ``models/``. An operator who wants the old state back stops the service,
moves the instance aside (or creates a new database) and restores into that; the old one
stays until they delete it. The backup is verified first, and a backup from a newer
spamguard is refused (this code could not run its schema).

The registry names each version by its folder's absolute path, which differs on the
machine restored to: the restored rows point at the copies under the target's
``models/`` (and training runs' report paths with them). The model folders are copied
first and the database last, and on SQLite the database file appears whole (written under
a temporary name, upgraded and fixed, renamed), so a failed restore leaves no database
that names missing folders. On PostgreSQL ``pg_restore --single-transaction`` restores all
or nothing, and a failure after it (the upgrade, the fixes) drops the restored tables.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spamguard.services.backup import (
    MODELS,
    BackupError,
    database_kind,
    dies_with_parent,
    find_pg_tool,
    libpq_uri,
    run_pg_tool,
    safe_name,
    verify_backup,
)

# Written in the models folder before a restore copies anything, removed once it is done
# or has removed what it made: one still there means a restore was killed (SIGKILL, power).
UNFINISHED = ".restore-unfinished.json"


@dataclass
class Restored:
    """What :func:`restore_backup` did."""

    manifest: dict[str, Any]
    versions: list[str]  # model versions copied into the target's models folder
    revision: str | None  # the backup's schema revision
    head: str  # the revision it was upgraded to (this spamguard's newest)
    # Versions the registry names (deleted ones aside) whose folders the backup lacks
    # (`backup create` could not copy them): (version, status, the folder still named).
    missing: list[tuple[str, str, str]] = field(default_factory=list)


def restore_backup(backup: Path | str, *, url: str, models_dir: Path, by: str | None = None,
                   log=lambda _line: None) -> Restored:
    """Restore ``backup`` into the empty database at ``url`` and ``models_dir``."""
    from spamguard.db import head_revision

    backup = Path(backup)
    check = verify_backup(backup)
    if check.problems:
        shown = "; ".join(check.problems[:3])
        more = f" and {len(check.problems) - 3} more" if len(check.problems) > 3 else ""
        raise BackupError(f"{backup} fails verification ({shown}{more}): not restored")
    manifest = check.manifest
    database = manifest["database"]
    kind = database_kind(url)
    if database["kind"] != kind:
        raise BackupError(f"{backup} holds a {database['kind']} database and the target is "
                          f"{kind}: restore into the same kind of database (moving between "
                          "SQLite and PostgreSQL is not supported)")
    revision = database.get("revision")
    _known_revision(revision, backup)
    versions = [e["version"] for e in manifest["models"] if e.get("copied")]
    for version in versions:
        if not safe_name(version):
            raise BackupError(f"{backup}: model version {version!r} cannot be a folder name")
    leftovers = unfinished_restore(url, models_dir, versions)
    if leftovers and (running := _running_restore(models_dir)) is not None:
        raise BackupError(f"a restore into this instance is running ({running}): wait for "
                          "it to end")
    _target_is_empty(url, leftovers)
    _no_leftovers(models_dir, versions, leftovers)
    marker = _mark_unfinished(backup, models_dir, versions)
    created: list[Path] = []
    try:
        created = _copy_versions(backup, versions, models_dir, log)
        moved = {e["version"]: (e["directory"], str((models_dir / e["version"]).resolve()))
                 for e in manifest["models"] if e.get("copied")}
        if kind == "sqlite":
            _restore_sqlite(backup / database["file"], url, moved, manifest, by)
        else:
            _restore_postgresql(backup / database["file"], url, moved, manifest, by)
    except BaseException:  # a failure, Ctrl-C or SIGTERM (spamguard.cli): undo it all
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        marker.unlink(missing_ok=True)
    upgraded = "" if revision == head_revision() else f", upgraded to {head_revision()}"
    log(f"restore: database restored (revision {revision or 'none'}{upgraded})")
    missing = [(e["version"], e["status"], e["directory"]) for e in manifest["models"]
               if not e["copied"] and e["status"] != "deleted"]
    return Restored(manifest, versions, revision, head_revision(), missing)


def _known_revision(revision: str | None, backup: Path) -> None:
    from spamguard.db import is_known_revision

    if not is_known_revision(revision):
        raise BackupError(f"{backup} holds a database at revision {revision}, which this "
                          "spamguard does not know: restore it with the release that made "
                          "it, or a newer one")


def unfinished_restore(url: str, models_dir: Path, versions: list[str]) -> list[Path]:
    """What a restore into this instance that was killed left: its marker (``UNFINISHED``)
    and the version folders it names, the backup's versions' temporary folders under
    ``models_dir``, and an SQLite database's temporary copy (with its -wal and -shm).
    Empty when there is no sign of one: a version folder alone may be another instance's."""
    found: list[Path] = []
    marker = models_dir / UNFINISHED
    named: list[str] = []
    if marker.is_file():
        found.append(marker)
        try:
            named = [str(v) for v in json.loads(marker.read_text(encoding="utf-8"))["versions"]
                     if safe_name(str(v))]
        except (OSError, ValueError, KeyError, TypeError):
            named = []
    for version in versions:
        found += sorted(models_dir.glob(f".{glob.escape(version)}.restore-*"))
    if database_kind(url) == "sqlite":
        from spamguard.db import sqlite_file

        file = sqlite_file(url)
        if file is not None:
            found += sorted(file.parent.glob(f".{glob.escape(file.name)}.restore-*"))
    if found:  # then the backup's version folders are the restore's too, if it named them
        found += [models_dir / v for v in dict.fromkeys(named or versions)
                  if os.path.lexists(models_dir / v)]
    return found


def _running_restore(models_dir: Path) -> str | None:
    """The marker's restore when it is still running on this machine ("pid N, started
    T"), else None: its files are not leftovers to delete."""
    try:
        marker = json.loads((models_dir / UNFINISHED).read_text(encoding="utf-8"))
        pid, host = int(marker["pid"]), marker.get("host")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or pid == os.getpid():
        return None  # another machine's restore (shared storage) cannot be checked
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return f"pid {pid}, started {marker.get('started_at', '?')}"


def _no_leftovers(models_dir: Path, versions: list[str], leftovers: list[Path]) -> None:
    """Refuse a models folder that holds the backup's versions, saying so when they are
    what a killed restore left, and what to delete."""
    there = next((models_dir / v for v in versions if os.path.lexists(models_dir / v)), None)
    if leftovers:
        listed = ", ".join(str(p) for p in leftovers)
        if there is not None:
            raise BackupError(f"{there} already exists, left by an earlier restore that was "
                              f"stopped before the end (killed): delete {listed} and restore "
                              "again")
        raise BackupError("an earlier restore into this instance was stopped before the end "
                          f"(killed) and left {listed}: delete them and restore again")
    if there is not None:
        raise BackupError(f"{there} already exists: restore into an instance whose models "
                          "folder does not hold the backup's versions")


def _mark_unfinished(backup: Path, models_dir: Path, versions: list[str]) -> Path:
    models_dir.mkdir(parents=True, exist_ok=True)
    marker = models_dir / UNFINISHED
    marker.write_text(json.dumps({
        "backup": str(backup.resolve()), "versions": versions, "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n",
        encoding="utf-8")
    return marker


def _target_is_empty(url: str, leftovers: list[Path] | None = None) -> None:
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from spamguard.db import first_line, make_engine, safe_url, sqlite_file

    file = sqlite_file(url) if database_kind(url) == "sqlite" else None
    if database_kind(url) == "sqlite":
        if file is None:
            raise BackupError("only an SQLite database in a file can be restored into")
        for leftover in (Path(f"{file}-wal"), Path(f"{file}-journal")):
            if leftover.exists() and not file.exists():
                raise BackupError(f"{leftover} is there without its database {file}: move "
                                  "it aside first (SQLite would apply it to the restored "
                                  "database)")
        if not file.exists():
            return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot open the target database {safe_url(url)}: "
                          f"{first_line(exc)}") from None
    finally:
        engine.dispose()
    if tables:
        where = file.resolve() if file is not None else safe_url(url)
        unfinished = next((p for p in leftovers or () if p.name == UNFINISHED), None)
        if unfinished is not None:  # killed after pg_restore, before the end
            raise BackupError(
                f"the target database {where} is not empty ({len(tables)} tables), and "
                f"{unfinished} says a restore into it was stopped before the end (killed): "
                "if they are that restore's, empty the database (or create a new one), "
                f"delete {', '.join(str(p) for p in leftovers)} and restore again")
        raise BackupError(
            f"the target database {where} is not empty ({len(tables)} tables): restore "
            "into a new one (stop the service and move the old instance aside, or create a "
            "new PostgreSQL database and point SPAMGUARD_DATABASE_URL at it)")


def _copy_versions(backup: Path, versions: list[str], models_dir: Path, log) -> list[Path]:
    """Copy each version folder under a temporary name, then rename it into place."""
    models_dir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    work: Path | None = None
    try:
        for version in versions:
            work = Path(tempfile.mkdtemp(prefix=f".{version}.restore-", dir=models_dir))
            shutil.copytree(backup / MODELS / version, work, dirs_exist_ok=True)
            work.chmod(0o755)  # mkdtemp's 0700 would hide it from a service run as another user
            os.rename(work, models_dir / version)
            work = None
            created.append(models_dir / version)
            log(f"restore: model version {version} copied to {models_dir / version}")
    except BaseException:
        for folder in [*created, *([work] if work is not None else [])]:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return created


def _restore_sqlite(source: Path, url: str, moved: dict[str, tuple[str, str]],
                    manifest: dict[str, Any], by: str | None) -> None:
    from spamguard.db import ensure_sqlite_parent, sqlite_file
    from spamguard.ml.files import sync_file, sync_folder

    target = sqlite_file(url)
    empty_file_there = target.exists()  # checked empty by _target_is_empty
    ensure_sqlite_parent(url)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.restore-", dir=target.parent)
    os.close(handle)
    work = Path(name)
    try:
        shutil.copyfile(source, work)
        _finish(f"sqlite:///{work}", moved, manifest, by)
        sync_file(work)
        if empty_file_there:
            os.replace(work, target)
        else:  # a database that appeared meanwhile (a service started) is never replaced
            try:
                os.link(work, target)
            except FileExistsError:
                raise BackupError(f"{target} appeared while the backup was restored (was "
                                  "the service started?): nothing was changed") from None
            work.unlink()
        sync_folder(target.parent, files=False)
    except BaseException:
        for leftover in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            leftover.unlink(missing_ok=True)
        raise


def _restore_postgresql(dump: Path, url: str, moved: dict[str, tuple[str, str]],
                        manifest: dict[str, Any], by: str | None) -> None:
    pg_restore = find_pg_tool("pg_restore")
    with tempfile.TemporaryDirectory(prefix="spamguard-restore-") as folder:
        entries = Path(folder) / "entries.list"
        entries.write_text(_restorable_entries(pg_restore, dump), encoding="utf-8")
        run_pg_tool([pg_restore, "--no-owner", "--no-privileges", "--single-transaction",
                     "--exit-on-error", f"--use-list={entries}", "--dbname", libpq_uri(url),
                     str(dump)], url)
    try:
        _finish(url, moved, manifest, by)
    except BaseException:
        _drop_restored_tables(url)
        raise


def _restorable_entries(pg_restore: str, dump: Path) -> str:
    """The dump's table of contents less its extensions' comments: ``COMMENT ON EXTENSION``
    needs the extension's owner, and in a target where an administrator created pg_trgm
    (for a role that may not) the restore would fail on it. CREATE EXTENSION IF NOT EXISTS
    stays; the comment is the extension's own description, which it has anyway."""
    import subprocess

    listed = subprocess.run([pg_restore, "--list", str(dump)], capture_output=True, text=True,
                            check=False, preexec_fn=dies_with_parent())
    if listed.returncode != 0:
        first = (listed.stderr.strip().splitlines() or ["unreadable"])[0]
        raise BackupError(f"pg_restore cannot read {dump}: {first}")
    return "".join(line + "\n" for line in listed.stdout.splitlines()
                   if " COMMENT - EXTENSION " not in line)


def _drop_restored_tables(url: str) -> None:
    """Empty the target again after a restore that failed once pg_restore had committed
    (every table there is the restore's: the target held none before)."""
    from sqlalchemy import inspect

    from spamguard.db import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            quote = connection.dialect.identifier_preparer.quote
            for table in inspect(connection).get_table_names():
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(table)} CASCADE")
    finally:
        engine.dispose()


def _finish(url: str, moved: dict[str, tuple[str, str]], manifest: dict[str, Any],
            by: str | None) -> None:
    """Upgrade the restored database to this spamguard's schema, point each restored
    version (and its training runs' report paths) at its copy, and add the restore to the
    audit trail, in one transaction after the upgrade."""
    from sqlalchemy import text

    from spamguard.db import make_engine, make_session_factory, session_scope, upgrade_schema
    from spamguard.services import audit

    upgrade_schema(url)
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            for version, (old, new) in moved.items():
                session.execute(text("UPDATE model_versions SET directory = :new "
                                     "WHERE id = :version"), {"new": new, "version": version})
                session.execute(text(
                    "UPDATE training_runs SET report_path = :new || substr(report_path, :cut) "
                    "WHERE candidate_version_id = :version "
                    "AND substr(report_path, 1, :length) = :old"),
                    {"new": new, "cut": len(old) + 1, "version": version,
                     "length": len(old), "old": old})
            audit.record(session, actor=by, action="backup.restore",
                         target=manifest["created_at"],
                         spamguard=manifest.get("spamguard_version"),
                         revision=manifest["database"].get("revision"),
                         versions=len(moved))
    finally:
        engine.dispose()
