"""Database fixtures (SQLite and PostgreSQL).

Every database fixture is parametrised over ``db_backend``: SQLite in ``tmp_path`` always, and
PostgreSQL when ``SPAMGUARD_TEST_POSTGRES_URL`` names a server whose role may create databases
(``eval "$(bash .ci/postgres.sh)"`` sets it up). Each test gets a database of its own:

- ``db_url``: an empty database (no tables), for migration tests;
- ``migrated_db_url``: a copy of a database already upgraded to head (SQLite: a copy of a
  template made once per session; PostgreSQL: a clone of one, or a database an earlier test
  of the same process gave back emptied, see :meth:`MigratedTemplates.give_back`);
- ``db_engine``, ``db_session_factory``, ``db_session``: on top of ``migrated_db_url``;
- ``make_version_dir``: writes a minimal model version directory (``model.json`` only).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from spamguard.db import make_engine, make_session_factory, normalise_url, upgrade_schema

POSTGRES_ENV = "SPAMGUARD_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_server_url() -> str | None:
    """Return the PostgreSQL server URL the tests may create databases on, if any."""
    return os.environ.get(POSTGRES_ENV) or None


def _admin_execute(server_url: str, sql: str) -> None:
    """Run ``sql`` (CREATE/DROP DATABASE) outside a transaction on the server."""
    engine = create_engine(
        normalise_url(server_url), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


def create_postgres_database(server_url: str, *, template: str | None = None) -> str:
    """Create a randomly named database (optionally cloned from ``template``); return its URL."""
    name = f"spamguard_test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    _admin_execute(server_url, f'CREATE DATABASE "{name}"{clause}')
    return normalise_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(server_url: str, url: str, attempts: int = 5) -> None:
    """Drop the database ``url`` names, closing any connection left to it.

    Retried: a server process (autovacuum) may hold the database for a moment and a role
    without ``pg_signal_backend`` cannot end it.
    """
    import time

    from sqlalchemy.exc import OperationalError, ProgrammingError

    name = normalise_url(url).database
    for attempt in range(attempts):
        try:
            _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (OperationalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


@contextmanager
def temporary_postgres_database(server_url: str, *, template: str | None = None) -> Iterator[str]:
    """Yield the URL of a fresh database that is dropped afterwards."""
    url = create_postgres_database(server_url, template=template)
    try:
        yield url
    finally:
        drop_postgres_database(server_url, url)


# What makes a PostgreSQL test database the template's, but for its rows: its relations
# (with their owners, grants, row security and storage options), columns (with types,
# defaults, identity), constraints, index definitions, triggers (and whether enabled),
# functions (and their bodies), sequences' settings, policies, rules, extended statistics,
# default privileges, extensions, schemas, schema revision and settings. A test
# that drops a CHECK, changes a default or grants a table must not hand that to the next.
_PG_FINGERPRINT = """
SELECT
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT n.nspname::text || '.' || c.relname::text || ':' || c.relkind::text || ':'
           || c.relowner::regrole::text || ':' || coalesce(c.relacl::text, '') || ':'
           || c.relrowsecurity::text || c.relforcerowsecurity::text || ':'
           || c.relpersistence::text || ':' || coalesce(c.reloptions::text, '') AS x
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname <> 'information_schema' AND NOT starts_with(n.nspname, 'pg_')) r),
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT c.relname::text || '.' || a.attname::text || ':' || a.atttypid::text || ':'
           || a.atttypmod::text || ':' || a.attnotnull::text || ':' || a.attidentity::text
           || ':' || a.attgenerated::text || ':' || a.attcollation::text || ':'
           || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS x
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped) r),
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT conrelid::regclass::text || contypid::regtype::text || '.' || conname::text || ':'
           || pg_get_constraintdef(oid) || ':' || convalidated::text AS x
      FROM pg_constraint WHERE connamespace = 'public'::regnamespace) r),
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT pg_get_indexdef(i.indexrelid) AS x FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
     WHERE c.relnamespace = 'public'::regnamespace) r),
 (SELECT string_agg(tgname::text, ',' ORDER BY tgname) FROM pg_trigger
   WHERE NOT tgisinternal),
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT tgrelid::regclass::text || ':' || tgname::text || ':' || tgenabled::text AS x
      FROM pg_trigger WHERE tgenabled <> 'O') r),
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT p.proname::text || ':' || md5(p.prosrc) AS x FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public') r),
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT seqrelid::regclass::text || ':' || concat_ws(' ', seqtypid, seqstart,
           seqincrement, seqmax, seqmin, seqcache, seqcycle) AS x FROM pg_sequence) r),
 (SELECT string_agg(x, ',' ORDER BY x) FROM (
    SELECT 'policy ' || polrelid::regclass::text || '.' || polname::text AS x FROM pg_policy
    UNION ALL SELECT 'rule ' || ev_class::regclass::text || '.' || rulename::text
      FROM pg_rewrite WHERE rulename <> '_RETURN'
    UNION ALL SELECT 'statistics ' || stxname::text FROM pg_statistic_ext
    UNION ALL SELECT 'default privileges ' || defaclacl::text FROM pg_default_acl) r),
 (SELECT string_agg(extname::text || ' ' || extversion, ',' ORDER BY extname) FROM pg_extension),
 (SELECT string_agg(nspname::text, ',' ORDER BY nspname) FROM pg_namespace
   WHERE NOT starts_with(nspname, 'pg_')),
 (SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version),
 (SELECT string_agg(array_to_string(setconfig, ' '), ',') FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""


def _pg_fingerprint(url: str) -> tuple:
    engine = create_engine(normalise_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return tuple(connection.exec_driver_sql(_PG_FINGERPRINT).one())
    finally:
        engine.dispose()


def _pg_emptied(url: str, fingerprint: tuple) -> bool:
    """Empty every table a test left rows in and restart its sequences, if its schema is
    still the template's and no table has planner statistics (else False, and nothing is
    done). Other sessions on it are ended first, as ``DROP DATABASE ... WITH (FORCE)``
    would, and waited for (``pg_terminate_backend`` only signals: a session still exiting
    could hold a lock or an advisory lock into the next test).

    TRUNCATE, not DELETE: the tables get new, empty files, so the next test's planner does
    not see the last test's pages (it estimates rows from them) and its bytes are gone.
    Statistics (an ANALYZE, an autovacuum) survive TRUNCATE and a role cannot delete them:
    such a database is dropped instead."""
    from spamguard.models import Base

    engine = create_engine(normalise_url(url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            ended = connection.exec_driver_sql(
                "SELECT bool_and(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()").scalar()
            if ended is False:
                return False
            if tuple(connection.exec_driver_sql(_PG_FINGERPRINT).one()) != fingerprint:
                return False
            if connection.exec_driver_sql(
                    "SELECT EXISTS (SELECT FROM pg_stats WHERE schemaname = 'public')").scalar():
                return False
            connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            # Only the tables a test wrote to have pages (a TRUNCATE costs a new file per
            # table and index: all of them took longer than a clone); CASCADE adds the ones
            # that refer to them, as TRUNCATE requires.
            written = connection.exec_driver_sql(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                "AND relkind = 'r' AND relname = ANY(%(names)s) AND pg_relation_size(oid) > 0",
                {"names": [table.name for table in Base.metadata.sorted_tables]}).scalars().all()
            if written:
                quoted = ", ".join(f'"{name}"' for name in written)
                connection.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
            connection.exec_driver_sql(
                "SELECT setval(c.oid, 1, false) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S' AND n.nspname = 'public'")
        return True
    finally:
        engine.dispose()


class MigratedTemplates:
    """One database per backend upgraded to head, made on first use and cloned per test.

    On PostgreSQL a clone costs about half a second (CREATE DATABASE copies every relation),
    which over a thousand tests was a third of the suite's time; a database a test gives
    back with its schema unchanged and no statistics is emptied (0.05 to 0.2 s: the tables
    it wrote to are truncated) and handed to the next test instead.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sqlite: Path | None = None
        self._postgres: str | None = None
        self._fingerprint: tuple | None = None
        self._spare: str | None = None

    def sqlite_copy(self, target: Path) -> str:
        """Copy the migrated SQLite template to ``target``; return its URL."""
        if self._sqlite is None:
            template = self.folder / "template.db"
            upgrade_schema(f"sqlite:///{template}")  # its engine is disposed: WAL checkpointed
            self._sqlite = template
        shutil.copyfile(self._sqlite, target)
        return f"sqlite:///{target}"

    def postgres_template(self, server_url: str) -> str:
        """Return the name of the migrated PostgreSQL template database."""
        if self._postgres is None:
            url = create_postgres_database(server_url)
            upgrade_schema(url)
            self._postgres = url
        return str(normalise_url(self._postgres).database)

    def postgres_database(self, server_url: str) -> str:
        """A PostgreSQL database at head with no rows, for one test: one an earlier test
        gave back, else a new clone of the template."""
        if self._spare is not None:
            url, self._spare = self._spare, None
            return url
        return create_postgres_database(server_url, template=self.postgres_template(server_url))

    def give_back(self, server_url: str, url: str) -> None:
        """Keep ``url`` emptied for the next test, or drop it when the test changed more
        than rows (its schema, an index, an extension, a setting) or it cannot be emptied."""
        if self._spare is None:
            try:
                if self._fingerprint is None:
                    self._fingerprint = _pg_fingerprint(self._postgres)
                if _pg_emptied(url, self._fingerprint):
                    self._spare = url
                    return
            except Exception:  # noqa: BLE001 - a database in any state is dropped instead
                pass
        drop_postgres_database(server_url, url)

    def close(self) -> None:
        """Drop the PostgreSQL template and the spare database, if made."""
        server_url = postgres_server_url()
        for url in (self._spare, self._postgres):
            if url is not None and server_url:
                with suppress(Exception):
                    drop_postgres_database(server_url, url)


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    """Session-wide migrated template databases."""
    templates = MigratedTemplates(tmp_path_factory.mktemp("db-template"))
    yield templates
    templates.close()


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """Name the backend under test (the PostgreSQL one is skipped without a server)."""
    if request.param == "postgresql" and not postgres_server_url():
        pytest.skip(f"{POSTGRES_ENV} is not set (see .ci/postgres.sh)")
    return request.param


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a fresh, empty database."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'spamguard.db'}"
        return
    with temporary_postgres_database(str(postgres_server_url())) as url:
        yield url


@pytest.fixture
def migrated_db_url(
    db_backend: str, tmp_path: Path, migrated_templates: MigratedTemplates
) -> Iterator[str]:
    """Yield the URL of a fresh database whose schema is at head."""
    if db_backend == "sqlite":
        yield migrated_templates.sqlite_copy(tmp_path / "spamguard.db")
        return
    server_url = str(postgres_server_url())
    url = migrated_templates.postgres_database(server_url)
    try:
        yield url
    finally:
        migrated_templates.give_back(server_url, url)


@pytest.fixture
def db_engine(migrated_db_url: str) -> Iterator[Engine]:
    """Yield an engine on a migrated database, disposed afterwards."""
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session_factory(db_engine: Engine) -> sessionmaker[Session]:
    """Return a session factory on the migrated database."""
    return make_session_factory(db_engine)


@pytest.fixture
def db_session(db_session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session on the migrated database, closed afterwards."""
    with db_session_factory() as session:
        yield session


@pytest.fixture
def make_version_dir(tmp_path: Path) -> Callable[..., Path]:
    """Return a factory writing ``models/<version>/`` under ``tmp_path``: a ``model.json``
    with every field loading checks, and a small head file that is valid safetensors (the
    registry checks that a version is complete and its weight files readable, not that the
    weights fit the model)."""
    import numpy as np
    from safetensors.numpy import save_file

    def make(
        version: str, *, created_at: str = "2026-11-22T10:15:00+00:00", threshold: float = 0.5,
        spam_f1: float = 0.9, mcc: float = 0.85, ham_fpr: float = 0.01,
        backbone: str = "all-MiniLM-L6-v2",
    ) -> Path:
        directory = tmp_path / "models" / version
        directory.mkdir(parents=True, exist_ok=True)
        info = {
            "version": version,
            "created_at": created_at,
            "backbone": {"name": backbone, "hash": "b" * 16, "hidden_size": 384},
            "threshold": threshold, "pooling": "mean", "max_length": 128, "input_dim": 384,
            "metrics": {"test": {"spam_f1": spam_f1, "mcc": mcc, "ham_fpr": ham_fpr,
                                 "accuracy": 0.97}},
        }
        (directory / "model.json").write_text(json.dumps(info), encoding="utf-8")
        save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(directory / "head.safetensors"))
        return directory

    return make


@contextmanager
def captured_statements(connection) -> Iterator[list[tuple[str, object]]]:
    """Collect the (SQL, parameters) of every statement ``connection`` runs meanwhile."""
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def record(conn, cursor, sql, params, context, many) -> None:
        statements.append((sql, params))

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(connection, "before_cursor_execute", record)


def query_plan(connection, sql: str, params) -> str:
    """The database's plan for a statement, as one line (EXPLAIN QUERY PLAN on SQLite)."""
    explain = "EXPLAIN QUERY PLAN" if connection.dialect.name == "sqlite" else "EXPLAIN"
    return " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"{explain} {sql}",
                                                                      params))


def downgrade(url: str, revision: str) -> None:
    """Run the migrations down to ``revision`` as `alembic downgrade` would."""
    from alembic import command

    from spamguard.db import alembic_config, make_migration_engine

    engine = make_migration_engine(url)
    with engine.connect() as connection:
        command.downgrade(alembic_config(connection=connection), revision)
    engine.dispose()


def waits_for_commit(holder: Session, work: Callable[[], str]) -> str:
    """Run ``work`` in a thread while ``holder``'s transaction is open: check that it waits
    for that transaction (still running half a second on), commit and close ``holder``, and
    return what ``work`` returned once it went on."""
    import threading

    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(work()))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), outcome  # it waits for the holder's transaction
    holder.commit()
    holder.close()
    thread.join(10)
    (result,) = outcome
    return result

