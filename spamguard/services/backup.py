"""Backups of an instance: the database and the model versions its registry names, in one
folder with a manifest of checksums (``spamguard backup create`` and ``verify``).

The database and the model folders must agree: a restored registry that names a version
whose folder is not there cannot serve. So the registry is read from the same snapshot the
database copy holds (SQLite: the copy itself; PostgreSQL: ``pg_dump --snapshot`` of a
transaction that reads the registry too), and each version it names, other than deleted
ones, is copied into ``models/<version>/``. A version folder is never changed once written,
so copying it after the snapshot copies what the snapshot names, unless ``models delete``
or ``prune`` removes it meanwhile: a copy whose source changed under it is not kept.

Not kept: the embedding cache and exported ONNX graphs (rebuilt from the backbone when
needed), the development secret key (production keys come from the environment) and logs.
The folder is written under a temporary name and renamed once complete, so a backup that
has its final name is whole; it is readable by its owner only (it holds every message).
:mod:`spamguard.services.backup_restore` restores one into a new, empty instance.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from spamguard.child_processes import dies_with_parent
from spamguard.errors import SpamguardError
from spamguard.wording import megabytes

FORMAT = "spamguard-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_FILES = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}
MODELS = "models"
COUNTED_TABLES = ("messages", "reviews", "model_versions", "users")
PG_TOOLS_HINT = ("install PostgreSQL's client tools of the server's major version or newer "
                 "(Debian: postgresql-client)")

Log = Callable[[str], None]
# Errors of the backup's own folder, not of a version's: they stop the backup.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
# The name a backup is written under until complete: ".NAME.partial-" and mkdtemp's 8.
PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-[a-z0-9_]{8}")


class BackupError(SpamguardError):
    """A backup that cannot be made, read or restored as asked."""


@dataclass
class Backup:
    """What :func:`create_backup` wrote: the folder, its manifest, and the versions the
    registry names whose folders could not be copied (``missing``: version, reason)."""

    path: Path
    manifest: dict[str, Any]
    missing: list[tuple[str, str]] = field(default_factory=list)


def _quiet(_line: str) -> None:
    pass


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql``."""
    from spamguard.db import is_sqlite

    return "sqlite" if is_sqlite(url) else "postgresql"


def create_backup(url: str, destination: Path | str, *, log: Log = _quiet,
                  warn: Log | None = None) -> Backup:
    """Back up the database at ``url`` and the model versions it names into the new folder
    ``destination`` (its parent is created if missing). ``log`` hears the progress, ``warn``
    (default ``log``) what a person should act on even when the progress is not wanted."""
    destination = Path(destination)
    warn = warn or log
    if os.path.lexists(destination):
        raise BackupError(f"{destination} already exists: give a new folder for the backup")
    destination.parent.mkdir(parents=True, exist_ok=True)
    for leftover in unfinished_backups(destination.parent):
        killed = destination.parent / PARTIAL.fullmatch(leftover.name)["name"]
        warn(f"note: {leftover} is what a `backup create` of {killed} that was killed left "
             "(not a backup): delete it, unless that backup is still running")
    work = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-",
                                 dir=destination.parent))  # 0700: it holds every message
    try:
        kind = database_kind(url)
        database = work / DATABASE_FILES[kind]
        if kind == "sqlite":
            facts = _copy_sqlite(url, database)
        else:
            facts = _dump_postgresql(url, database)
        os.chmod(database, 0o600)
        log(f"backup: database copied ({megabytes(database.stat().st_size)}, revision "
            f"{facts['revision'] or 'none'}, {facts['counts'].get('messages', 0):,} messages)")
        models, missing = _copy_versions(facts.pop("versions"), work / MODELS, log)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "spamguard_version": _spamguard_version(),
            "database": {"kind": kind, "file": database.name, **facts},
            "models": models,
            "files": _checksums(work),
        }
        _write_json(work / MANIFEST, manifest)
        _sync_tree(work)
        os.rename(work, destination)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Backup(destination, manifest, missing)


def unfinished_backups(folder: Path) -> list[Path]:
    """The folders a ``backup create`` into ``folder`` left when it was killed (SIGKILL, a
    power cut: any other end removes its folder), of any name: a nightly backup is named
    by its day, so the next one never has the killed one's name."""
    try:
        found = folder.glob(".*.partial-*")
        return sorted(p for p in found
                      if PARTIAL.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _copy_sqlite(url: str, target: Path) -> dict[str, Any]:
    """Copy the SQLite database with SQLite's online backup (one step: one consistent read
    while the service goes on writing) and check the copy."""
    from spamguard.db import empty_sqlite_file, sqlite_file

    source = sqlite_file(url)
    if source is None:
        raise BackupError("only an SQLite database in a file can be backed up")
    if not source.is_file() or empty_sqlite_file(url) is not None:
        raise BackupError(f"no database at {source.resolve()}: nothing to back up (check "
                          "SPAMGUARD_HOME or SPAMGUARD_DATABASE_URL)")
    try:
        # mode=rw: never creates a file; read-only would need the -shm file to exist.
        with closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True,
                                     timeout=30)) as reader, \
                closing(sqlite3.connect(target)) as copy:
            reader.backup(copy)
            # One file, no -wal beside it: the copy is read and hashed as it is.
            copy.execute("PRAGMA journal_mode = DELETE")
            problem = copy.execute("PRAGMA integrity_check").fetchone()[0]
            if problem != "ok":
                raise BackupError(f"the copy of {source} fails SQLite's integrity check "
                                  f"({problem}); the database itself may be damaged")
            return _facts(copy.execute)
    except sqlite3.Error as exc:
        from spamguard.db import sqlite_access_problem

        raise BackupError(f"cannot copy the database {source}: {exc}"
                          f"{sqlite_access_problem(url, exc)}") from None


def _facts(execute: Callable[..., Any]) -> dict[str, Any]:
    """Revision, row counts and the registry's versions, read through ``execute`` (a
    DB-API ``execute``: SQLite's, or a PostgreSQL snapshot's)."""

    def scalar(sql: str) -> Any:
        try:
            row = execute(sql).fetchone()
        except Exception:  # a table this revision does not have yet  # noqa: BLE001
            return None
        return row[0] if row else None

    counts = {}
    for table in COUNTED_TABLES:
        value = scalar(f"SELECT count(*) FROM {table}")
        if value is not None:
            counts[table] = int(value)
    versions = [(str(i), str(d), str(s)) for i, d, s in execute(
        "SELECT id, directory, status FROM model_versions ORDER BY created_at, id").fetchall()]
    active = next((v for v, _, status in versions if status == "active"), None)
    return {"revision": scalar("SELECT version_num FROM alembic_version"), "counts": counts,
            "active_version": active, "versions": versions}


def _dump_postgresql(url: str, target: Path) -> dict[str, Any]:
    """``pg_dump --format=custom`` of the snapshot a REPEATABLE READ transaction exports,
    which then reads the registry: the dump and the registry are the same moment."""
    from sqlalchemy.exc import SQLAlchemyError

    from spamguard.db import POSTGRES_SNAPSHOT_READ, make_engine, safe_url

    pg_dump = find_pg_tool("pg_dump")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(**POSTGRES_SNAPSHOT_READ)
            with connection.begin():
                # It sits idle while pg_dump reads its snapshot: a server's (or role's)
                # idle_in_transaction_session_timeout would end it, and the dump with it.
                connection.exec_driver_sql(
                    "SET LOCAL idle_in_transaction_session_timeout = 0")
                snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
                run_pg_tool([pg_dump, "--format=custom", f"--snapshot={snapshot}",
                             f"--file={target}", "--dbname", libpq_uri(url)], url)
                if not _has_table(connection, "model_versions"):
                    raise BackupError(f"the database {safe_url(url)} holds no spamguard "
                                      "tables: nothing to back up")
                return _facts(lambda sql: connection.exec_driver_sql(sql))
    except SQLAlchemyError as exc:
        from spamguard.db import database_unavailable, first_line
        from spamguard.errors import DatabaseUnavailableError

        said = f"cannot read the database {safe_url(url)}: {first_line(exc)}"
        if database_unavailable(exc):  # down or busy: exit 1, as every command (try later)
            raise DatabaseUnavailableError(said) from None
        raise BackupError(said) from None
    finally:
        engine.dispose()


def _has_table(connection: Any, name: str) -> bool:
    from sqlalchemy import inspect

    return name in inspect(connection).get_table_names()


def find_pg_tool(name: str) -> str:
    """The path of PostgreSQL's ``pg_dump`` or ``pg_restore``, or BackupError."""
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found on PATH: {PG_TOOLS_HINT}")
    return found


def libpq_uri(url: str) -> str:
    """``url`` as a libpq connection URI without its password (which goes in PGPASSWORD,
    so it is not on the process list)."""
    from sqlalchemy.engine import URL

    from spamguard.db import normalise_url

    parsed = normalise_url(url)
    # Not parsed.set(password=None): set() takes None as "leave it as it is".
    return URL.create("postgresql", username=parsed.username, host=parsed.host,
                      port=parsed.port, database=parsed.database, query=parsed.query
                      ).render_as_string(hide_password=False)


def run_pg_tool(command: list[str], url: str) -> str:
    """Run ``pg_dump`` or ``pg_restore`` for ``url``; BackupError with its first error line
    when it fails. Returns its standard output."""
    from spamguard.db import normalise_url

    env = dict(os.environ)
    password = normalise_url(url).password
    if password:
        env["PGPASSWORD"] = str(password)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    # An exception while it runs (Ctrl-C, SIGTERM: see spamguard.cli) kills it in
    # subprocess.run; dies_with_parent covers a spamguard that is killed outright.
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                            preexec_fn=dies_with_parent())
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        said = next((line for line in lines if "error" in line.lower()), lines[0] if lines
                    else f"exit status {result.returncode}").strip()
        if "version mismatch" in said:  # the versions are on the next line
            detail = next((line for line in lines if "detail:" in line), "")
            said += f" ({detail.split('detail:', 1)[-1].strip()}): {PG_TOOLS_HINT}"
        raise BackupError(f"{Path(command[0]).name} failed: {said}")
    return result.stdout




def _copy_versions(versions: list[tuple[str, str, str]], folder: Path,
                   log: Log) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Copy each version the registry names (deleted ones aside) into ``folder/<version>``."""
    kept: list[dict[str, Any]] = []
    missing: list[tuple[str, str]] = []
    for version, directory, status in versions:
        entry = {"version": version, "status": status, "directory": directory,
                 "copied": False}
        kept.append(entry)
        if status == "deleted":
            continue
        if not safe_name(version):
            missing.append((version, "its name cannot be a folder name"))
            continue
        source = Path(directory)
        if not (source / "model.json").is_file():
            missing.append((version, f"{source} holds no model.json"))
            continue
        try:
            shutil.copytree(source, folder / version, copy_function=_copy_file)
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(folder / version, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
                raise _unwritable(folder, exc) from None
            missing.append((version, f"cannot copy {source}: {_first_reason(exc)}"))
            continue
        if _sizes(source) != _sizes(folder / version):
            # `models delete` or `prune` removed it meanwhile: what was copied may lack files.
            shutil.rmtree(folder / version, ignore_errors=True)
            missing.append((version, f"{source} was deleted or changed while it was copied"))
            continue
        entry["copied"] = True
        log(f"backup: model version {version} ({status}) copied")
    return kept, missing


def _sizes(folder: Path) -> dict[str, int]:
    """Each regular file under ``folder`` and its size ({} for a folder that is gone)."""
    sizes = {}
    for relative, path in _files(folder):
        try:
            sizes[relative] = path.stat().st_size
        except OSError:
            continue
    return sizes


def _first_reason(exc: OSError | shutil.Error) -> str:
    """One line: copytree's shutil.Error lists every file it could not copy."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) \
            and exc.args[0]:
        first = exc.args[0][0]
        more = len(exc.args[0]) - 1
        said = f"{first[0]}: {first[-1]}" if isinstance(first, tuple) else str(first)
        return said + (f" (and {more} more)" if more else "")
    return str(exc)


def _copy_file(source: str, target: str) -> None:
    """shutil.copy2, except that a backup folder that cannot be written (a full disk) stops
    the backup: copytree would count it as a version it could not read, and the backup,
    lacking versions, would still get its final name."""
    try:
        shutil.copy2(source, target)
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise _unwritable(Path(target), exc) from None
        raise


def _unwritable(where: Path, exc: OSError) -> BackupError:
    return BackupError(f"cannot write the backup ({exc.strerror}) at {where}: nothing kept")


def safe_name(version: str) -> bool:
    """Whether ``version`` can name a folder inside another (no separator, not . or ..)."""
    return bool(version) and version not in {".", ".."} and "/" not in version \
        and "\\" not in version and "\0" not in version


def _checksums(folder: Path) -> dict[str, dict[str, Any]]:
    return {relative: {"size": path.stat().st_size, "sha256": sha256(path)}
            for relative, path in _files(folder)}


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file under ``folder`` (links are not followed), as (POSIX relative
    path, path), in a stable order."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(folder).as_posix(), path


def _links(folder: Path) -> Iterator[str]:
    """Every symbolic link under ``folder``, to a file or a folder (POSIX relative paths):
    a restore would copy what a linked folder points to, which no checksum vouched for
    until it was read, and a link can be changed after verify."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(root, name)
            if path.is_symlink():
                yield path.relative_to(folder).as_posix()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _sync_tree(folder: Path) -> None:
    from spamguard.ml.files import sync_folder

    for root, _dirs, _files_here in os.walk(folder):
        sync_folder(Path(root))
    sync_folder(folder.parent, files=False)


def _spamguard_version() -> str:
    import spamguard

    return spamguard.__version__


# --- reading and checking a backup -------------------------------------------------------


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The manifest of the backup folder ``path``, checked for shape, or BackupError."""
    path = Path(path)
    if not path.is_dir():
        raise BackupError(f"{path} is not a folder (give a folder `spamguard backup create` "
                          "wrote)")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if partial := PARTIAL.fullmatch(path.name):
            raise BackupError(
                f"{path} is what a `backup create` of {path.parent / partial['name']} that "
                "was killed left, not a backup: delete it, unless that backup is still "
                "running") from None
        raise BackupError(f"{path} holds no {MANIFEST}: not a spamguard backup, or an "
                          "unfinished one") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{path / MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path / MANIFEST} is not a spamguard backup's manifest")
    if not isinstance(manifest.get("format_version"), int) \
            or manifest["format_version"] > FORMAT_VERSION:
        raise BackupError(f"{path} was written by a newer spamguard (backup format "
                          f"{manifest.get('format_version')!r}): restore it with that release")
    for relative in manifest.get("files") if isinstance(manifest.get("files"), dict) else ():
        if not _inside(relative):
            raise BackupError(f"{path / MANIFEST} names a file outside the backup: "
                              f"{relative!r}")
    if not _well_formed(manifest):
        raise BackupError(f"{path / MANIFEST} is incomplete or damaged")
    return manifest


def _well_formed(manifest: dict[str, Any]) -> bool:
    """Whether every field that verify and restore read has the type they expect (a damaged
    or hand-edited manifest is refused in one line, not with a traceback)."""
    database, files, models = (manifest.get(key) for key in ("database", "files", "models"))
    if not isinstance(database, dict) or not isinstance(database.get("kind"), str) \
            or database.get("file") != DATABASE_FILES.get(database["kind"]) \
            or not isinstance(database.get("revision", None), str | None) \
            or not isinstance(manifest.get("created_at"), str) \
            or not isinstance(files, dict) or not isinstance(models, list):
        return False
    if not all(isinstance(entry, dict) and isinstance(entry.get("size"), int)
               and not isinstance(entry.get("size"), bool)
               and isinstance(entry.get("sha256"), str) for entry in files.values()):
        return False
    return all(isinstance(entry, dict) and isinstance(entry.get("version"), str)
               and isinstance(entry.get("directory"), str)
               and isinstance(entry.get("status"), str)
               and isinstance(entry.get("copied"), bool) for entry in models)


def _inside(relative: Any) -> bool:
    if not isinstance(relative, str) or not relative or "\\" in relative:
        return False
    parts = PurePosixPath(relative).parts
    return not PurePosixPath(relative).is_absolute() and ".." not in parts and "." not in parts


@dataclass
class Check:
    """What :func:`verify_backup` found: ``problems`` make the backup unusable; ``notes``
    say what could not be checked."""

    manifest: dict[str, Any]
    problems: list[str]
    notes: list[str]


def verify_backup(path: Path | str) -> Check:
    """Check every file against the manifest, and the database copy itself (SQLite's
    integrity check; a PostgreSQL dump's table of contents, when pg_restore is here)."""
    path = Path(path)
    manifest = read_manifest(path)
    problems: list[str] = []
    notes: list[str] = []
    listed = manifest["files"]
    for relative, expected in listed.items():
        file = path / relative
        if not file.is_file() or file.is_symlink():
            problems.append(f"{relative}: missing")
        elif file.stat().st_size != expected.get("size"):
            problems.append(f"{relative}: {file.stat().st_size} bytes, the manifest says "
                            f"{expected.get('size')}")
        elif sha256(file) != expected.get("sha256"):
            problems.append(f"{relative}: changed since the backup was made (checksum)")
    problems += [f"{relative}: not in the manifest" for relative, _ in _files(path)
                 if relative != MANIFEST and relative not in listed]
    problems += [f"{relative}: a symbolic link (a backup holds only its own files; a "
                 "link's target is outside what was checked)" for relative in _links(path)]
    for entry in manifest["models"]:
        if entry.get("copied") and not any(
                name.startswith(f"{MODELS}/{entry.get('version')}/") for name in listed):
            problems.append(f"model version {entry.get('version')}: no files")
    database = manifest["database"]
    if database["file"] not in listed:
        problems.append(f"{database['file']}: missing")
    elif not any(p.startswith(database["file"]) for p in problems):
        if database["kind"] == "sqlite":
            problems += _sqlite_problems(path / database["file"])
        elif shutil.which("pg_restore") is None:
            notes.append(f"pg_restore not found on PATH, so the dump was checked by its "
                         f"checksum only ({PG_TOOLS_HINT})")
        else:
            problems += _dump_problems(path / database["file"])
    return Check(manifest, problems, notes)


def _sqlite_problems(file: Path) -> list[str]:
    # immutable: reading it creates no -wal or -shm beside it, whatever its journal mode.
    try:
        with closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro&immutable=1",
                                     uri=True)) as connection:
            result = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return [f"{file.name}: not a readable SQLite database ({exc})"]
    return [] if result == ["ok"] else [f"{file.name}: {result[0]}"]


def _dump_problems(file: Path) -> list[str]:
    result = subprocess.run([find_pg_tool("pg_restore"), "--list", str(file)],
                            capture_output=True, text=True, check=False,
                            preexec_fn=dies_with_parent())
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["unreadable"])[0]
        return [f"{file.name}: pg_restore cannot read it ({first})"]
    return []
