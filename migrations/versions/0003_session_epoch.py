"""Add ``users.session_epoch``: logging out or changing a password ends every session.

Admin sessions are signed cookies kept by the browser; until now logging out only deleted
this browser's copy, so a copied cookie stayed valid. Each session now carries the
account's epoch, and logout, a password change or disabling the account raise it. Sessions
made before this revision carry no epoch and must log in once more.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("session_epoch", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_epoch")
