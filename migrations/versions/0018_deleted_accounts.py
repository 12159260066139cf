"""Add ``users.deleted_at``: an admin can delete an account.

Disabling an account kept its name and password hash for ever; a moderator who left could
not be removed. Deleting the row would lose what the account did: its reviews would lose
their author (``ON DELETE SET NULL``) and its spot-check draws, which the estimates of how
often the model is wrong count, would go with it (``CASCADE``). So a deleted account's row
stays, renamed ``deleted account <id>``, without a usable password, disabled, and with
``deleted_at`` set; every list of accounts leaves it out, and its name is free again.

Downgrading drops the column: deleted accounts then show as disabled accounts named
``deleted account <id>``, which cannot log in (no password) and cannot be enabled into use
without ``user set-password``.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:  # SQLite copies the small table
        batch.drop_column("deleted_at")
