"""Log in, log out, change your password (the users page is spamguard.admin.users)."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask import session as flask_session
from flask_login import current_user, login_user, logout_user
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from spamguard.admin import login_limit
from spamguard.admin.base import (
    LoggedInUser,
    bp,
    fail,
    is_local,
    session,
    user_id,
)
from spamguard.admin.security import NOT_RECORDED
from spamguard.services import users
from spamguard.wording import sentence

# An unknown name, a wrong password and a locked account get the same answer: only real
# accounts can be locked, so a distinct "locked" would tell which names exist. ("inactive"
# is only ever said to someone who gave the account's right password.)
REFUSED = (f"Wrong username or password. After {users.MAX_FAILURES} failed attempts in a row "
           f"an account is locked for {int(users.LOCKOUT.total_seconds()) // 60} minutes.")
LOGIN_ERRORS = {
    "invalid": REFUSED,
    "locked": REFUSED,
    "inactive": "This account is disabled. Ask an admin to enable it again.",
}


# What the login page says, chosen by its ?why= (a fixed table: never text from the URL).
LOGIN_NOTICES = {"not-recorded": NOT_RECORDED}

TOO_MANY_FAILURES = ("Too many failed logins from your network address. Try again in "
                     "{minutes} minute(s).")


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a local admin page, else the dashboard.

    A login that expired is noticed by whatever request comes next, often a form's POST
    (/admin/queue/decide), and ``next`` is that request's URL; redirecting there after the
    login would GET a POST-only URL (405). So such a target is replaced by the nearest page
    above it, the page the form was on (/admin/queue, /admin/messages/12), or the dashboard.
    """
    if not is_local(target):
        return url_for("admin.dashboard")
    path = target.partition("?")[0]
    if _answers_get(path):
        return target
    parts = path.rstrip("/").split("/")  # "", "admin", ...
    for end in range(len(parts) - 1, 2, -1):
        if _answers_get("/".join(parts[:end])):
            return "/".join(parts[:end])
    return url_for("admin.dashboard")


def _answers_get(path: str) -> bool:
    """Return True when ``path`` is a page: a GET on it reaches the rule a POST would."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        rule, _ = adapter.match(path, method="GET", return_rule=True)
    except RequestRedirect:  # a missing trailing slash
        return True
    except HTTPException:  # 404, or 405 for a POST-only action
        return False
    try:  # /admin/models/rollback (POST) would match /admin/models/<version_id> for a GET
        posted, _ = adapter.match(path, method="POST", return_rule=True)
    except HTTPException:
        return True
    return posted.rule == rule.rule


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; check it and start a session."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    if request.method == "GET":
        return render_template("admin/login.html", next=request.args.get("next", ""),
                               notice=LOGIN_NOTICES.get(request.args.get("why", "")))
    if (minutes := login_limit.blocked_minutes()) is not None:  # checked before the password
        flash(TOO_MANY_FAILURES.format(minutes=minutes), "error")
        return _login_again(429, {"Retry-After": str(minutes * 60)})
    db = session()
    result = users.authenticate(session=db, username=request.form.get("username", ""),
                                password=request.form.get("password", ""))
    db.commit()  # failed-login counters are kept even when the login fails
    if not result.ok:
        login_limit.count_failure()
        flash(LOGIN_ERRORS[result.reason], "error")
        return _login_again(401)
    user = result.user
    flask_session.clear()  # nothing of a previous login (skips, focus) carries over
    login_user(LoggedInUser.of(user))
    return redirect(safe_next(request.form.get("next")))


def _login_again(status: int, headers: dict[str, str] | None = None):
    """The login form again after a refused login: the name stays typed (only the password
    is asked again), and so does the page to go to."""
    page = render_template("admin/login.html", next=request.form.get("next", ""),
                           username=request.form.get("username", "")[:150])
    return page, status, headers or {}


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session."""
    db = session()
    users.end_sessions(session=db, user_id=user_id())  # copies of the cookie end too
    db.commit()
    logout_user()
    flask_session.clear()  # the queue's skips and focus belong to this login only
    flash("Logged out.", "info")
    return redirect(url_for("admin.login"))


def password_rule(name: str) -> dict[str, object]:
    """What a form asking for a new password shows of the rule (``name``: how it names the
    account's name) and gives the browser to check first (``minlength``)."""
    return {"password_rule": users.password_rule(name),
            "min_length": users.MIN_PASSWORD_LENGTH}


@bp.route("/password")
def password_form():
    """Show the form to change your own password."""
    return render_template("admin/password.html", **password_rule("your username"))


# The Password form's fields, by what services.users names in a UserError.
PASSWORD_FIELDS = {"current": "current_password", "password": "new_password",
                   "repeated": "new_password_again"}


@bp.route("/password", methods=["POST"])
def password_change():
    """Change your own password (any role); a wrong current one counts as a failed login."""
    db = session()
    form = request.form
    try:
        user = users.change_password(session=db, user_id=user_id(),
                              current=form.get("current_password", ""),
                              new=form.get("new_password", ""),
                              repeated=form.get("new_password_again", ""))
    except users.UserError as exc:
        db.commit()  # keeps the failed-attempt count (the only write before an error)
        return fail(sentence(f"Password not changed: {exc.for_ui()}"), "admin.password_form",
                    field=PASSWORD_FIELDS.get(exc.field, ""))
    db.commit()
    login_user(LoggedInUser.of(user))  # other sessions ended with the change; this one goes on
    flash("Your password was changed.", "info")
    return redirect(url_for("admin.dashboard"))
