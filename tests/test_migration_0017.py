"""Migration 0017: sender rules, and the note on messages and verdicts that a rule decided,
up and down on both databases."""

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
MESSAGE = ("INSERT INTO messages (id, gateway, sender, recipient, body, received_at, "
           "created_at, text_hash, verdict_status, spam_probability, model_label, "
           "model_version_id) VALUES (:id, 'test', 'MyBank', '+2', 'code 1', CURRENT_TIMESTAMP, "
           "CURRENT_TIMESTAMP, :hash, 'classified', 0.9, 'spam', 'v1')")
VERDICT = ("INSERT INTO verdicts (message_id, model_version_id, spam_probability, label, "
           "threshold, created_at) VALUES (:id, 'v1', 0.9, 'spam', 0.5, CURRENT_TIMESTAMP)")
RULE = ("INSERT INTO sender_rules (sender_key, sender, action, set_by, set_at) VALUES "
        "(:key, :key, :action, 'alice', CURRENT_TIMESTAMP)")


SPOT_CHECK = ["model_version_id", "model_label", "review_label"]


def _spot_check_index(engine) -> list[str]:
    return next(index["column_names"] for index in inspect(engine).get_indexes("messages")
                if index["name"] == "ix_messages_spot_check")


def test_0017_adds_rules_and_notes_and_takes_them_away(db_url: str, caplog) -> None:
    db.upgrade_schema(db_url, "0016")
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text(VERSION))
        for i in (1, 2):
            connection.execute(text(MESSAGE), {"id": i, "hash": f"h{i}"})
            connection.execute(text(VERDICT), {"id": i})
    engine.dispose()

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    assert _spot_check_index(engine) == [*SPOT_CHECK, "sender_rule", "id"]
    with engine.begin() as connection:  # stored rows are as they were: no rule decided them
        assert connection.execute(text(
            "SELECT id, model_label, sender_rule FROM messages ORDER BY id")).all() == [
            (1, "spam", None), (2, "spam", None)]
        connection.execute(text(RULE), {"key": "mybank", "action": "allow"})
        connection.execute(text("UPDATE messages SET model_label = 'ham', sender_rule = "
                                "'allow' WHERE id = 2"))
        connection.execute(text("UPDATE verdicts SET label = 'ham', sender_rule = 'allow' "
                                "WHERE message_id = 2"))
    for bad in ("UPDATE messages SET sender_rule = 'maybe'",
                "UPDATE verdicts SET sender_rule = 'ham'"):
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(bad))
    with pytest.raises(IntegrityError), engine.begin() as connection:  # one rule per key
        connection.execute(text(RULE), {"key": "mybank", "action": "block"})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(RULE), {"key": "other", "action": "maybe"})
    engine.dispose()

    with caplog.at_level(logging.WARNING, logger="alembic.runtime.migration"):
        downgrade(db_url, "0016")
    assert ("1 verdict(s) were decided by sender rules; they keep the label the rule gave, "
            "without saying so, and the rules are gone") in caplog.text
    engine = db.make_engine(db_url)
    inspector = inspect(engine)
    assert "sender_rules" not in inspector.get_table_names()
    for table in ("messages", "verdicts"):
        assert "sender_rule" not in {c["name"] for c in inspector.get_columns(table)}
    assert _spot_check_index(engine) == [*SPOT_CHECK, "id"]  # 0008's form again
    with engine.connect() as connection:
        assert connection.execute(text(
            "SELECT id, model_label FROM messages ORDER BY id")).all() == [(1, "spam"),
                                                                         (2, "ham")]
    engine.dispose()
    db.upgrade_schema(db_url)
