"""Who changed what, and when: the audit trail (``audit_events``, migration 0019).

The services that change accounts, API keys, sender rules, the model in service,
promotion holds and stored messages call :func:`record` in the caller's transaction, so
an event is stored exactly when its change commits, from the admin UI and the command line
alike. The actor is the account's name (admin UI), ``user@host`` (:func:`cli_user`, the
command line) or a job's name (``retrain``); None when a caller did not say (a script
using the Python API). Events never hold message text, and a sender only as the target of
a sender rule (which holds it anyway): the trail outlives erased messages.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spamguard.models import AuditEvent
from spamguard.sqltypes import utcnow

MAX_TEXT = 255  # audit_events.actor / target
# Every action, with what the Activity page and ``spamguard audit`` call it.
ACTIONS = {
    "user.create": "created account",
    "user.password": "reset password of",
    "user.password_change": "changed the password of own account",
    "user.role": "changed role of",
    "user.disable": "disabled account",
    "user.enable": "enabled account",
    "user.unlock": "unlocked account",
    "user.delete": "deleted account",
    "api_key.create": "created API key",
    "api_key.revoke": "revoked API key",
    "sender_rule.set": "set sender rule for",
    "sender_rule.remove": "removed sender rule for",
    "model.promote": "promoted model",
    "model.rollback": "rolled back to model",
    "model.delete": "deleted model",
    "promotion.hold": "held automatic promotion",
    "promotion.release": "released the promotion hold",
    "messages.purge": "purged messages",
    "messages.erase": "erased messages",
    "backup.restore": "restored this database from the backup made at",
}
# Who did a change made through the Python API without saying who (actor None).
UNKNOWN_ACTOR = "someone (Python API)"
# The kinds ``spamguard audit --kind`` and the Activity page filter on.
KINDS = tuple(dict.fromkeys(action.split(".")[0] for action in ACTIONS))


def cli_user() -> str:
    """Who runs a command, as ``user@host``: the account of the process's user id, not the
    ``USER`` or ``LOGNAME`` variables, which anyone can set (the uid when the account has
    no name, as in some containers). As root, a ``sudo`` caller is named too
    (``root@host (sudo alice)``): only root can have set ``SUDO_USER`` for a root process."""
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    said = f"{user}@{socket.gethostname()}"
    if uid == 0 and os.environ.get("SUDO_USER"):
        said += f" (sudo {os.environ['SUDO_USER']})"
    return said[:MAX_TEXT]


def record(session: Session, *, actor: str | None, action: str, target: str | None = None,
           **details: Any) -> AuditEvent:
    """Add one event to the caller's transaction (``details``: JSON values, no message
    text or sender)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    event = AuditEvent(at=utcnow(), actor=actor[:MAX_TEXT] if actor else None, action=action,
                       target=target[:MAX_TEXT] if target else None, details=_kept(details))
    session.add(event)
    return event


def update(session: Session, event_id: int, **details: Any) -> None:
    """Bring a long job's event up to date (its details replaced), in the caller's
    transaction: the event then says what the job had done when it stopped."""
    session.get(AuditEvent, event_id).details = _kept(details)


def _kept(details: dict[str, Any]) -> dict[str, Any] | None:
    return {k: v for k, v in details.items() if v is not None} or None


def recent(session: Session, *, limit: int = 50, before_id: int | None = None,
           action: str | None = None) -> list[AuditEvent]:
    """The newest events first (``before_id``: the page after one ending there;
    ``action``: one action, or every action of a kind such as ``"user"``)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if action:
        query = query.where(AuditEvent.action == action if "." in action
                            else AuditEvent.action.startswith(f"{action}.", autoescape=True))
    return list(session.scalars(query))


# Actions whose target, and details, that are times (stored as ISO 8601, as ``--json``
# prints them); other text, a hold's reason say, is shown as it was typed.
TIME_TARGETS = {"backup.restore"}
TIME_DETAILS = {"before"}  # a purge's cutoff
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def shown_time(value: str) -> str:
    """An ISO 8601 time as people read it, ``2026-06-01 00:00 UTC`` (as the ``at`` column);
    anything else as it is."""
    if not _ISO_TIME.match(value):
        return value
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return value
    return f"{(at.astimezone(UTC) if at.tzinfo else at):%Y-%m-%d %H:%M UTC}"


def shown_target(event: AuditEvent) -> str:
    """An event's target as the Activity page and ``spamguard audit`` show it."""
    target = event.target or ""
    return shown_time(target) if event.action in TIME_TARGETS else target


def shown_detail(value: Any, name: str = "") -> str:
    """A detail's value as people read it: a list joined by commas, a time
    (:data:`TIME_DETAILS`) as :func:`shown_time`; ``--json`` keeps the stored values."""
    if isinstance(value, list | tuple):
        return ", ".join(shown_detail(item, name) for item in value)
    if isinstance(value, str) and name in TIME_DETAILS:
        return shown_time(value)
    return str(value)


def describe(event: AuditEvent) -> str:
    """One line: ``2026-12-02 21:04 UTC alice: set sender rule for MyBank (rule allow)``;
    "someone (Python API)" for a change whose caller did not say who (as the Activity page)."""
    said = (f"{event.at:%Y-%m-%d %H:%M UTC} {event.actor or UNKNOWN_ACTOR}: "
            f"{ACTIONS[event.action]}")
    if event.target:
        said += f" {shown_target(event)}"
    if event.details:
        said += " (" + ", ".join(f"{k} {shown_detail(v, k)}"
                                 for k, v in event.details.items()) + ")"
    return said


def as_json(event: AuditEvent) -> dict[str, Any]:
    """One event as ``spamguard audit --json`` prints it."""
    return {"id": event.id, "at": event.at.isoformat(), "actor": event.actor,
            "action": event.action, "target": event.target, "details": event.details or {}}
