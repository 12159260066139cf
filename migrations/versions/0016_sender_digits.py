"""Add ``messages.sender_digits``: the sender filter finds a phone number however it was
written.

The filter matched a few exact forms of what was typed ("447911123456" found
"+447911123456"), but a sender stored with marks in it ("+44 7911 123456", as a JSON API
caller may send it) was found only as written. The column keeps the number's digits
(``spamguard.senders.phone_digits``; NULL for names and short codes) under an index, so
every form is one lookup on both databases.

Upgrading fills the column for every stored message, in batches: on this project's
2-core machine 200,000 messages took 1.5 s on SQLite and 11 s on PostgreSQL (so about
8 s and a minute a million), during which new messages wait (PostgreSQL: the service's
5 s lock timeout answers the gateway 503, and it sends again). It calls the current
``phone_digits``: a later change of the rule comes with its own revision. Downgrading
drops the index and the column.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


def upgrade() -> None:
    from spamguard.senders import phone_digits

    op.add_column("messages", sa.Column("sender_digits", sa.String(255), nullable=True))
    messages = sa.table("messages", sa.column("id", sa.BigInteger),
                        sa.column("sender", sa.String), sa.column("sender_digits", sa.String))
    connection = op.get_bind()
    update = (messages.update().where(messages.c.id == sa.bindparam("row_id"))
              .values(sender_digits=sa.bindparam("digits")))
    last = 0
    while True:
        rows = connection.execute(sa.select(messages.c.id, messages.c.sender)
                                  .where(messages.c.id > last).order_by(messages.c.id)
                                  .limit(BATCH)).all()
        if not rows:
            break
        found = [{"row_id": row_id, "digits": digits} for row_id, sender in rows
                 if (digits := phone_digits(sender)) is not None]
        if found:
            connection.execute(update, found)
        last = rows[-1][0]
    op.create_index("ix_messages_sender_digits", "messages", ["sender_digits", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_sender_digits", table_name="messages")
    if op.get_bind().dialect.name == "sqlite":
        # Not batch mode: rebuilding the table would drop the text search triggers on it.
        op.execute("ALTER TABLE messages DROP COLUMN sender_digits")
    else:
        op.drop_column("messages", "sender_digits")
