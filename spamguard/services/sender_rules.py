"""Sender rules: messages from an allowed sender are ham, from a blocked sender spam,
whatever the model says.

Why: out of the box the model blocks about half of present-day legitimate notices (login
codes, parcel and bank alerts; bench/README.md, ``fresh_sms.py``) that the 2012 training
data never showed it. Moderators' labels and retraining teach it, but an operator knows a
bank's or a courier's own short code on day one. A rule takes effect for messages
classified after it is set; verdicts already given stay as they were.

The model still scores every message: its probability is stored, so the message page,
the review queue and retraining see what the model thought. Only the served label (the
API's ``label``, the lists, the dashboard) follows the rule, and ``sender_rule`` on the
message and its verdict says a rule decided it.

A caution the docs repeat: SMS sender ids can be forged, alphanumeric ones ("BANK") most
easily, so allowing a sender also lets through a smishing message that forges it.

Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from spamguard.db import conflict_insert
from spamguard.errors import SpamguardError
from spamguard.models import SENDER_RULE_ACTIONS, SenderRule
from spamguard.senders import phone_digits, sender_key
from spamguard.services import audit
from spamguard.services.promotion_hold import clean_reason
from spamguard.sqltypes import utcnow

LABEL_OF = {"allow": "ham", "block": "spam"}  # the label a rule gives
DONE = {"allow": "allowed", "block": "blocked"}  # what a sender with that rule is
MAX_SENDER = 255  # sender_rules.sender and sender_rules.sender_key


class SenderRuleError(SpamguardError):
    """A rule that cannot be set or removed as asked."""


@dataclass
class Change:
    """What :func:`set_rule` or :func:`remove_rule` did: ``rule`` is the rule concerned
    (None: there was none to remove), ``before`` its action before this call (None: it
    was new), ``changed`` whether anything changed."""

    rule: SenderRule | None
    before: str | None
    changed: bool


def clean_sender(sender: str) -> str:
    """The sender as a rule keeps it (surrounding spaces left out), or SenderRuleError."""
    if not isinstance(sender, str) or not sender.strip():
        raise SenderRuleError("give the sender: a phone number, short code or sender name",
                              field="sender")
    sender = sender.strip()
    if len(sender) > MAX_SENDER:
        raise SenderRuleError(f"the sender is {len(sender)} characters long; the limit is "
                              f"{MAX_SENDER}", field="sender")
    if any(ord(c) < 32 for c in sender):
        raise SenderRuleError("the sender contains a control character or line break",
                              field="sender")
    # Case folding can lengthen a name ("ß" is "ss"): a key past the column's length was a
    # DataError (a 500 page) on PostgreSQL, where SQLite stored it.
    if len(sender_key(sender)) > MAX_SENDER:
        raise SenderRuleError(f"the sender is {len(sender_key(sender))} characters long once "
                              f"capitals are folded; the limit is {MAX_SENDER}",
                              field="sender")
    return sender


def why_no_rule(sender: str) -> str | None:
    """Why ``sender`` cannot have a rule (what :func:`clean_sender` would say), or None."""
    try:
        clean_sender(sender)
    except SenderRuleError as exc:
        return exc.for_ui()
    return None


def matches(sender: str) -> str:
    """How a rule for ``sender`` matches, in words (for the CLI and the page)."""
    digits = phone_digits(sender)
    if digits is not None:
        return f"messages from phone number {digits} (however it is written)"
    return f"messages from {sender.strip()!r} (capitals or not)"


def find_rule(session: Session, sender: str) -> SenderRule | None:
    """The rule that matches ``sender``, if any."""
    return session.scalars(select(SenderRule)
                           .where(SenderRule.sender_key == sender_key(sender))).first()


def list_rules(session: Session) -> list[SenderRule]:
    """Every rule, allowed senders first, then by sender."""
    return list(session.scalars(select(SenderRule)
                                .order_by(SenderRule.action, SenderRule.sender_key)))


def set_rule(session: Session, *, sender: str, action: str, note: str | None,
             by: str) -> Change:
    """Allow or block ``sender`` (a rule for the same sender, however written, is changed
    to this one). ``note`` None keeps a changed rule's note; "" clears it."""
    if action not in SENDER_RULE_ACTIONS:
        raise SenderRuleError(f"unknown action {action!r}: use one of "
                              f"{', '.join(SENDER_RULE_ACTIONS)}")
    sender = clean_sender(sender)
    rule = find_rule(session, sender)
    if rule is None:
        # INSERT ... ON CONFLICT DO NOTHING, not a savepoint: pysqlite does not BEGIN before
        # a SAVEPOINT, so on SQLite the savepoint was the transaction and its RELEASE
        # committed the rule at once, whatever the caller did next.
        added = session.execute(
            conflict_insert(session)(SenderRule)
            .values(sender_key=sender_key(sender), sender=sender, action=action,
                    note=clean_reason(note, "note"), set_by=by[:255], set_at=utcnow())
            .on_conflict_do_nothing(index_elements=["sender_key"])
            .returning(SenderRule.id)).scalar()
        if added is not None:
            audit.record(session, actor=by, action="sender_rule.set", target=sender,
                         rule=action, note=clean_reason(note, "note"))
            return Change(rule=session.get(SenderRule, added), before=None, changed=True)
        rule = find_rule(session, sender)  # set at the same moment by someone else: change it
        if rule is None:
            raise SenderRuleError("a rule for this sender was set and removed meanwhile by "
                                  "someone else; try again")
    note = clean_reason(note, "note") if note is not None else rule.note
    before = rule.action
    changed = (rule.action, rule.note) != (action, note)
    if changed:
        rule.action, rule.note, rule.sender = action, note, sender
        rule.set_by, rule.set_at = by[:255], utcnow()
        session.flush()
        audit.record(session, actor=by, action="sender_rule.set", target=sender, rule=action,
                     was=before if before != action else None, note=note)
    return Change(rule=rule, before=before, changed=changed)


def remove_rule(session: Session, *, sender: str | None = None,
                rule_id: int | None = None, by: str | None = None) -> Change:
    """Remove the rule that matches ``sender``, or the rule ``rule_id`` (the admin page's
    button: a rule stored under an older matching rule is still removed); none: nothing
    changes, not an error."""
    rule = (session.get(SenderRule, rule_id) if rule_id is not None
            else find_rule(session, clean_sender(sender or "")))
    if rule is None:
        return Change(rule=None, before=None, changed=False)
    session.delete(rule)
    session.flush()
    audit.record(session, actor=by, action="sender_rule.remove", target=rule.sender,
                 rule=rule.action)
    return Change(rule=rule, before=rule.action, changed=True)


def actions_for(session: Session, senders: Iterable[str]) -> dict[str, str]:
    """{sender: action} for those of ``senders`` a rule matches (one query)."""
    keys = {sender: sender_key(sender) for sender in senders}
    if not keys:
        return {}
    found = dict(session.execute(select(SenderRule.sender_key, SenderRule.action)
                                 .where(SenderRule.sender_key.in_(set(keys.values())))).all())
    return {sender: found[key] for sender, key in keys.items() if key in found}
