"""Logins, CSRF, cookies and the Content-Security-Policy of the admin UI."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, flash, g, redirect, request
from flask import session as cookie_session
from flask_login import LoginManager, login_url
from flask_wtf.csrf import CSRFProtect

from spamguard.admin.base import LoggedInUser, bp, session
from spamguard.ops import is_admin_path

# No inline script or style anywhere: every script and stylesheet is a file under /static.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
# An SVG image (the dashboard's chart): matplotlib styles it inline; nothing else runs.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
PUBLIC_ENDPOINTS = {"admin.login", "admin.static"}
SESSION_ENDED = ("Your session has ended (this account logged out, or its password changed, "
                 "in another browser). Please log in again.")
ACCOUNT_DISABLED = ("Your account has been disabled, so you were logged out. Ask an admin to "
                    "enable it again.")
ACCOUNT_DELETED = ("Your account no longer exists, so you were logged out. Ask an admin if "
                   "this is a mistake.")
# Why load_user logged a session out (g.logged_out), as _protect says it. Only a session
# cookie signed with the app's key gets this far: a forged or tampered one is no session at
# all and gets "Please log in." like anyone. So these are said only to a browser that was
# logged in as the account, and none names it.
LOGGED_OUT = {"deleted": (ACCOUNT_DELETED, "error"), "disabled": (ACCOUNT_DISABLED, "error"),
              "ended": (SESSION_ENDED, "info")}
NOT_RECORDED = ("That was not recorded: you were no longer logged in (a login ends after "
                "hours unused). Log in, and do it again.")
# A form sent by a browser whose login had ended for one of the reasons of LOGGED_OUT: the
# reason, after saying that what was sent (a label and its note, say) was not recorded.
NOT_RECORDED_BECAUSE = "That was not recorded: {why}"

csrf = CSRFProtect()


def init_security(app: Flask) -> None:
    """Set up Flask-Login, CSRF for admin requests, cookie flags and security headers."""
    settings = app.config["SPAMGUARD"]
    insecure = bool(app.config.get("TESTING")) or settings.env == "development"
    app.config.update(
        # An idle timeout: a login's cookie is re-signed on every request (permanent
        # session, refreshed each request), and one signed longer ago than this is refused
        # by Flask, so a copied or forgotten cookie stops working once nobody uses it.
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_idle_hours),
        SESSION_REFRESH_EACH_REQUEST=True,
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not insecure, REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax", REMEMBER_COOKIE_SECURE=not insecure,
        # The webhook and API authenticate by signature or key: CSRF is checked by the
        # admin blueprint only (see _protect), not app-wide.
        WTF_CSRF_CHECK_DEFAULT=False,
    )
    # A form's token lasts as long as an unused login (it lasted 8 hours, so a queue tab
    # left open 8 to 12 hours was refused while its login was still good).
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", settings.session_idle_hours * 3600)
    csrf.init_app(app)
    manager = LoginManager()
    manager.login_view = "admin.login"
    manager.login_message = "Please log in."
    manager.session_protection = "basic"
    manager.user_loader(load_user)
    manager.init_app(app)
    app.after_request(security_headers)


def load_user(session_id: str) -> LoggedInUser | None:
    """Load the session's user from its ``<id>.<epoch>``; a deleted or disabled account,
    or a session ended since (logout, password change), is logged out, and ``g.logged_out``
    tells _protect why (:data:`LOGGED_OUT`)."""
    from spamguard.services.users import get_user

    user_id, _, epoch = session_id.partition(".")
    try:
        user_number, epoch_number = int(user_id), int(epoch)
    except ValueError:  # not ours, or a session from before epochs: log in again
        return None
    user = get_user(session(), user_number)
    if user is None or user.deleted_at is not None:  # a deleted one's row stays (0018)
        g.logged_out = "deleted"
    elif not user.is_active:  # checked before the epoch: disabling ends the sessions too
        g.logged_out = "disabled"
    elif user.session_epoch != epoch_number:  # this browser's cookie, with an old epoch
        g.logged_out = "ended"
    else:
        return LoggedInUser.of(user)
    return None


def security_headers(response: Response) -> Response:
    """Add CSP and related headers to HTML responses, and to SVG images (a browser opening
    one by its address runs any script in it; the dashboard's chart has none, but holds
    nothing that needs one either)."""
    if response.mimetype == "image/svg+xml":
        response.headers.setdefault("Content-Security-Policy", SVG_CSP)
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.blueprint == "admin" or is_admin_path(request.path):  # its 404s too
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.before_request
def _protect():
    """Require a login, then check CSRF on every state-changing admin request.

    The login first: a login that ended by idleness takes the whole session cookie with it,
    CSRF secret included, so checking CSRF first answered a moderator's next decision with
    "the form expired or was not sent by this site" (400) instead of the login page. A
    request without a login changes nothing either way."""
    from flask import current_app
    from flask_login import current_user

    changes = request.method not in ("GET", "HEAD", "OPTIONS")
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        to_login = login_url(current_app.login_manager.login_view, next_url=request.url)
        # A login this browser had ended: say why (for a disabled or deleted account not
        # just "log in again", which would not work).
        if (why := g.pop("logged_out", None)) is not None:
            said, category = LOGGED_OUT[why]
            if changes and request.endpoint != "admin.logout":  # a form's action is lost
                said = NOT_RECORDED_BECAUSE.format(why=said[0].lower() + said[1:])
                category = "error"
            flash(said, category)
            return redirect(to_login)
        if changes:
            # Nothing is written to the session here: another site's form arrives without
            # the login cookie too (SameSite=Lax), and a new session cookie in the answer
            # would replace the moderator's, logging them out. The login page says why,
            # from the address (a logout needs no such word).
            if request.endpoint != "admin.logout":
                to_login += "&why=not-recorded"
            return redirect(to_login)
        return current_app.login_manager.unauthorized()
    if changes:
        csrf.protect()
    if current_user.is_authenticated:
        cookie_session.permanent = True  # so it is re-signed now: the idle clock restarts
    return None
