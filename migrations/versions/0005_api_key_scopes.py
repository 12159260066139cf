"""Add ``api_keys.scopes``: what each JSON API key may do.

A key may store messages (``submit``: POST /api/v1/messages), classify texts without storing
them (``classify``: POST /api/v1/classify) and read stored messages with their verdicts and
reviews (``read``: GET /api/v1/messages/<id>). A gateway-like client that only sends
messages needs no access to everyone else's. Keys made before this revision keep every
scope, as they could do everything before. Downgrading revokes the keys limited to some
scopes, which the older code would let do everything.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 16:00:00
"""

import logging
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
    # Before this revision every key could do everything: a key narrowed to some scopes
    # would silently gain the rest (and upgrading again gives it all three). Fail closed:
    # such keys are revoked, and the log says which; make new ones after the downgrade.
    api_keys = sa.table("api_keys", sa.column("id", sa.Integer), sa.column("name", sa.String),
                        sa.column("scopes", sa.String), sa.column("revoked_at", sa.DateTime))
    connection = op.get_bind()
    narrowed = [(row.id, row.name) for row in connection.execute(
        sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.scopes)
        .where(api_keys.c.revoked_at.is_(None)))
        if set(row.scopes.split(",")) != set(ALL_SCOPES.split(","))]
    if narrowed:
        connection.execute(api_keys.update()
                           .where(api_keys.c.id.in_([key_id for key_id, _ in narrowed]))
                           .values(revoked_at=sa.func.current_timestamp()))
        logging.getLogger("alembic.runtime.migration").warning(
            "revoked %d API key(s) limited to some scopes, which this revision cannot "
            "limit: %s", len(narrowed),
            ", ".join(f"{key_id} ({name})" for key_id, name in narrowed))
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
