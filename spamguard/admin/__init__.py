"""The moderators' admin UI under ``/admin``: review queue, messages, campaigns, dashboard,
model reports, accounts and API keys. Templates live in ``web/templates/admin/``, assets in
``web/static/``.
"""

from __future__ import annotations

from flask import Flask, current_app, render_template, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from spamguard.admin import (  # noqa: F401  (each module adds its pages to bp)
    activity,
    api_keys,
    auth,
    campaigns,
    dashboard,
    message_erase,
    messages,
    models,
    queue,
    senders,
    spot_check,
    users,
)
from spamguard.admin.base import bp
from spamguard.admin.security import init_security
from spamguard.models import LABELS
from spamguard.services import spot_checks

__all__ = ["bp", "init_app", "routing_error"]


def init_app(app: Flask) -> None:
    """Set up logins, CSRF, cookie flags and headers for the admin UI."""
    init_security(app)


# A review form's page, to open again when its token is refused (the decision was lost).
REVIEW_FORMS = {
    "admin.queue_decide": lambda form, args: url_for("admin.queue"),
    "admin.message_review": lambda form, args: url_for("admin.message_detail", **args),
    "admin.spot_check_decide": lambda form, args: url_for(
        "admin.spot_check", verdict=form.get("verdict") if form.get("verdict") in
        spot_checks.MODES else "any"),
}


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError):
    """A form whose CSRF token no longer matches: most often one loaded before this
    browser's last login (a login starts a new session, token included) or longer ago than
    a login lasts unused. Say that nothing changed, and link back to the page the form was
    on; for a review (queue, a message's page, spot check) say that its label and note were
    not recorded, quote the note, and offer its page again."""
    from urllib.parse import urlsplit

    from flask import request

    from spamguard.admin.auth import safe_next
    from spamguard.admin.queue import unsaved_note

    referrer = urlsplit(request.referrer or "")
    back = None
    if referrer.netloc == request.host:
        back = safe_next(referrer.path + (f"?{referrer.query}" if referrer.query else ""))
    hours = round((current_app.config.get("WTF_CSRF_TIME_LIMIT") or 0) / 3600)
    older = f", or more than {hours} hours ago" if hours else ""
    why = (f"this form was loaded before your last login{older}, or not on this site "
           f"({exc.description})")
    if (page := REVIEW_FORMS.get(request.endpoint)) is not None:
        label = request.form.get("label")
        label = f"your {label} label" if label in LABELS else "your label"
        message = (f"That was not recorded: {why}, so {label} was not saved."
                   f"{unsaved_note(request.form.get('note'))} Open the page again and "
                   f"decide again.")
        return render_template("admin/error.html", code=400, message=message,
                               back=page(request.form, request.view_args or {})), 400
    return render_template(
        "admin/error.html", code=400, back=back,
        message=f"Nothing was changed: {why}. Reload the page and do it again."), 400


def routing_error(exc: HTTPException):
    """The admin error page for an address under /admin that matched no admin page (404)
    or not with that method (405), which the blueprint's handler below never sees. The top
    bar shows the navigation only to a logged-in user, as on every page; an anonymous
    visitor sees no more than on the login page."""
    message = ("There is no page at this address." if exc.code == 404 else exc.description)
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    return render_template("admin/error.html", code=exc.code,
                           message=message), exc.code or 500, headers


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return render_template("admin/error.html", code=exc.code,
                           message=exc.description), exc.code or 500
