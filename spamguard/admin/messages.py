"""Message list with filters and bulk relabelling, and the message detail page."""

from __future__ import annotations

from types import SimpleNamespace

from flask import abort, flash, redirect, render_template, request, url_for
from flask import session as cookie

from spamguard.admin.base import (
    back,
    bp,
    fail,
    page_number,
    role_required,
    run_action,
    session,
    user_id,
)
from spamguard.admin.queue import flash_conflict
from spamguard.errors import SpamguardError
from spamguard.models import LABELS, Message
from spamguard.services import message_queries, queue_claims, reviews, sender_rules
from spamguard.services.message_queries import FilterError, MessageFilter
from spamguard.sqltypes import parse_id, utcnow

PER_PAGE = 50
# How a refused filter names its fields: by the labels of the form (messages.html), quoted
# ("min_p" is not what the field says); a campaign (a link's, no field) as before.
FORM_LABELS = {name: f"\u201c{label}\u201d" for name, label in {
    "model_label": "Model says", "review": "Moderator says", "min_p": "P(spam) from",
    "max_p": "P(spam) to", "since": "Since", "until": "Until", "sender": "Sender",
    "q": "Text"}.items()}


def _filters(args) -> MessageFilter:
    """Parse the filter arguments, answering 400 with the reason when one is bad."""
    try:
        return MessageFilter.from_args(args)
    except FilterError as exc:
        abort(400, description=str(exc))


def _as_typed(args) -> SimpleNamespace:
    """The filter form's fields as they were typed (the values of a refused filter, which
    :class:`MessageFilter` cannot hold), for the form to show them again."""
    typed = {name: args.get(name, "")[:255] for name in (
        "model_label", "review", "min_p", "max_p", "since", "until", "sender", "q")}
    return SimpleNamespace(**typed, is_empty=False,
                           disagreement=args.get("disagreement", "") in {"1", "on"},
                           campaign_id=(args.get("campaign_id") or args.get("campaign")
                                        or "")[:30])


@bp.route("/messages")
def message_list():
    """List messages matching the filters, newest first. A filter that cannot be
    understood, or matches nothing by construction (since after until), gets the list
    page again (400) with the reason beside the form and the values as typed."""
    try:
        filters = MessageFilter.from_args(request.args, FORM_LABELS)
    except FilterError as exc:
        empty = message_queries.Page(items=[], page=1, per_page=PER_PAGE, total=0)
        return render_template("admin/messages.html", page=empty, args={},
                               filters=_as_typed(request.args), filter_error=str(exc),
                               error_field=list(exc.fields)), 400
    page = message_queries.list_messages(session(), filters, page=page_number(),
                                         per_page=PER_PAGE)
    if page.page > page.pages:  # an old link after messages went, or a hand-made URL
        return redirect(url_for("admin.message_list", page=page.pages, **filters.as_args()))
    return render_template("admin/messages.html", page=page, filters=filters,
                           args=filters.as_args())


MAX_SELECTED = 5000  # ticked ids in one request (a page shows at most MAX_PER_PAGE)


@bp.route("/messages/bulk", methods=["POST"])
@role_required("moderator")
def message_bulk():
    """Relabel the selected messages or all matching the filter, after a confirmation."""
    form = request.form
    label = form.get("label", "")
    scope = form.get("scope") or request.args.get("scope", "selected")
    if label not in LABELS:
        return fail("Choose spam or ham.", "admin.message_list")
    filters = _filters(form)
    db = session()
    if scope == "filter":
        ids = message_queries.matching_ids(db, filters)
        count = message_queries.count_messages(db, filters)
    else:
        try:
            chosen = sorted({parse_id(i) for i in form.getlist("ids")})
        except ValueError:
            abort(400, description="ids must be message numbers")
        if not chosen:
            return fail("Select at least one message.", "admin.message_list", **filters.as_args())
        if len(chosen) > MAX_SELECTED:
            abort(400, description=f"select at most {MAX_SELECTED} messages, or relabel all "
                                   "messages matching the filter")
        ids, count = chosen, message_queries.count_ids(db, chosen)  # ids that exist

    def confirm(count: int, asked: str | None, relabelled: bool = False):
        """The confirmation page; ``asked``: the count confirmed before, if it changed;
        ``relabelled``: moderators labelled some of the messages since it was shown."""
        found = sorted(db.scalars(ids)) if scope == "filter" else list(ids)
        labelled, newest = reviews.reviews_seen(db, found)
        return render_template("admin/confirm_bulk.html", count=count, label=label,
                               scope=scope, ids=ids if scope != "filter" else [],
                               filters=filters, args=filters.as_args(), asked=asked,
                               note=form.get("note", ""), labelled=labelled,
                               newest_review="none" if newest is None else newest,
                               relabelled=relabelled)

    # Asked again when the count changed since the confirmation: say why, keep the note.
    asked = form.get("expected") if form.get("confirmed") == "1" else None
    changed = asked is not None and asked != str(count)
    if asked is None or changed or count == 0:
        return confirm(count, asked if changed else None)
    checks = {"expected": count}
    if "newest_review" in form:  # what the confirmation showed (a form from before says not)
        seen = form["newest_review"]
        try:
            checks["newest_review"] = None if seen == "none" else parse_id(seen)
        except ValueError:
            abort(400, description="newest_review must be a review number or none")
    try:
        return run_action(
            lambda db: reviews.bulk_relabel(session=db, ids=ids, label=label,
                                            user_id=user_id(), note=form.get("note"),
                                            **checks),
            done=lambda n: f"Labelled {n} message{'s' if n != 1 else ''} as {label}.",
            endpoint="admin.message_list", **filters.as_args())
    except reviews.CountChanged as changed:  # between the count above and the relabel
        db.rollback()
        return confirm(changed.found, str(count))
    except reviews.ReviewsChanged:
        db.rollback()
        return confirm(count, None, relabelled=True)


RELABELLED = "relabelled"  # session entry: the message just labelled on its page


@bp.route("/messages/<id:message_id>")
def message_detail(message_id: int):
    """Show a message with every verdict, every review and similar messages."""
    db = session()
    message = db.get(Message, message_id)
    if message is None:
        abort(404, description=f"no message {message_id}")
    holder = queue_claims.holder(db, message_id, utcnow())
    if holder is not None and holder.user_id == user_id():
        holder = None  # their own claim: the queue showed it to them
    # Just labelled here: the focus goes back to the label form, not the top of the page.
    relabelled = cookie.pop(RELABELLED, None) == message_id
    return render_template("admin/message.html", message=message, relabelled=relabelled,
                           similar=message_queries.similar_messages(db, message),
                           history=reviews.review_history(db, message_id), labels=LABELS,
                           seen=reviews.latest_review_id(db, message_id), holder=holder,
                           rule=sender_rules.find_rule(db, message.sender),
                           no_rule=sender_rules.why_no_rule(message.sender))


@bp.route("/messages/<id:message_id>/review", methods=["POST"])
@role_required("moderator")
def message_review(message_id: int):
    """Label (or relabel) one message from its detail page.

    The form says which review the page showed (``seen``); if someone labelled the message
    after that, the label is refused and the page shows theirs, as in the queue (a stale
    page silently replaced another moderator's decision)."""
    form = request.form
    label = form.get("label", "")
    db = session()
    cookie[RELABELLED] = message_id
    try:
        seen = reviews.Seen.parse(form["seen"]) if "seen" in form else None
        review = reviews.add_review(session=db, message_id=message_id, label=label,
                                    user_id=user_id(), note=form.get("note"), seen=seen)
    except reviews.ReviewConflict as exc:
        flash_conflict(exc, label, form.get("note"))  # before the rollback expires the review
        db.rollback()
        return back("admin.message_detail", message_id=message_id)
    except (ValueError, SpamguardError) as exc:
        db.rollback()
        said = exc.for_ui() if isinstance(exc, SpamguardError) else str(exc)
        return fail(f"Not recorded: {said}", "admin.message_detail", message_id=message_id)
    db.commit()
    flash(f"Message {message_id} labelled {review.label}.", "info")
    return back("admin.message_detail", message_id=message_id)
