"""Add ``messages.signature_hash``: one Twilio signature stores one message.

Twilio signs a webhook's URL and its fields' names and values run together, with nothing
between them. The text of a message is written by its sender, so a sender could write a
body that spells out further fields ("xFrom+1999...MessageSidSM...To+1999..."), capture
the signed delivery, and cut the same characters up differently into a new message with
a new MessageSid, sender and recipient under the same signature. Each stored webhook
message now keeps the SHA-256 of its signature, unique: a retry (same MessageSid) finds
its first delivery; the same signature with another MessageSid is refused. Messages
stored before this revision, and those from the JSON API, have none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("signature_hash", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_messages_signature_hash", ["signature_hash"])


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_signature_hash", type_="unique")
        batch.drop_column("signature_hash")
