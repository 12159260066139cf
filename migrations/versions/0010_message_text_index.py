"""On SQLite, a trigram full-text index of message texts for the text search.

The messages list's text search was ``lower(body) LIKE '%term%'``, which reads every body:
250 ms at 200,000 messages on SQLite, over the admin pages' 200 ms target. This creates
``messages_fts``, an FTS5 table with the trigram tokenizer over ``messages.body`` (external
content: it stores the index, not a second copy of the texts), fills it, and adds triggers
that keep it in step with every insert, delete and change of a body.
``spamguard.services.text_search`` says how the search uses it.

SQLite before 3.34, or built without FTS5, has no trigram tokenizer: then nothing is
created and the search keeps reading every body. PostgreSQL is left as it is (ILIKE: 157
ms at 200,000 messages). Filling the index reads every message once (about 2.5 s per
200,000 on the development machine); the triggers add the indexing of one text to each
stored message.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:10:00
"""

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import OperationalError

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

CREATE_INDEX = ("CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', "
                "content_rowid='id', tokenize='trigram')")
TRIGGERS = (
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body); "
    "END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body); "
    "INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body); END",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    try:
        with bind.begin_nested():  # a savepoint: a failure leaves the migration's transaction
            bind.exec_driver_sql(CREATE_INDEX)
    except OperationalError as error:  # "no such module: fts5" / "no such tokenizer: trigram"
        log.warning("SQLite %s has no FTS5 trigram tokenizer (%s): the messages' text "
                    "search will read every message", bind.dialect.server_version_info, error)
        return
    for trigger in TRIGGERS:
        bind.exec_driver_sql(trigger)
    bind.exec_driver_sql("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for name in ("insert", "delete", "update"):
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS messages_fts_{name}")
    bind.exec_driver_sql("DROP TABLE IF EXISTS messages_fts")
