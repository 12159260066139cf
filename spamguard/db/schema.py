"""Schema migrations (Alembic): the code's newest revision, upgrading, and refusing a
database whose schema is older or newer than the code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from spamguard.db.engines import is_sqlite, make_engine, make_migration_engine, safe_url
from spamguard.db.failures import database_unavailable, first_line
from spamguard.db.sqlite_files import ensure_sqlite_parent, sqlite_access_problem
from spamguard.errors import DatabaseError, DatabaseUnavailableError, SchemaOutOfDateError
from spamguard.shipped import shipped_dir


def migrations_dir() -> Path:
    """Return the Alembic folder (``migrations/``; :mod:`spamguard.shipped` says where)."""
    return shipped_dir("migrations")


def alembic_config(**attributes: Any):
    """Build an Alembic config for :func:`migrations_dir` without touching logging."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes.update(attributes)
    return config


def head_revision() -> str:
    """Return the newest migration revision this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "migrations/versions holds no revision"
    return head


@contextmanager
def migration_warnings_shown() -> Iterator[None]:
    """Show the migrations' warnings on stderr when nothing else would (no logging set up).

    Alembic gives its logger a NullHandler, so without a handler of the caller's, a warning
    such as 0010's "could not create the pg_trgm extension" never reached the operator.
    """
    if logging.getLogger().handlers:  # the caller set up logging: it goes there
        yield
        return
    logger = logging.getLogger("alembic.runtime.migration")
    handler = logging.StreamHandler()  # the stderr of now (a test runner swaps it)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def upgrade_schema(url: str | URL, revision: str = "head") -> None:
    """Create or upgrade the schema at ``url`` to ``revision`` (the SQLite folder too)."""
    from alembic import command
    from sqlalchemy import text

    ensure_sqlite_parent(url)
    engine = make_migration_engine(url)
    try:
        with engine.connect() as connection:
            _refuse_unknown_revision(connection)
            with migration_warnings_shown():
                command.upgrade(alembic_config(connection=connection), revision)
            if is_sqlite(url):
                problems = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
                if problems:
                    raise DatabaseError(f"foreign key violations after upgrade: {problems[:5]}")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot upgrade {safe_url(url)}: {first_line(exc)}") from exc
    finally:
        engine.dispose()


def is_known_revision(revision: str | None) -> bool:
    """Whether this release's migrations know ``revision`` (None: an empty database); one
    they do not know was made by a newer release."""
    from alembic.script import ScriptDirectory

    return revision is None or revision in {
        rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def _refuse_unknown_revision(connection: Connection) -> None:
    """Raise :class:`SchemaOutOfDateError` (newer) when the database is at a revision this
    code does not know (a newer release migrated it): Alembic would fail with a traceback."""
    from alembic.migration import MigrationContext

    current = MigrationContext.configure(connection).get_current_revision()
    connection.rollback()  # end the read's transaction: Alembic's own must be the outermost
    if not is_known_revision(current):
        raise SchemaOutOfDateError(current, head_revision(), newer=True)


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands relative to the code's migrations."""

    current: str | None
    head: str
    known: bool

    @property
    def is_current(self) -> bool:
        """Return True when the database is at the newest revision."""
        return self.current == self.head


def schema_status(engine: Engine) -> SchemaStatus:
    """Read the database's Alembic revision and compare it with the code's head."""
    from alembic.migration import MigrationContext

    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        # Down or busy: exit 1, try again later; a refused login or a broken database:
        # exit 2, a person must fix it (docs/retraining.md, exit codes).
        error = DatabaseUnavailableError if database_unavailable(exc) else DatabaseError
        raise error(f"cannot read the database {safe_url(engine.url)}: {first_line(exc)}"
                    f"{sqlite_access_problem(engine.url, exc)}") from exc
    return SchemaStatus(current=current, head=head_revision(),
                        known=is_known_revision(current))


def ensure_schema_current(engine: Engine) -> SchemaStatus:
    """Raise :class:`SchemaOutOfDateError` unless the database is at the newest revision."""
    status = schema_status(engine)
    if not status.is_current:
        raise SchemaOutOfDateError(status.current, status.head, newer=not status.known)
    return status


def open_database(url: str | URL, *, create_if_empty: bool = False,
                  hide_parameters: bool = True) -> Engine:
    """Return an engine on ``url`` whose schema is current, or raise SchemaOutOfDateError.

    With ``create_if_empty``, a new SQLite database (no tables at all) is upgraded to head
    first; one at an older revision is never upgraded behind the operator's back.
    ``hide_parameters`` as for :func:`make_engine`.
    """
    from sqlalchemy import inspect

    ensure_sqlite_parent(url)
    engine = make_engine(url, hide_parameters=hide_parameters)
    try:
        status = schema_status(engine)
        if status.current is None and create_if_empty and is_sqlite(url):
            with engine.connect() as connection:
                empty = not inspect(connection).get_table_names()
            if empty:
                upgrade_schema(url)
        ensure_schema_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
