"""Add ``spot_check_draws``: messages drawn at random for moderators' spot checks.

The review queue shows the most uncertain messages first, so a moderator working it never
sees what the model gets confidently wrong (on present-day messages: "Hi mum" scams scored
0.002-0.14, delivery notices up to 0.996). A spot check shows a message drawn at random
from the active model's unreviewed verdicts of one label (blind: of a label chosen at
random, not shown). Each draw is a row here, kept on
the server so that a new login or another browser cannot draw again unseen, and every skip
is counted; the dashboard's estimate of how often such verdicts are wrong comes from it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spot_check_draws",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("\"verdict\" IN ('spam', 'ham')",
                           name=op.f("ck_spot_check_draws_verdict")),
        sa.CheckConstraint("\"outcome\" IS NULL OR \"outcome\" IN ('labelled', 'skipped', "
                           "'expired')", name=op.f("ck_spot_check_draws_outcome")),
        sa.CheckConstraint("\"mode\" IN ('any', 'spam', 'ham')",
                           name=op.f("ck_spot_check_draws_mode")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_spot_check_draws_user_id_users")),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_spot_check_draws_message_id_messages")),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], ondelete="CASCADE",
            name=op.f("fk_spot_check_draws_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spot_check_draws")),
    )
    # One open draw per moderator and tab, even when two page loads draw at once.
    op.create_index("uq_spot_check_draws_open", "spot_check_draws", ["user_id", "mode"],
                    unique=True, sqlite_where=sa.text("outcome IS NULL"),
                    postgresql_where=sa.text("outcome IS NULL"))
    op.create_index("ix_spot_check_draws_model", "spot_check_draws",
                    ["model_version_id", "verdict"])
    op.create_index("ix_spot_check_draws_message_id", "spot_check_draws", ["message_id"])


def downgrade() -> None:
    op.drop_table("spot_check_draws")
