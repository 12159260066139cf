"""Tests for spamguard.db and the constraints in spamguard.models, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spamguard import db
from spamguard.errors import DatabaseError, SchemaOutOfDateError
from spamguard.models import Campaign, Message, ModelVersion, Review, User, Verdict


def _message(**overrides) -> Message:
    fields = dict(gateway="twilio", external_id="SM1", sender="+15550001", recipient="+15550002",
                  body="WIN a prize now", text_hash="h" * 64)
    return Message(**{**fields, **overrides})


def _version(version_id: str = "v1", status: str = "candidate") -> ModelVersion:
    return ModelVersion(id=version_id, directory="/tmp/x", backbone="b", backbone_hash="h",
                        created_at=datetime.now(UTC), status=status, threshold=0.5)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@h/d", "postgresql+psycopg"),
        ("postgres://u:p@h/d", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@h/d", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_normalise_url_uses_psycopg3(url: str, driver: str) -> None:
    assert db.normalise_url(url).drivername == driver


def test_a_url_whose_port_is_not_a_number_is_one_clear_line() -> None:
    with pytest.raises(DatabaseError, match="several PostgreSQL hosts go in the query"):
        db.normalise_url("postgresql://u:p@h1:5432,h2:5433/db")
    several = db.normalise_url("postgresql://u:p@/db?host=h1:5432&host=h2:5433")
    assert several.query["host"] == ("h1:5432", "h2:5433")


def test_safe_url_hides_password() -> None:
    assert "secret" not in db.safe_url("postgresql://u:secret@h/d")


def test_make_engine_does_not_connect(tmp_path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(DatabaseError, match="cannot read the database"):
        db.schema_status(engine)


def test_sqlite_pragmas(tmp_path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/x.db")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_upgrade_schema_creates_sqlite_parent(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "spamguard.db"
    db.upgrade_schema(f"sqlite:///{path}")
    assert path.exists()


def test_session_scope_commits_and_rolls_back(db_session_factory) -> None:
    with db.session_scope(db_session_factory) as session:
        session.add(User(username="ann", password_hash="x", role="admin"))
    with pytest.raises(RuntimeError), db.session_scope(db_session_factory) as session:
        session.add(User(username="bob", password_hash="x"))
        session.flush()
        raise RuntimeError("boom")
    with db.session_scope(db_session_factory) as session:
        assert session.scalars(select(User.username)).all() == ["ann"]


def test_timestamps_come_back_aware_utc(db_session: Session) -> None:
    plus_two = timezone(timedelta(hours=2))
    db_session.add(_message(received_at=datetime(2026, 1, 1, 12, 0, tzinfo=plus_two)))
    db_session.add(_message(external_id="SM2", received_at=datetime(2026, 1, 1, 11, 0)))
    db_session.commit()
    db_session.expire_all()
    times = db_session.scalars(select(Message.received_at).order_by(Message.received_at)).all()
    assert times == [datetime(2026, 1, 1, hour, 0, tzinfo=UTC) for hour in (10, 11)]
    assert all(t.tzinfo is not None for t in times)


def test_external_id_unique_per_gateway(db_session: Session) -> None:
    db_session.add_all([_message(), _message(gateway="api"), _message(external_id=None),
                        _message(external_id=None)])
    db_session.commit()
    db_session.add(_message())
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_foreign_keys_enforced(db_session: Session) -> None:
    db_session.add(_version())
    db_session.commit()
    db_session.add(Verdict(message_id=999, model_version_id="v1", spam_probability=0.9,
                           label="spam", threshold=0.5))
    with pytest.raises(IntegrityError):
        db_session.commit()


@pytest.mark.parametrize("bad", [User(username="x", password_hash="x", role="root"),
                                 _message(verdict_status="done"), _message(review_label="eggs")])
def test_check_constraints(db_session: Session, bad) -> None:
    db_session.add(bad)
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_one_current_review_per_message(db_session: Session) -> None:
    message = _message()
    db_session.add(message)
    db_session.flush()
    db_session.add(Review(message_id=message.id, label="spam", is_current=False))
    db_session.add(Review(message_id=message.id, label="ham", is_current=True))
    db_session.commit()
    db_session.add(Review(message_id=message.id, label="spam", is_current=True))
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_one_active_version(db_session: Session) -> None:
    db_session.add_all([_version("v1", "active"), _version("v2", "retired"),
                        _version("v3", "retired")])
    db_session.commit()
    db_session.add(_version("v4", "active"))
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_deleting_a_message_cascades(db_session: Session) -> None:
    message = _message()
    db_session.add_all([_version(), message])
    db_session.flush()
    campaign = Campaign(first_seen=message.received_at, last_seen=message.received_at, size=1,
                        representative_message_id=message.id)
    db_session.add_all([campaign, Review(message_id=message.id, label="spam"),
                        Verdict(message_id=message.id, model_version_id="v1",
                                spam_probability=0.9, label="spam", threshold=0.5)])
    db_session.commit()
    db_session.execute(delete(Message).where(Message.id == message.id))
    db_session.commit()
    db_session.expire_all()
    assert db_session.scalars(select(Verdict)).all() == []
    assert db_session.scalars(select(Review)).all() == []
    assert db_session.get(Campaign, campaign.id).representative_message_id is None


def test_schema_status_and_refusal(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        status = db.schema_status(engine)
        assert (status.current, status.is_current) == (None, False)
        with pytest.raises(SchemaOutOfDateError) as caught:
            db.ensure_schema_current(engine)
        head = db.head_revision()
        assert str(caught.value) == (
            f"database schema is out of date (at empty, need {head}): run `spamguard db upgrade`"
        )
        db.upgrade_schema(db_url)
        assert db.ensure_schema_current(engine).current == head
    finally:
        engine.dispose()


def test_unknown_revision_is_called_newer(db_engine: Engine) -> None:
    with db_engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaOutOfDateError, match="newer than this spamguard"):
        db.ensure_schema_current(db_engine)


def test_open_database_creates_only_fresh_sqlite(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path}/new/spamguard.db"
    with pytest.raises(SchemaOutOfDateError):
        db.open_database(url)
    db.open_database(url, create_if_empty=True).dispose()
    current = db.head_revision()
    monkeypatch.setattr(db.schema, "head_revision", lambda: "9999")
    with pytest.raises(SchemaOutOfDateError, match=rf"at {current}, need 9999\): run `spamguard"):
        db.open_database(url, create_if_empty=True)


def test_open_database_leaves_foreign_sqlite_alone(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/other.db"
    engine = db.make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
    engine.dispose()
    with pytest.raises(SchemaOutOfDateError, match="at empty"):
        db.open_database(url, create_if_empty=True)


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ("review_label IS NULL ORDER BY received_at DESC", "ix_messages_review_label"),
        ("sender = '+1555' ORDER BY received_at DESC", "ix_messages_sender"),
        ("campaign_id = 3 ORDER BY received_at DESC", "ix_messages_campaign_id"),
        ("model_label = 'spam' ORDER BY received_at DESC", "ix_messages_model_label"),
        ("1 = 1 ORDER BY received_at DESC, id DESC", "ix_messages_received_at"),
        ("review_label IS NULL AND threshold_distance IS NOT NULL "
         "ORDER BY review_label, threshold_distance, id", "ix_messages_review_queue"),
        ("verdict_status = 'pending' ORDER BY id", "ix_messages_verdict_status"),
    ],
)
def test_admin_list_queries_use_indexes(tmp_path, where: str, index: str) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    db.upgrade_schema(url)
    engine = db.make_engine(url)
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN SELECT id FROM messages WHERE {where} LIMIT 50"
        ).fetchall()
    engine.dispose()
    details = " ".join(str(row[-1]) for row in plan)
    assert index in details and "TEMP B-TREE" not in details, details


def test_engines_hide_bound_values_in_errors_by_default(tmp_path) -> None:
    """A failed statement's error text must not carry an SMS body (SPAMGUARD_LOG_BODIES=0)."""
    from sqlalchemy.exc import OperationalError

    url = f"sqlite:///{tmp_path}/x.db"
    for engine, hidden in ((db.make_engine(url), True),
                           (db.make_engine(url, hide_parameters=False), False),
                           (db.make_migration_engine(url), True)):
        with engine.connect() as connection, pytest.raises(OperationalError) as caught:
            connection.execute(text("INSERT INTO nowhere VALUES (:body)"), {"body": "PIN 4921"})
        engine.dispose()
        assert ("PIN 4921" not in str(caught.value)) is hidden


@pytest.mark.parametrize(("module", "words", "sqlstate", "cannot"), [
    ("sqlite3", "database or disk is full", None, True),
    ("sqlite3", "attempt to write a readonly database", None, True),
    ("sqlite3", "database is locked", None, False),
    ("psycopg.errors", "could not extend file: No space left on device", "53100", True),
    ("psycopg.errors", "cannot execute INSERT in a read-only transaction", "25006", True),
    ("psycopg.errors", "canceling statement due to lock timeout", "55P03", False),
])
def test_which_database_errors_mean_it_cannot_write(module, words, sqlstate, cannot):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from spamguard.db import database_cannot_write

    if module == "sqlite3":
        error = sqlite3.OperationalError(words)
    else:
        error = type("PgError", (Exception,), {"__module__": module})(words)
        error.sqlstate = sqlstate
    assert database_cannot_write(OperationalError("INSERT", {}, error)) is cannot
    assert not database_cannot_write(ValueError(words))


@pytest.mark.parametrize(("orig", "unavailable"), [
    ("sqlite:database is locked", True),
    ("sqlite:no such table: messages", False),  # a broken schema: retrying cannot help
    ("pg:None", True),  # connection refused before the server said anything
    ("pg:08006", True), ("pg:40P01", True), ("pg:55P03", True), ("pg:57014", True),
    ("pg:57P01", True), ("pg:53300", True),
    ("pg:28P01", False),  # wrong password after a rotation: a person must fix it
    ("pg:3D000", False), ("pg:53100", False),
    # what psycopg really reports when the server refuses the login: no SQLSTATE
    ('pg:None:connection failed: connection to server at "127.0.0.1", port 5432 failed: '
     'FATAL:  password authentication failed for user "spamguard"', False),
    ('pg:None:connection failed: ... failed: FATAL:  database "sg" does not exist', False),
    ("pg:None:connection failed: ... failed: fe_sendauth: no password supplied", False),
    ('pg:None:connection failed: ... failed: FATAL:  permission denied for database "sg"'
     '\nDETAIL:  User does not have CONNECT privilege.', False),
    ('pg:None:connection failed: ... FATAL:  role "sg" is not permitted to log in', False),
    ('pg:None:connection failed: ... port 5499 failed: Connection refused', True),
    ('pg:None:connection is bad: invalid sslmode value: "bogus"', False),  # a URL typo
    ('pg:None:invalid target_session_attrs value: "any-one"', False),
])
def test_which_database_errors_are_worth_a_retry(orig, unavailable):
    import sqlite3

    from sqlalchemy.exc import IntegrityError, OperationalError

    from spamguard.db import database_unavailable

    kind, detail = orig.split(":", 1)
    if kind == "sqlite":
        error = sqlite3.OperationalError(detail)
    else:
        code, _, words = detail.partition(":")
        error = type("PgError", (Exception,), {"__module__": "psycopg.errors"})(
            words or "server says no")
        error.sqlstate = None if code == "None" else code
    assert database_unavailable(OperationalError("SELECT 1", {}, error)) is unavailable
    assert not database_unavailable(IntegrityError("INSERT", {}, error))


@pytest.mark.parametrize("url, pg_env, expected", [
    ("postgresql://u@h/db", None, {"connect_timeout": 10}),
    ("postgresql://u@h/db?connect_timeout=3", None, {"connect_timeout": "3"}),
    ("postgresql://u@h/db", "4", {}),  # PGCONNECT_TIMEOUT: libpq reads it itself
])
def test_postgres_engines_get_a_connect_timeout_unless_one_is_set(url, pg_env, expected,
                                                                   monkeypatch):
    from spamguard.db import make_engine, make_migration_engine

    if pg_env is None:
        monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("PGCONNECT_TIMEOUT", pg_env)
    for engine in (make_engine(url), make_engine(url, request_timeouts=True),
                   make_migration_engine(url)):
        captured = {}

        def connect(*_args, captured=captured, **kwargs):  # nothing connects
            captured.update(kwargs)
            raise RuntimeError("not connecting")

        monkeypatch.setattr(engine.dialect.dbapi, "connect", connect)
        with pytest.raises(Exception, match="not connecting"):
            engine.connect()
        assert {k: v for k, v in captured.items() if k == "connect_timeout"} == expected
        assert "options" not in captured  # PGOPTIONS and service files keep working
        assert captured["keepalives_idle"] == 10 and captured["tcp_user_timeout"] == 15_000


def test_postgres_keepalives_yield_to_the_url(monkeypatch):
    """An audit's blackholed connection hung every worker for 120 s: TCP keepalives and a
    user timeout are on by default, and a URL's own values win."""
    from spamguard.db import make_engine

    engine = make_engine("postgresql://u@h/db?keepalives_idle=60&tcp_user_timeout=0")
    captured = {}

    def connect(*_args, **kwargs):
        captured.update(kwargs)
        raise RuntimeError("not connecting")

    monkeypatch.setattr(engine.dialect.dbapi, "connect", connect)
    with pytest.raises(Exception, match="not connecting"):
        engine.connect()
    assert (captured["keepalives_idle"], captured["tcp_user_timeout"]) == ("60", "0")
    assert (captured["keepalives"], captured["keepalives_count"]) == (1, 3)


@pytest.mark.parametrize("query, pgoptions, expected", [
    ("", None, ("5s", "30s")),
    ("options=-c%20lock_timeout%3D900", None, ("900ms", "30s")),  # the URL's own wins
    ("", "-c statement_timeout=7000 -c search_path=public", ("5s", "7s")),  # so do these
])
def test_the_service_sessions_get_lock_and_statement_timeouts(db_backend, db_url, query,
                                                              pgoptions, expected,
                                                              monkeypatch):
    if db_backend != "postgresql":
        pytest.skip("SQLite has its busy timeout instead")
    from sqlalchemy.engine import make_url

    from spamguard.db import make_engine

    if pgoptions is None:
        monkeypatch.delenv("PGOPTIONS", raising=False)
    else:
        monkeypatch.setenv("PGOPTIONS", pgoptions)
    url = make_url(db_url)
    if query:
        url = url.update_query_string(query)
    service, command = make_engine(url, request_timeouts=True), make_engine(url)
    try:
        for _ in range(2):  # and still after the pool's rollback on check-in
            with service.connect() as connection:
                got = tuple(connection.execute(text(f"SHOW {name}")).scalar()
                            for name in ("lock_timeout", "statement_timeout"))
                connection.rollback()
            assert got == expected
        with command.connect() as connection:
            assert connection.execute(text("SHOW lock_timeout")).scalar() == (
                "900ms" if query else "0")
    finally:
        service.dispose()
        command.dispose()


@pytest.fixture
def pg_server():
    """The PostgreSQL server's URL, or the test is skipped."""
    from tests.fixtures_db import postgres_server_url

    server = postgres_server_url()
    if not server:
        pytest.skip("no PostgreSQL server (see .ci/postgres.sh)")
    return server


def _run_on(url: str, *statements: str) -> list[object]:
    """Run ``statements`` in one transaction on ``url``; the first column of each result's
    first row (None for a statement that returns none)."""
    engine = db.make_engine(url)
    try:
        with engine.begin() as connection:
            results = [connection.execute(text(statement)) for statement in statements]
            return [r.scalar() if r.returns_rows else None for r in results]
    finally:
        engine.dispose()


def test_a_reused_postgresql_test_database_is_empty_and_one_with_a_changed_schema_is_not_reused(
        migrated_templates, pg_server):
    """The fixtures' own promise (tests/fixtures_db.py): a database handed to a second test
    holds no rows and restarts its ids; one whose schema a test changed is dropped."""
    server = pg_server
    insert = ("INSERT INTO campaigns (created_at, first_seen, last_seen, size) "
              "VALUES (now(), now(), now(), 2) RETURNING id")
    first = migrated_templates.postgres_database(server)
    assert _run_on(first, insert, insert) == [1, 2]
    engine = db.make_engine(first)
    left_open = engine.connect()
    left_open.execute(text("SELECT 1"))  # idle in a transaction, as a leaked session is
    migrated_templates.give_back(server, first)
    left_open.invalidate()  # the server ended it
    engine.dispose()

    second = migrated_templates.postgres_database(server)
    assert second == first
    assert _run_on(second, "SELECT count(*) FROM campaigns", insert,
                   "DROP INDEX ix_messages_body_trgm") == [0, 1, None]
    migrated_templates.give_back(server, second)
    third = migrated_templates.postgres_database(server)
    try:
        assert third != second
    finally:
        migrated_templates.give_back(server, third)


@pytest.mark.parametrize("change", [
    "ALTER TABLE campaigns DROP CONSTRAINT ck_campaigns_label",
    "ALTER TABLE campaigns ALTER COLUMN size SET DEFAULT 7",
    "DROP INDEX ix_messages_received_at; CREATE INDEX ix_messages_received_at ON messages (id)",
    "GRANT SELECT ON campaigns TO PUBLIC",
    "ALTER TABLE campaigns ENABLE ROW LEVEL SECURITY",
    "ALTER SEQUENCE campaigns_id_seq INCREMENT BY 10",
    "ALTER TABLE campaigns SET (autovacuum_enabled = false)",
    "CREATE RULE no_deletes AS ON DELETE TO campaigns DO INSTEAD NOTHING",
])
def test_a_postgresql_test_database_whose_constraints_defaults_or_grants_changed_is_not_reused(
        migrated_templates, pg_server, change):
    """The schema fingerprint covers what a test may change besides relations and columns:
    the next test would otherwise run without a CHECK, with another default, a table
    readable by every role..."""
    server = pg_server
    first = migrated_templates.postgres_database(server)
    _run_on(first, *change.split("; "))
    migrated_templates.give_back(server, first)
    second = migrated_templates.postgres_database(server)
    try:
        assert second != first
    finally:
        migrated_templates.give_back(server, second)


def test_a_reused_postgresql_test_database_has_no_pages_or_statistics_of_the_test_before(
        migrated_templates, pg_server):
    """The planner of the next test must not estimate from the last test's rows: from its
    tables' pages (DELETE keeps them) nor from statistics an ANALYZE left (a database with
    some is not reused). As in a fresh clone, the tables look empty and never analysed."""
    server = pg_server
    sizes = text("SELECT reltuples, pg_relation_size(oid) FROM pg_class "
                 "WHERE relname = 'campaigns'")
    fill = ("INSERT INTO campaigns (created_at, first_seen, last_seen, size) "
            "SELECT now(), now(), now(), n FROM generate_series(1, 5000) n")
    first = migrated_templates.postgres_database(server)
    _run_on(first, fill)
    migrated_templates.give_back(server, first)
    second = migrated_templates.postgres_database(server)
    assert second == first
    engine = db.make_engine(second)
    try:
        with engine.begin() as connection:
            assert tuple(connection.execute(sizes).one()) == (-1, 0)
            connection.execute(text(fill))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE campaigns"))
    finally:
        engine.dispose()
        migrated_templates.give_back(server, second)
    third = migrated_templates.postgres_database(server)
    try:
        assert third != second
    finally:
        migrated_templates.give_back(server, third)
