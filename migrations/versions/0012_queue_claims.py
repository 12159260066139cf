"""Add ``queue_claims``: the message the review queue shows a moderator is theirs for a while.

Until now nothing claimed a message: the queue showed every moderator the same most
uncertain message, so two moderators working it together read the same text and one of
them got a conflict ("alice labelled message 12 spam while you were looking"). Now the
message the queue shows a moderator as their next one is claimed for them for
``SPAMGUARD_QUEUE_CLAIM_SECONDS`` (default 300), renewed while they reload it, and other
moderators' queues pass over it until then. A claim ends when the message is reviewed,
when its moderator skips it or is shown another message, or when it expires (an expired
claim is ignored, never waited on, so nothing is hidden for long).

A table of its own rather than two columns on ``messages``: claims change on every queue
page a moderator loads, and ``messages`` is the large, heavily indexed table (on
PostgreSQL an UPDATE that cannot stay on its page rewrites every index entry, the trigram
index of 0010 included). The table holds about one row per moderator (being shown a
message ends one's other claims), so the queue's "not claimed by someone else" test is a
look-up in a handful of rows beside its range scan on ``ix_messages_review_queue``, which
keeps its order. ``message_id`` is the primary key: claiming is one ``INSERT ... ON
CONFLICT (message_id) DO UPDATE ... WHERE`` the claim is free, expired or one's own, which
the database decides atomically on SQLite and PostgreSQL; a row count of 0 means someone
else holds it, and the queue tries the next message. ``message_id`` is BIGINT on PostgreSQL
as every column holding a message id since 0011. Rows go with their message or user
(ON DELETE CASCADE).

Downgrading drops the table (the claims are forgotten: queues show the same message to
everyone again).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_claims",
        # BIGINT on PostgreSQL, exactly INTEGER on SQLite (spamguard.sqltypes.BigId).
        sa.Column("message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_queue_claims_message_id_messages")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_queue_claims_user_id_users")),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_queue_claims")),
    )
    op.create_index("ix_queue_claims_user_id", "queue_claims", ["user_id"])


def downgrade() -> None:
    op.drop_table("queue_claims")
