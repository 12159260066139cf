"""Spot checks: label a message drawn at random from the active model's unreviewed verdicts.

The draw is kept in the login session until it is labelled or skipped, so reloading the
page shows the same message: a moderator cannot redraw until an easy one comes up. Only a
decision on the drawn message is recorded as a spot check (see
:mod:`spamguard.services.spot_checks`).
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask import session as cookie
from flask_login import current_user

from spamguard.admin.base import bp, fail, role_required, session, user_id
from spamguard.admin.queue import conflict_message
from spamguard.errors import SpamguardError
from spamguard.models import LABELS, Message
from spamguard.services import registry, reviews, spot_checks
from spamguard.sqltypes import parse_id

DRAWS_KEY = "spot_draws"  # {verdict label: message id}: one draw per verdict, so switching
# tabs does not draw again
SKIPS_KEY = "spot_skips"  # how many draws this login session put aside


def _verdict() -> str:
    verdict = request.values.get("verdict", "spam")
    if verdict not in LABELS:
        abort(400, description=f"verdict must be one of {', '.join(LABELS)}")
    return verdict


def _draws() -> dict[str, int]:
    return dict(cookie.get(DRAWS_KEY, {}))


def _set_draw(verdict: str, message_id: int | None) -> None:
    draws = _draws()
    if message_id is None:
        draws.pop(verdict, None)
    else:
        draws[verdict] = message_id
    cookie[DRAWS_KEY] = draws


def _current_draw(db, verdict: str) -> Message | None:
    """The drawn message if it is still unreviewed and of this verdict, else a new draw."""
    kept = _draws().get(verdict)
    if kept is not None:
        message = db.get(Message, kept)
        if message is not None and spot_checks.is_drawable(db, message, verdict):
            return message
    message = spot_checks.draw(db, verdict)
    _set_draw(verdict, None if message is None else message.id)
    return message


@bp.route("/spot-check")
def spot_check():
    """Show the drawn message and the active model's spot-check estimates."""
    verdict = _verdict()
    db = session()
    active = registry.active_version(db)
    # Only moderators draw: a viewer's page view must not move anyone's sample.
    current = _current_draw(db, verdict) if current_user.can("moderator") else None
    return render_template(
        "admin/spot_check.html", verdict=verdict, verdicts=LABELS, active=active,
        current=current, skips=cookie.get(SKIPS_KEY, 0),
        left=spot_checks.drawable_count(db, active.id, verdict) if active else 0,
        estimates=spot_checks.estimates(db, active.id) if active else [])


@bp.route("/spot-check/decide", methods=["POST"])
@role_required("moderator")
def spot_check_decide():
    """Record the label of the drawn message as a spot check, then draw the next."""
    verdict = _verdict()
    label = request.form.get("label", "")
    try:
        message_id = parse_id(request.form.get("message_id", ""))
    except ValueError:
        return fail("Not recorded: no message id.", "admin.spot_check", verdict=verdict)
    if _draws().get(verdict) != message_id:
        return fail(f"Not recorded: message {message_id} is not the one drawn for your spot "
                    "check (it was labelled or skipped in another tab); here is the current "
                    "draw.", "admin.spot_check", verdict=verdict)
    db = session()
    try:
        reviews.add_review(session=db, message_id=message_id, label=label, user_id=user_id(),
                           note=request.form.get("note"), seen=reviews.Seen(None),
                           spot_check_of=verdict)
    except reviews.ReviewConflict as exc:
        db.rollback()
        _set_draw(verdict, None)
        flash(conflict_message(exc, label), "error")
        return redirect(url_for("admin.spot_check", verdict=verdict))
    except (ValueError, SpamguardError) as exc:
        db.rollback()
        return fail(f"Not recorded: {exc}", "admin.spot_check", verdict=verdict)
    db.commit()
    _set_draw(verdict, None)
    flash(f"Message {message_id}: {label} (spot check of a {verdict} verdict).", "info")
    return redirect(url_for("admin.spot_check", verdict=verdict))


@bp.route("/spot-check/skip", methods=["POST"])
@role_required("moderator")
def spot_check_skip():
    """Put the drawn message aside and draw another (counted: skips bias the sample)."""
    verdict = _verdict()
    if _draws().get(verdict) is not None:
        _set_draw(verdict, None)
        cookie[SKIPS_KEY] = cookie.get(SKIPS_KEY, 0) + 1
    return redirect(url_for("admin.spot_check", verdict=verdict))
