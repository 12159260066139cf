"""Erasing a message for good from its page, or every message from its sender (admins; a
person's request to have their data erased): asked first on a page of its own, then done
by :mod:`spamguard.services.message_deletion`, as ``spamguard messages erase`` does."""

from __future__ import annotations

import shlex

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from spamguard.admin.base import (
    bp,
    controls_as_text,
    hidden_characters,
    request_transaction,
    role_required,
    session,
)
from spamguard.models import Message
from spamguard.senders import phone_digits
from spamguard.services import message_deletion, sender_rules
from spamguard.services.message_deletion import Deleted, Selection, learnt_note
from spamguard.wording import counted

SCOPES = ("message", "sender")
# More than this from one sender is left to the command, which shows progress and can be
# run again: batches commit one by one, and a request stopped by the web server's worker
# timeout (gunicorn's 120 s) half-way would leave the rest, and no audit event. 50,000
# (with verdicts, 5,000 reviewed, among 100,000) took 20 s through the page on PostgreSQL
# and 3.4 s on SQLite (the test databases, one machine, 2026-12).
MAX_IN_REQUEST = 50_000


def _message(message_id: int) -> Message:
    message = session().get(Message, message_id)
    if message is None:
        abort(404, description=f"no message {message_id}")
    return message


def _scope(message: Message) -> str:
    """The ``scope`` argument: this message, or every message from its sender (not for a
    blank sender, which names no one)."""
    scope = request.values.get("scope", "message")
    if scope not in SCOPES:
        abort(400, description="scope must be message or sender")
    if scope == "sender" and not message.sender.strip():
        abort(400, description="this message has no sender to erase the messages of")
    return scope


def _selection(message: Message, scope: str) -> Selection:
    """What the erasure takes: the same sender filter as the messages list, or the id."""
    if scope == "sender":
        return Selection(sender=message.sender)
    return Selection(message_ids=(message.id,))


def who(sender: str) -> str:
    """The sender as the filter matches it, in words (an SMS-borne value: its hidden
    characters written out, and escaped where shown)."""
    digits = phone_digits(sender)
    if digits is not None:
        return f"phone number {digits} (however it is written)"
    return f"{controls_as_text(sender, line=True)} (exactly as written)"


def command(sender: str) -> str:
    """The command that erases every message from ``sender`` (a phone number by its digits,
    which match every written form; a name quoted for the shell)."""
    digits = phone_digits(sender)
    return f"spamguard messages erase --sender {digits or shell_word(sender)}"


def shell_word(value: str) -> str:
    """``value`` quoted for the shell, as a person can read and copy it: plain quoting, or,
    when it holds a character the page would mark (hidden, or a control), bash's (and
    zsh's, ksh's) ``$'...'`` with that character's UTF-8 bytes written as ``\\xHH``.
    (Writing the mark "[U+202E]" instead named another sender, and the command erased
    nothing; ``\\u202e`` depends on the shell's locale: without a UTF-8 one bash kept it
    as text, or dropped a character past U+FFFF, naming another sender.)"""
    hidden = {m.start() for m in hidden_characters(value, line=True)}
    if not hidden:
        return shlex.quote(value)
    out = []
    for at, char in enumerate(value):
        if at in hidden:
            out += [f"\\x{byte:02x}" for byte in char.encode("utf-8")]
        else:
            out.append("\\" + char if char in "\\'" else char)
    return "$'" + "".join(out) + "'"


@bp.route("/messages/<id:message_id>/erase")
@role_required("admin")
def message_erase_confirm(message_id: int):
    """Ask before erasing: what goes, how many messages, and that it cannot be undone.
    Changes nothing."""
    message = _message(message_id)
    scope = _scope(message)
    db = session()
    selection = _selection(message, scope)
    total, reviewed = message_deletion.count(db, selection)
    learnt = message_deletion.would_be_learnt(db, selection) if reviewed else []
    return render_template("admin/message_erase.html", message=message, scope=scope,
                           total=total, reviewed=reviewed, who=who(message.sender),
                           learnt=learnt,
                           too_many=scope == "sender" and total > MAX_IN_REQUEST,
                           max_in_request=MAX_IN_REQUEST, command=command(message.sender),
                           rule=sender_rules.find_rule(db, message.sender))


@bp.route("/messages/<id:message_id>/erase", methods=["POST"])
@role_required("admin")
def message_erase(message_id: int):
    """Erase (confirmed on its page: a form without ``confirmed`` goes there and changes
    nothing), then go to the messages list and say what went."""
    message = _message(message_id)
    scope = _scope(message)
    again = redirect(url_for("admin.message_erase_confirm", message_id=message.id,
                             scope=scope))
    if request.form.get("confirmed") != str(message.id):
        return again
    selection, sender = _selection(message, scope), message.sender
    if scope == "sender" and message_deletion.count(session(), selection)[0] > MAX_IN_REQUEST:
        return again  # grew past the limit since the page was shown: it says what to do
    rule = sender_rules.find_rule(session(), sender) is not None
    done = message_deletion.delete_in(request_transaction, selection,
                                      by=current_user.username)
    flash(said(done, message_id=message_id if scope == "message" else None, sender=sender,
               rule=rule), "info")
    return redirect(url_for("admin.message_list"))


def said(done: Deleted, *, message_id: int | None, sender: str, rule: bool) -> str:
    """What an erasure did, as the messages list says it (``message_id``: the one message
    erased; None: every message from ``sender``; ``rule``: a sender rule for it stays)."""
    if message_id is not None:
        what = f"message {message_id}" + (" (reviewed)" if done.reviewed else "")
    else:
        what = (f"{counted(done.messages, 'message')} from {who(sender)}"
                + (f", {done.reviewed} of them reviewed" if done.reviewed else ""))
    if not done.messages:  # erased by someone else between the lookup and the erasure
        return "Nothing was erased: it was already gone."
    parts = [f"Erased {what}, with {'its' if message_id else 'their'} verdicts, reviews "
             "and notes"]
    if done.campaigns_recounted or done.campaigns_removed:
        parts.append(f"campaigns: {len(done.campaigns_recounted)} recounted, "
                     f"{len(done.campaigns_removed)} removed (left empty)")
    if done.eval_examples:
        parts.append(f"{counted(done.eval_examples, 'evaluation-set example')} removed")
    if done.redacted_versions:
        parts.append("example texts erased from changes.md of "
                     + ", ".join(done.redacted_versions))
    if done.learnt_by:
        parts.append(learnt_note(done.learnt_by))
    note = (" The sender rule for this sender stays (the Senders page removes it)."
            if rule and message_id is None else "")
    return "; ".join(parts) + "." + note
