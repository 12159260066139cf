"""The admin UI's API keys page: create (shown once), list, revoke; admins only."""

from __future__ import annotations

import re

from spamguard.models import ApiKey
from spamguard.services import apikeys


def _new_key(page: str) -> str:
    match = re.search(r'id="new-key" readonly value="(sg_[^"]+)"', page)
    assert match, page
    return match.group(1)


def test_an_admin_creates_a_scoped_key_that_is_shown_once_and_works(admin_client, client,
                                                                   db_session_factory):
    made = admin_client.post("/admin/api-keys", data={"name": "twilio <gw>",
                                                      "scope": ["submit"]})
    assert made.status_code == 200
    assert made.headers["Cache-Control"] == "no-store"
    page = made.get_data(as_text=True)
    key = _new_key(page)
    assert "API key 1 (twilio &lt;gw&gt;) created" in page and "<gw>" not in page
    assert "It may: submit." in page
    with db_session_factory() as session:
        row = session.get(ApiKey, 1)
        assert row.key_hash == apikeys.hash_key(key) and row.scopes == "submit"
    # the list never shows the key again, only its prefix
    listing = admin_client.get("/admin/api-keys").get_data(as_text=True)
    assert key not in listing and f"<code>{key[:12]}</code>" in listing
    assert "<td>submit</td>" in listing
    # the key does what its scope allows, and no more
    bearer = {"Authorization": f"Bearer {key}"}
    assert client.post("/api/v1/classify", json={"texts": ["hi"]},
                       headers=bearer).status_code == 403


def test_revoking_from_the_page_refuses_the_key_at_once(admin_client, client):
    key = _new_key(admin_client.post("/admin/api-keys", data={
        "name": "old", "scope": ["classify"]}).get_data(as_text=True))
    bearer = {"Authorization": f"Bearer {key}"}
    assert client.post("/api/v1/classify", json={"texts": ["hi"]},
                       headers=bearer).status_code in (200, 503)  # 503: no model loaded
    listing = admin_client.get("/admin/api-keys").get_data(as_text=True)
    assert 'data-confirm="Revoke API key 1 (old)? Requests with it are refused at once."' in (
        listing)
    done = admin_client.post("/admin/api-keys/1/revoke", follow_redirects=True)
    page = done.get_data(as_text=True)
    assert "Revoked API key 1 (old)." in page and "revoked " in page
    assert 'aria-label="Revoke API key 1 (old)"' not in page  # no button on a revoked key
    assert client.post("/api/v1/classify", json={"texts": ["hi"]},
                       headers=bearer).status_code == 401
    again = admin_client.post("/admin/api-keys/1/revoke", follow_redirects=True)
    assert "API key 1 (old) was already revoked." in again.get_data(as_text=True)
    missing = admin_client.post("/admin/api-keys/99/revoke", follow_redirects=True)
    text = missing.get_data(as_text=True)
    assert "no API key &#39;99&#39;" in text and "spamguard api-key list" not in text


def test_a_refused_key_keeps_the_typed_name_and_ticks(admin_client, db_session_factory):
    no_scope = admin_client.post("/admin/api-keys", data={"name": "reader"})
    assert no_scope.status_code == 400
    page = no_scope.get_data(as_text=True)
    assert "API key not created: an API key needs at least one scope" in page
    assert 'value="reader"' in page and 'name="scope" value="submit" checked' not in page
    bad_name = admin_client.post("/admin/api-keys", data={"name": "a\nb", "scope": ["read"]})
    assert bad_name.status_code == 400
    page = bad_name.get_data(as_text=True)
    assert "line break" in page and 'name="scope" value="read" checked' in page
    assert 'name="scope" value="submit" checked' not in page
    with db_session_factory() as session:
        assert session.query(ApiKey).count() == 0
    fresh = admin_client.get("/admin/api-keys").get_data(as_text=True)
    assert all(f'name="scope" value="{s}" checked' in fresh for s in apikeys.SCOPES)


def test_a_name_already_used_by_a_live_key_is_a_form_error(admin_client, db_session_factory):
    assert admin_client.post("/admin/api-keys", data={"name": "Gateway",
                                                      "scope": ["submit"]}).status_code == 200
    taken = admin_client.post("/admin/api-keys", data={"name": " gateway ", "scope": ["read"]})
    assert taken.status_code == 400
    page = taken.get_data(as_text=True)
    assert "API key not created: an API key named &#39;Gateway&#39; already exists" in page
    assert 'value=" gateway "' in page and 'name="scope" value="read" checked' in page
    with db_session_factory() as session:
        assert [k.name for k in session.query(ApiKey)] == ["Gateway"]


def test_api_keys_page_is_for_admins_only(admin_client, moderator_client, client):
    assert moderator_client.get("/admin/api-keys").status_code == 403
    assert moderator_client.post("/admin/api-keys", data={"name": "x"}).status_code == 403
    assert moderator_client.post("/admin/api-keys/1/revoke").status_code == 403
    assert "/admin/api-keys" not in moderator_client.get("/admin/queue").get_data(as_text=True)
    assert 'href="/admin/api-keys"' in admin_client.get("/admin/queue").get_data(as_text=True)
    anonymous = client.get("/admin/api-keys")
    assert anonymous.status_code == 302 and "/admin/login" in anonymous.headers["Location"]


FORM_ID = re.compile(r'name="form_id" value="([^"]+)"')


def _form_id(response) -> str:
    found = FORM_ID.search(response.get_data(as_text=True))
    return found.group(1) if found else ""


def test_the_same_form_sent_again_makes_no_second_key(admin_client, db_session_factory):
    """Reloading the page that shows a new key sends its form again: refused, saying which
    key that form made, and no key is made (nor after that key was revoked, when the name
    would be free again)."""
    from tests.fixtures_admin import flashes

    form = {"name": "gateway", "scope": ["submit"],
            "form_id": _form_id(admin_client.get("/admin/api-keys"))}
    made = admin_client.post("/admin/api-keys", data=form)
    assert made.status_code == 200
    again = admin_client.post("/admin/api-keys", data=form)
    assert again.status_code == 409
    assert flashes(again) == [("error", "This form was already sent: API key 1 (gateway) was "
                               "created from it. Its value was shown once; revoke it and "
                               "create a new one if you lost it.")]
    page = again.get_data(as_text=True)
    assert 'id="new-key"' not in page  # no key shown, none made
    fresh = _form_id(again)
    assert fresh != form["form_id"] and fresh != _form_id(made)  # each page's is a new one
    admin_client.post("/admin/api-keys/1/revoke", follow_redirects=True)
    revoked = admin_client.post("/admin/api-keys", data=form)
    assert revoked.status_code == 409
    assert flashes(revoked) == [("error", "This form was already sent: API key 1 (gateway) "
                                 "was created from it, and has been revoked since. Its value "
                                 "was shown once; create a new key if you need one.")]
    with db_session_factory() as session:
        assert [k.id for k in session.query(ApiKey)] == [1]
    # The form of the page that showed the key makes the next one.
    next_form = {**form, "form_id": _form_id(made)}
    assert admin_client.post("/admin/api-keys", data=next_form).status_code == 200
    with db_session_factory() as session:
        assert [k.name for k in session.query(ApiKey).order_by(ApiKey.id)] == ["gateway"] * 2


def test_the_new_key_has_a_copy_button_for_javascript(admin_client):
    page = admin_client.post("/admin/api-keys", data={"name": "gw", "scope": ["submit"]}
                             ).get_data(as_text=True)
    # hidden until admin.js finds a clipboard; the key stays selectable text without it
    assert ('<button type="button" class="btn small" data-copy="new-key" '
            'data-copy-said="new-key-copied" hidden>Copy</button>') in page
    assert '<p class="copy-said small" id="new-key-copied" role="status" ' \
           'aria-live="polite"></p>' in page
    assert "<script>" not in page and "onclick" not in page  # the CSP allows files only
