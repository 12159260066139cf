"""Allow the model version status ``deleted``: a version whose files were deleted.

``spamguard models delete`` and ``models prune`` free the disk old model versions hold
(every retraining writes one, about 5 MB). The registry row stays: verdicts, messages,
training runs and spot checks name versions by id, and the history of which version was
active when must survive. The row is marked ``deleted`` instead, which ``promote``,
``rollback`` and the admin UI refuse, so the check constraint ``ck_model_versions_status``
gets a fifth value. Nothing else changes.

SQLite cannot alter a constraint: the table is rebuilt (batch mode: copy, drop, rename),
keeping its rows, foreign keys and indexes, the partial unique index of the one active
version included. PostgreSQL drops and adds the constraint (it checks the few rows again).

Downgrading turns every ``deleted`` version into ``retired`` (the closest older status:
no longer served), and the log says which: their folders are gone, so the older release's
promote and rollback refuse them as incomplete, unless a folder was left in place (one
registered outside ``$SPAMGUARD_HOME/models``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 09:00:00
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("candidate", "active", "retired", "rejected")
NEW = (*OLD, "deleted")  # spamguard.models.VERSION_STATUSES when this was written


def _allow(statuses: tuple[str, ...]) -> None:
    allowed = ", ".join(f"'{status}'" for status in statuses)
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(op.f("ck_model_versions_status"), type_="check")
        batch.create_check_constraint(op.f("ck_model_versions_status"),
                                      sa.text(f'"status" IN ({allowed})'))


def upgrade() -> None:
    _allow(NEW)


def downgrade() -> None:
    versions = sa.table("model_versions", sa.column("id", sa.String),
                        sa.column("status", sa.String))
    connection = op.get_bind()
    deleted = sorted(connection.scalars(
        sa.select(versions.c.id).where(versions.c.status == "deleted")))
    if deleted:
        connection.execute(versions.update().where(versions.c.status == "deleted")
                           .values(status="retired"))
        logging.getLogger("alembic.runtime.migration").warning(
            "%d deleted model version(s) are now 'retired' (this revision has no 'deleted' "
            "status; their folders were removed): %s", len(deleted), ", ".join(deleted))
    _allow(OLD)
