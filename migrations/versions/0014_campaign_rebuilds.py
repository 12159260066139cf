"""Add ``campaign_rebuilds``: when each campaign rebuild ran, and what it found or why it
failed.

The campaigns page's "Rebuild campaigns" button starts ``spamguard campaigns rebuild`` in
the background, and the page knew only whether one was running (its lock): when it had
ended, it said nothing, and a failed one left its reason in a log file on the web host.
Each rebuild (from the button or from cron) now writes a row when it starts and fills it
in when it ends: ``finished`` with the number of campaigns, the messages they hold and the
messages looked at, or ``failed`` with the reason. The page shows the latest. One small
row per rebuild; each rebuild keeps the newest 100.

Downgrading drops the table (the page no longer says how the last rebuild went).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_rebuilds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("campaigns", sa.Integer(), nullable=True),
        sa.Column("grouped_messages", sa.Integer(), nullable=True),
        sa.Column("messages", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("\"status\" IN ('running', 'finished', 'failed')",
                           name=op.f("ck_campaign_rebuilds_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_rebuilds")),
    )


def downgrade() -> None:
    op.drop_table("campaign_rebuilds")
