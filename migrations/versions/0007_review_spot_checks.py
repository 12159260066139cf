"""Add ``reviews.spot_check_of``: the verdict a spot check checked.

The review queue shows the most uncertain messages first, so a moderator working it never
sees what the model gets confidently wrong (on present-day messages: "Hi mum" scams scored
0.002-0.14, delivery notices up to 0.996). A spot check shows a message drawn at random
from the active model's unreviewed verdicts of one label; its review records that label
here, so the dashboard can say how often such verdicts are wrong. NULL for every other
review.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A column constraint, so SQLite adds it with ALTER TABLE and keeps the table (migration
# 0004 made it AUTOINCREMENT; a batch rebuild would have to repeat that).
CHECK = "CHECK (spot_check_of IS NULL OR spot_check_of IN ('ham', 'spam'))"


def upgrade() -> None:
    op.execute("ALTER TABLE reviews ADD COLUMN spot_check_of VARCHAR(8) "
               f"CONSTRAINT ck_reviews_spot_check_of {CHECK}")


def downgrade() -> None:
    op.execute("ALTER TABLE reviews DROP COLUMN spot_check_of")
