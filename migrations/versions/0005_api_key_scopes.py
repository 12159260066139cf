"""Add ``api_keys.scopes``: what each JSON API key may do.

A key may store messages (``submit``: POST /api/v1/messages), classify texts without storing
them (``classify``: POST /api/v1/classify) and read stored messages with their verdicts and
reviews (``read``: GET /api/v1/messages/<id>). A gateway-like client that only sends
messages needs no access to everyone else's. Keys made before this revision keep every
scope, as they could do everything before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALL_SCOPES = "submit,classify,read"  # spamguard.models.API_KEY_SCOPES when this was written


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", sa.String(100), nullable=False,
                                   server_default=ALL_SCOPES))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
