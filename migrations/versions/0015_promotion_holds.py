"""Add ``promotion_holds``: an operator can put automatic promotion on hold.

After ``spamguard rollback`` (the served model misbehaved), the next nightly ``spamguard
retrain`` trained a candidate from the same data, compared it with the older model now
active, and could promote it at once: the rollback was undone overnight. A hold in force
makes retraining train, compare and register its candidate with its report, as
``--dry-run`` does, without promoting it; ``rollback`` puts one in place by default.

One row per hold, kept after it is released (who held and released it, when, why): the
history. ``active`` is TRUE while the hold is in force and NULL once released, and a
unique constraint on it allows at most one hold in force (NULLs are distinct on SQLite
and PostgreSQL); a check keeps it in step with ``released_at``. A partial unique index
would need an expression (nothing else is the same in every held row), which Alembic
cannot compare on SQLite. The table stays tiny.

Downgrading drops the table: a hold in force is forgotten, so the older release's
retraining promotes again; the log says so.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 15:30:00
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# spamguard.models.PromotionHold's check when this was written (NULL-safe: a CHECK passes
# when its expression is NULL, so "active = true" alone would let a half-released row in).
HELD_OR_RELEASED = ("(active IS NOT NULL AND active = true AND released_at IS NULL "
                    "AND released_by IS NULL) OR (active IS NULL AND released_at IS NOT NULL "
                    "AND released_by IS NOT NULL)")


def upgrade() -> None:
    op.create_table(
        "promotion_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=255), nullable=True),
        sa.CheckConstraint(HELD_OR_RELEASED, name=op.f("ck_promotion_holds_held_or_released")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_holds")),
        sa.UniqueConstraint("active", name=op.f("uq_promotion_holds_active")),
    )


def downgrade() -> None:
    holds = sa.table("promotion_holds", sa.column("id", sa.Integer),
                     sa.column("created_by", sa.String), sa.column("reason", sa.Text),
                     sa.column("active", sa.Boolean))
    held = op.get_bind().execute(sa.select(holds.c.created_by, holds.c.reason)
                                 .where(holds.c.active.is_(True))).first()
    if held is not None:
        logging.getLogger("alembic.runtime.migration").warning(
            "automatic promotion was on hold (by %s%s); this revision has no holds, so "
            "retraining promotes again", held.created_by,
            f": {held.reason}" if held.reason else "")
    op.drop_table("promotion_holds")
