"""Initial schema: users, API keys, model versions, messages, verdicts, reviews, campaigns,
training runs, the evaluation set and locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:29:57
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABELS = "('spam', 'ham')"


def _ts(name: str, nullable: bool = False) -> sa.Column:
    """Build a timezone-aware timestamp column."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _check(name: str, sql: str) -> sa.CheckConstraint:
    """Build a CHECK constraint named by the metadata's naming convention."""
    return sa.CheckConstraint(sql, name=op.f(name))


def _indexes(table: str, *specs: tuple[str, list[str]]) -> None:
    """Create plain (non-unique) indexes on ``table``."""
    with op.batch_alter_table(table) as batch_op:
        for name, columns in specs:
            batch_op.create_index(name, columns, unique=False)


def upgrade() -> None:
    """Create every table (batch mode, so it also runs on SQLite)."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        _ts("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    _indexes("api_keys", ("ix_api_keys_key_prefix", ["key_prefix"]))

    # The foreign key to messages is added once messages exists (the two refer to each other).
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=8), nullable=True),
        sa.Column("representative_message_id", sa.Integer(), nullable=True),
        _check("ck_campaigns_label", f'"label" IS NULL OR "label" IN {LABELS}'),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    _indexes(
        "campaigns",
        ("ix_campaigns_first_seen", ["first_seen"]),
        ("ix_campaigns_last_seen", ["last_seen"]),
        ("ix_campaigns_size", ["size"]),
    )

    op.create_table(
        "eval_examples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("label", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        _ts("added_at"),
        _check("ck_eval_examples_label", f'"label" IN {LABELS}'),
        _check("ck_eval_examples_source", "\"source\" IN ('base', 'review')"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_examples")),
        sa.UniqueConstraint("text_hash", name=op.f("uq_eval_examples_text_hash")),
    )

    op.create_table(
        "locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        _ts("acquired_at"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_locks")),
    )

    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("directory", sa.String(length=1024), nullable=False),
        sa.Column("backbone", sa.String(length=255), nullable=False),
        sa.Column("backbone_hash", sa.String(length=128), nullable=False),
        _ts("created_at"),
        _ts("registered_at"),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _ts("activated_at", nullable=True),
        sa.Column("previous_active_id", sa.String(length=64), nullable=True),
        _check(
            "ck_model_versions_status",
            "\"status\" IN ('candidate', 'active', 'retired', 'rejected')",
        ),
        sa.ForeignKeyConstraint(
            ["previous_active_id"], ["model_versions.id"],
            name=op.f("fk_model_versions_previous_active_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.create_index("ix_model_versions_status", ["status"], unique=False)
        # At most one active version.
        batch_op.create_index(
            "uq_model_versions_one_active", ["status"], unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _ts("locked_until", nullable=True),
        _ts("last_login_at", nullable=True),
        _check("ck_users_role", "\"role\" IN ('admin', 'moderator', 'viewer')"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _ts("received_at"),
        _ts("created_at"),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("verdict_status", sa.String(length=16), nullable=False),
        sa.Column("spam_probability", sa.Float(), nullable=True),
        sa.Column("model_label", sa.String(length=8), nullable=True),
        sa.Column("model_version_id", sa.String(length=64), nullable=True),
        sa.Column("review_label", sa.String(length=8), nullable=True),
        _ts("reviewed_at", nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        _check("ck_messages_model_label", f'"model_label" IS NULL OR "model_label" IN {LABELS}'),
        _check(
            "ck_messages_review_label", f'"review_label" IS NULL OR "review_label" IN {LABELS}'
        ),
        _check("ck_messages_verdict_status", "\"verdict_status\" IN ('pending', 'classified')"),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"],
            name=op.f("fk_messages_campaign_id_campaigns"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"],
            name=op.f("fk_messages_model_version_id_model_versions"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "gateway", "external_id", name=op.f("uq_messages_gateway_external_id")
        ),
    )
    _indexes(
        "messages",
        ("ix_messages_campaign_id", ["campaign_id", "received_at"]),
        ("ix_messages_model_label", ["model_label", "received_at"]),
        ("ix_messages_received_at", ["received_at", "id"]),
        ("ix_messages_review_label", ["review_label", "received_at"]),
        ("ix_messages_review_queue", ["review_label", "spam_probability"]),
        ("ix_messages_sender", ["sender", "received_at"]),
        ("ix_messages_spam_probability", ["spam_probability"]),
        ("ix_messages_text_hash", ["text_hash"]),
        ("ix_messages_verdict_status", ["verdict_status"]),
    )
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.create_foreign_key(
            "fk_campaigns_representative_message_id_messages",
            "messages", ["representative_message_id"], ["id"], ondelete="SET NULL",
        )

    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=8), nullable=False),
        sa.Column("candidate_version_id", sa.String(length=64), nullable=True),
        sa.Column("active_version_id", sa.String(length=64), nullable=True),
        sa.Column("max_review_id", sa.Integer(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("report_path", sa.String(length=1024), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        _check(
            "ck_training_runs_status",
            "\"status\" IN ('running', 'promoted', 'rejected', 'skipped', 'failed', 'dry_run')",
        ),
        _check("ck_training_runs_trigger", "\"trigger\" IN ('cli', 'cron', 'ui')"),
        sa.ForeignKeyConstraint(
            ["active_version_id"], ["model_versions.id"],
            name=op.f("fk_training_runs_active_version_id_model_versions"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["candidate_version_id"], ["model_versions.id"],
            name=op.f("fk_training_runs_candidate_version_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    _indexes(
        "training_runs",
        ("ix_training_runs_started_at", ["started_at"]),
        ("ix_training_runs_status", ["status", "started_at"]),
    )

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=8), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        _ts("created_at"),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        _check("ck_reviews_label", f'"label" IN {LABELS}'),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"],
            name=op.f("fk_reviews_message_id_messages"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_reviews_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    with op.batch_alter_table("reviews") as batch_op:
        batch_op.create_index("ix_reviews_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_reviews_message_id", ["message_id", "id"], unique=False)
        batch_op.create_index("ix_reviews_user_id", ["user_id"], unique=False)
        # One current review per message.
        batch_op.create_index(
            "uq_reviews_one_current", ["message_id"], unique=True,
            sqlite_where=sa.text("is_current = 1"),
            postgresql_where=sa.text("is_current"),
        )

    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.String(length=64), nullable=False),
        sa.Column("spam_probability", sa.Float(), nullable=False),
        sa.Column("label", sa.String(length=8), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        _ts("created_at"),
        _check("ck_verdicts_label", f'"label" IN {LABELS}'),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"],
            name=op.f("fk_verdicts_message_id_messages"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"],
            name=op.f("fk_verdicts_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdicts")),
    )
    _indexes(
        "verdicts",
        ("ix_verdicts_message_id", ["message_id"]),
        ("ix_verdicts_model_version_id", ["model_version_id"]),
    )


def downgrade() -> None:
    """Drop every table (the campaigns -> messages foreign key first: they refer to each other)."""
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.drop_constraint(
            "fk_campaigns_representative_message_id_messages", type_="foreignkey"
        )
    for table in (
        "verdicts", "reviews", "training_runs", "messages", "users", "model_versions",
        "locks", "eval_examples", "campaigns", "api_keys",
    ):
        op.drop_table(table)
