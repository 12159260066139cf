"""The moderators' admin UI under ``/admin``: review queue, messages, campaigns, dashboard,
model reports, accounts and API keys. Templates live in ``web/templates/admin/``, assets in
``web/static/``.
"""

from __future__ import annotations

from flask import Flask, render_template
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

__all__ = ["bp", "init_app"]


def init_app(app: Flask) -> None:
    """Set up logins, CSRF, cookie flags and headers for the admin UI."""
    init_security(app)


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError):
    return render_template("admin/error.html", code=400,
                           message=f"The form expired or was not sent by this site "
                                   f"({exc.description}). Go back, reload and try again."), 400


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return render_template("admin/error.html", code=exc.code,
                           message=exc.description), exc.code or 500
