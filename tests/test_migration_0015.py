"""Migration 0015: the holds on automatic promotion, up and down on both databases."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from spamguard import db
from tests.fixtures_db import downgrade

VERSION = ("INSERT INTO model_versions (id, directory, backbone, backbone_hash, created_at, "
           "registered_at, status, threshold, metrics) VALUES ('v1', '/m', 'b', 'h', "
           "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'active', 0.5, '{}')")
HOLD = ("INSERT INTO promotion_holds (created_at, created_by, reason, active) "
        "VALUES (CURRENT_TIMESTAMP, :by, :reason, true)")
RELEASE = ("UPDATE promotion_holds SET active = NULL, released_at = CURRENT_TIMESTAMP, "
           "released_by = 'bob' WHERE active = true")


def test_0015_adds_the_holds_table_and_takes_it_away(db_url: str, caplog) -> None:
    """Up on a populated 0014 database: one hold in force at a time, released ones kept,
    a hold cannot be half released. Down: the table goes (a hold in force is named in the
    log), the rest stays; up again works."""
    db.upgrade_schema(db_url, "0014")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text(VERSION))
    assert "promotion_holds" not in inspect(engine).get_table_names()
    engine.dispose()

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    assert {c["name"] for c in inspect(engine).get_columns("promotion_holds")} == {
        "id", "created_at", "created_by", "reason", "active", "released_at", "released_by"}
    with engine.begin() as connection:
        connection.execute(text(HOLD), {"by": "alice", "reason": "first"})
    with pytest.raises(IntegrityError), engine.begin() as connection:  # one in force
        connection.execute(text(HOLD), {"by": "bob", "reason": "second"})
    for half in ("UPDATE promotion_holds SET active = NULL",  # released, but when, by whom?
                 "UPDATE promotion_holds SET active = NULL, released_at = CURRENT_TIMESTAMP",
                 "UPDATE promotion_holds SET released_at = CURRENT_TIMESTAMP",
                 "UPDATE promotion_holds SET active = false"):
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(half))
    with engine.begin() as connection:
        connection.execute(text(RELEASE))
        connection.execute(text(HOLD), {"by": "carol", "reason": None})
        connection.execute(text(RELEASE))
        connection.execute(text(HOLD), {"by": "root@web-1", "reason": "rollback from v2 to v1"})
        assert connection.execute(text(
            "SELECT created_by, released_by FROM promotion_holds ORDER BY id")).all() == [
            ("alice", "bob"), ("carol", "bob"), ("root@web-1", None)]
    engine.dispose()

    with caplog.at_level(logging.WARNING, logger="alembic.runtime.migration"):
        downgrade(db_url, "0014")
    assert ("automatic promotion was on hold (by root@web-1: rollback from v2 to v1); this "
            "revision has no holds, so retraining promotes again") in caplog.text
    engine = db.make_engine(db_url)
    assert "promotion_holds" not in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM model_versions")).all() == [("v1",)]
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
            ("0014",)]
    engine.dispose()

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM promotion_holds")).scalar() == 0
        connection.execute(text(HOLD), {"by": "alice", "reason": None})
    engine.dispose()


def test_0015_downgrade_without_a_hold_in_force_logs_nothing(db_url: str, caplog) -> None:
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.begin() as connection:  # a released hold is history only
        connection.execute(text(HOLD), {"by": "alice", "reason": "x"})
        connection.execute(text(RELEASE))
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="alembic.runtime.migration"):
        downgrade(db_url, "0014")
    assert "on hold" not in caplog.text
