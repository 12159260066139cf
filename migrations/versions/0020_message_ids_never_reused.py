"""Never reuse a message or spot-check draw id on SQLite: both become AUTOINCREMENT tables.

Without AUTOINCREMENT, SQLite gives a new row the highest id in the table plus one. Until
``spamguard messages purge`` and ``erase`` (session 21) no message was ever deleted, so
that never happened; now erasing a sender's messages usually takes the newest one, and the
next message stored got its id: a moderator's page still open on the erased message then
labelled the new one (another person's SMS), an API caller holding the id read the new
message, and the audit trail's "erased ... ids [14]" named a live message. Draws of
spot checks go with their messages, and a page still open on a deleted draw would answer a
new one. With AUTOINCREMENT SQLite keeps the highest id it ever gave out in
``sqlite_sequence`` and never goes below it (as migration 0004 did for reviews).

SQLite cannot add AUTOINCREMENT to a table, so each is rebuilt (batch mode: copy, drop,
rename), keeping its rows, constraints and indexes; the messages table's triggers (the
text index's, migration 0010) are dropped with the old table and made again as they were.
Row ids are kept, so the text index stays in step. The copy of 200,000 messages took 2.1 s
on this project's 2-core machine (the service's inserts wait meanwhile). The counter starts
at the highest id in use. (Migration 0017's downgrade drops ``messages.sender_rule`` by a
rebuild too once this one has run: the rebuilt table holds its CHECK apart from the
column, where SQLite's ``DROP COLUMN`` refuses it.)

Downgrading rebuilds both without AUTOINCREMENT, with their named primary keys.

PostgreSQL takes ids from sequences, which never hand one out twice: nothing to do there.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("messages", "spot_check_draws")


def _rebuild(table: str, *, autoincrement: bool) -> None:
    bind = op.get_bind()
    triggers = [sql for (sql,) in bind.execute(sa.text(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table "
        "ORDER BY name"), {"table": table})]
    with op.batch_alter_table(table, recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}) as batch:
        if not autoincrement:
            # SQLite writes an AUTOINCREMENT key inline, without its name: give the rebuilt
            # table back its named key.
            batch.create_primary_key(f"pk_{table}", ["id"])
    for sql in triggers:  # dropped with the old table
        bind.exec_driver_sql(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        _rebuild(table, autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        _rebuild(table, autoincrement=False)
