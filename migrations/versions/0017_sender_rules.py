"""Add ``sender_rules``: an operator can allow or block a sender, whatever the model says.

Out of the box the model blocks about half of present-day legitimate notices (login codes,
parcel and bank alerts: bench/README.md, fresh_sms.py), which the 2012 training data never
showed it; moderators' labels and retraining teach it, but slowly. A bank's or courier's
own short code is known to the operator on day one. A rule "allow" makes a sender's
messages ham, "block" makes them spam; the model still scores each one and its
probability is kept.

``sender_rules`` holds one rule per ``sender_key`` (``spamguard.senders.sender_key``: a
phone number's digits, else the sender case-folded). ``messages.sender_rule`` and
``verdicts.sender_rule`` say which action decided a verdict (NULL: the model did); the
columns are added with their CHECK constraint in one ``ALTER TABLE ... ADD COLUMN``,
which SQLite and PostgreSQL both accept, so the messages table is not copied (nor its
text-search triggers lost) and no stored row is rewritten (200,000 messages and
verdicts, with the index below: 0.5 s on SQLite, 0.3 s on PostgreSQL, which reads each
table once to check the constraint). Rules apply to messages classified after they are
set; stored verdicts stay as they were.

Spot checks estimate how often the model is wrong, so they leave out what a rule
labelled: ``ix_messages_spot_check`` gains ``sender_rule`` before ``id`` and stays the
one index a draw reads.

Downgrading drops the table and the two columns (and gives the index back its 0008
form): verdicts a rule decided keep the label it gave, without the note saying so; the
log says how many.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 17:30:00
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIONS = "'allow', 'block'"
SPOT_CHECK = ["model_version_id", "model_label", "review_label"]  # migration 0008's index


def upgrade() -> None:
    op.create_table(
        "sender_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sender_key", sa.String(length=255), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("set_by", sa.String(length=255), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f'"action" IN ({ACTIONS})', name=op.f("ck_sender_rules_action")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sender_rules")),
        sa.UniqueConstraint("sender_key", name=op.f("uq_sender_rules_sender_key")),
    )
    for table in ("messages", "verdicts"):
        op.execute(f'ALTER TABLE {table} ADD COLUMN sender_rule VARCHAR(8) CONSTRAINT '
                   f'ck_{table}_sender_rule CHECK ("sender_rule" IS NULL OR "sender_rule" '
                   f'IN ({ACTIONS}))')
    # Spot checks leave out what a rule labelled, and still read one index.
    op.drop_index("ix_messages_spot_check", table_name="messages")
    op.create_index("ix_messages_spot_check", "messages", [*SPOT_CHECK, "sender_rule", "id"])


def downgrade() -> None:
    verdicts = sa.table("verdicts", sa.column("sender_rule", sa.String))
    decided = op.get_bind().scalar(sa.select(sa.func.count()).select_from(verdicts)
                                   .where(verdicts.c.sender_rule.is_not(None)))
    if decided:
        logging.getLogger("alembic.runtime.migration").warning(
            "%d verdict(s) were decided by sender rules; they keep the label the rule gave, "
            "without saying so, and the rules are gone", decided)
    op.drop_index("ix_messages_spot_check", table_name="messages")  # SQLite: before the column
    op.create_index("ix_messages_spot_check", "messages", [*SPOT_CHECK, "id"])
    for table in ("verdicts", "messages"):  # each column's CHECK goes with it
        if _check_apart(table):
            _drop_by_rebuild(table)
        else:
            op.drop_column(table, "sender_rule")
    op.drop_table("sender_rules")


def _check_apart(table: str) -> bool:
    """SQLite: whether the column's CHECK is a table constraint, as a rebuilt table writes it
    (migration 0020 rebuilds ``messages``), not the column's own as 0017 added it; then
    ``DROP COLUMN`` refuses ("no such column" in the table's CHECK)."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return False
    sql = bind.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND "
                               "name = :table"), {"table": table}).scalar_one()
    return "sender_rule VARCHAR(8) CONSTRAINT" not in sql


def _drop_by_rebuild(table: str) -> None:
    """Drop the column and its CHECK by rebuilding the table (batch mode), keeping its
    triggers (the text index's, migration 0010), which go with the old table."""
    bind = op.get_bind()
    triggers = [sql for (sql,) in bind.execute(sa.text(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table "
        "ORDER BY name"), {"table": table})]
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.drop_constraint(op.f(f"ck_{table}_sender_rule"), type_="check")
        batch.drop_column("sender_rule")
    for sql in triggers:
        bind.exec_driver_sql(sql)
