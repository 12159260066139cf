"""Spot checks: label a message drawn at random from the active model's unreviewed verdicts.

The default tab is blind: the message comes from either label's verdicts and the card does
not show the model's verdict or score until the moderator has decided. Each moderator has
at most one open draw per tab, kept on the server (``spot_check_draws``), so reloading,
switching tabs, logging in again or another browser shows the same message until it is
labelled or skipped, and every skip is counted (see :mod:`spamguard.services.spot_checks`).
"""

from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for
from flask_login import current_user

from spamguard.admin.base import bp, fail, role_required, session, user_id
from spamguard.admin.queue import said_line, say, say_conflict
from spamguard.errors import SpamguardError
from spamguard.models import LABELS
from spamguard.services import registry, reviews, spot_checks
from spamguard.sqltypes import parse_id


def _verdict() -> str:
    """The tab: "any" (blind, the default), "spam" or "ham"."""
    verdict = request.values.get("verdict", "any")
    if verdict not in spot_checks.MODES:
        abort(400, description=f"verdict must be one of {', '.join(spot_checks.MODES)}")
    return verdict


def _draw_on_screen(db, verdict: str):
    """The posted message id, and the moderator's open draw in this tab if that is the
    message it shows (None otherwise: decided or skipped in another tab)."""
    try:
        message_id = parse_id(request.form.get("message_id", ""))
    except ValueError:
        return None, None
    row = spot_checks.open_draw(db, user_id(), verdict)
    return (row if row is not None and row.message_id == message_id else None), message_id


def _back(verdict: str):
    return redirect(url_for("admin.spot_check", verdict=verdict))


@bp.route("/spot-check")
def spot_check():
    """Show the moderator's drawn message and the active model's spot-check estimates."""
    verdict = _verdict()
    db = session()
    active = registry.active_version(db)
    current = None
    # Only moderators draw: a viewer's page view must not move anyone's sample.
    if current_user.can("moderator"):
        row = spot_checks.current_draw(db, user_id(), verdict)
        db.commit()
        current = row.message if row is not None else None
    labels = LABELS if verdict == "any" else (verdict,)
    said, refused = said_line("spot_check")
    return render_template(
        "admin/spot_check.html", verdict=verdict, verdicts=spot_checks.MODES, active=active,
        current=current, said=said, said_refused=refused,
        left=sum(spot_checks.drawable_count(db, active.id, v,
                                            up_to=spot_checks.LEFT_SHOWN_UP_TO)
                 for v in labels) if active else 0,
        left_shown_up_to=spot_checks.LEFT_SHOWN_UP_TO,
        older=spot_checks.older_verdicts(db, active.id, up_to=spot_checks.LEFT_SHOWN_UP_TO)
        if active and current is None else 0,
        estimates=spot_checks.estimates(db, active.id) if active else [],
        undecided=spot_checks.undecided(db, active.id) if active else 0)


@bp.route("/spot-check/decide", methods=["POST"])
@role_required("moderator")
def spot_check_decide():
    """Record the label of the drawn message, close the draw, and show the next one."""
    verdict = _verdict()
    label = request.form.get("label", "")
    db = session()
    row, message_id = _draw_on_screen(db, verdict)
    if row is None:
        return fail(f"Not recorded: message {message_id} is not the one drawn for your spot "
                    "check (it was labelled or skipped in another tab); here is the current "
                    "draw.", "admin.spot_check", verdict=verdict)
    try:
        reviews.add_review(session=db, message_id=message_id, label=label, user_id=user_id(),
                           note=request.form.get("note"), seen=reviews.Seen(None))
    except reviews.ReviewConflict as exc:
        say_conflict("spot_check", exc, label, request.form.get("note"))  # before the rollback
        db.rollback()
        # Someone labelled it first: the draw still counts, by that label (settle). If that
        # decision was undone meanwhile, the draw stays open and is shown again.
        row, _ = _draw_on_screen(db, verdict)
        if row is not None:
            spot_checks.settle(db, row)
        db.commit()
        return _back(verdict)
    except (ValueError, SpamguardError) as exc:
        db.rollback()
        return fail(f"Not recorded: {exc}", "admin.spot_check", verdict=verdict)
    said = (f"Message {message_id}: {label}; the model had said {row.verdict} "
            f"({row.message.spam_probability:.3f}).")
    spot_checks.close_draw(db, row, "labelled")
    db.commit()
    say("spot_check", said)
    return _back(verdict)


@bp.route("/spot-check/skip", methods=["POST"])
@role_required("moderator")
def spot_check_skip():
    """Put the drawn message aside and draw another (counted: skips bias the sample).

    Only the draw on the moderator's screen is skipped, and not if someone labelled its
    message meanwhile: that draw counts, by their label."""
    verdict = _verdict()
    db = session()
    row, message_id = _draw_on_screen(db, verdict)
    # A skip counts whatever model is active now; if someone labelled the message
    # meanwhile, the draw counts by that label instead.
    skipped = row is not None and spot_checks.close_draw(db, row, "skipped")
    if row is not None and not skipped:
        spot_checks.settle(db, row)
    db.commit()
    if skipped:
        say("spot_check", f"Skipped message {message_id}.")
    return _back(verdict)
