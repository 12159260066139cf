"""Never reuse a review id on SQLite: ``reviews`` becomes an AUTOINCREMENT table.

Without AUTOINCREMENT, SQLite gives a new row the highest id in the table plus one, so after
the newest review is undone (deleted) the next review gets its id again. Two things rely on
review ids only ever growing: retraining counts the reviews newer than the last run's
``training_runs.max_review_id``, and the moderation queue's optimistic check
(``spamguard.services.reviews.Seen``) compares a message's latest review id with the one the
moderator was shown. With AUTOINCREMENT, SQLite keeps the highest id it ever gave out in
``sqlite_sequence`` and never goes below it.

SQLite cannot add AUTOINCREMENT to a table, so the table is rebuilt (batch mode: copy,
drop, rename), keeping its rows, constraints and indexes, the partial unique index of the
current review included. The counter starts above the highest id still in use: the
table's, and any ``max_review_id`` a training run recorded (a review deleted before this
upgrade may have had it). Downgrading rebuilds the table without AUTOINCREMENT, with the
named primary key (``pk_reviews``) 0001 gave it.

PostgreSQL takes ids from a sequence, which never hands one out twice: nothing to do there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(*, autoincrement: bool) -> None:
    with op.batch_alter_table("reviews", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}) as batch:
        if not autoincrement:
            # SQLite writes an AUTOINCREMENT key inline, without its name; give the rebuilt
            # table back the named key 0001 made (CONSTRAINT pk_reviews PRIMARY KEY (id)).
            batch.create_primary_key("pk_reviews", ["id"])


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=True)
    # Copying the rows set the counter to the table's highest id (no counter when it was
    # empty); raise it past any id a training run counted that was deleted before this.
    connection = op.get_bind()
    counted = connection.scalar(sa.text("SELECT MAX(max_review_id) FROM training_runs"))
    if counted is None:
        return
    seq = connection.scalar(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'reviews'"))
    if seq is None:
        connection.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) "
                                   "VALUES ('reviews', :seq)"), {"seq": counted})
    elif seq < counted:
        connection.execute(sa.text("UPDATE sqlite_sequence SET seq = :seq "
                                   "WHERE name = 'reviews'"), {"seq": counted})


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=False)
