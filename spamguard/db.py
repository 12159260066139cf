"""Engines, sessions and schema migrations for SQLite (default) and PostgreSQL.

Nothing here connects at import time: build an engine with :func:`make_engine` when needed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from spamguard.errors import DatabaseError, DatabaseUnavailableError, SchemaOutOfDateError
from spamguard.shipped import shipped_dir

SQLITE_BUSY_TIMEOUT_MS = 5000
# PostgreSQL limits for the web service's sessions: a request waits at most as long for a
# lock as SQLite's busy timeout, and no statement outlives gunicorn's 120 s worker timeout
# (a killed worker answers nothing and loses the message); both end in a 503 the gateway
# retries. Connecting gives up after PG_CONNECT_TIMEOUT_S (a host that drops packets).
PG_LOCK_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS
PG_STATEMENT_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
# libpq's TCP settings: probe an idle connection after 10 s, every 5 s, give up after 3
# unanswered probes; drop a connection whose sent data is unacknowledged for 15 s.
PG_TCP_USER_TIMEOUT_MS = 15_000
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                 "keepalives_count": 3, "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS}
# One moment for a long read on PostgreSQL (export, the snapshot pg_dump reads):
# REPEATABLE READ keeps the transaction's first snapshot, read-only says it writes nothing.
POSTGRES_SNAPSHOT_READ = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
SUPPORTED_BACKENDS = ("sqlite", "postgresql")  # what the migrations and tests cover


def normalise_url(url: str | URL) -> URL:
    """Parse ``url``, pointing plain ``postgresql://`` (or ``postgres://``) at psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database URL {str(url)[:60]!r} is not a URL like "
                            "sqlite:///path or postgresql://user:pass@host/db") from None
    except ValueError:  # a port that is not a number, as libpq's "h1:5432,h2:5433" gives
        raise DatabaseError("database URL: its port is not a number (several PostgreSQL "
                            "hosts go in the query instead: postgresql://user:pass@/db?"
                            "host=h1:5432&host=h2:5433)") from None
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:  # else: make_engine's ImportError
        raise DatabaseError(f"database URL {parsed.render_as_string(hide_password=True)!r}: "
                            f"{parsed.get_backend_name()} is not supported; use "
                            "sqlite:///path or postgresql://user:pass@host/db")
    return parsed


# PostgreSQL error classes that pass (SQLSTATE): connection exceptions, transaction
# rollbacks (serialization, deadlock), lock not available, too many connections, query
# cancelled (statement timeout), server shutting down. A wrong password (28P01), a missing
# database (3D000) or a full disk (53100) need a person, not a retry.
TRANSIENT_SQLSTATES = ("08", "40", "55P03", "53300", "57014", "57P01", "57P02", "57P03")
# A login the server refuses reaches psycopg without a SQLSTATE (libpq reports connection
# failures as text), so these, in the server's English wording, mark the ones a person must
# fix: a wrong or missing password, an unknown database or role, no pg_hba.conf entry, no
# CONNECT privilege, a NOLOGIN role, SSL required of a server without it. A
# server that words them in another language counts them as unavailable (retry) instead.
REFUSED_LOGIN_TEXTS = ("password authentication failed", "no password supplied",
                       "does not exist", "no pg_hba.conf entry",
                       "permission denied for database", "is not permitted to log in",
                       "does not support SSL")
# libpq refusing a connection option's value in the URL ("invalid sslmode value: "bogus"",
# also gssencmode, target_session_attrs...): a typo to fix, not a server to wait for.
BAD_OPTION_VALUE = re.compile(r"\binvalid \w+ value\b")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a busy or unreachable database (worth a retry), not a bad statement
    or a setting someone must fix.

    SQLite: locked past its busy timeout (SQLite also says OperationalError for a missing
    table, hence the text check). PostgreSQL: a lost connection, or a server error of a
    class in :data:`TRANSIENT_SQLSTATES`; a connection that fails has no SQLSTATE and counts
    as unavailable too, unless the server refused the login (:data:`REFUSED_LOGIN_TEXTS`)
    or libpq a value in the URL (:data:`BAD_OPTION_VALUE`).
    """
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError):
        return False
    if exc.connection_invalidated:
        return True
    if _from_sqlite(exc):
        return _sqlite_locked(exc)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is None:
        text = str(exc.orig)
        return not (any(refused in text for refused in REFUSED_LOGIN_TEXTS)
                    or BAD_OPTION_VALUE.search(text))
    return sqlstate.startswith(TRANSIENT_SQLSTATES)


# PostgreSQL: lock_not_available (lock_timeout), query_canceled (statement_timeout).
BUSY_SQLSTATES = ("55P03", "57014")
# A database that answers but cannot store anything: PostgreSQL's disk_full and
# read_only_sql_transaction (a standby after a failover), SQLite's own wording of each.
CANNOT_WRITE_SQLSTATES = ("53100", "25006")
SQLITE_READ_ONLY = "attempt to write a readonly database"
CANNOT_WRITE_TEXTS = ("database or disk is full", SQLITE_READ_ONLY)


def database_cannot_write(exc: BaseException) -> bool:
    """Whether ``exc`` is a database that cannot write now (a full disk, read-only): not a
    retry in seconds, and a person must act, but no fault of the request either."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    if _from_sqlite(exc):
        return any(words in str(exc.orig).lower() for words in CANNOT_WRITE_TEXTS)
    return getattr(exc.orig, "sqlstate", None) in CANNOT_WRITE_SQLSTATES


def database_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is a database that answers but is busy (a lock or statement timeout;
    SQLite still locked after its busy timeout), as opposed to one that cannot be reached."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError) or exc.connection_invalidated:
        return False
    if _from_sqlite(exc):
        return _sqlite_locked(exc)
    return getattr(exc.orig, "sqlstate", None) in BUSY_SQLSTATES


def database_error(exc: SQLAlchemyError) -> DatabaseError | None:
    """What a command says, in one line, when the database fails under it: a
    :class:`DatabaseUnavailableError` (exit 1, retry) for one that does not answer or is
    busy (:func:`database_unavailable`), a :class:`DatabaseError` (exit 2, a person must fix
    it) for another operational error (a full disk, a read-only SQLite file); None for any
    other error, a bug whose traceback is wanted."""
    from sqlalchemy.exc import OperationalError

    if database_unavailable(exc):
        state = "is busy" if database_busy(exc) else "does not answer"
        return DatabaseUnavailableError(f"the database {state}: {first_line(exc)}")
    if database_cannot_write(exc):
        return DatabaseError(f"the database cannot write (a full disk, or read-only): "
                             f"{first_line(exc)}")
    if isinstance(exc, OperationalError):
        return DatabaseError(f"database error: {first_line(exc)}")
    return None


def _from_sqlite(exc: SQLAlchemyError) -> bool:
    return type(getattr(exc, "orig", None)).__module__.startswith("sqlite3")


def _sqlite_locked(exc: SQLAlchemyError) -> bool:
    """SQLite still locked after its busy timeout (it also says OperationalError for a
    missing table, hence the text check)."""
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def sqlite_write_lock(session: Session, column: Any, row_id: int | str) -> None:
    """On SQLite, take the database's write lock now, with a no-op UPDATE of one row
    (``column`` set to itself), until the transaction ends. SQLite ignores SELECT ... FOR
    UPDATE, so a transaction that decides on what it read (the last enabled admin, the
    reviews a bulk relabel confirmed) would otherwise decide on what a concurrent writer
    is changing; after the lock it sees what others committed. Elsewhere a no-op: callers
    lock their rows with FOR UPDATE."""
    if session.get_bind().dialect.name != "sqlite":
        return
    model = column.class_
    session.execute(update(model).where(model.id == row_id).values({column.key: column})
                    .execution_options(synchronize_session=False))


def is_sqlite(url: str | URL) -> bool:
    """Return True when ``url`` names an SQLite database."""
    return normalise_url(url).get_backend_name() == "sqlite"


def safe_url(url: str | URL) -> str:
    """Render ``url`` with its password hidden, for messages and logs."""
    return normalise_url(url).render_as_string(hide_password=True)


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


def _sqlite_on_connect(*, foreign_keys: bool):
    """Build a connect hook that sets the pragmas every SQLite connection needs."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()
        # SQLite's lower() (and so ILIKE, which SQLAlchemy writes as lower() LIKE lower())
        # folds ASCII letters only: a search for "приз" missed "ПРИЗ". Python's does all.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)

    return on_connect


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def make_engine(url: str | URL, *, hide_parameters: bool = True, request_timeouts: bool = False,
                **engine_kwargs: Any) -> Engine:
    """Create an engine: SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL psycopg 3
    with a connect timeout.

    ``hide_parameters`` (the default) keeps bound values out of SQLAlchemy's error text: a
    failed INSERT would otherwise put the SMS body, phone numbers or a password hash into the
    error log as ``[parameters: ...]``. Pass ``not settings.log_bodies`` where settings are at
    hand, so only an operator who asked for bodies in the log gets them there.

    ``request_timeouts`` (the web service): PostgreSQL sessions get ``lock_timeout`` and
    ``statement_timeout`` (:data:`PG_LOCK_TIMEOUT_MS`, :data:`PG_STATEMENT_TIMEOUT_MS`), so a
    table a migration or a long transaction holds gives a 503 instead of a request that
    hangs until gunicorn kills the worker. Commands (migrations, retraining) may wait.
    A timeout set anywhere else (the URL's ``?options=`` or ``?connect_timeout=``,
    ``PGOPTIONS``, ``PGCONNECT_TIMEOUT``, a service file, ``ALTER ROLE ... SET``) wins.
    """
    parsed = normalise_url(url)
    engine_kwargs["hide_parameters"] = hide_parameters
    try:
        if is_sqlite(parsed):
            engine = create_engine(parsed, **engine_kwargs)
            event.listen(engine, "connect", _sqlite_on_connect(foreign_keys=True))
            return engine
        engine_kwargs.setdefault("pool_pre_ping", True)
        engine_kwargs["connect_args"] = _postgres_connect_args(
            parsed, engine_kwargs.get("connect_args", {}))
        engine = create_engine(parsed, **engine_kwargs)
        if request_timeouts:
            event.listen(engine, "connect", _postgres_request_timeouts)
        return engine
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseError(f"unsupported database URL {safe_url(parsed)}: {first_line(exc)} "
                            "(use sqlite:/// or postgresql://)") from None
    except ImportError:
        # postgresql+psycopg2:// (many tools' docs), +pg8000, ...: a driver spamguard does not
        # install. One line, not a traceback; plain postgresql:// uses psycopg 3, installed.
        driver = parsed.get_driver_name()
        raise DatabaseError(f"database URL {safe_url(parsed)}: the driver {driver} "
                            "is not installed; write postgresql://user:pass@host/db (spamguard "
                            "uses psycopg 3) or sqlite:///path") from None


def _postgres_connect_args(url: URL, given: dict[str, Any]) -> dict[str, Any]:
    """psycopg connect arguments: a connect timeout and TCP keepalives, each unless set
    already (in the URL, ``connect_args`` or, for the timeout, ``PGCONNECT_TIMEOUT``).

    Without keepalives, a connection whose server host vanished (a partition, a failover
    that left the old address silent) hung every request on it, and the pool's pre-ping
    with it, until gunicorn killed the worker at 120 s (an audit's blackholed connection):
    the lock and statement timeouts are the server's, so they cannot fire then. With them
    the kernel gives up on a connection whose sent data, or keepalive probes, go
    unanswered for PG_TCP_USER_TIMEOUT_MS (Linux lets the user timeout cut the probes
    short); a long query whose server is alive is not affected (its packets are
    acknowledged). Measured (bench/silent_database.py, packets dropped by iptables): a
    pooled request fails after 25.7 s (ping 15 s, then a 10 s connect timeout); without
    these settings it still waited at 90 s."""
    args = dict(given)
    if "connect_timeout" not in url.query and not os.environ.get("PGCONNECT_TIMEOUT"):
        args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
    for name, value in PG_KEEPALIVES.items():
        if name not in url.query:
            args.setdefault(name, value)
    return args


def _postgres_request_timeouts(dbapi_connection: Any, _record: Any) -> None:
    """Give a new web-service connection its lock and statement timeouts, each unless the
    session already has one (from ``PGOPTIONS``, the URL, a service file or the role).

    Set after connecting rather than in libpq's ``options``, which would replace
    ``PGOPTIONS`` and a service file's options (and which PgBouncer refuses by default);
    with autocommit on, so the pool's rollback on check-in does not undo them.
    """
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        with dbapi_connection.cursor() as cursor:
            for name, value in (("lock_timeout", PG_LOCK_TIMEOUT_MS),
                                ("statement_timeout", PG_STATEMENT_TIMEOUT_MS)):
                cursor.execute(f"SELECT current_setting('{name}')")
                if cursor.fetchone()[0] == "0":  # 0: nobody set one, wait for ever
                    cursor.execute(f"SET {name} = {int(value)}")
    finally:
        dbapi_connection.autocommit = autocommit


def make_migration_engine(url: str | URL) -> Engine:
    """Create a single-use engine for migrations (SQLite: foreign keys off, real transactions)."""
    parsed = normalise_url(url)
    if not is_sqlite(parsed):
        return create_engine(parsed, poolclass=NullPool, hide_parameters=True,
                             connect_args=_postgres_connect_args(parsed, {}))
    # Batch migrations rebuild tables; with foreign keys on, dropping the old copy would
    # cascade-delete child rows. pysqlite also never BEGINs before DDL, so begin explicitly.
    engine = create_engine(parsed, poolclass=NullPool, hide_parameters=True)
    on_connect = _sqlite_on_connect(foreign_keys=False)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        on_connect(dbapi_connection, record)
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory bound to ``engine`` (objects stay usable after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session in a transaction: commit on success, roll back on error, then close."""
    with session_factory() as session, session.begin():
        yield session


def conflict_insert(session: Session):
    """The dialect's ``insert`` that has ``on_conflict_do_nothing`` / ``_do_update``
    (PostgreSQL's or SQLite's; None on other databases)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    return insert


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


def first_line(exc: BaseException) -> str:
    """Return the first line of a driver error (SQLAlchemy appends SQL and links)."""
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(original).__name__])[0]
