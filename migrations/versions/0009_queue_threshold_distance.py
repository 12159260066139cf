"""Store each verdict's distance from its own model's threshold, and queue by it.

The review queue shows the unreviewed message whose verdict was closest to being the other
label first. Until now it measured that distance from the *active* model's threshold. After
a promotion the backlog still carries the old model's probabilities, which were cut at the
old model's threshold (0.393 against 0.706 in one audit), so a message the old model was
unsure of could sink to the bottom and one it was sure of come first. Each classified
message now keeps ``threshold_distance`` = |spam probability - threshold of the model that
gave it| (the verdict row records that threshold), and ``ix_messages_review_queue`` becomes
(review label, threshold distance, id): the queue is one range scan in that order.

Upgrading fills the column from each message's latest verdict (0.5 for the few classified
messages without one, which only hand-made rows can be) and rebuilds the index: one pass
over the messages table, which on PostgreSQL holds off writes to it meanwhile (seconds per
million messages; webhook requests that wait more than the service's 5 s lock timeout get a
503 with Retry-After, which gateways retry).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("threshold_distance", sa.Float(), nullable=True))
    op.execute(
        "UPDATE messages SET threshold_distance = abs(spam_probability - coalesce("
        "(SELECT v.threshold FROM verdicts v WHERE v.message_id = messages.id "
        "ORDER BY v.id DESC LIMIT 1), 0.5)) WHERE spam_probability IS NOT NULL")
    op.drop_index("ix_messages_review_queue", table_name="messages")
    op.create_index("ix_messages_review_queue", "messages",
                    ["review_label", "threshold_distance", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_review_queue", table_name="messages")
    op.create_index("ix_messages_review_queue", "messages", ["review_label", "spam_probability"])
    # A plain DROP COLUMN (SQLite 3.35 and newer): the column carries no index or constraint
    # by now, and batch mode would copy the whole messages table.
    op.drop_column("messages", "threshold_distance")
