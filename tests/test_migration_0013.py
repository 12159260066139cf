"""Migration 0013: the model version status ``deleted``, up and down on both databases."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from spamguard import db
from tests.fixtures_db import downgrade

VERSION = ("INSERT INTO model_versions (id, directory, backbone, backbone_hash, created_at, "
           "registered_at, status, threshold, metrics, previous_active_id) VALUES (:i, '/m', "
           "'b', 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :s, 0.5, '{}', :p)")
MESSAGE = ("INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, received_at, "
           "created_at, verdict_status, model_version_id) VALUES (1, 'test', '+1', '+2', 'b', "
           "'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'classified', :v)")
VERDICT = ("INSERT INTO verdicts (id, message_id, model_version_id, spam_probability, label, "
           "threshold, created_at) VALUES (:i, 1, :v, 0.9, 'spam', 0.5, CURRENT_TIMESTAMP)")
RUN = ("INSERT INTO training_runs (id, started_at, status, trigger, candidate_version_id, "
       "active_version_id) VALUES (1, CURRENT_TIMESTAMP, 'promoted', 'cron', :c, :a)")


def _version(connection, version_id: str, status: str, previous: str | None = None) -> None:
    connection.execute(text(VERSION), {"i": version_id, "s": status, "p": previous})


def _statuses(connection) -> dict[str, str]:
    return dict(connection.execute(text("SELECT id, status FROM model_versions")).all())


def _shape(engine) -> tuple:
    """What must survive the table's rebuild on SQLite: indexes (the partial one's
    predicate too), foreign keys (in and out) and the primary key."""
    inspector = inspect(engine)
    indexes = sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]),
                      sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items()))
                     for i in inspector.get_indexes("model_versions"))
    foreign = sorted((table, fk["name"], tuple(fk["constrained_columns"]))
                     for table in ("model_versions", "messages", "verdicts", "training_runs",
                                   "spot_check_draws")
                     for fk in inspector.get_foreign_keys(table)
                     if fk["referred_table"] == "model_versions")
    return indexes, foreign, inspector.get_pk_constraint("model_versions")["name"]


def test_0013_allows_deleted_and_keeps_rows_and_references(db_url: str, caplog) -> None:
    """Up on a populated 0012 database: rows, references and the one-active index stay,
    ``deleted`` is allowed and unknown words are still refused. Down: deleted versions
    become retired (logged), ``deleted`` is refused again; up again works."""
    db.upgrade_schema(db_url, "0012")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        _version(connection, "v1", "retired")
        _version(connection, "v2", "active", previous="v1")
        _version(connection, "v3", "candidate")
        connection.execute(text(MESSAGE), {"v": "v1"})
        connection.execute(text(VERDICT), {"i": 1, "v": "v1"})
        connection.execute(text(RUN), {"c": "v2", "a": "v1"})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        _version(connection, "v4", "deleted")
    before = _shape(engine)
    engine.dispose()

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    assert _shape(engine) == before
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            index = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'uq_model_versions_one_active'"
            ).scalar()
            assert index.endswith("WHERE status = 'active'")
    with engine.begin() as connection:
        assert _statuses(connection) == {"v1": "retired", "v2": "active", "v3": "candidate"}
        connection.execute(text("UPDATE model_versions SET status = 'deleted' "
                                "WHERE id IN ('v1', 'v3')"))
        assert connection.execute(text("SELECT model_version_id FROM verdicts")).scalar() == "v1"
        assert connection.execute(text(
            "SELECT previous_active_id FROM model_versions WHERE id = 'v2'")).scalar() == "v1"
    with pytest.raises(IntegrityError), engine.begin() as connection:
        _version(connection, "v5", "gone")
    with pytest.raises(IntegrityError), engine.begin() as connection:  # still one active
        connection.execute(text("UPDATE model_versions SET status = 'active' WHERE id = 'v3'"))
    with pytest.raises(IntegrityError), engine.begin() as connection:  # references hold
        connection.execute(text(VERDICT), {"i": 2, "v": "nope"})
    engine.dispose()

    with caplog.at_level(logging.WARNING, logger="alembic.runtime.migration"):
        downgrade(db_url, "0012")
    assert ("2 deleted model version(s) are now 'retired' (this revision has no 'deleted' "
            "status; their folders were removed): v1, v3") in caplog.text
    engine = db.make_engine(db_url)
    assert _shape(engine) == before
    with engine.connect() as connection:
        assert _statuses(connection) == {"v1": "retired", "v2": "active", "v3": "retired"}
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("UPDATE model_versions SET status = 'deleted' WHERE id = 'v3'"))
    engine.dispose()

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE model_versions SET status = 'deleted' WHERE id = 'v3'"))
    engine.dispose()


def test_0013_downgrade_without_deleted_versions_logs_nothing(db_url: str, caplog) -> None:
    db.upgrade_schema(db_url)
    with caplog.at_level(logging.WARNING, logger="alembic.runtime.migration"):
        downgrade(db_url, "0012")
    assert "deleted model version" not in caplog.text
    engine = db.make_engine(db_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
            ("0012",)]
    engine.dispose()
