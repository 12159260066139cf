"""``spamguard db compact``: after an erase, the erased text is gone from the SQLite file
(and its write-ahead log); the messages left and their text search still work; on
PostgreSQL it vacuums; a missing database is one line, not a new instance."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select, text

from spamguard.cli import _Group, db_commands
from spamguard.db import sqlite_file
from spamguard.models import Message
from spamguard.services import message_deletion, text_search
from spamguard.services.message_deletion import Selection
from tests.fixtures_admin import new_message

ERASED = "zanzibar villa booking for Mrs Quintavalle, door code 58213"
KEPT = "your parcel from Harrowgate Books arrives tomorrow"
WHEN = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def cli(migrated_db_url, monkeypatch) -> click.Group:
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    group = _Group("spamguard")
    db_commands.register(group)
    return group


def _store(session, body: str, sender: str, copies: int) -> None:
    for number in range(copies):
        session.add(new_message(f"{body} #{number}", p=0.2, sender=sender, received_at=WHEN))
    session.commit()


def _file_holds(path: Path, text: str) -> bool:
    needle = text.encode()
    return any(needle in p.read_bytes()
               for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _found(session, term: str) -> int:
    return session.scalar(select(func.count()).select_from(Message).where(
        text_search.body_contains(term, indexed=text_search.has_index(session))))


def _without_secure_delete(engine) -> None:
    """Debian builds SQLite to zero what a delete frees; most builds do not (the default
    is off), and there the text stays in free pages until the file is rebuilt."""
    event.listen(engine, "connect",
                 lambda connection, _record: connection.execute("PRAGMA secure_delete = 0"))


def test_after_an_erase_compacting_takes_the_text_out_of_the_sqlite_file(
        cli, migrated_db_url, db_backend, db_engine, db_session, db_session_factory):
    if db_backend != "sqlite":
        pytest.skip("the file is SQLite's")
    path = sqlite_file(migrated_db_url)
    _without_secure_delete(db_engine)
    _store(db_session, ERASED, "+447700900123", copies=300)
    _store(db_session, KEPT, "+447700900999", copies=5)
    message_deletion.delete_messages(db_session_factory, Selection(sender="+447700900123"))
    db_session.expire_all()
    # Deleting alone leaves the bytes behind: what this command is for.
    assert _file_holds(path, ERASED)
    with db_engine.connect() as connection:  # in the file, not only in the log
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert _file_holds(path, ERASED)

    result = CliRunner().invoke(cli, ["db", "compact"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert "compacted in" in result.output
    assert "text index merged, file rebuilt" in result.output
    assert " MB -> " in result.output
    assert not _file_holds(path, ERASED)
    assert _file_holds(path, KEPT)
    db_session.expire_all()
    assert _found(db_session, "Harrowgate") == 5
    assert _found(db_session, "zanzibar") == 0


def test_on_postgresql_compacting_vacuums_every_table(cli, db_backend, db_session):
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL's VACUUM")
    _store(db_session, KEPT, "+447700900999", copies=3)

    result = CliRunner().invoke(cli, ["db", "compact"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert "vacuumed" in result.output and "tables in" in result.output
    assert _found(db_session, "Harrowgate") == 3


def test_compacting_a_database_that_is_not_there_says_so_and_creates_nothing(
        tmp_path, monkeypatch):
    home = tmp_path / "nowhere"
    monkeypatch.setenv("SPAMGUARD_HOME", str(home))
    monkeypatch.delenv("SPAMGUARD_DATABASE_URL", raising=False)
    group = _Group("spamguard")
    db_commands.register(group)

    result = CliRunner().invoke(group, ["db", "compact"])

    assert result.exit_code != 0
    assert "spamguard.db" in result.output and "Traceback" not in result.output
    assert not (home / "spamguard.db").exists()


def test_a_database_another_writer_holds_is_one_line_and_changes_nothing(
        cli, migrated_db_url, db_backend, monkeypatch):
    if db_backend != "sqlite":
        pytest.skip("SQLite's one writer")
    import sqlite3

    from spamguard import db

    monkeypatch.setattr(db.engines, "SQLITE_BUSY_TIMEOUT_MS", 100)  # every connection's
    path = sqlite_file(migrated_db_url)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = CliRunner().invoke(cli, ["db", "compact"])
    finally:
        holder.close()
    assert result.exit_code == 2  # as every command's error
    assert "not compacted: the database is busy or unreachable (database is locked)" in (
        result.output)
    assert "Traceback" not in result.output


def test_a_reader_that_outlasts_every_try_is_named(cli, migrated_db_url, db_backend,
                                                  monkeypatch):
    if db_backend != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    import sqlite3

    from spamguard.services import compaction

    monkeypatch.setattr(compaction, "CHECKPOINT_TRIES", 3)
    reader = sqlite3.connect(sqlite_file(migrated_db_url), isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # holds its snapshot
        held = CliRunner().invoke(cli, ["db", "compact"], catch_exceptions=False)
    finally:
        reader.close()
    assert held.exit_code == 0, held.output
    assert "compacted in" in held.stdout
    assert "note: a reader kept the write-ahead log from being emptied" in held.stderr
    again = CliRunner().invoke(cli, ["db", "compact"], catch_exceptions=False)
    assert again.exit_code == 0 and again.stderr == "", again.output


class _Checkpoints:
    """A connection whose checkpoint finds a transaction in the way ``busy`` times."""

    def __init__(self, busy: int) -> None:
        self.busy, self.tries, self.timeouts = busy, 0, []

    def exec_driver_sql(self, sql: str):
        if sql.startswith("PRAGMA busy_timeout"):
            self.timeouts.append(int(sql.rsplit("=", 1)[1]))
            return None
        self.tries += 1
        result = (1 if self.tries <= self.busy else 0, 10, 10)
        return type("Result", (), {"one": lambda _self: result})()


def test_the_log_is_tried_again_with_short_waits_and_the_timeout_put_back(monkeypatch):
    from spamguard import db
    from spamguard.services import compaction

    monkeypatch.setattr(compaction, "CHECKPOINT_PAUSE_SECONDS", 0)
    gap_on_the_third = _Checkpoints(busy=2)
    assert compaction._empty_log(gap_on_the_third) is True
    assert gap_on_the_third.tries == 3
    assert gap_on_the_third.timeouts == [compaction.CHECKPOINT_WAIT_MS,
                                         db.SQLITE_BUSY_TIMEOUT_MS]
    never = _Checkpoints(busy=10 ** 6)
    assert compaction._empty_log(never) is False
    assert never.tries == compaction.CHECKPOINT_TRIES


def test_a_database_it_may_not_write_is_one_line_not_a_traceback(migrated_db_url, db_backend,
                                                                 monkeypatch):
    """Not busy, so not worth a retry, but still one line: a read-only file (or URI), a
    full disk for VACUUM's copy."""
    if db_backend != "sqlite":
        pytest.skip("SQLite's file")
    path = sqlite_file(migrated_db_url)
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    group = _Group("spamguard")
    db_commands.register(group)

    result = CliRunner().invoke(group, ["db", "compact"])

    assert result.exit_code == 2, result.output
    assert "not compacted: attempt to write a readonly database" in result.output
    assert "Traceback" not in result.output


def test_on_postgresql_a_table_the_role_may_not_vacuum_is_an_error_not_a_success(
        cli, db_backend, db_session, monkeypatch):
    """PostgreSQL skips a table its owner (or a superuser) did not let the role vacuum with
    a WARNING, and VACUUM succeeds: the service's role, where another owns the tables. A
    shared catalog stands in for such a table (only a superuser may vacuum it)."""
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL's VACUUM")
    if db_session.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")):
        pytest.skip("a superuser may vacuum every table")
    from spamguard.services import compaction

    real = compaction.inspect

    class WithACatalog:
        def __init__(self, connection) -> None:
            self.inspector = real(connection)

        def get_table_names(self) -> list[str]:
            return [*self.inspector.get_table_names(), "pg_authid"]

    monkeypatch.setattr(compaction, "inspect", WithACatalog)

    result = CliRunner().invoke(cli, ["db", "compact"])

    assert result.exit_code == 2, result.output
    assert "VACUUM warned for 1 of " in result.output
    assert 'pg_authid: skipping "pg_authid"' in result.output
    assert "run it as the one that runs `spamguard db upgrade`" in result.output
    assert "Traceback" not in result.output
