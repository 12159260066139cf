"""Index messages by (model version, verdict label, review label, id) for spot checks.

A spot check draws a message uniformly at random from the active model's unreviewed
verdicts of one label. Without an index on ``model_version_id`` every draw, and the page's
count of what is left, scanned all such messages (about 2-3 ms per 1,000 on SQLite: over
200 ms from about 60,000 unreviewed verdicts, a few days of a busy gateway's traffic). With
it, the draw picks random ids between the first and last such message and keeps the first
that is one, and the count reads the index only. It also serves the foreign key's
``ON DELETE SET NULL`` when a model version is deleted.

Creating it reads the whole messages table once and, on PostgreSQL, holds off writes to it
meanwhile (seconds per million messages): webhook requests that wait more than the
service's 5 s lock timeout get a 503 with Retry-After, which gateways retry.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_spot_check", "messages",
                    ["model_version_id", "model_label", "review_label", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_spot_check", table_name="messages")
