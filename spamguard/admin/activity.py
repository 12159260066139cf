"""The Activity page (admins): who changed accounts, API keys, sender rules, the model in
service, promotion holds or stored messages, and when; ``spamguard audit`` prints the same
(see :mod:`spamguard.services.audit`)."""

from __future__ import annotations

from flask import abort, render_template, request

from spamguard.admin.base import bp, role_required, session
from spamguard.services import audit
from spamguard.services.audit import KINDS
from spamguard.sqltypes import MAX_ID, parse_id

PER_PAGE = 100
bp.app_template_filter("audit_target")(audit.shown_target)  # {{ event|audit_target }}
bp.app_template_filter("audit_detail")(audit.shown_detail)  # a purge's cutoff as a time


@bp.route("/activity")
@role_required("admin")
def activity():
    """The newest changes first, a page at a time (``before``: the id the last page ended
    at), optionally of one kind."""
    kind = request.args.get("kind", "")
    if kind and kind not in KINDS:
        abort(400, description=f"kind must be one of {', '.join(KINDS)}")
    before = request.args.get("before", "")
    try:
        before_id = parse_id(before, max_id=MAX_ID) if before else None
    except ValueError:
        abort(400, description="before must be an event id")
    events = audit.recent(session(), limit=PER_PAGE + 1, before_id=before_id,
                          action=kind or None)
    more = len(events) > PER_PAGE
    events = events[:PER_PAGE]
    return render_template("admin/activity.html", events=events, kinds=KINDS, kind=kind,
                           actions=audit.ACTIONS, older=events[-1].id if more else None,
                           first_page=before_id is None, unknown_actor=audit.UNKNOWN_ACTOR)
