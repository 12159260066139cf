"""The file behind an SQLite URL: whether it exists or is empty, its folder, removing a
new one a failed command made, and why SQLite may not open it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sqlalchemy.engine import URL

from spamguard.db.engines import is_sqlite, normalise_url
from spamguard.db.failures import SQLITE_READ_ONLY, first_line
from spamguard.errors import DatabaseError


def sqlite_file(url: str | URL) -> Path | None:
    """The file an SQLite URL names (None for other databases, memory and ``file:`` URIs)."""
    parsed = normalise_url(url)
    database = parsed.database or ""
    if not is_sqlite(parsed) or database in {"", ":memory:"} or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def missing_sqlite_file(url: str | URL) -> Path | None:
    """The file of an SQLite URL when it does not exist yet (None otherwise)."""
    path = sqlite_file(url)
    return path if path is not None and not path.exists() else None


def empty_sqlite_file(url: str | URL) -> Path | None:
    """The file of an SQLite URL when it exists but holds no table (None otherwise, also
    for a file that is not a database: opening it reports that).

    Such files are left by a command that failed in the wrong folder (an Alembic downgrade
    with a mistyped home, an ``sqlite3 ... .backup`` of a database that was not there):
    a command that must not start an instance treats one like a missing file."""
    import sqlite3

    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    if path.stat().st_size == 0:
        return path
    try:
        with _read_only(path) as connection:
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.Error:
        return None
    return path if tables == 0 else None


@contextmanager
def new_sqlite_removed_on_failure(url: str | URL) -> Iterator[None]:
    """Run a block that may create the SQLite database of ``url``; if the block fails and
    the database is one it created and still holds nothing but its schema, delete it (its
    log files too) and the folders made for it that are left empty.

    A command refused for its input (a short password, a key with no name, a taken port,
    a training that failed) left a new empty instance behind, often in a mistyped home;
    every later command there then found "a database", and ``retrain`` trained a first
    model into it instead of saying that there was none."""
    created = missing_sqlite_file(url)
    missing = [folder for folder in created.parents if not folder.exists()] if created else []
    made_folder = missing[-1] if missing else None  # the outermost one it would make
    try:
        yield
    except BaseException:
        if (created is not None and created.is_file() and _holds_only_schema(created)
                and _no_other_connection(created)):
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{created}{suffix}").unlink(missing_ok=True)
            _remove_empty_folders(created.parent, up_to=made_folder)
        raise


def _holds_only_schema(path: Path) -> bool:
    """Whether the SQLite database at ``path`` has no row in any table of its own: not
    counting Alembic's revision, SQLite's own tables, and a text index's (which a new
    index fills with its settings). A virtual table is read through its module."""
    import sqlite3

    try:
        with _read_only(path) as db:
            tables = list(db.execute("SELECT name, sql FROM sqlite_master WHERE type = "
                                     "'table' AND name NOT LIKE 'sqlite_%'"))
            virtual = [name for name, sql in tables if "VIRTUAL TABLE" in (sql or "").upper()]
            own = [name for name, _ in tables if name != "alembic_version" and not any(
                name.startswith(f"{index}_") for index in virtual)]
            return not any(db.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone()
                           for name in own)
    except sqlite3.Error:
        return False


def _no_other_connection(path: Path) -> bool:
    """Whether no other connection has the SQLite database at ``path`` open: leaving WAL
    mode needs it alone (a ``spamguard serve`` started on the new instance meanwhile keeps
    it, and the database stays)."""
    import sqlite3

    try:
        with closing(sqlite3.connect(path, timeout=0)) as db:
            return db.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    except sqlite3.Error:
        return False


def _remove_empty_folders(folder: Path, *, up_to: Path | None) -> None:
    """Remove ``folder`` and its parents up to ``up_to`` (inclusive) while they are empty;
    nothing when ``up_to`` is None (every folder was there before)."""
    if up_to is None:
        return
    for current in (folder, *folder.parents):
        try:
            current.rmdir()
        except OSError:
            return
        if current == up_to:
            return


def _read_only(path: Path):
    """A read-only sqlite3 connection to ``path`` (one that never creates the file), closed
    when its ``with`` block ends."""
    import sqlite3

    return closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True))


def ensure_sqlite_parent(url: str | URL) -> None:
    """Create the folder an SQLite database file lives in (no-op for other databases)."""
    path = sqlite_file(url)
    if path is None:
        return
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create the database folder {folder}: {exc.strerror}") from None


# What SQLite says when it cannot create a file beside the database (WAL's -wal and -shm,
# which even a reader needs when they are not there) or write the file itself.
SQLITE_ACCESS_ERRORS = ("unable to open database file", SQLITE_READ_ONLY)


def sqlite_access_problem(url: str | URL, exc: BaseException) -> str:
    """For SQLite's "unable to open database file" or "attempt to write a readonly
    database": why, when this user may not write the database's folder or file (as ``" (the
    folder ... is not writable ...)"``, to follow the error); "" otherwise."""
    file = sqlite_file(url)
    if file is None or not any(said in first_line(exc).lower()
                               for said in SQLITE_ACCESS_ERRORS):
        return ""
    folder = file.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        return (f" (the folder {folder.resolve()} is not writable by this user: SQLite needs "
                f"to create {file.name}-wal and {file.name}-shm in it, even to read; run as "
                "the user the database belongs to, or let it write the folder)")
    if file.is_file() and not os.access(file, os.W_OK):
        return (f" (the file {file.resolve()} is not writable by this user: SQLite's WAL "
                "mode writes it, even to read; run as the user the database belongs to)")
    return ""
