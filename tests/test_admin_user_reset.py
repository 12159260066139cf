"""An admin resets another account's password on the users page (as `user set-password`)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from spamguard.admin.users import OWN_PASSWORD
from spamguard.models import User
from spamguard.services import users
from spamguard.sqltypes import utcnow
from tests.fixtures_admin import AdminClient, flashes

NEW = "reset-by-an-admin"


def _ids(db_session_factory) -> dict[str, int]:
    with db_session_factory() as session:
        return dict(session.execute(select(User.username, User.id)).all())


def _reset(admin_client, user_id: int, new: str = NEW, again: str | None = None):
    return admin_client.post("/admin/users/password", data={
        "user_id": str(user_id), "new_password": new,
        "new_password_again": new if again is None else again}, follow_redirects=True)


def test_an_admin_resets_a_password_which_ends_its_logins_and_lifts_a_lock(
        app, admin_client, moderator_client, db_session_factory):
    ids = _ids(db_session_factory)
    with db_session_factory() as session:  # locked after failed logins
        session.get(User, ids["moderator"]).locked_until = utcnow() + timedelta(minutes=15)
        session.commit()
    page = admin_client.get("/admin/users").get_data(as_text=True)
    form = page[page.index('id="reset-password"'):]
    assert '<h2>Reset a password</h2>' in form
    # every account but one's own, whose password goes through the Password page
    assert f'<option value="{ids["moderator"]}">moderator</option>' in form
    assert f'value="{ids["admin"]}"' not in form and 'href="/admin/password"' in form
    assert ('data-confirm="Reset the password of the account chosen? Its logins end at '
            'once."') in form
    assert 'name="new_password_again" type="password" minlength="8"' in form
    done = _reset(admin_client, ids["moderator"])
    assert flashes(done) == [("info", "New password set for moderator: their logins have "
                              "ended, on every browser, and a lock after failed logins is "
                              "lifted. Give them the password in a safe way.")]
    assert moderator_client.get("/admin/queue").status_code == 302  # logged out
    assert moderator_client.login().status_code == 401  # the old password is gone
    assert AdminClient(app.test_client(), "moderator").login(NEW).status_code == 302
    with db_session_factory() as session:
        assert users.locked_until(session.get(User, ids["moderator"])) is None


def test_a_refused_reset_changes_nothing_and_keeps_the_account_chosen(
        admin_client, make_user, moderator_client, db_session_factory):
    make_user("zed", "viewer")
    ids = _ids(db_session_factory)
    for new, again, why in [
            (NEW, NEW + "x", "the new password and its repetition differ"),
            ("short", "short", "password must have at least 8 characters"),
            ("Moderator", "Moderator", "password must not be the username"),
            ("password1", "password1", "password is one of the most used passwords, which "
                                       "are guessed first; choose another")]:
        refused = _reset(admin_client, ids["moderator"], new, again)
        assert refused.status_code == 400
        assert flashes(refused) == [("error", f"Password not reset: {why}.")]
        page = refused.get_data(as_text=True)
        assert f'<option value="{ids["moderator"]}" selected>moderator</option>' in page
        assert new not in page.replace("Moderator", "")  # never typed back
    assert moderator_client.get("/admin/queue").status_code == 200  # still logged in
    assert flashes(_reset(admin_client, ids["zed"] + 99)) == [
        ("error", f"Password not reset: no user {ids['zed'] + 99}.")]
    assert flashes(_reset(admin_client, "x")) == [  # type: ignore[arg-type]
        ("error", "Password not reset: choose an account.")]


def test_ones_own_password_goes_through_the_password_page(admin_client, db_session_factory):
    ids = _ids(db_session_factory)
    own = _reset(admin_client, ids["admin"])
    assert flashes(own) == [("error", OWN_PASSWORD)]
    assert "Password" in OWN_PASSWORD and admin_client.get("/admin/users").status_code == 200


def test_only_admins_reset_passwords(moderator_client, viewer_client, db_session_factory):
    ids = _ids(db_session_factory)
    for client in (moderator_client, viewer_client):
        other = ids["viewer" if client is moderator_client else "moderator"]
        refused = client.post("/admin/users/password", data={
            "user_id": str(other), "new_password": NEW, "new_password_again": NEW})
        assert refused.status_code == 403
    assert viewer_client.get("/admin/queue").status_code == 200  # nobody was reset
    assert moderator_client.get("/admin/queue").status_code == 200
