"""Recompute text hashes: normalising now sees through HTML entities and invisible characters.

``spamguard.ml.data.normalise`` now unescapes HTML entities (``&lt;#&gt;`` matches ``<#>``)
and drops Unicode format characters (zero-width spaces, soft hyphens). Stored
``messages.text_hash`` and ``eval_examples.text_hash`` are recomputed so they match what the
code computes for new messages. Where two evaluation rows now share a hash, the later one is
a copy of the earlier and is removed (the column is unique).

Upgrading calls the current ``text_hash``: the hashes must match the running code, and a
later change of the normaliser comes with its own rehashing revision. Downgrading keeps the
new hashes: the old code then treats an entity-escaped and a plain copy as two texts, as it
did before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


def _rehash(table: sa.Table, text_column: str) -> list[tuple[int, str]]:
    """Return (id, new hash) for every row whose stored hash differs from the current one."""
    from spamguard.ml.data import text_hash

    connection = op.get_bind()
    changed, last = [], 0
    while True:
        rows = connection.execute(
            sa.select(table.c.id, table.c[text_column], table.c.text_hash)
            .where(table.c.id > last).order_by(table.c.id).limit(BATCH)).all()
        if not rows:
            return changed
        for row_id, text, stored in rows:
            new = text_hash(text)
            if new != stored:
                changed.append((row_id, new))
        last = rows[-1][0]


def upgrade() -> None:
    """Rehash messages and evaluation examples (only rows whose hash changes are written)."""
    messages = sa.table("messages", sa.column("id", sa.Integer), sa.column("body", sa.Text),
                        sa.column("text_hash", sa.String))
    examples = sa.table("eval_examples", sa.column("id", sa.Integer),
                        sa.column("text", sa.Text), sa.column("text_hash", sa.String))
    connection = op.get_bind()
    for row_id, new in _rehash(messages, "body"):
        connection.execute(messages.update().where(messages.c.id == row_id)
                           .values(text_hash=new))
    changed = dict(_rehash(examples, "text"))
    if not changed:
        return
    owner = {stored: row_id for row_id, stored in connection.execute(
        sa.select(examples.c.id, examples.c.text_hash).order_by(examples.c.id.desc()))
        if row_id not in changed}
    for row_id, new in sorted(changed.items()):
        if new in owner and owner[new] < row_id:  # an earlier copy of the same text stays
            connection.execute(examples.delete().where(examples.c.id == row_id))
            continue
        if new in owner:  # a later unchanged copy: it goes, this earlier row takes the hash
            connection.execute(examples.delete().where(examples.c.id == owner[new]))
        connection.execute(examples.update().where(examples.c.id == row_id)
                           .values(text_hash=new))
        owner[new] = row_id


def downgrade() -> None:
    """Nothing to undo in the schema; the recomputed hashes stay (see the module docstring)."""
