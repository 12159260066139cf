"""64-bit ids for the tables that grow with traffic: messages, verdicts, reviews, spot checks.

On PostgreSQL every id column was a 32-bit INTEGER fed by a SERIAL sequence (0001, 0007).
Once ``messages_id_seq`` passes 2,147,483,647 no message can be stored: the webhook and the
API answer 500 and the message is lost. Every stored message uses an id, and so does every
retried delivery that ``INSERT ... ON CONFLICT DO NOTHING`` turns away: at 100 messages a
second that is about 250 days. The ids of ``messages``, ``verdicts``, ``reviews`` and
``spot_check_draws``, every column that holds a message's id (``verdicts``, ``reviews`` and
``spot_check_draws.message_id``, ``campaigns.representative_message_id``) and
``training_runs.max_review_id`` (a review's id) become BIGINT, and the four sequences
``AS bigint`` (an IDENTITY column's sequence too, should a database have one). Users, API
keys, model versions, campaigns, training runs and the evaluation set keep INTEGER ids:
they grow with people and retraining, not with traffic.

Each table is rewritten once (one ALTER TABLE for all its columns), its indexes rebuilt
(``ix_messages_body_trgm`` of 0010 and the composite indexes of 0008 and 0009 included)
and the foreign keys to ``messages`` checked again. That holds an exclusive lock on the
table throughout: reads and writes wait. On the development machine (2 cores, PostgreSQL 15
as installed) it took 12-18 s for 200,000 messages with a verdict each and 30 s for
400,000: about 1-1.5 minutes per million, nearly all of it ``messages`` (its trigram index
the most). Downgrading takes as long. docs/service.md says how to plan for it.

**SQLite:** nothing to do. Its integers are 64-bit already, and an id column must stay
exactly ``INTEGER`` to be the rowid (and, for ``reviews``, AUTOINCREMENT): the models use
BIGINT on PostgreSQL only (``spamguard.sqltypes.BigId``).

Downgrading makes them INTEGER again, and refuses (changing nothing) while any of those
columns holds, or any of the sequences has handed out, an id above 2,147,483,647.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 06:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each table's columns that hold an id of a growing table. The referencing tables come
# before ``messages``, so each foreign key is checked again once, between BIGINT columns.
COLUMNS = {
    "verdicts": ("id", "message_id"),
    "reviews": ("id", "message_id"),
    "spot_check_draws": ("id", "message_id"),
    "campaigns": ("representative_message_id",),
    "training_runs": ("max_review_id",),
    "messages": ("id",),
}
SEQUENCED = ("messages", "verdicts", "reviews", "spot_check_draws")  # their id's sequence
MAX_INTEGER = 2**31 - 1


def _alter(bind, sql_type: str) -> None:
    for table, columns in COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} TYPE {sql_type}" for column in columns)
        bind.exec_driver_sql(f"ALTER TABLE {table} {changes}")


def _sequences(bind) -> dict[str, str]:
    """Each sequenced table's id sequence (SERIAL or IDENTITY), quoted as SQL names it."""
    found = {}
    for table in SEQUENCED:
        name = bind.exec_driver_sql(f"SELECT pg_get_serial_sequence('{table}', 'id')").scalar()
        if name is not None:
            found[table] = name
    return found


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite: 64-bit already (see above)
    _alter(bind, "BIGINT")
    for sequence in _sequences(bind).values():
        bind.exec_driver_sql(f"ALTER SEQUENCE {sequence} AS bigint")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    sequences = _sequences(bind)
    too_large = []
    for table, columns in COLUMNS.items():
        for column in columns:
            largest = bind.exec_driver_sql(f"SELECT max({column}) FROM {table}").scalar()
            if largest is not None and largest > MAX_INTEGER:
                too_large.append(f"{table}.{column} holds {largest}")
    for table, sequence in sequences.items():
        # last_value is the latest id handed out (or, before the first, the start: 1).
        handed_out = bind.exec_driver_sql(f"SELECT last_value FROM {sequence}").scalar()
        if handed_out > MAX_INTEGER:
            too_large.append(f"{table}'s id sequence has handed out {handed_out}")
    if too_large:
        raise RuntimeError(
            "cannot undo 0011 (64-bit ids): INTEGER holds ids up to 2,147,483,647, but "
            + "; ".join(too_large) + ". Nothing was changed. Restore a backup made before the "
            "upgrade instead, or stay on 0011 or later")
    for sequence in sequences.values():
        bind.exec_driver_sql(f"ALTER SEQUENCE {sequence} AS integer")
    _alter(bind, "INTEGER")
