"""Migration 0016: ``messages.sender_digits``, filled for stored messages, up and down on
both databases."""

from __future__ import annotations

from sqlalchemy import inspect, text

from spamguard import db
from tests.fixtures_db import downgrade

MESSAGE = ("INSERT INTO messages (id, gateway, external_id, sender, recipient, body, "
           "text_hash, received_at, created_at, verdict_status) VALUES (:i, 'api', :e, :s, "
           "'+2', :b, 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'pending')")
SENDERS = {1: "+447911123456", 2: "+44 7911 123456", 3: "BARCLAYS", 4: "1555",
           5: "447911123456"}


def _schema(engine) -> tuple:
    inspector = inspect(engine)
    columns = [column["name"] for column in inspector.get_columns("messages")]
    indexes = sorted(index["name"] for index in inspector.get_indexes("messages"))
    return columns, indexes


def _triggers(engine) -> list[str]:
    if engine.dialect.name != "sqlite":
        return []
    with engine.connect() as connection:
        return sorted(connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars())


def test_0016_fills_the_digits_of_stored_senders_and_goes_back(db_url: str) -> None:
    """Up on a populated 0015 database (more rows than one batch of 5,000): every stored
    phone-number sender gets its digits, names and short codes none. Down: the column and
    its index go, the text search triggers stay (no table rebuild on SQLite); up again
    works."""
    db.upgrade_schema(db_url, "0015")
    engine = db.make_engine(db_url)
    rows = [{"i": row_id, "e": f"m{row_id}", "s": SENDERS[row_id % 5 + 1], "b": "hi"}
            for row_id in range(1, 5004)]
    with engine.begin() as connection:
        connection.execute(text(MESSAGE), rows)
    before, triggers = _schema(engine), _triggers(engine)
    assert triggers or engine.dialect.name != "sqlite"  # FTS5's, which a rebuild would drop
    engine.dispose()

    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    with engine.connect() as connection:
        digits = dict(connection.execute(text("SELECT id, sender_digits FROM messages")).all())
    expected = {1: "447911123456", 2: "447911123456", 3: None, 4: None, 5: "447911123456"}
    assert digits == {row["i"]: expected[row["i"] % 5 + 1] for row in rows}
    columns, indexes = _schema(engine)
    assert "sender_digits" in columns and "ix_messages_sender_digits" in indexes
    assert _triggers(engine) == triggers
    engine.dispose()

    downgrade(db_url, "0015")
    engine = db.make_engine(db_url)
    assert _schema(engine) == before
    assert _triggers(engine) == triggers
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM messages")).scalar() == len(rows)
    engine.dispose()
    db.upgrade_schema(db_url)
