"""A trigram index of message texts for the messages list's text search.

The text search was ``body LIKE '%term%'`` (ILIKE on PostgreSQL), which reads every body:
250 ms at 200,000 messages on SQLite, about 160-200 ms on PostgreSQL, against the admin
pages' 200 ms target. ``spamguard.services.text_search`` says how the search uses these.

- **SQLite:** ``messages_fts``, an FTS5 table with the trigram tokenizer over
  ``messages.body`` (external content: it stores the index, not a second copy of the
  texts), filled here, and triggers that keep it in step with every insert, delete and
  change of a body. SQLite before 3.34, or built without FTS5, has no trigram tokenizer:
  then nothing is created (a warning says so) and the search keeps reading every body.
- **PostgreSQL:** the ``pg_trgm`` extension and a GIN index ``ix_messages_body_trgm`` on
  ``body gin_trgm_ops``, which ILIKE uses as it is. pg_trgm is a trusted extension (any
  user who may create objects in the database may create it) and ships with PostgreSQL; if
  it cannot be created here (an older server, or a user without that right), nothing is
  created (a warning says so, and what to run) and the search keeps reading every body.

Building either reads every message once (about 2.5 s per 200,000 on SQLite on the
development machine; on PostgreSQL writes to the table wait meanwhile). Afterwards each
stored message is indexed too: about 0.25 ms more per message on SQLite.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:10:00
"""

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError, OperationalError

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

CREATE_INDEX = ("CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', "
                "content_rowid='id', tokenize='trigram')")
PG_INDEX = "CREATE INDEX ix_messages_body_trgm ON messages USING gin (body {opclass})"
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
    if bind.dialect.name == "sqlite":
        _sqlite_upgrade(bind)
    elif bind.dialect.name == "postgresql":
        _postgresql_upgrade(bind)


def _sqlite_upgrade(bind) -> None:
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


def _postgresql_upgrade(bind) -> None:
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            # It may live in a schema off the search path (CREATE EXTENSION ... SCHEMA ext):
            # name its operator class with that schema.
            schema = bind.exec_driver_sql(
                "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n "
                "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'").scalar_one()
            bind.exec_driver_sql(PG_INDEX.format(opclass=f"{schema}.gin_trgm_ops"))
    except DBAPIError as error:  # not installed, or not allowed to this user
        log.warning("could not create the pg_trgm extension or its index (%s): the messages' "
                    "text search will read every message. A superuser can run, in this "
                    "database: CREATE EXTENSION pg_trgm; CREATE INDEX ix_messages_body_trgm "
                    "ON messages USING gin (body gin_trgm_ops)", str(error).splitlines()[0])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # The extension stays: other objects may use it, and dropping it needs its owner.
        bind.exec_driver_sql("DROP INDEX IF EXISTS ix_messages_body_trgm")
        return
    if bind.dialect.name != "sqlite":
        return
    for name in ("insert", "delete", "update"):
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS messages_fts_{name}")
    bind.exec_driver_sql("DROP TABLE IF EXISTS messages_fts")
