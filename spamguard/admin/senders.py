"""The Senders page: everyone logged in sees the sender rules; admins allow, block and
remove them (as ``spamguard senders`` does; see :mod:`spamguard.services.sender_rules`).

A message's page offers an admin the same for its sender, and comes back to the message.
"""

from __future__ import annotations

from flask import render_template, request
from flask_login import current_user

from spamguard.admin.base import bp, controls_as_text, role_required, run_action, session
from spamguard.services import sender_rules
from spamguard.services.sender_rules import DONE


def said_for(change: sender_rules.Change, action: str) -> str:
    """The page's line after a rule was set (a sender came with an SMS: its hidden
    characters, a right-to-left override, are written out, not left to reorder the line)."""
    rule = change.rule
    sender = controls_as_text(rule.sender)
    if not change.changed:
        return f"{sender} was already {DONE[action]}; nothing changed."
    was = f" (it was {DONE[change.before]})" if change.before not in (None, action) else ""
    return (f"{DONE[action].capitalize()} {sender}{was}: "
            f"{controls_as_text(sender_rules.matches(rule.sender))} are "
            f"{sender_rules.LABEL_OF[action]} from now on. Messages already classified keep "
            "their verdicts.")


@bp.route("/senders")
@role_required("viewer")
def sender_list():
    """Every sender rule, with forms to add and remove them for admins."""
    return render_template("admin/senders.html", rules=sender_rules.list_rules(session()),
                           label_of=sender_rules.LABEL_OF, matches=sender_rules.matches)


@bp.route("/senders", methods=["POST"])
@role_required("admin")
def sender_rule_set():
    """Allow or block the sender from the form (a rule for the same sender is changed)."""
    form = request.form
    action = form.get("action", "")
    note = form.get("note") if "note" in form else None  # the message page has no note
    return run_action(
        lambda db: sender_rules.set_rule(db, sender=form.get("sender", ""), action=action,
                                         note=note, by=current_user.username),
        done=lambda change: said_for(change, action), refused="Rule not set",
        endpoint="admin.sender_list", fields=True)


@bp.route("/senders/<integer_id:rule_id>/remove", methods=["POST"])
@role_required("admin")
def sender_rule_remove(rule_id: int):
    """Remove a rule (by its id: one stored under an older way of matching goes too); the
    model decides that sender's messages again."""

    def remove(db):
        change = sender_rules.remove_rule(db, rule_id=rule_id, by=current_user.username)
        if not change.changed:
            raise sender_rules.SenderRuleError(f"no sender rule {rule_id} (removed already?)")
        return change

    return run_action(
        remove, done=lambda change: (f"Removed the rule for "
                                     f"{controls_as_text(change.rule.sender)}: the model "
                                     "decides its messages again."),
        refused="Rule not removed", endpoint="admin.sender_list")
