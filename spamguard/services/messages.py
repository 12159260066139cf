"""Store inbound messages and their verdicts: persistence first, nothing lost, no duplicates.

:func:`ingest` commits the message row before it classifies, so a message survives a
missing or failing model (it stays ``pending`` and :func:`classify_pending` completes it).
(gateway, external_id) is unique: a retried delivery, even one racing the original in
another worker, finds the first row instead of writing a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from spamguard.db import conflict_insert, database_busy, database_unavailable, first_line
from spamguard.ml.data import text_hash
from spamguard.models import Message, Verdict
from spamguard.services import sender_rules
from spamguard.sqltypes import utcnow

log = logging.getLogger("spamguard.messages")


@dataclass
class IngestResult:
    """What :func:`ingest` did: the stored message, its new verdict (if any), and whether
    this call created the row (False for a retried delivery)."""

    message: Message
    verdict: Verdict | None
    created: bool

    @property
    def pending(self) -> bool:
        return self.message.verdict_status == "pending"


def find_message(*, session: Session, gateway: str, external_id: str) -> Message | None:
    """Return the message a gateway delivered under ``external_id``, if stored."""
    query = select(Message).where(Message.gateway == gateway, Message.external_id == external_id)
    return session.scalars(query).first()


def get_message(*, session: Session, message_id: int) -> Message | None:
    """Return a message with its verdicts and reviews loaded."""
    query = (select(Message).where(Message.id == message_id)
             .options(selectinload(Message.verdicts), selectinload(Message.reviews)))
    return session.scalars(query).first()


def ingest(*, session: Session, classifier: Any, gateway: str, external_id: str | None,
           sender: str, recipient: str, body: str, received_at: datetime | None = None,
           raw: dict[str, Any] | None = None,
           signature_hash: str | None = None) -> IngestResult:
    """Store a message (commit), classify it with ``classifier`` (may be None), commit the verdict.

    A message already stored under (gateway, external_id) is returned as it is, classified
    first if it is still pending and a classifier is available.
    """
    message, created = _store(session=session, gateway=gateway, external_id=external_id,
                              fields={"sender": sender, "recipient": recipient, "body": body,
                                      "received_at": received_at or utcnow(), "raw": raw,
                                      "signature_hash": signature_hash})
    verdict = classify_or_leave_pending(session=session, classifier=classifier,
                                        message=message)
    return IngestResult(message=message, verdict=verdict, created=created)


def classify_or_leave_pending(*, session: Session, message: Message, classifier: Any = None,
                              get_classifier: Callable[[], Any] | None = None
                              ) -> Verdict | None:
    """:func:`classify_stored`, except that a database error leaves the (already committed)
    message pending for a later drain instead of failing: an error answer would have the
    caller send the message again, stored twice if it has no id. ``get_classifier``, when
    given, is called inside that guard (finding the active version reads the database).

    After the rollback ``message`` reads as it was stored, without asking the database
    again: a server that is gone would fail the answer that still has to be given."""
    message_id, as_stored = message.id, loaded_values(message)
    try:
        if get_classifier is not None:
            classifier = get_classifier()
        return classify_stored(session=session, classifier=classifier, message=message)
    except SQLAlchemyError as exc:  # also the pool's TimeoutError, no DBAPIError
        rollback_keeping(session, message, as_stored)
        if database_unavailable(exc):
            log.warning("verdict for message %s not stored (database busy): left pending",
                        message_id)
        else:  # a full disk, a read-only standby: an operator should hear of it
            log.error("verdict for message %s not stored (%s: %s): left pending", message_id,
                      type(getattr(exc, "orig", None) or exc).__name__, first_line(exc))
        return None


def loaded_values(message: Message) -> dict[str, Any]:
    """``message``'s column values as loaded now (none of them read from the database)."""
    return {attr.key: message.__dict__[attr.key] for attr in inspect(Message).column_attrs
            if attr.key in message.__dict__}


def rollback_keeping(session: Session, message: Message,
                     values: dict[str, Any] | None = None) -> None:
    """Roll back, and leave ``message`` reading ``values`` (default: as loaded now) rather
    than expired, which would read the row again from a database that just failed."""
    values = loaded_values(message) if values is None else values
    session.rollback()
    for key, value in values.items():
        set_committed_value(message, key, value)


def classify_stored(*, session: Session, classifier: Any, message: Message) -> Verdict | None:
    """Classify a stored message if it is still pending and a classifier is available."""
    if classifier is None or message.verdict_status != "pending":
        return None
    verdicts = classify_messages(session=session, classifier=classifier, messages=[message])
    verdict = verdicts[0] if verdicts else None
    if verdict is None:
        _reload(session, message)  # classified meanwhile by another process, or failed
    return verdict


def _reload(session: Session, message: Message) -> bool:
    """Read ``message``'s row again; False (the object left as it was) when the row is
    gone: deleted meanwhile (``spamguard messages purge`` / ``erase``), which is no error
    to the request that stored it (``session.refresh`` would raise)."""
    return session.scalars(select(Message).where(Message.id == message.id)
                           .execution_options(populate_existing=True)).first() is not None


def signature_used_by(*, session: Session, signature_hash: str) -> str | None:
    """The external id of the message a webhook signature already stored, if any."""
    return session.scalar(select(Message.external_id)
                          .where(Message.signature_hash == signature_hash))


def _store(*, session: Session, gateway: str, external_id: str | None,
           fields: dict[str, Any]) -> tuple[Message, bool]:
    """Insert and commit the message, or return the row an earlier delivery stored.

    Insert first, look up only on a conflict: retries are the exception, so the common
    case costs one statement, and the unique index decides races between workers. On
    PostgreSQL and SQLite the insert says ``ON CONFLICT DO NOTHING``, so a retried delivery
    is not a failed statement: PostgreSQL would log each one as a duplicate-key ERROR.
    """
    values = {"gateway": gateway, "external_id": external_id, "verdict_status": "pending",
              "text_hash": text_hash(fields["body"]), **fields}
    upsert = _insert_ignoring_duplicates(session)
    if upsert is None:
        return _store_catching_conflict(session, values)
    statement = (upsert(Message).values(**values)
                 .on_conflict_do_nothing(index_elements=["gateway", "external_id"])
                 .returning(Message))
    message = _insert_waiting_out_refusals(session, statement)
    if message is not None:
        return message, True
    return _earlier_delivery(session, gateway, external_id), False


# SQLite refuses some writers at once, without its busy timeout: one whose read snapshot a
# commit overtook, or one that meets a checkpoint emptying the log (`spamguard db compact`;
# 4 of 40 compactions in a test refused a store so). A refusal that came that fast is
# tried again a few times; one after the busy timeout, or PostgreSQL's lock timeout, is not.
STORE_TRIES = 4
STORE_PAUSE_SECONDS = 0.05
REFUSED_AT_ONCE_SECONDS = 0.5


def _insert_waiting_out_refusals(session: Session, statement: Any) -> Message | None:
    """Run the insert and commit; on SQLite, try again after a busy refusal that came at
    once (see :data:`STORE_TRIES`). The last try's error, whatever it is, is raised."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    for attempt in range(1, STORE_TRIES):
        started = time.monotonic()
        try:
            return _insert_and_commit(session, statement)
        except DBAPIError as exc:
            at_once = time.monotonic() - started < REFUSED_AT_ONCE_SECONDS
            if not (sqlite and at_once and database_busy(exc)):
                raise
            log.info("store refused at once by a busy database (try %d of %d): trying again",
                     attempt, STORE_TRIES)
            time.sleep(STORE_PAUSE_SECONDS)
    return _insert_and_commit(session, statement)


def _insert_and_commit(session: Session, statement: Any) -> Message | None:
    """One try: the inserted row (None when a duplicate was ignored), rolled back on error."""
    try:
        message = session.scalars(statement).first()
        session.commit()
    except DBAPIError:
        session.rollback()
        raise
    return message


def _insert_ignoring_duplicates(session: Session):
    """The dialect's ``insert`` that has ``on_conflict_do_nothing`` (None elsewhere)."""
    return conflict_insert(session)


def _store_catching_conflict(session: Session, values: dict[str, Any]) -> tuple[Message, bool]:
    """Other databases: insert, and on a unique-index conflict return the earlier row."""
    message = Message(**values)
    session.add(message)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if values["external_id"] is None:
            raise
        return _earlier_delivery(session, values["gateway"], values["external_id"]), False
    return message, True


def _earlier_delivery(session: Session, gateway: str, external_id: str | None) -> Message:
    """The row an earlier (or concurrent, now committed) delivery stored."""
    existing = (find_message(session=session, gateway=gateway, external_id=external_id)
                if external_id is not None else None)
    if existing is None:  # the conflicting row vanished: not expected, never silent
        raise RuntimeError(f"message {gateway}/{external_id} conflicted but was not found")
    return existing


def classify_messages(*, session: Session, classifier: Any,
                      messages: Sequence[Message]) -> list[Verdict | None]:
    """Classify pending ``messages`` in one batch and commit their verdicts.

    Returns one entry per message: its new verdict, or None when another process classified
    it first or classification failed (the message then stays pending; the error is logged).
    A sender rule, where one matches, sets the label (:mod:`spamguard.services.sender_rules`).
    """
    if not messages:
        return []
    started = time.perf_counter()
    try:
        probabilities = classifier.predict_proba([m.body for m in messages])
    except Exception:
        log.exception("classification failed for %d message(s); left pending", len(messages))
        return [None] * len(messages)
    latency_ms = (time.perf_counter() - started) * 1000 / len(messages)
    rules = sender_rules.actions_for(session, {m.sender for m in messages})
    verdicts = [_record_verdict(session, classifier, m, float(p), latency_ms,
                                rules.get(m.sender))
                for m, p in zip(messages, probabilities, strict=True)]
    session.commit()
    return verdicts


def _record_verdict(session: Session, classifier: Any, message: Message, probability: float,
                    latency_ms: float, rule: str | None) -> Verdict | None:
    """Mark the message classified (only if still pending) and add its verdict row; a
    sender ``rule`` ("allow", "block") sets the label, the model's probability is kept."""
    label = sender_rules.LABEL_OF[rule] if rule else classifier.label_for(probability)
    distance = abs(probability - classifier.threshold)
    # Conditional update: two processes classifying the same pending message write one verdict.
    claimed = session.execute(
        update(Message)
        .where(Message.id == message.id, Message.verdict_status == "pending")
        .values(verdict_status="classified", spam_probability=probability, model_label=label,
                sender_rule=rule, threshold_distance=distance,
                model_version_id=classifier.version)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        return None
    values = {"message_id": message.id, "model_version_id": classifier.version,
              "spam_probability": probability, "label": label, "sender_rule": rule,
              "threshold": classifier.threshold, "latency_ms": latency_ms,
              "created_at": utcnow()}
    # A Core INSERT: this runs once per inbound SMS, and the ORM unit of work costs more
    # Python time than the statement itself. The returned object is not in the session.
    statement = insert(Verdict).values(**values).returning(Verdict.id)
    verdict_id = session.execute(statement).scalar_one()
    verdict = Verdict(id=verdict_id, **values)
    # Mirror the UPDATE in memory without marking the row dirty (no second UPDATE at flush).
    for key, value in {"verdict_status": "classified", "spam_probability": probability,
                       "model_label": label, "sender_rule": rule,
                       "threshold_distance": distance,
                       "model_version_id": classifier.version}.items():
        set_committed_value(message, key, value)
    return verdict


def count_pending(*, session: Session) -> int:
    """Return how many messages wait for a verdict."""
    query = select(func.count()).select_from(Message).where(Message.verdict_status == "pending")
    return int(session.scalar(query) or 0)


def classify_pending(*, session: Session, classifier: Any, limit: int | None = None,
                     batch_size: int = 64,
                     on_verdict: Callable[[Verdict], None] | None = None) -> int:
    """Classify pending messages, oldest first, in batches; return how many got a verdict.

    Stops after ``limit`` messages (None: all), or when the model fails on every message
    it is given. A batch that fails is retried one message at a time, so one message the
    model cannot handle stays pending (and logged) without holding back the rest.
    ``on_verdict`` is called with each new verdict (the service counts them in /metrics).
    """
    done, after_id = 0, 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        batch = list(session.scalars(
            select(Message).where(Message.verdict_status == "pending", Message.id > after_id)
            .order_by(Message.id).limit(size)))
        if not batch:
            break
        after_id = batch[-1].id
        verdicts = classify_messages(session=session, classifier=classifier, messages=batch)
        if all(v is None for v in verdicts) and not _any_classified(session, batch):
            verdicts = _one_by_one(session, classifier, batch) if len(batch) > 1 else []
            if not any(v is not None for v in verdicts):
                break  # the model fails on all of these: stop rather than spin
        new = [v for v in verdicts if v is not None]
        if on_verdict is not None:
            for verdict in new:
                on_verdict(verdict)
        done += len(new)
    return done


# A failed batch retried message by message stops after this many failures in a row with no
# success: then the model is broken, not one message.
SINGLE_FAILURES_TO_STOP = 3


def _one_by_one(session: Session, classifier: Any,
                batch: Sequence[Message]) -> list[Verdict | None]:
    """Classify a failed batch message by message (the messages still pending)."""
    verdicts: list[Verdict | None] = []
    for message in batch:
        if not _reload(session, message) or message.verdict_status != "pending":
            continue
        verdicts.append(classify_messages(session=session, classifier=classifier,
                                          messages=[message])[0])
        if verdicts == [None] * SINGLE_FAILURES_TO_STOP:
            break
    return verdicts


def _any_classified(session: Session, batch: Sequence[Message]) -> bool:
    """True when some of ``batch`` is no longer pending (another process classified it, or
    it was deleted meanwhile: a purge or an erase)."""
    ids = [m.id for m in batch]
    query = select(func.count()).select_from(Message).where(
        Message.id.in_(ids), Message.verdict_status == "pending")
    return (session.scalar(query) or 0) < len(ids)
