"""Database tables as SQLAlchemy 2.x typed models (the Alembic migrations mirror this file).

Timestamps are timezone-aware UTC in Python on every backend (see :class:`UTCDateTime`).
Allowed values of the string "enum" columns are the tuples below, enforced by CHECK constraints.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from spamguard.senders import phone_digits
from spamguard.sqltypes import (
    NAMING_CONVENTION,
    BigId,
    UTCDateTime,
    one_of,
    unique_where,
    utcnow,
)

ROLES = ("admin", "moderator", "viewer")
LABELS = ("spam", "ham")
# "deleted": its files were deleted (spamguard models delete / prune); the row stays, since
# verdicts and training runs name it, and it can never be active again (migration 0013).
VERSION_STATUSES = ("candidate", "active", "retired", "rejected", "deleted")
VERDICT_STATUSES = ("pending", "classified")
RUN_STATUSES = ("running", "promoted", "rejected", "skipped", "failed", "dry_run")
RUN_TRIGGERS = ("cli", "cron", "ui")
EVAL_SOURCES = ("base", "review")
# What an API key may do: store messages, classify texts, read stored messages.
API_SCOPES = ("submit", "classify", "read")
API_KEY_SCOPES = ",".join(API_SCOPES)  # a key made without --scope, and every older key
# What a sender rule does with a sender's messages: label them ham or spam, whatever the
# model says (spamguard.services.sender_rules, migration 0017).
SENDER_RULE_ACTIONS = ("allow", "block")


class Base(DeclarativeBase):
    """Declarative base holding the shared metadata and naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class User(Base):
    """A person who logs in to the admin UI."""

    __tablename__ = "users"
    __table_args__ = (one_of("role", ROLES),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="moderator")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    # Part of every login session's id: raising it ends all of the account's sessions,
    # copied cookies included (logout, password change, disabling the account).
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the account was deleted (services.users.delete_user, migration 0018): the row
    # stays, renamed "deleted account <id>" with no password, so the reviews and spot
    # checks it made keep counting; it is left out of every list of accounts.
    deleted_at: Mapped[datetime | None]


class ApiKey(Base):
    """A JSON API key; only its sha256 is stored, the prefix finds the row."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # What the key may do, comma-separated (spamguard.services.apikeys.SCOPES); keys made
    # before scopes existed may do everything, as they could then.
    scopes: Mapped[str] = mapped_column(String(100), default=API_KEY_SCOPES,
                                        server_default=API_KEY_SCOPES)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class ModelVersion(Base):
    """A trained model version directory and its lifecycle status."""

    __tablename__ = "model_versions"
    __table_args__ = (
        one_of("status", VERSION_STATUSES),
        # At most one active version: a partial unique index works on SQLite and PostgreSQL.
        unique_where(
            "uq_model_versions_one_active", "status",
            sqlite="status = 'active'", postgresql="status = 'active'",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    directory: Mapped[str] = mapped_column(String(1024))
    backbone: Mapped[str] = mapped_column(String(255))
    backbone_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="candidate", index=True)
    threshold: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    activated_at: Mapped[datetime | None]
    previous_active_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )

    @property
    def path(self) -> Path:
        """Return the version directory as a path."""
        return Path(self.directory)


class Campaign(Base):
    """A group of near-identical messages (close backbone embeddings)."""

    __tablename__ = "campaigns"
    __table_args__ = (one_of("label", LABELS, nullable=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_seen: Mapped[datetime] = mapped_column(index=True)
    last_seen: Mapped[datetime] = mapped_column(index=True)
    size: Mapped[int] = mapped_column(Integer, default=0, index=True)
    label: Mapped[str | None] = mapped_column(String(8))
    # use_alter: messages and campaigns reference each other.
    # Indexed (migration 0019): deleting a message looks its campaigns up by it (the foreign
    # key's SET NULL, and spamguard messages purge / erase).
    representative_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="SET NULL", use_alter=True), index=True
    )

    messages: Mapped[list[Message]] = relationship(
        back_populates="campaign", foreign_keys="Message.campaign_id"
    )
    representative: Mapped[Message | None] = relationship(
        foreign_keys=[representative_message_id], post_update=True
    )


def _sender_digits(context: Any) -> str | None:
    """Column default: every insert (the ORM's and Core's) fills in the sender's digits."""
    return phone_digits(context.get_current_parameters()["sender"])


class Message(Base):
    """An inbound SMS, with its latest verdict and current review copied in for fast lists."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("gateway", "external_id"),
        one_of("verdict_status", VERDICT_STATUSES),
        one_of("model_label", LABELS, nullable=True),
        one_of("review_label", LABELS, nullable=True),
        one_of("sender_rule", SENDER_RULE_ACTIONS, nullable=True),
        # Composite indexes serve a filter plus the list's newest-first order.
        Index("ix_messages_received_at", "received_at", "id"),
        Index("ix_messages_sender", "sender", "received_at"),
        Index("ix_messages_sender_digits", "sender_digits", "received_at"),
        Index("ix_messages_review_label", "review_label", "received_at"),
        Index("ix_messages_model_label", "model_label", "received_at"),
        Index("ix_messages_campaign_id", "campaign_id", "received_at"),
        # Review queue: unreviewed rows, the closest to their model's threshold first
        # (migration 0009).
        Index("ix_messages_review_queue", "review_label", "threshold_distance", "id"),
        # Spot checks: a version's unreviewed verdicts of one label that no sender rule set,
        # by id (migrations 0008 and 0017).
        Index("ix_messages_spot_check", "model_version_id", "model_label", "review_label",
              "sender_rule", "id"),
        # Ids only grow, even after the newest message is deleted (messages purge / erase):
        # a page or an API caller holding an erased message's id must never reach another
        # message. SQLite reuses the highest id unless the table is AUTOINCREMENT
        # (migration 0020); PostgreSQL's sequence never does.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(128))
    sender: Mapped[str] = mapped_column(String(255))
    # The sender's phone number digits, however it was written (spamguard.senders; None
    # for a name or short code), for the sender filter (migration 0016).
    sender_digits: Mapped[str | None] = mapped_column(String(255), default=_sender_digits)
    recipient: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    raw: Mapped[dict[str, Any] | None]
    # SHA-256 of the X-Twilio-Signature that delivered it: one signature, one message
    # (migration 0006 says why); None for API messages and those stored before.
    signature_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    text_hash: Mapped[str] = mapped_column(String(64), index=True)
    verdict_status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    spam_probability: Mapped[float | None] = mapped_column(Float, index=True)
    # The served label: the model's, unless a sender rule decided it (``sender_rule``).
    model_label: Mapped[str | None] = mapped_column(String(8))
    # "allow" or "block" when a sender rule set the latest verdict's label (migration 0017);
    # spam_probability stays the model's.
    sender_rule: Mapped[str | None] = mapped_column(String(8))
    # |spam_probability - threshold| of the model that gave the verdict, so the review queue
    # ranks a backlog scored by several models fairly (migration 0009 says why).
    threshold_distance: Mapped[float | None] = mapped_column(Float)
    model_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    review_label: Mapped[str | None] = mapped_column(String(8))
    reviewed_at: Mapped[datetime | None]
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL")
    )

    verdicts: Mapped[list[Verdict]] = relationship(
        back_populates="message", order_by="Verdict.id", cascade="all, delete-orphan",
        passive_deletes=True,
    )
    reviews: Mapped[list[Review]] = relationship(
        back_populates="message", order_by="Review.id", cascade="all, delete-orphan",
        passive_deletes=True,
    )
    campaign: Mapped[Campaign | None] = relationship(
        back_populates="messages", foreign_keys=[campaign_id]
    )
    # The version that gave the latest verdict (its threshold colours the probability).
    model_version: Mapped[ModelVersion | None] = relationship(viewonly=True)


@event.listens_for(Message.sender, "set")
def _keep_sender_digits(target: Message, value: Any, _old: Any, _initiator: Any) -> None:
    """A sender set or changed through the ORM keeps its digits in step (the column default
    covers Core inserts, and would miss a change of sender in an update)."""
    target.sender_digits = phone_digits(value) if isinstance(value, str) else None


class Verdict(Base):
    """One classification of a message by one model version."""

    __tablename__ = "verdicts"
    __table_args__ = (one_of("label", LABELS),
                      one_of("sender_rule", SENDER_RULE_ACTIONS, nullable=True))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    spam_probability: Mapped[float] = mapped_column(Float)
    # The served label: the model's (spam_probability against threshold), unless a sender
    # rule decided it, when ``sender_rule`` says which ("allow": ham, "block": spam).
    label: Mapped[str] = mapped_column(String(8))
    sender_rule: Mapped[str | None] = mapped_column(String(8))
    threshold: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="verdicts")
    model_version: Mapped[ModelVersion] = relationship()


class Review(Base):
    """A moderator's label for a message; the newest one per message is ``is_current``."""

    __tablename__ = "reviews"
    __table_args__ = (
        one_of("label", LABELS),
        Index("ix_reviews_message_id", "message_id", "id"),
        # One current review per message; concurrent reviewers conflict instead of both winning.
        unique_where(
            "uq_reviews_one_current", "message_id", sqlite="is_current = 1", postgresql="is_current"
        ),
        # Ids only grow, even after the newest review is undone (deleted): retraining counts
        # reviews by id and the queue's Seen check compares them. PostgreSQL's sequence never
        # reuses an id anyway; SQLite does unless the table is AUTOINCREMENT (migration 0004).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("messages.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    label: Mapped[str] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)

    message: Mapped[Message] = relationship(back_populates="reviews")
    user: Mapped[User | None] = relationship()


class TrainingRun(Base):
    """One ``spamguard retrain`` run: its outcome, counts and report location."""

    __tablename__ = "training_runs"
    __table_args__ = (
        one_of("status", RUN_STATUSES),
        one_of("trigger", RUN_TRIGGERS),
        Index("ix_training_runs_status", "status", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    trigger: Mapped[str] = mapped_column(String(8), default="cli")
    candidate_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    # The version the candidate was compared against (the active one when the run started).
    active_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    # Highest reviews.id included, so the next run can count the reviews that are new.
    max_review_id: Mapped[int | None] = mapped_column(BigId)
    counts: Mapped[dict[str, Any] | None]
    summary: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))


class EvalExample(Base):
    """A member of the fixed evaluation set that retraining never trains on."""

    __tablename__ = "eval_examples"
    __table_args__ = (one_of("label", LABELS), one_of("source", EVAL_SOURCES))

    id: Mapped[int] = mapped_column(primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(8), default="base")
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


REBUILD_STATUSES = ("running", "finished", "failed")


class CampaignRebuild(Base):
    """One ``spamguard campaigns rebuild`` (from cron or the campaigns page's button): when
    it ran and what it found, or why it failed, for the campaigns page to say."""

    __tablename__ = "campaign_rebuilds"
    __table_args__ = (one_of("status", REBUILD_STATUSES),)

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    campaigns: Mapped[int | None] = mapped_column(Integer)
    grouped_messages: Mapped[int | None] = mapped_column(Integer)
    messages: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class Lock(Base):
    """A named lease (e.g. ``retrain``); an expired lease may be taken over."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


SPOT_CHECK_OUTCOMES = ("labelled", "skipped", "expired")
SPOT_CHECK_MODES = ("any", *LABELS)


class SpotCheckDraw(Base):
    """A message drawn at random for a moderator's spot check (services.spot_checks).

    Kept on the server, not in the login cookie, so a new login or another browser shows
    the same open draw and every skip is counted. ``outcome`` is None while the draw is
    open; "labelled" (by the spot checker, or by anyone: the message's current label is
    what counts), "skipped", or "expired" (the active model changed before it was decided).
    """

    __tablename__ = "spot_check_draws"
    __table_args__ = (
        one_of("verdict", LABELS),
        one_of("outcome", SPOT_CHECK_OUTCOMES, nullable=True),
        one_of("mode", SPOT_CHECK_MODES),
        # One open draw per moderator and tab, even when two page loads draw at once.
        unique_where("uq_spot_check_draws_open", "user_id", "mode",
                     sqlite="outcome IS NULL", postgresql="outcome IS NULL"),
        Index("ix_spot_check_draws_model", "model_version_id", "verdict"),
        {"sqlite_autoincrement": True},  # as messages: a deleted draw's id is not reused (0020)
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    verdict: Mapped[str] = mapped_column(String(8))
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    model_version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    # The tab: "any" (blind: drawn from either label at random and shown without the
    # model's verdict, so the moderator is not nudged to agree with it), "spam" or "ham".
    mode: Mapped[str] = mapped_column(String(8))
    drawn_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str | None] = mapped_column(String(16))
    closed_at: Mapped[datetime | None]

    message: Mapped[Message] = relationship()


class QueueClaim(Base):
    """A message the review queue is showing one moderator (services.queue_claims).

    Other moderators' queues pass over it until ``claimed_until``; reviewing the message,
    skipping it, being shown another or logging out ends the claim. One row per claimed message (the
    primary key makes a claim race-safe) and, since showing a moderator a message ends
    their other claims, about one per moderator: the table stays tiny (migration 0012).
    """

    __tablename__ = "queue_claims"

    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    claimed_until: Mapped[datetime]

    user: Mapped[User] = relationship()


class PromotionHold(Base):
    """A hold on automatic promotion (services.promotion_hold): while one is in force,
    ``spamguard retrain`` still trains, compares and registers its candidate, but never
    promotes it, so an operator's rollback is not undone by the next night's run.

    Rows stay once released, as the history of holds (who held and released, when, why).
    ``active`` is True while the hold is in force and NULL once released: a unique
    constraint on it allows one hold in force at a time on SQLite and PostgreSQL alike
    (both count NULLs as distinct), where a partial index would need an expression that
    Alembic cannot compare on SQLite. The check keeps it in step with ``released_at``
    (migration 0015).
    """

    __tablename__ = "promotion_holds"
    __table_args__ = (
        UniqueConstraint("active"),
        CheckConstraint("(active IS NOT NULL AND active = true AND released_at IS NULL "
                        "AND released_by IS NULL) OR (active IS NULL AND released_at IS NOT NULL "
                        "AND released_by IS NOT NULL)",
                        name="held_or_released"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who: user@host for the command line, the account's name for the admin UI.
    created_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool | None] = mapped_column(Boolean, default=True)
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(255))


class SenderRule(Base):
    """Messages from this sender get this label whatever the model says: "allow" (ham: a
    bank's or a courier's own short code, whose notices the model was never taught) or
    "block" (spam). The model still scores each message, and its probability is stored.

    ``sender_key`` is what a message's sender is matched on (spamguard.senders.sender_key:
    a phone number's digits, else the sender case-folded), one rule per key; ``sender`` is
    the sender as it was typed (migration 0017).
    """

    __tablename__ = "sender_rules"
    __table_args__ = (one_of("action", SENDER_RULE_ACTIONS),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sender_key: Mapped[str] = mapped_column(String(255), unique=True)
    sender: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(Text)
    # Who set the rule last, and when: user@host for the command line, the account's name
    # for the admin UI.
    set_by: Mapped[str] = mapped_column(String(255))
    set_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """One change an operator or admin made: who, when, what, to what (migration 0019).

    Written by the services that make the change (accounts, API keys, sender rules, model
    promotion, rollback and deletion, promotion holds, deleting messages), in the same
    transaction, so an event is recorded exactly when its change is. ``actor`` is the
    account's name for the admin UI, ``user@host`` for the command line, ``retrain`` for
    an automatic promotion. ``details`` never holds message text or a sender.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None]
