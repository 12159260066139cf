"""Admins create, list and revoke JSON API keys (as `spamguard api-key` does).

A new key is shown once, on the page that answers the form: never through a redirect, which
would have to carry it in the session cookie. Admin pages are sent with ``Cache-Control:
no-store`` (spamguard.admin.security), so the browser does not keep that page either.
"""

from __future__ import annotations

from flask import flash, render_template, request

from spamguard.admin.base import bp, role_required, run_action, session
from spamguard.services import apikeys


def _page(*, created: tuple[object, str] | None = None, typed: dict | None = None,
          status: int = 200):
    """The API keys page; ``created`` is (row, plaintext) of a key made just now, ``typed``
    refills the form after a refusal."""
    keys = apikeys.list_api_keys(session=session())
    return render_template("admin/api_keys.html", keys=keys, created=created,
                           typed=typed or {}, scopes=apikeys.SCOPE_HELP,
                           key_scopes=apikeys.key_scopes), status


@bp.route("/api-keys")
@role_required("admin")
def api_key_list():
    """Every API key (never the keys themselves), with a form to create one."""
    return _page()


@bp.route("/api-keys", methods=["POST"])
@role_required("admin")
def api_key_create():
    """Create a key from the form and show it this once; a refusal is a 400 that keeps the
    typed name and ticked scopes."""
    name, scopes = request.form.get("name", ""), request.form.getlist("scope")
    db = session()
    try:
        row, plaintext = apikeys.create_api_key(session=db, name=name, scopes=scopes)
    except apikeys.ApiKeyError as exc:
        db.rollback()
        flash(f"API key not created: {exc.for_ui()}", "error")
        return _page(typed={"name": name[:150], "scopes": scopes}, status=400)
    db.commit()
    return _page(created=(row, plaintext))


@bp.route("/api-keys/<integer_id:key_id>/revoke", methods=["POST"])
@role_required("admin")
def api_key_revoke(key_id: int):
    """Revoke a key: requests with it get 401 at once."""
    return run_action(
        lambda db: apikeys.revoke_api_key(session=db, key_ref=str(key_id)),
        done=lambda result: (f"Revoked API key {result[0].id} ({result[0].name})." if result[1]
                             else f"API key {result[0].id} ({result[0].name}) was already "
                                  "revoked."),
        endpoint="admin.api_key_list")
