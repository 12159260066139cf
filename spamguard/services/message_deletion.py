"""Deleting stored messages: a retention period (``spamguard messages purge``) and a
person's request to have their messages erased (``spamguard messages erase``).

spamguard keeps every message unless told otherwise; these are for operators whose law or
policy says how long SMS may be kept, or who must erase what one sender sent. A message
goes with everything stored about it: its verdicts, its reviews (notes included), its
spot-check draws and review-queue claims, and its place in a campaign (the campaign's
size, first and last message are recounted; a campaign left empty goes). When no other
stored message has the same text, the copies of that text retraining keeps go too: an
evaluation-set example added from a review (never one from the shipped data set), and
the example texts in model versions' ``changes.md`` (see
:mod:`~spamguard.services.example_redaction`). Model
versions are not retrained: a blended version's ``lexical.json`` keeps the n-grams of what
it was trained on until the version is deleted; a deletion names the versions whose
retraining run read a label of a message it erased (:attr:`Deleted.learnt_by`). The
embedding cache holds vectors keyed by a hash, not texts; logs are outside the database.

Deleting runs a batch of :data:`BATCH` messages a transaction, so a large purge never
holds SQLite's write lock or one huge PostgreSQL transaction for long while the service
stores messages; one stopped half-way leaves the rest for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from spamguard.db import session_scope, sqlite_write_lock
from spamguard.ml.version_files import LEXICAL_JSON
from spamguard.models import (
    Campaign,
    EvalExample,
    Message,
    ModelVersion,
    QueueClaim,
    Review,
    SpotCheckDraw,
    TrainingRun,
    Verdict,
)
from spamguard.services import audit
from spamguard.services.campaigns import wait_for_rebuilds
from spamguard.services.example_redaction import (
    chunks,
    example_hashes,
    redact_examples,
    redact_orphan_examples,
    unused_hashes,
)
from spamguard.services.message_queries import from_sender

BATCH = 1000
# SQLite has one writer at a time, and its busy handler polls a waiting writer every 100 ms
# at most: batch after batch with no gap kept the service's inserts waiting up to 2.8 s
# (bench/purge.py). A pause as long as that poll lets one in between batches.
SQLITE_PAUSE_SECONDS = 0.1


@dataclass(frozen=True)
class Selection:
    """Which messages to delete; the conditions given all hold. ``before``: received
    before that instant; ``keep_reviewed``: leave out those a moderator labelled."""

    before: datetime | None = None
    sender: str | None = None
    message_ids: tuple[int, ...] = ()
    keep_reviewed: bool = False

    def __post_init__(self) -> None:
        if self.before is None and self.sender is None and not self.message_ids:
            raise ValueError("a deletion needs a time, a sender or message ids: "
                             "it never selects every message")

    def where(self) -> list:
        clauses: list = []
        if self.before is not None:
            clauses.append(Message.received_at < self.before)
        if self.sender is not None:
            clauses.append(from_sender(self.sender))
        if self.message_ids:
            clauses.append(Message.id.in_(self.message_ids))
        if self.keep_reviewed:
            clauses.append(Message.review_label.is_(None))
        return clauses


@dataclass
class Deleted:
    """What a deletion removed (or, for a dry run, would remove)."""

    messages: int = 0
    reviewed: int = 0  # of ``messages``, those a moderator had labelled
    campaigns_recounted: set[int] = field(default_factory=set)  # ids; smaller now
    campaigns_removed: set[int] = field(default_factory=set)  # ids; left empty
    eval_examples: int = 0
    redacted_versions: list[str] = field(default_factory=list)
    # Text hashes no message has now (in delete_messages' total: those a changes.md shows).
    texts_gone: set[str] = field(default_factory=set)
    # The first review of a deleted reviewed message, by text hash: once no message has
    # that text, a retraining run that read reviews up to it or later trained on the text
    # (unless it was in the evaluation set), so its version's lexical.json holds its words.
    reviewed_texts: dict[str, int] = field(default_factory=dict)
    # Versions (not deleted, blended) whose retraining run read such a review: deleting
    # them (or pruning, once newer versions serve) is what removes those n-grams.
    learnt_by: list[str] = field(default_factory=list)

    def add(self, batch: Deleted) -> None:
        """Count ``batch`` in (a campaign recounted by one batch and removed by a later
        one counts as removed)."""
        self.messages += batch.messages
        self.reviewed += batch.reviewed
        self.campaigns_removed |= batch.campaigns_removed
        self.campaigns_recounted = ((self.campaigns_recounted | batch.campaigns_recounted)
                                    - self.campaigns_removed)
        self.eval_examples += batch.eval_examples
        self.texts_gone |= batch.texts_gone
        self.redacted_versions = sorted({*self.redacted_versions, *batch.redacted_versions})
        for text, review in batch.reviewed_texts.items():
            self.keep_first_review(text, review)

    def keep_first_review(self, text: str, review: int) -> None:
        """Note ``review`` for ``text`` in :attr:`reviewed_texts` unless an earlier is."""
        self.reviewed_texts[text] = min(review, self.reviewed_texts.get(text, review))


def count(session: Session, selection: Selection) -> tuple[int, int]:
    """How many messages ``selection`` picks, and how many of them are reviewed."""
    total, reviewed = session.execute(
        select(func.count(), func.count(Message.review_label)).where(*selection.where())).one()
    return int(total), int(reviewed)


def kept_reviewed(session: Session, selection: Selection) -> int:
    """How many reviewed messages ``selection`` (with ``keep_reviewed``) leaves in place."""
    if not selection.keep_reviewed:
        return 0
    widened = Selection(before=selection.before, sender=selection.sender,
                        message_ids=selection.message_ids)
    return count(session, widened)[1]


def delete_batch(session: Session, selection: Selection, *, after_id: int = 0,
                 limit: int | None = None) -> tuple[Deleted, int | None]:
    """Delete up to ``limit`` (:data:`BATCH`) selected messages with ids above
    ``after_id``, oldest first.

    Returns what went, and the last id looked at (None when nothing was left). The caller
    commits; one batch is one transaction.
    """
    wait_for_rebuilds(session)  # a rebuild reading these messages would count them
    # Lock what is deleted before deciding on it: a label, a verdict or a claim committed
    # between the read and the deletes would otherwise go with it (a purge keeping reviewed
    # messages took one labelled meanwhile). SQLite: its write lock, now (it ignores FOR
    # UPDATE, and its reads take no lock; no message has id 0). PostgreSQL: the campaigns,
    # then the messages, re-read (one changed meanwhile is checked against the selection
    # again), in the order labelling a campaign takes them: the two wait, never deadlock.
    sqlite_write_lock(session, Message.review_label, 0)
    batch = (select(Message.id, Message.text_hash, Message.campaign_id, Message.review_label)
             .where(*selection.where(), Message.id > after_id).order_by(Message.id))
    rows = session.execute(batch.limit(limit or BATCH)).all()
    if not rows:
        return Deleted(), None
    last = rows[-1].id
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Campaign.id).where(Campaign.id.in_(
            {row.campaign_id for row in rows if row.campaign_id is not None}))
            .order_by(Campaign.id).with_for_update())
        rows = session.execute(batch.where(Message.id <= last).with_for_update()).all()
        if not rows:  # every one was labelled meanwhile: on to the next batch
            return Deleted(), last
    ids = [row.id for row in rows]
    campaigns = {row.campaign_id for row in rows if row.campaign_id is not None}
    first_review = {message_id: review_id for message_id, review_id in session.execute(
        select(Review.message_id, func.min(Review.id)).where(Review.message_id.in_(ids))
        .group_by(Review.message_id))}
    # Children first: it does not depend on each database's ON DELETE CASCADE.
    for table, column in ((Verdict, Verdict.message_id), (Review, Review.message_id),
                          (SpotCheckDraw, SpotCheckDraw.message_id),
                          (QueueClaim, QueueClaim.message_id)):
        session.execute(delete(table).where(column.in_(ids))
                        .execution_options(synchronize_session=False))
    session.execute(update(Campaign).where(Campaign.representative_message_id.in_(ids))
                    .values(representative_message_id=None)
                    .execution_options(synchronize_session=False))
    session.execute(delete(Message).where(Message.id.in_(ids))
                    .execution_options(synchronize_session=False))
    done = Deleted(messages=len(ids), reviewed=sum(r.review_label is not None for r in rows))
    done.campaigns_recounted, done.campaigns_removed = _recount(session, sorted(campaigns))
    done.texts_gone = unused_hashes(session, {row.text_hash for row in rows})
    for row in rows:  # (a copy of the text may go in a later batch)
        if row.id in first_review:
            done.keep_first_review(row.text_hash, first_review[row.id])
    done.eval_examples = forget_eval_copies(session, done.texts_gone)
    session.expire_all()
    return done, last


def delete_messages(factory: sessionmaker[Session], selection: Selection, *,
                    on_batch: Callable[[int], None] | None = None,
                    by: str | None = None) -> Deleted:
    """Delete every message ``selection`` picks, a batch a transaction of its own session
    from ``factory`` (see :func:`delete_in`)."""
    return delete_in(partial(session_scope, factory), selection, on_batch=on_batch, by=by)


def delete_in(transaction: Callable[[], AbstractContextManager[Session]],
              selection: Selection, *, on_batch: Callable[[int], None] | None = None,
              by: str | None = None) -> Deleted:
    """Delete every message ``selection`` picks, a batch a ``transaction()`` (which yields
    a session and commits when its block ends: a new session's, or an admin request's),
    taking the example texts no message has any longer out of the versions'
    ``changes.md`` after each batch, and record who did it (``by``) in the audit trail.

    ``on_batch`` is called with each batch's size (a progress bar). Messages stored while
    it runs are deleted too when they match (a purge's ``before`` is fixed, so new ones do
    not).
    """
    with transaction() as session:
        examples = example_hashes(session)
        pause = SQLITE_PAUSE_SECONDS if session.get_bind().dialect.name == "sqlite" else 0
    total, after_id, shown = Deleted(), 0, set().union(*examples.values())
    event_id = None
    while True:
        with transaction() as session:
            done, after_id = delete_batch(session, selection, after_id=after_id)
            if done.messages:  # the trail says what committed, even if a later batch fails
                event_id = _audit(session, selection, total.messages + done.messages,
                                  total.reviewed + done.reviewed, by, event_id)
        if after_id is None:
            break
        done.texts_gone &= shown  # keep only what a changes.md shows (few)
        if done.texts_gone:  # now: a run stopped later has still redacted what it erased
            with transaction() as session:
                hit = [v for v, hashes in examples.items() if hashes & done.texts_gone]
                done.redacted_versions = redact_examples(session, hit, done.texts_gone)
        total.add(done)
        if on_batch:
            on_batch(done.messages)
        time.sleep(pause)
    with transaction() as session:
        # Versions a retraining run wrote meanwhile, or a run stopped before: their examples
        # may show texts no stored message has any longer.
        swept = redact_orphan_examples(session)
        total.redacted_versions = sorted({*total.redacted_versions, *swept})
        gone = unused_hashes(session, set(total.reviewed_texts))
        total.learnt_by = versions_that_learnt(
            session, min((total.reviewed_texts[text] for text in gone), default=None))
    return total


def learnt_note(versions: Sequence[str], *, these: bool = False) -> str:
    """What the CLI and the admin UI say of :attr:`Deleted.learnt_by` (``these``: of the
    messages a dry run counted, :func:`would_be_learnt`)."""
    return (f"{'version' if len(versions) == 1 else 'versions'} {', '.join(versions)} "
            f"trained on moderators' labels of {'these' if these else 'erased'} messages: "
            f"{'its' if len(versions) == 1 else 'their'} lexical.json keeps words and "
            "character n-grams of those texts until deleted (spamguard models delete, "
            "or prune once newer versions serve)")


def would_be_learnt(session: Session, selection: Selection) -> list[str]:
    """The versions a deletion of ``selection`` would name (:attr:`Deleted.learnt_by`),
    for a dry run: those that learnt a reviewed text of the selection that no message
    outside it has."""
    reviewed = {text: review for text, review in session.execute(
        select(Message.text_hash, func.min(Review.id))
        .join(Review, Review.message_id == Message.id).where(*selection.where())
        .group_by(Message.text_hash))}
    kept: set[str] = set()  # texts a message outside the selection has too
    for chunk in chunks(sorted(reviewed)):
        selected = _text_counts(session, chunk, *selection.where())
        kept.update(text for text, n in _text_counts(session, chunk).items()
                    if n > selected.get(text, 0))
    return versions_that_learnt(session, min(
        (review for text, review in reviewed.items() if text not in kept), default=None))


def _text_counts(session: Session, hashes: Sequence[str], *where) -> dict[str, int]:
    """How many messages (that meet ``where``) have each of ``hashes``: counted, not
    negated, since NOT of a condition on a NULL column (a name's digits) is no row."""
    return {text: n for text, n in session.execute(
        select(Message.text_hash, func.count()).where(Message.text_hash.in_(hashes), *where)
        .group_by(Message.text_hash))}


def versions_that_learnt(session: Session, review_id: int | None) -> list[str]:
    """The versions, not deleted, with a lexical half, made by a retraining run that read
    reviews up to ``review_id`` or later (None: no version)."""
    if review_id is None:
        return []
    versions = session.execute(
        select(ModelVersion.id, ModelVersion.directory).distinct()
        .join(TrainingRun, TrainingRun.candidate_version_id == ModelVersion.id)
        .where(TrainingRun.max_review_id >= review_id, ModelVersion.status != "deleted")
        .order_by(ModelVersion.id)).all()
    return [version for version, directory in versions
            if (Path(directory) / LEXICAL_JSON).is_file()]


def _audit(session: Session, selection: Selection, messages: int, reviewed: int,
           by: str | None, event_id: int | None) -> int:
    """Record what went so far, without a sender or any text (the trail outlives them):
    one event a run, added with its first batch and brought up to date with each next one
    (in the batch's transaction). Returns the event's id."""
    ids = selection.message_ids
    details = {"messages": messages, "reviewed": reviewed,
               "before": selection.before.isoformat() if selection.before else None,
               "kept_reviewed": True if selection.keep_reviewed else None,
               "of": "a sender" if selection.sender is not None else None,
               "ids": list(ids) if ids and len(ids) <= 20 else len(ids) or None}
    if event_id is not None:
        audit.update(session, event_id, **details)
        return event_id
    action = "messages.purge" if selection.before is not None else "messages.erase"
    event = audit.record(session, actor=by, action=action, **details)
    session.flush()
    return event.id


def _recount(session: Session, campaign_ids: Sequence[int]) -> tuple[set[int], set[int]]:
    """Recount the campaigns that lost members; remove those left empty. Returns the ids
    recounted and removed.

    Set-based: one grouped count and one UPDATE (executemany) per chunk of campaigns, not
    statements per campaign; a batch's messages may belong to hundreds of campaigns."""
    recounted: set[int] = set()
    removed: set[int] = set()
    for chunk in chunks(list(campaign_ids)):
        found = {row.campaign_id: row for row in session.execute(
            select(Message.campaign_id, func.count().label("size"),
                   func.min(Message.received_at).label("first"),
                   func.max(Message.received_at).label("last"))
            .where(Message.campaign_id.in_(chunk)).group_by(Message.campaign_id))}
        empty = [campaign_id for campaign_id in chunk if campaign_id not in found]
        if empty:
            session.execute(delete(Campaign).where(Campaign.id.in_(empty))
                            .execution_options(synchronize_session=False))
            removed.update(empty)
        if not found:
            continue
        session.execute(update(Campaign), [  # by primary key: one executemany
            {"id": campaign_id, "size": row.size, "first_seen": row.first,
             "last_seen": row.last} for campaign_id, row in found.items()])
        # Those whose representative was deleted: the first message left stands for them.
        first = (select(Message.id).where(Message.campaign_id == Campaign.id)
                 .order_by(Message.received_at, Message.id).limit(1).scalar_subquery())
        session.execute(update(Campaign).where(Campaign.id.in_(list(found)),
                                               Campaign.representative_message_id.is_(None))
                        .values(representative_message_id=first)
                        .execution_options(synchronize_session=False))
        recounted.update(found)
    return recounted, removed


def forget_eval_copies(session: Session, hashes: Iterable[str]) -> int:
    """Delete the evaluation-set examples added from reviews whose text hash is in
    ``hashes`` (the shipped data set's examples stay: they are public); return how many."""
    gone = 0
    for chunk in chunks(sorted(hashes)):
        gone += session.execute(delete(EvalExample).where(
            EvalExample.source == "review", EvalExample.text_hash.in_(chunk))).rowcount or 0
    return gone
