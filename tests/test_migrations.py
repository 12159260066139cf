"""Tests for the Alembic migrations: from empty, matching models.py, down and up again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from spamguard import db
from spamguard.models import Base
from spamguard.services import text_search
from tests.fixtures_db import downgrade

TABLES = {"users", "api_keys", "model_versions", "messages", "verdicts", "reviews", "campaigns",
          "campaign_rebuilds", "training_runs", "eval_examples", "locks", "spot_check_draws",
          "queue_claims", "promotion_holds", "sender_rules", "audit_events"}


def _diff(url: str) -> list:
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True, "include_name": text_search.include_in_autogenerate})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    """The database's tables, but for the full-text index of SQLite (migration 0010)."""
    engine = db.make_engine(url)
    try:
        return {name for name in inspect(engine).get_table_names()
                if not text_search.is_index_table(name)}
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    db.upgrade_schema(db_url)
    assert _tables(db_url) == TABLES | {"alembic_version"}
    assert set(Base.metadata.tables) == TABLES


def test_migrations_match_models(db_url: str) -> None:
    db.upgrade_schema(db_url)
    assert _diff(db_url) == []


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    db.upgrade_schema(db_url)
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    assert db.ensure_schema_current(engine).current == db.head_revision()
    engine.dispose()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    db.upgrade_schema(db_url)
    downgrade(db_url, "base")
    assert _tables(db_url) == {"alembic_version"}
    db.upgrade_schema(db_url)
    assert _diff(db_url) == []


def test_one_head_and_documented_revisions() -> None:
    script = ScriptDirectory.from_config(db.alembic_config())
    assert script.get_heads() == [db.head_revision()]
    for revision in script.walk_revisions():
        assert revision.doc, f"revision {revision.revision} has no description"


def test_migration_engine_disables_foreign_keys_and_begins(tmp_path: Path) -> None:
    engine = db.make_migration_engine(f"sqlite:///{tmp_path}/x.db")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
        # SQLAlchemy's autobegin really opened an SQLite transaction (pysqlite alone would not).
        assert connection.connection.driver_connection.in_transaction
    engine.dispose()


def test_alembic_command_line_uses_settings(tmp_path: Path) -> None:
    root = db.migrations_dir()
    env = {**os.environ, "SPAMGUARD_DATABASE_URL": f"sqlite:///{tmp_path}/cli/x.db"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini"), "upgrade", "head"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _tables(env["SPAMGUARD_DATABASE_URL"]) == TABLES | {"alembic_version"}


def test_0002_rehashes_texts_and_keeps_one_copy_per_evaluation_text(db_url: str) -> None:
    """Rows stored by 0001's normaliser get the current hashes; an evaluation text that now
    matches an earlier one is removed (the hash column is unique)."""
    import hashlib

    from sqlalchemy import text

    from spamguard.ml.data import text_hash

    def old_hash(body: str) -> str:  # 0001's normaliser did not unescape: "lt gt"
        return hashlib.sha256(body.encode()).hexdigest()  # any stale value will do

    db.upgrade_schema(db_url, "0001")
    engine = db.make_engine(db_url)
    bodies = ["til &lt;#&gt; ok", "til <#> ok", "FR\u200bEE entry", "plain text"]
    with engine.begin() as connection:
        for i, body in enumerate(bodies, start=1):
            stale = old_hash(body) if i != 4 else text_hash(body)
            connection.execute(text(
                "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
                "received_at, created_at, verdict_status) VALUES (:id, 'test', '+1', '+2', "
                ":body, :hash, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')"),
                {"id": i, "body": body, "hash": stale})
            connection.execute(text(
                "INSERT INTO eval_examples (id, text_hash, text, label, source, added_at) "
                "VALUES (:id, :hash, :body, 'ham', 'base', CURRENT_TIMESTAMP)"),
                {"id": i, "body": body, "hash": stale})
    db.upgrade_schema(db_url)
    with engine.connect() as connection:
        stored = dict(connection.execute(text("SELECT body, text_hash FROM messages")).all())
        examples = connection.execute(
            text("SELECT id, text, text_hash FROM eval_examples ORDER BY id")).all()
    engine.dispose()
    assert stored == {body: text_hash(body) for body in bodies}
    assert stored["til &lt;#&gt; ok"] == stored["til <#> ok"]
    assert [(row[0], row[2]) for row in examples] == [
        (1, text_hash("til <#> ok")), (3, text_hash("free entry")), (4, text_hash("plain text"))]


def test_0004_makes_sqlite_review_ids_grow_and_keeps_rows_and_indexes(tmp_path: Path) -> None:
    """The rebuilt table keeps its rows, partial unique index and constraints, and its
    counter starts above any review id a training run counted (even one deleted since)."""
    import sqlite3

    import pytest

    url = f"sqlite:///{tmp_path}/x.db"
    db.upgrade_schema(url, "0003")
    with sqlite3.connect(tmp_path / "x.db") as connection:
        connection.execute(
            "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
            "received_at, created_at, verdict_status) VALUES (1, 'test', '+1', '+2', 'b', "
            "'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')")
        for review_id in (1, 2, 3):
            connection.execute(
                "INSERT INTO reviews (id, message_id, label, note, created_at, is_current) "
                "VALUES (?, 1, 'spam', ?, CURRENT_TIMESTAMP, ?)",
                (review_id, f"note {review_id}", review_id == 3))
        connection.execute(  # counted review 5, deleted (undone) before the upgrade
            "INSERT INTO training_runs (started_at, status, \"trigger\", max_review_id) "
            "VALUES (CURRENT_TIMESTAMP, 'promoted', 'cron', 5)")
    connection.close()
    db.upgrade_schema(url)
    with sqlite3.connect(tmp_path / "x.db") as connection:
        schema = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'reviews'").fetchone()[0]
        assert "AUTOINCREMENT" in schema
        assert connection.execute("SELECT id, note, is_current FROM reviews ORDER BY id"
                                  ).fetchall() == [(1, "note 1", 0), (2, "note 2", 0),
                                                   (3, "note 3", 1)]
        partial = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'uq_reviews_one_current'").fetchone()[0]
        assert partial.endswith("WHERE is_current = 1")
        with pytest.raises(sqlite3.IntegrityError):  # still one current review per message
            connection.execute("INSERT INTO reviews (message_id, label, created_at, "
                               "is_current) VALUES (1, 'ham', CURRENT_TIMESTAMP, 1)")
        with pytest.raises(sqlite3.IntegrityError):  # the label check survived too
            connection.execute("INSERT INTO reviews (message_id, label, created_at, "
                               "is_current) VALUES (1, 'maybe', CURRENT_TIMESTAMP, 0)")
        new = connection.execute("INSERT INTO reviews (message_id, label, created_at, "
                                 "is_current) VALUES (1, 'ham', CURRENT_TIMESTAMP, 0)").lastrowid
        assert new == 6
    connection.close()
    assert _diff(url) == []


def test_0004_downgrade_gives_back_the_0003_reviews_table(tmp_path: Path) -> None:
    """Down from 0004, ``reviews`` has the named primary key and the indexes 0003 made."""
    import sqlite3

    def schema(path: Path) -> tuple[set[str], list]:
        with sqlite3.connect(path) as connection:
            table = connection.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'reviews'").fetchone()[0]
            indexes = connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'reviews' ORDER BY name").fetchall()
        connection.close()
        lines = {line.strip().rstrip(",") for line in table.splitlines()[1:-1]}
        return lines, indexes

    db.upgrade_schema(f"sqlite:///{tmp_path}/made.db", "0003")
    down = f"sqlite:///{tmp_path}/down.db"
    db.upgrade_schema(down)
    downgrade(down, "0003")
    made, downgraded = schema(tmp_path / "made.db"), schema(tmp_path / "down.db")
    assert "CONSTRAINT pk_reviews PRIMARY KEY (id)" in downgraded[0]
    assert downgraded == made


def test_0005_gives_existing_api_keys_every_scope(tmp_path: Path) -> None:
    """Keys made before scopes keep doing all they could; new rows default to all too."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/x.db"
    db.upgrade_schema(url, "0004")
    with sqlite3.connect(tmp_path / "x.db") as connection:
        connection.execute("INSERT INTO api_keys (name, key_prefix, key_hash, created_at) "
                           "VALUES ('old', 'sg_old', 'h1', CURRENT_TIMESTAMP)")
    connection.close()
    db.upgrade_schema(url)
    with sqlite3.connect(tmp_path / "x.db") as connection:
        assert connection.execute("SELECT name, scopes FROM api_keys").fetchall() == [
            ("old", "submit,classify,read")]
    connection.close()
    assert _diff(url) == []


def test_0005_downgrade_revokes_keys_it_could_no_longer_limit(db_url: str, caplog) -> None:
    """Before scopes every key could do everything: a submit-only key must not wake up
    able to read every stored message after a downgrade (or a downgrade and upgrade)."""
    import logging

    from sqlalchemy import text

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        for name, scopes in (("gateway", "submit"), ("all", "submit,classify,read"),
                             ("reordered", "read,submit,classify")):
            connection.execute(text(
                "INSERT INTO api_keys (name, key_prefix, key_hash, scopes, created_at) "
                "VALUES (:n, :n, :n, :s, CURRENT_TIMESTAMP)"), {"n": name, "s": scopes})
    with caplog.at_level(logging.WARNING), engine.begin() as connection:
        command.downgrade(db.alembic_config(connection=connection), "0004")
    assert "revoked 1 API key(s) limited to some scopes" in caplog.text
    assert "1 (gateway)" in caplog.text
    db.upgrade_schema(db_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, revoked_at IS NOT NULL FROM api_keys "
                                       "ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("gateway", True), ("all", False),
                                            ("reordered", False)]


def test_0007_spot_check_draws_refuse_unknown_words_and_second_open_draws(
        db_url: str) -> None:
    """A draw's verdict, tab and outcome take only the known words, a moderator has one
    open draw per tab; down removes the table."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
            "received_at, created_at, verdict_status) VALUES (1, 'test', '+1', '+2', 'b', "
            "'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')"))
        connection.execute(text(
            "INSERT INTO users (id, username, password_hash, role, created_at, is_active, "
            "failed_logins) VALUES (1, 'mo', 'x', 'moderator', CURRENT_TIMESTAMP, true, 0)"))
        insert_active_version(connection)
    draw = ("INSERT INTO spot_check_draws (user_id, verdict, mode, message_id, "
            "model_version_id, drawn_at, outcome) VALUES (1, :verdict, :mode, 1, 'v1', "
            "CURRENT_TIMESTAMP, :outcome)")
    with engine.begin() as connection:
        for verdict, mode, outcome in (("spam", "spam", None), ("ham", "any", None),
                                       ("spam", "spam", "skipped"), ("spam", "spam", "expired")):
            connection.execute(text(draw), {"verdict": verdict, "mode": mode,
                                            "outcome": outcome})
    # Unknown words, and a second open draw of one moderator and tab, are refused.
    for verdict, mode, outcome in (("maybe", "spam", "labelled"), ("spam", "spam", "lost"),
                                   ("spam", "all", "labelled"), ("ham", "spam", None)):
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(draw), {"verdict": verdict, "mode": mode,
                                            "outcome": outcome})
    with engine.begin() as connection:
        command.downgrade(db.alembic_config(connection=connection), "0006")
    assert "spot_check_draws" not in inspect(engine).get_table_names()
    engine.dispose()


def _indexes(engine):
    return {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("messages")}


def test_0008_up_and_down_on_a_populated_database(db_url: str) -> None:
    db.upgrade_schema(db_url, "0007")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        insert_active_version(connection)
        for i in range(1, 301):
            connection.execute(text(
                "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
                "received_at, created_at, verdict_status, model_label, model_version_id, "
                "review_label, spam_probability) VALUES (:i, 'test', '+1', '+2', 'b', 'h', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'classified', :label, :v, :r, 0.5)"),
                {"i": i, "label": "spam" if i % 2 else "ham", "v": "v1" if i % 3 else None,
                 "r": "ham" if i % 5 == 0 else None})
    assert "ix_messages_spot_check" not in _indexes(engine)
    engine.dispose()
    db.upgrade_schema(db_url, "0008")  # 0017 adds sender_rule (test_migration_0017.py)
    engine = db.make_engine(db_url)
    assert _indexes(engine)["ix_messages_spot_check"] == [
        "model_version_id", "model_label", "review_label", "id"]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar() == 300
    engine.dispose()
    downgrade(db_url, "0007")
    engine = db.make_engine(db_url)
    assert "ix_messages_spot_check" not in _indexes(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar() == 300
    engine.dispose()
    db.upgrade_schema(db_url)


def test_0009_fills_each_distance_from_the_latest_verdicts_threshold(db_url: str) -> None:
    """Up: a classified message's distance is from its latest verdict's threshold (0.5
    without one), a pending message has none, and the queue index reads the distance.
    Down: the column goes and the old index comes back."""
    db.upgrade_schema(db_url, "0008")
    engine = db.make_engine(db_url)
    message = ("INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
               "received_at, created_at, verdict_status, spam_probability) VALUES (:i, 'test', "
               "'+1', '+2', 'b', 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :status, :p)")
    verdict = ("INSERT INTO verdicts (id, message_id, model_version_id, spam_probability, "
               "label, threshold, latency_ms, created_at) VALUES (:id, :m, 'v1', :p, 'spam', "
               ":t, 1.0, CURRENT_TIMESTAMP)")
    with engine.begin() as connection:
        insert_active_version(connection)
        for i, status, p in ((1, "classified", 0.6), (2, "classified", 0.2),
                             (3, "pending", None)):
            connection.execute(text(message), {"i": i, "status": status, "p": p})
        # Message 1 was scored twice: its latest verdict (threshold 0.7) counts.
        for vid, m, p, t in ((1, 1, 0.9, 0.3), (2, 1, 0.6, 0.7)):
            connection.execute(text(verdict), {"id": vid, "m": m, "p": p, "t": t})
    engine.dispose()
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    assert _indexes(engine)["ix_messages_review_queue"] == [
        "review_label", "threshold_distance", "id"]
    with engine.connect() as connection:
        rows = dict(connection.execute(text(
            "SELECT id, threshold_distance FROM messages ORDER BY id")).all())
    assert rows[1] == pytest.approx(0.1) and rows[2] == pytest.approx(0.3)
    assert rows[3] is None
    engine.dispose()
    downgrade(db_url, "0008")
    engine = db.make_engine(db_url)
    assert _indexes(engine)["ix_messages_review_queue"] == ["review_label", "spam_probability"]
    columns = {c["name"] for c in inspect(engine).get_columns("messages")}
    assert "threshold_distance" not in columns and "spam_probability" in columns
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar() == 3
    engine.dispose()
    db.upgrade_schema(db_url)


def test_0010_indexes_the_texts_already_stored_and_goes_away_cleanly(db_url: str) -> None:
    """On SQLite, messages stored before 0010 are found through the new index; down leaves
    no index table or trigger behind. On PostgreSQL the pg_trgm index comes and goes."""
    db.upgrade_schema(db_url, "0009")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        for i, body in enumerate(["Claim your PRIZE", "lunch?", "prize draw"], start=1):
            connection.execute(text(
                "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
                "received_at, created_at, verdict_status) VALUES (:i, 'test', '+1', '+2', "
                ":body, 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')"),
                {"i": i, "body": body})
    engine.dispose()
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    index_objects = ("SELECT name FROM sqlite_master WHERE name LIKE 'messages_fts%'"
                     if sqlite else "SELECT indexname FROM pg_indexes WHERE indexname = "
                     "'ix_messages_body_trgm'")
    with engine.connect() as connection:
        assert connection.execute(text(index_objects)).all()
        if sqlite:
            assert connection.execute(text(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH '\"prize\"' "
                "ORDER BY rowid")).scalars().all() == [1, 3]
    engine.dispose()
    downgrade(db_url, "0009")
    engine = db.make_engine(db_url)
    with engine.connect() as connection:
        assert connection.execute(text(index_objects)).all() == []
        connection.execute(text("INSERT INTO messages (id, gateway, sender, recipient, body, "
                                "text_hash, received_at, created_at, verdict_status) VALUES "
                                "(4, 'test', '+1', '+2', 'b', 'h', CURRENT_TIMESTAMP, "
                                "CURRENT_TIMESTAMP, 'pending')"))  # no trigger left to fail
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar() == 4
    engine.dispose()
    db.upgrade_schema(db_url)


def test_0010_finds_pg_trgm_in_a_schema_off_the_search_path(db_url: str) -> None:
    """From a review: with pg_trgm already installed in another schema, CREATE EXTENSION IF
    NOT EXISTS did nothing and the index's unqualified gin_trgm_ops failed the upgrade."""
    engine = db.make_engine(db_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("pg_trgm is PostgreSQL's")
    with engine.begin() as connection:
        connection.execute(text('CREATE SCHEMA "Ext 1"'))
        connection.execute(text('CREATE EXTENSION pg_trgm SCHEMA "Ext 1"'))
    engine.dispose()
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.connect() as connection:
        assert '"Ext 1".gin_trgm_ops' in connection.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_body_trgm'"
        )).scalar_one()
    engine.dispose()


def insert_active_version(connection) -> None:
    """Model version 'v1', active, as the SQL of a migration test inserts it."""
    connection.execute(text(
        "INSERT INTO model_versions (id, directory, backbone, backbone_hash, created_at, "
        "registered_at, status, threshold, metrics) VALUES ('v1', '/m', 'b', 'h', "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'active', 0.5, '{}')"))


# Migration 0011: the columns that hold an id of a table growing with traffic.
BIG_ID_COLUMNS = [("messages", "id"), ("verdicts", "id"), ("verdicts", "message_id"),
                  ("reviews", "id"), ("reviews", "message_id"), ("spot_check_draws", "id"),
                  ("spot_check_draws", "message_id"),
                  ("campaigns", "representative_message_id"),
                  ("training_runs", "max_review_id")]
BIG = 3_000_000_000  # past PostgreSQL INTEGER's 2,147,483,647


def _id_types(connection) -> dict[tuple[str, str], str]:
    """PostgreSQL's type of each 0011 column, and of the four id sequences."""
    columns = {(table, column): connection.execute(text(
        "SELECT data_type FROM information_schema.columns WHERE table_name = :t "
        "AND column_name = :c"), {"t": table, "c": column}).scalar_one()
        for table, column in BIG_ID_COLUMNS}
    sequences = dict(connection.execute(text(
        "SELECT sequencename, data_type FROM pg_sequences WHERE sequencename IN "
        "('messages_id_seq', 'verdicts_id_seq', 'reviews_id_seq', "
        "'spot_check_draws_id_seq')")).all())
    return {**columns, **{(name, ""): kind for name, kind in sequences.items()}}


def _fill_0010(connection, message_ids=(1, 2)) -> None:
    """A message of each id with a verdict, a review and a spot check draw; a campaign and
    a training run that name them (the SQL of schema 0010)."""
    insert_active_version(connection)
    connection.execute(text(
        "INSERT INTO users (id, username, password_hash, role, created_at, is_active, "
        "failed_logins) VALUES (1, 'mo', 'x', 'moderator', CURRENT_TIMESTAMP, true, 0)"))
    for n, i in enumerate(message_ids, start=1):
        connection.execute(text(
            "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
            "received_at, created_at, verdict_status, spam_probability, model_label) VALUES "
            "(:i, 'test', '+1', '+2', :body, 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
            "'classified', 0.9, 'spam')"), {"i": i, "body": f"Claim your prize {n}"})
        connection.execute(text(
            "INSERT INTO verdicts (id, message_id, model_version_id, spam_probability, "
            "label, threshold, created_at) VALUES (:i, :i, 'v1', 0.9, 'spam', 0.5, "
            "CURRENT_TIMESTAMP)"), {"i": i})
        connection.execute(text(
            "INSERT INTO reviews (id, message_id, label, created_at, is_current) VALUES "
            "(:i, :i, 'spam', CURRENT_TIMESTAMP, true)"), {"i": i})
        connection.execute(text(
            "INSERT INTO spot_check_draws (id, user_id, verdict, mode, message_id, "
            "model_version_id, drawn_at, outcome) VALUES (:i, 1, 'spam', 'spam', :i, 'v1', "
            "CURRENT_TIMESTAMP, 'labelled')"), {"i": i})
    connection.execute(text(
        "INSERT INTO campaigns (id, created_at, first_seen, last_seen, size, "
        "representative_message_id) VALUES (1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP, 2, :i)"), {"i": max(message_ids)})
    connection.execute(text(
        "INSERT INTO training_runs (started_at, status, \"trigger\", max_review_id) "
        "VALUES (CURRENT_TIMESTAMP, 'promoted', 'cron', :i)"), {"i": max(message_ids)})


def _rows(connection) -> dict[str, list]:
    return {table: [tuple(row) for row in connection.execute(text(
        f"SELECT {', '.join(c for t, c in BIG_ID_COLUMNS if t == table)} FROM {table} "
        "ORDER BY 1"))] for table in dict(BIG_ID_COLUMNS)}


def _text_index_objects(connection) -> list[str]:
    if connection.dialect.name == "sqlite":
        return sorted(connection.execute(text(
            "SELECT name FROM sqlite_master WHERE name LIKE 'messages_fts%'")).scalars())
    return sorted(connection.execute(text(
        "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_messages_body_trgm'")
    ).scalars())


def test_0011_makes_message_ids_64_bit_and_keeps_rows_and_indexes(db_url: str) -> None:
    """Up on a populated database: on PostgreSQL the columns and sequences are bigint and
    the next message takes id 3,000,000,000; the indexes of 0008-0010 survive (and the
    text search finds through them). On SQLite nothing changes but the revision."""
    db.upgrade_schema(db_url, "0010")
    engine = db.make_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        _fill_0010(connection)
        before = _rows(connection)
        if not postgres:
            schema = connection.execute(text(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name")).all()
        indexes, text_index = _indexes(engine), _text_index_objects(connection)
    engine.dispose()
    db.upgrade_schema(db_url, "0011")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        assert _rows(connection) == before
        assert _indexes(engine) == indexes and _text_index_objects(connection) == text_index
        assert {"ix_messages_spot_check", "ix_messages_review_queue",
                "ix_messages_received_at"} <= set(indexes)
        if postgres:
            assert set(_id_types(connection).values()) == {"bigint"}
            connection.execute(text("SELECT setval('messages_id_seq', :n)"), {"n": BIG - 1})
        else:
            assert connection.execute(text(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name")).all() == schema
            connection.execute(text(  # SQLite's next rowid is the largest plus one
                "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
                "received_at, created_at, verdict_status) VALUES (:i, 'test', '+1', '+2', "
                "'b', 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')"), {"i": BIG - 1})
        new_id = connection.execute(text(
            "INSERT INTO messages (gateway, sender, recipient, body, text_hash, received_at, "
            "created_at, verdict_status) VALUES ('test', '+1', '+2', 'a big prize', 'h', "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending') RETURNING id")).scalar_one()
        assert new_id == BIG
        connection.execute(text(
            "INSERT INTO verdicts (id, message_id, model_version_id, spam_probability, label, "
            "threshold, created_at) VALUES (:i, :i, 'v1', 0.9, 'spam', 0.5, "
            "CURRENT_TIMESTAMP)"), {"i": BIG})
        if not postgres:  # the FTS triggers of 0010 index the new message too
            assert connection.execute(text(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH '\"prize\"' "
                "ORDER BY rowid")).scalars().all() == [1, 2, BIG]
    engine.dispose()
    db.upgrade_schema(db_url)
    assert _diff(db_url) == []


def test_0011_downgrade_keeps_small_ids_and_refuses_large_ones(db_url: str) -> None:
    """Down with ids that fit INTEGER: the columns and sequences are INTEGER again and the
    rows kept. With one that does not (a row, or only a sequence that handed it out): a
    clear refusal that changes nothing. On SQLite down and up keep everything."""
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        _fill_0010(connection)
        before = _rows(connection)
    engine.dispose()
    downgrade(db_url, "0010")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        assert _rows(connection) == before
        if postgres:
            assert set(_id_types(connection).values()) == {"integer"}
            assert connection.execute(text(
                "SELECT max_value FROM pg_sequences WHERE sequencename = 'messages_id_seq'"
            )).scalar_one() == 2**31 - 1
        assert _text_index_objects(connection)
    engine.dispose()
    db.upgrade_schema(db_url)
    if not postgres:
        return
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("SELECT setval('verdicts_id_seq', :n)"), {"n": BIG})
    with pytest.raises(RuntimeError, match=r"cannot undo 0011 .*verdicts's id sequence has "
                                           r"handed out 3000000000\. Nothing was changed"):
        downgrade(db_url, "0010")
    with engine.begin() as connection:
        connection.execute(text("SELECT setval('verdicts_id_seq', 5)"))
        connection.execute(text("UPDATE training_runs SET max_review_id = :n"), {"n": BIG})
    with pytest.raises(RuntimeError, match=r"training_runs\.max_review_id holds 3000000000"):
        downgrade(db_url, "0010")
    with engine.connect() as connection:
        assert set(_id_types(connection).values()) == {"bigint"}
        assert db.ensure_schema_current(engine).current == db.head_revision()
    engine.dispose()


@pytest.mark.usefixtures("reuse_backbones")
def test_a_message_past_32_bit_ids_is_stored_read_and_reviewed(app, api, moderator_client,
                                                               db_engine) -> None:
    """The audit's case: the id sequence past 2**31 - 1. The API stores and classifies the
    message, and the API, the admin pages and the queue read and review it by that id."""
    with db_engine.begin() as connection:
        if db_engine.dialect.name == "postgresql":
            for table in ("messages", "verdicts", "reviews"):
                connection.execute(text(f"SELECT setval('{table}_id_seq', :n)"), {"n": BIG})
        else:  # SQLite's next rowid is the largest plus one (reviews: AUTOINCREMENT)
            connection.execute(text(
                "INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, "
                "received_at, created_at, verdict_status) VALUES (:i, 'test', '+1', '+2', "
                "'b', 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')"), {"i": BIG})
            connection.execute(text("DELETE FROM sqlite_sequence WHERE name = 'reviews'"))
            connection.execute(text("INSERT INTO sqlite_sequence (name, seq) "
                                    "VALUES ('reviews', :n)"), {"n": BIG})
    stored = api("POST", "/messages", json={"from": "+15550001111", "to": "+15550002222",
                                            "body": "FREE entry to win a phone"})
    assert stored.status_code == 201, stored.get_data(as_text=True)
    message_id = stored.get_json()["message_id"]
    assert message_id == BIG + 1
    read = api("GET", f"/messages/{message_id}")
    assert read.status_code == 200 and read.get_json()["message_id"] == message_id
    page = moderator_client.get(f"/admin/messages/{message_id}")
    assert page.status_code == 200 and "FREE entry to win a phone" in page.get_data(
        as_text=True)
    decided = moderator_client.post("/admin/queue/decide", data={
        "message_id": message_id, "label": "spam", "seen": "none"}, follow_redirects=True)
    assert "Not recorded" not in decided.get_data(as_text=True)
    with db_engine.connect() as connection:
        review_id = connection.execute(text(
            "SELECT id FROM reviews WHERE message_id = :m"), {"m": message_id}).scalar_one()
        assert review_id > 2**31 - 1
        assert connection.execute(text(
            "SELECT count(*) FROM verdicts WHERE message_id = :m"), {"m": message_id}
        ).scalar_one() == 1
    relabelled = moderator_client.post(f"/admin/messages/{message_id}/review", data={
        "label": "ham", "seen": str(review_id)}, follow_redirects=True)
    assert relabelled.status_code == 200
    bulk = moderator_client.post("/admin/messages/bulk", data={"label": "spam",
                                                               "ids": str(message_id)})
    assert bulk.status_code != 400
