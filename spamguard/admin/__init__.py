"""The moderators' admin UI under ``/admin``: review queue, messages, campaigns, dashboard,
model reports, accounts and API keys. Templates live in ``web/templates/admin/``, assets in
``web/static/``.
"""

from __future__ import annotations

from flask import Flask, current_app, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from spamguard.admin import (  # noqa: F401  (each module adds its pages to bp)
    api_keys,
    auth,
    campaigns,
    dashboard,
    messages,
    models,
    queue,
    spot_check,
)
from spamguard.admin.base import bp
from spamguard.admin.security import init_security

__all__ = ["bp", "init_app", "routing_error"]


def init_app(app: Flask) -> None:
    """Set up logins, CSRF, cookie flags and headers for the admin UI."""
    init_security(app)


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError):
    """A form whose CSRF token no longer matches: most often one loaded before this
    browser's last login (a login starts a new session, token included) or more than 8
    hours ago. Say that nothing changed, and link back to the page the form was on."""
    from urllib.parse import urlsplit

    from flask import request

    from spamguard.admin.auth import safe_next

    referrer = urlsplit(request.referrer or "")
    back = None
    if referrer.netloc == request.host:
        back = safe_next(referrer.path + (f"?{referrer.query}" if referrer.query else ""))
    hours = round((current_app.config.get("WTF_CSRF_TIME_LIMIT") or 0) / 3600)
    older = f", or more than {hours} hours ago" if hours else ""
    return render_template(
        "admin/error.html", code=400, back=back,
        message=f"Nothing was changed: this form was loaded before your last login{older}, "
                f"or not on this site ({exc.description}). Reload the page and do it "
                f"again."), 400


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
