"""Add ``audit_events``: who changed what, and when.

Accounts, API keys, sender rules, model promotions and rollbacks, deleted versions,
promotion holds and deleted messages are changed from the admin UI and the command line
by several people, and afterwards nobody could say who blocked a sender, who promoted a
version or who erased a sender's messages. Each such change now writes one row in the
same transaction (``spamguard audit``, the admin UI's Activity page). Rows are small and
never deleted by spamguard; they hold no message text or sender.

Downgrading drops the table (the record of who did what is lost).

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


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_events_action"), table_name="audit_events")
    op.drop_table("audit_events")
