"""The models page's hold on automatic promotion: banner, Hold and Release (admins only,
asked first), Roll back holding, Promote's note."""

from __future__ import annotations

from html import unescape

from spamguard.db import session_scope
from spamguard.services import promotion_hold
from tests.fixtures_admin import flashes


def _hold(factory, reason: str | None = "checking", by: str = "alice") -> None:
    with session_scope(factory) as session:
        promotion_hold.hold(session, reason=reason, by=by)


def _current(factory):
    with session_scope(factory) as session:
        return promotion_hold.current(session)


def _form(page: str, action: str) -> str:
    """The form posting to ``action``, up to its end."""
    form = page[page.index(f'action="{action}"'):]
    return form[:form.index("</form>")]


def test_admins_hold_and_release_with_a_question_first(admin_client, db_session_factory):
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert "Automatic promotion is on hold" not in page
    form = _form(page, "/admin/models/hold")
    assert 'name="reason"' in form and 'name="csrf_token"' in form
    assert 'data-confirm="Hold automatic promotion? Retraining then makes no new version ' \
           'active until the hold is released.">Hold automatic promotion</button>' in form
    assert "/admin/models/release" not in page

    held = admin_client.post("/admin/models/hold", data={"reason": "spam wave\nchecking"},
                             follow_redirects=True)
    assert ("info", "Automatic promotion is now on hold: retraining still trains, compares "
            "and reports, but makes no version active until the hold is released.") in \
        flashes(held)
    hold = _current(db_session_factory)
    assert (hold.created_by, hold.reason) == ("admin", "spam wave checking")
    page = held.get_data(as_text=True)
    assert "<strong>Automatic promotion is on hold</strong> since " in page
    assert " by admin: <bdi>spam wave checking</bdi>.</p>" in page
    assert 'action="/admin/models/hold"' not in page  # held: no second form
    release = _form(page, "/admin/models/release")
    assert 'name="csrf_token"' in release and 'data-confirm="Release the hold?' in release
    # Retrain now's question says what a run does while held.
    assert "Retrain now? Automatic promotion is on hold, so the new model is registered" in page

    again = admin_client.post("/admin/models/hold", data={"reason": "other"},
                              follow_redirects=True)
    (said,) = [text for _, text in flashes(again)]
    assert said.startswith("Automatic promotion was already on hold since ")
    assert said.endswith(" by admin (spam wave checking); that hold stays.")

    released = admin_client.post("/admin/models/release", follow_redirects=True)
    assert ("info", "Released the hold on automatic promotion: retraining makes its candidate "
            "active again when it is not worse than the active model.") in flashes(released)
    assert _current(db_session_factory) is None
    assert "Automatic promotion is on hold" not in released.get_data(as_text=True)
    stale = admin_client.post("/admin/models/release", follow_redirects=True)
    assert ("info", "Automatic promotion was not on hold; nothing changed.") in flashes(stale)


def test_without_a_csrf_token_nothing_is_held(admin_client, db_session_factory):
    response = admin_client.client.post("/admin/models/hold", data={"reason": "x"})
    assert response.status_code == 400
    assert _current(db_session_factory) is None


def test_moderators_and_viewers_see_the_banner_but_cannot_hold_or_release(
        moderator_client, viewer_client, db_session_factory):
    for client in (moderator_client, viewer_client):
        page = client.get("/admin/models").get_data(as_text=True)
        assert "Hold automatic promotion" not in page and "/admin/models/hold" not in page
        assert client.post("/admin/models/hold", data={"reason": "x"}).status_code == 403
    assert _current(db_session_factory) is None
    _hold(db_session_factory)
    for client in (moderator_client, viewer_client):
        page = client.get("/admin/models").get_data(as_text=True)
        assert "<strong>Automatic promotion is on hold</strong>" in page
        assert " by alice: <bdi>checking</bdi>.</p>" in page
        assert "/admin/models/release" not in page
        assert client.post("/admin/models/release").status_code == 403
    assert _current(db_session_factory) is not None


def test_the_banner_escapes_the_reason_and_who(viewer_client, db_session_factory):
    _hold(db_session_factory, reason="<script>alert(1)</script> & <b>bold</b>",
          by='<img src=x onerror="alert(2)">')
    page = viewer_client.get("/admin/models").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "<b>bold</b>" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    banner = page[page.index('class="hold-banner"'):]
    assert 'by &lt;img src=x onerror=&#34;alert(2)&#34;&gt;: <bdi>&lt;script&gt;' in \
        banner[:banner.index("</div>")]


def test_roll_back_holds_and_promote_says_the_hold_stays(admin_client, two_versions,
                                                          db_session_factory):
    first, second = two_versions
    admin_client.post(f"/admin/models/{second}/promote")
    assert _current(db_session_factory) is None  # promoting holds nothing
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert "automatic promotion is put on hold" in _form(page, "/admin/models/rollback")
    back = admin_client.post("/admin/models/rollback", follow_redirects=True)
    assert ("info", f"Rolled back: version {first} is active again. Automatic promotion is "
            "now on hold, so retraining will not replace it; release the hold on this page "
            "when the active model may be replaced again.") in flashes(back)
    hold = _current(db_session_factory)
    assert (hold.created_by, hold.reason) == ("admin", f"rollback from {second} to {first}")
    assert f"by admin: <bdi>rollback from {second} to {first}</bdi>.</p>" in unescape(
        back.get_data(as_text=True))

    promoted = admin_client.post(f"/admin/models/{second}/promote", follow_redirects=True)
    (said,) = [text for _, text in flashes(promoted)]
    assert said.startswith(f"Version {second} is now active. Automatic promotion is still "
                           "on hold since ")
    assert said.endswith(f" by admin (rollback from {second} to {first}): retraining will not "
                         "replace this version until the hold is released on this page.")
    assert _current(db_session_factory).id == hold.id  # the hold stays

    again = admin_client.post("/admin/models/rollback", follow_redirects=True)
    (said,) = [text for _, text in flashes(again)]
    assert said.startswith(f"Rolled back: version {first} is active again. Automatic "
                           "promotion was already on hold since ")
    assert said.endswith("; that hold stays.")


def test_a_refused_roll_back_holds_nothing(admin_client, two_versions, db_session_factory):
    refused = admin_client.post("/admin/models/rollback", follow_redirects=True)
    assert "no previously active version" in refused.get_data(as_text=True)
    assert _current(db_session_factory) is None


def test_the_dashboard_says_promotion_is_held_and_links_to_models(viewer_client,
                                                                    db_session_factory):
    """A held run exits 0 (cron is silent), so a forgotten hold would keep every new model
    out of service unseen: the dashboard says so, escaped, with the way to the Release
    button; nothing when no hold is in force."""
    assert "hold-banner" not in viewer_client.get("/admin/dashboard").get_data(as_text=True)
    _hold(db_session_factory, reason="<b>rolled back</b>", by="alice")
    page = viewer_client.get("/admin/dashboard").get_data(as_text=True)
    banner = page[page.index('class="hold-banner"'):]
    banner = banner[:banner.index("</p>")]
    assert "Automatic promotion is on hold" in banner and "by alice" in banner
    assert "&lt;b&gt;rolled back&lt;/b&gt;" in banner and "<b>rolled" not in banner
    assert 'href="/admin/models"' in banner
    with session_scope(db_session_factory) as session:
        promotion_hold.release(session, by="alice")
    assert "hold-banner" not in viewer_client.get("/admin/dashboard").get_data(as_text=True)
    _hold(db_session_factory, reason="Checking v2.", by="alice")  # one full stop, not two
    for url in ("/admin/dashboard", "/admin/models"):
        page = viewer_client.get(url).get_data(as_text=True)
        assert "by alice: <bdi>Checking v2</bdi>." in page and "Checking v2.." not in page, url
