"""Migration 0012: the review queue's claims table, up and down on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from spamguard import db
from tests.fixtures_db import downgrade

MESSAGE = ("INSERT INTO messages (id, gateway, sender, recipient, body, text_hash, received_at, "
           "created_at, verdict_status) VALUES (:i, 'test', '+1', '+2', 'b', 'h', "
           "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')")
USER = ("INSERT INTO users (id, username, password_hash, role, is_active, created_at, "
        "failed_logins, session_epoch) VALUES (:i, :name, 'x', 'moderator', true, "
        "CURRENT_TIMESTAMP, 0, 0)")
CLAIM = ("INSERT INTO queue_claims (message_id, user_id, claimed_until) "
         "VALUES (:m, :u, CURRENT_TIMESTAMP)")


def _count(connection, table: str) -> int:
    return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()


def test_0012_adds_the_claims_table_and_takes_it_away(db_url: str) -> None:
    """Up on a populated 0011 database: the table holds one claim per message (a 64-bit
    message id on PostgreSQL) and goes with its message or user. Down: the table goes,
    the messages stay; up again works."""
    db.upgrade_schema(db_url, "0011")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        for i in (1, 2, 3):
            connection.execute(text(MESSAGE), {"i": i})
        for i, name in ((1, "alice"), (2, "bob")):
            connection.execute(text(USER), {"i": i, "name": name})
    assert "queue_claims" not in inspect(engine).get_table_names()
    engine.dispose()

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    inspector = inspect(engine)
    assert inspector.get_pk_constraint("queue_claims")["constrained_columns"] == ["message_id"]
    assert {i["name"]: i["column_names"] for i in inspector.get_indexes("queue_claims")} == {
        "ix_queue_claims_user_id": ["user_id"]}
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        if postgres:  # holds message ids: BIGINT since 0011
            assert connection.execute(text(
                "SELECT data_type FROM information_schema.columns WHERE table_name = "
                "'queue_claims' AND column_name = 'message_id'")).scalar() == "bigint"
        for message, user in ((1, 1), (2, 2), (3, 1)):
            connection.execute(text(CLAIM), {"m": message, "u": user})
    with pytest.raises(IntegrityError), engine.begin() as connection:  # one claim a message
        connection.execute(text(CLAIM), {"m": 1, "u": 2})
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM messages WHERE id = 3"))
        connection.execute(text("DELETE FROM users WHERE id = 2"))
        assert connection.execute(text(
            "SELECT message_id, user_id FROM queue_claims")).all() == [(1, 1)]
    engine.dispose()

    downgrade(db_url, "0011")
    engine = db.make_engine(db_url)
    assert "queue_claims" not in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert _count(connection, "messages") == 2 and _count(connection, "users") == 1
    engine.dispose()
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.connect() as connection:
        assert _count(connection, "queue_claims") == 0
    engine.dispose()
