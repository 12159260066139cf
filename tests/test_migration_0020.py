"""Migration 0020: on SQLite, message and spot-check draw ids are never handed out again
after the newest row is deleted (messages purge / erase); rows, constraints, indexes and
the text index's triggers survive the rebuild, and downgrading gives the 0019 tables back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spamguard import db
from spamguard.services import message_deletion
from spamguard.services.message_deletion import Selection
from tests.fixtures_admin import new_message
from tests.fixtures_db import downgrade

INSERT = ("INSERT INTO messages (gateway, sender, recipient, body, text_hash, received_at, "
          "created_at, verdict_status) VALUES ('test', '+1', '+2', ?, 'h', CURRENT_TIMESTAMP, "
          "CURRENT_TIMESTAMP, 'pending')")


def _schema(path: Path, table: str) -> tuple[set[str], list]:
    with sqlite3.connect(path) as connection:
        sql = connection.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                 (table,)).fetchone()[0]
        others = connection.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
            "AND tbl_name = ? ORDER BY name", (table,)).fetchall()
    connection.close()
    return {line.strip().rstrip(",") for line in sql.splitlines()[1:-1]}, others


def test_an_erased_newest_message_leaves_its_id_unused(db_session, db_session_factory):
    """Erasing the newest message, then storing one: the new one gets a new id (SQLite gave
    it the erased one's, so a page still open on it labelled another person's SMS)."""
    first, newest = (new_message(body, p=0.9) for body in ("older one", "newest one"))
    db_session.add_all([first, newest])
    db_session.commit()
    erased = newest.id
    message_deletion.delete_messages(db_session_factory, Selection(message_ids=(erased,)))
    later = new_message("arrived after the erasure", p=0.1)
    db_session.add(later)
    db_session.commit()
    assert later.id > erased


def test_0020_keeps_rows_constraints_indexes_and_the_text_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    db.upgrade_schema(url, "0019")
    before = {table: _schema(tmp_path / "x.db", table)[1]
              for table in ("messages", "spot_check_draws")}
    with sqlite3.connect(tmp_path / "x.db") as connection:
        for body in ("zanzibar holiday", "parcel waiting", "newest"):
            connection.execute(INSERT, (body,))
        connection.execute("DELETE FROM messages WHERE body = 'newest'")  # id 3, before 0020
    connection.close()
    db.upgrade_schema(url)
    for table in ("messages", "spot_check_draws"):
        lines, others = _schema(tmp_path / "x.db", table)
        assert "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" in lines, table
        assert others == before[table], table  # every index and trigger as it was
    with sqlite3.connect(tmp_path / "x.db") as connection:
        assert connection.execute("SELECT id, body FROM messages ORDER BY id").fetchall() == [
            (1, "zanzibar holiday"), (2, "parcel waiting")]
        with pytest.raises(sqlite3.IntegrityError):  # the checks survived the copy
            connection.execute(INSERT.replace("'pending'", "'maybe'"), ("x",))
        new = connection.execute(INSERT, ("zanzibar again",)).lastrowid
        found = connection.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH "
                                   "'zanzibar' ORDER BY rowid").fetchall()
        assert found == [(1,), (new,)]  # the text index has old and new rows
        connection.execute("DELETE FROM messages WHERE id = ?", (new,))
        assert connection.execute(INSERT, ("after",)).lastrowid == new + 1
    connection.close()


def _described(url: str, table: str) -> tuple:
    """A table as the database describes it (columns, primary key, checks, uniques, foreign
    keys, indexes): columns added by ALTER TABLE read the same as columns made with it."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        found = inspect(engine)
        return ([(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)],
                found.get_pk_constraint(table)["name"],
                sorted((c["name"], c["sqltext"]) for c in found.get_check_constraints(table)),
                sorted(str(u) for u in found.get_unique_constraints(table)),
                sorted(str(f) for f in found.get_foreign_keys(table)),
                sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                       for i in found.get_indexes(table)))
    finally:
        engine.dispose()


def test_0020_downgrade_gives_back_the_0019_tables(tmp_path: Path) -> None:
    made = f"sqlite:///{tmp_path}/made.db"
    db.upgrade_schema(made, "0019")
    down = f"sqlite:///{tmp_path}/down.db"
    db.upgrade_schema(down)
    downgrade(down, "0019")
    for table in ("messages", "spot_check_draws"):
        lines, others = _schema(tmp_path / "down.db", table)
        assert f"CONSTRAINT pk_{table} PRIMARY KEY (id)" in lines, table
        assert not any("AUTOINCREMENT" in line for line in lines), table
        assert others == _schema(tmp_path / "made.db", table)[1], table  # indexes, triggers
        assert _described(down, table) == _described(made, table), table
