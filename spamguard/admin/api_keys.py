"""Admins create, list and revoke JSON API keys (as `spamguard api-key` does).

A new key is shown once, on the page that answers the form: never through a redirect, which
would have to carry it in the session cookie. Admin pages are sent with ``Cache-Control:
no-store`` (spamguard.admin.security), so the browser does not keep that page either.

Reloading that page sends the form again. So that this does not make a second key, each
form carries a random id (``form_id``), and the ids of forms that made a key are kept in
the login's signed session with that key's id: a form sent again is refused, and says
which key it made.
"""

from __future__ import annotations

import secrets

from flask import flash, render_template, request
from flask import session as cookie
from flask_login import current_user

from spamguard.admin.base import bp, role_required, run_action, session
from spamguard.models import ApiKey
from spamguard.services import apikeys

SENT_FORMS = "api_key_forms"  # session entry: [[form id, key id], ...], oldest first
KEPT_FORMS = 20  # forms remembered per login session, so the signed cookie stays small


def _page(*, created: tuple[object, str] | None = None, typed: dict | None = None,
          status: int = 200, error_field: str = ""):
    """The API keys page; ``created`` is (row, plaintext) of a key made just now, ``typed``
    refills the form after a refusal and ``error_field`` names its field at fault ("name"
    or "scope"). Each page's form gets a new id."""
    keys = apikeys.list_api_keys(session=session())
    return render_template("admin/api_keys.html", keys=keys, created=created,
                           typed=typed or {}, scopes=apikeys.SCOPE_HELP,
                           key_scopes=apikeys.key_scopes, error_field=error_field,
                           form_id=secrets.token_urlsafe(16)), status


def _made_by(form_id: str) -> int | None:
    """The id of the key the form ``form_id`` made in this login session, if it made one."""
    return dict(cookie.get(SENT_FORMS, [])).get(form_id) if form_id else None


def _sent_again(key_id: int) -> str:
    """What a form sent a second time (a reload of the page that showed its key) is told."""
    row = session().get(ApiKey, key_id)
    made = f"API key {key_id}" + (f" ({row.name})" if row is not None else "")
    if row is None or row.revoked_at is not None:
        return (f"This form was already sent: {made} was created from it, and has been "
                "revoked since. Its value was shown once; create a new key if you need one.")
    return (f"This form was already sent: {made} was created from it. Its value was shown "
            "once; revoke it and create a new one if you lost it.")


@bp.route("/api-keys")
@role_required("admin")
def api_key_list():
    """Every API key (never the keys themselves), with a form to create one."""
    return _page()


@bp.route("/api-keys", methods=["POST"])
@role_required("admin")
def api_key_create():
    """Create a key from the form and show it this once; a refusal is a 400 that keeps the
    typed name and ticked scopes. The same form sent again (the page reloaded) is refused
    with a 409 and makes no key."""
    name, scopes = request.form.get("name", ""), request.form.getlist("scope")
    form_id = request.form.get("form_id", "")[:64]
    if (made := _made_by(form_id)) is not None:
        flash(_sent_again(made), "error")
        return _page(status=409)
    db = session()
    try:
        row, plaintext = apikeys.create_api_key(session=db, name=name, scopes=scopes,
                                                by=current_user.username)
    except apikeys.ApiKeyError as exc:
        db.rollback()
        flash(f"API key not created: {exc.for_ui()}", "error")
        return _page(typed={"name": name[:150], "scopes": scopes}, status=400,
                     error_field=exc.field)
    db.commit()
    if form_id:
        cookie[SENT_FORMS] = [*cookie.get(SENT_FORMS, []), [form_id, row.id]][-KEPT_FORMS:]
    return _page(created=(row, plaintext))


@bp.route("/api-keys/<integer_id:key_id>/revoke", methods=["POST"])
@role_required("admin")
def api_key_revoke(key_id: int):
    """Revoke a key: requests with it get 401 at once."""
    return run_action(
        lambda db: apikeys.revoke_api_key(session=db, key_ref=str(key_id),
                                           by=current_user.username),
        done=lambda result: (f"Revoked API key {result[0].id} ({result[0].name})." if result[1]
                             else f"API key {result[0].id} ({result[0].name}) was already "
                                  "revoked."),
        endpoint="admin.api_key_list")
