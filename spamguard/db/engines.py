"""Engines and sessions for SQLite (default) and PostgreSQL: URLs, connection settings
and timeouts, transactions.

Nothing here connects at import time: build an engine with :func:`make_engine` when needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from spamguard.db.failures import first_line
from spamguard.errors import DatabaseError

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
