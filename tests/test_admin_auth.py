"""Logging in and out, lock-out, roles, account management pages."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from spamguard.admin.security import SESSION_ENDED
from spamguard.models import User
from tests.fixtures_admin import PASSWORD, TOKEN, AdminClient, csrf_token, flashes

PAGES = ["/admin/dashboard", "/admin/queue", "/admin/messages", "/admin/campaigns",
         "/admin/models"]


@pytest.mark.parametrize("url", [*PAGES, "/admin/users"])
def test_pages_need_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]


def test_login_and_logout(app, make_user):
    make_user("mo", "moderator")
    client = AdminClient(app.test_client(), "mo")
    bad = client.login("wrong-password")
    assert bad.status_code == 401 and "Wrong username or password" in bad.get_data(as_text=True)
    # A NUL in the name: no account, as on SQLite (PostgreSQL refused the query: a 500).
    nul = AdminClient(app.test_client(), "mo\x00").login()
    assert nul.status_code == 401 and "Wrong username or password" in nul.get_data(as_text=True)
    assert client.login().status_code == 302
    assert "mo" in client.get("/admin/queue").get_data(as_text=True)
    with client.client.session_transaction() as cookie:
        cookie["queue_skip"] = [1, 2]  # the queue's state of this login
    assert client.post("/admin/logout").status_code == 302
    assert client.get("/admin/queue").status_code == 302
    with client.client.session_transaction() as cookie:
        assert "queue_skip" not in cookie  # the next person on this browser starts clean


def test_login_redirects_only_to_local_pages(app, make_user):
    make_user("mo", "moderator")
    client = app.test_client()
    for target, expected in [("/admin/messages", "/admin/messages"),
                             ("https://evil.example/", "/admin/dashboard"),
                             ("//evil.example/admin", "/admin/dashboard")]:
        response = client.post("/admin/login", data={
            "username": "mo", "password": PASSWORD, "next": target,
            "csrf_token": csrf_token(client)})
        assert response.headers["Location"] == expected
        client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/queue")})


@pytest.mark.parametrize(("target", "expected"), [
    ("/admin/queue/decide", "/admin/queue"),
    ("/admin/queue/undo", "/admin/queue"),
    ("/admin/messages?review=spam", "/admin/messages?review=spam"),
    ("/admin/messages/bulk", "/admin/messages"),
    ("/admin/messages/12/review", "/admin/messages/12"),
    ("/admin/campaigns/3/label", "/admin/campaigns"),
    ("/admin/models/rollback", "/admin/models"),  # not the page of a version "rollback"
    ("/admin/users", "/admin/users"),
    ("/admin/logout", "/admin/dashboard"),
    ("/admin/no/such/page", "/admin/dashboard"),
    ("/admin/messages?q=a\nb", "/admin/dashboard"),  # no header line break: a 500 before
    ("/admin/messages?q=a\rb", "/admin/dashboard"),
])
def test_login_goes_back_to_a_page_not_to_a_post_only_action(app, make_user, target,
                                                              expected):
    make_user("mo", "moderator")
    client = app.test_client()
    response = client.post("/admin/login", data={
        "username": "mo", "password": PASSWORD, "next": target,
        "csrf_token": csrf_token(client)})
    assert response.headers["Location"] == expected


def test_a_form_sent_after_the_login_expired_leads_back_to_its_page(moderator_client,
                                                                    add_messages):
    (mid,) = add_messages(("unsure", 0.5))
    with moderator_client.client.session_transaction() as cookie:
        del cookie["_user_id"]  # the login expired; the form's CSRF token is still good
    sent = moderator_client.post("/admin/queue/decide", data={
        "message_id": mid, "label": "spam", "seen": "none"})
    assert sent.status_code == 302 and "/admin/login?next=" in sent.headers["Location"]
    form = moderator_client.get(sent.headers["Location"]).get_data(as_text=True)
    assert 'name="next" value="/admin/queue/decide"' in form
    logged_in = moderator_client.client.post("/admin/login", data={
        "username": "moderator", "password": PASSWORD, "next": "/admin/queue/decide",
        "csrf_token": csrf_token(moderator_client.client)})
    assert logged_in.headers["Location"] == "/admin/queue"
    assert moderator_client.get("/admin/queue").status_code == 200


def test_admins_change_roles_and_unlock_accounts_on_the_users_page(
        app, make_user, admin_client, moderator_client, db_session_factory):
    """A role takes effect at the account's next request; an admin cannot change their
    own; a locked account gets an Unlock button that lifts the lock at once."""
    from spamguard.models import User
    from tests.fixtures_admin import TOKEN

    mo = make_user("mo", "moderator")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert f'action="/admin/users/{mo}/role"' in page
    done = admin_client.post(f"/admin/users/{mo}/role", data={"role": "viewer"},
                             follow_redirects=True)
    assert "User mo is now a viewer." in done.get_data(as_text=True)
    client = AdminClient(app.test_client(), "mo")
    assert client.login().status_code == 302
    assert client.get("/admin/queue").status_code == 200
    token = TOKEN.search(client.get("/admin/dashboard").get_data(as_text=True)).group(1)
    refused = client.client.post("/admin/queue/skip", data={"message_id": 1,
                                                            "csrf_token": token})
    assert refused.status_code == 403  # a viewer now
    odd = admin_client.post(f"/admin/users/{mo}/role", data={"role": "root"},
                            follow_redirects=True)
    assert "role must be one of" in odd.get_data(as_text=True)
    assert moderator_client.post(f"/admin/users/{mo}/role",
                                 data={"role": "admin"}).status_code == 403
    with db_session_factory() as session:
        own = session.query(User).filter_by(role="admin").one().id
    said = admin_client.post(f"/admin/users/{own}/role", data={"role": "viewer"},
                             follow_redirects=True).get_data(as_text=True)
    assert "You cannot change your own role." in said
    client.post("/admin/logout")
    for _ in range(5):
        client.login("wrong-password")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert "locked until" in page and f'action="/admin/users/{mo}/unlock"' in page
    admin_client.post(f"/admin/users/{mo}/unlock")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert "locked until" not in page and client.login().status_code == 302


def test_lockout_after_failures(app, make_user, admin_client):
    make_user("mo", "moderator")
    client = AdminClient(app.test_client(), "mo")
    for _ in range(5):
        client.login("wrong-password")
    locked = client.login()
    assert locked.status_code == 401 and "is locked for 15 minutes" in locked.get_data(
        as_text=True)
    assert client.get("/admin/queue").status_code == 302
    assert "locked until" in admin_client.get("/admin/users").get_data(as_text=True)


def test_login_answers_do_not_tell_which_names_are_accounts(app, make_user):
    make_user("mo", "moderator")

    def answer(username: str, password: str) -> tuple[int, str]:
        client = app.test_client()
        response = client.post("/admin/login", data={
            "username": username, "password": password, "csrf_token": csrf_token(client)})
        page = response.get_data(as_text=True)
        # The form keeps the name as typed, for an account or not; the rest is the same.
        assert f'name="username" autocomplete="username" required value="{username}">' in page
        return response.status_code, TOKEN.sub("", page.replace(f'value="{username}"', "NAME"))

    unknown = answer("nobody", "wrong-password")
    assert unknown[0] == 401 and "Wrong username or password" in unknown[1]
    for _ in range(5):  # the fifth locks mo
        assert answer("mo", "wrong-password") == unknown
        assert answer("nobody", "wrong-password") == unknown  # never "locked"
    assert answer("mo", PASSWORD) == unknown  # locked: the right password gets it too
    assert answer("mo", "wrong-password") == unknown


@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders_for_a_viewer(viewer_client, url):
    assert viewer_client.get(url).status_code == 200


def test_every_page_starts_with_a_skip_link_to_its_content(viewer_client, client):
    for page in (viewer_client.get("/admin/queue"), client.get("/admin/login")):
        html = page.get_data(as_text=True)
        assert html.index('<a class="skip-link" href="#main">') < html.index("<header")
        assert '<main class="page" id="main" tabindex="-1">' in html


def test_each_enable_or_disable_button_names_its_user(admin_client, make_user):
    make_user("dora", "moderator")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert 'aria-label="Disable dora" data-confirm="Disable dora? ' in page


def test_users_page_is_admin_only(admin_client, moderator_client):
    assert moderator_client.get("/admin/users").status_code == 403
    assert moderator_client.post("/admin/users", data={
        "username": "x1", "password": "long-enough", "role": "admin"}).status_code == 403
    response = admin_client.post("/admin/users", data={
        "username": "newbie", "password": "long-enough", "role": "viewer"},
        follow_redirects=True)
    assert "Created viewer newbie" in response.get_data(as_text=True)
    short = admin_client.post("/admin/users", data={
        "username": "newbie2", "password": "short", "role": "viewer"}, follow_redirects=True)
    assert "at least 8 characters" in short.get_data(as_text=True)


@pytest.mark.parametrize(("url", "field", "hint_id", "name"), [
    ("/admin/users", "password", "password-rule", "the username"),
    ("/admin/users", "new_password", "reset-password-rule", "the username"),  # a reset
    ("/admin/password", "new_password", "new-password-rule", "your username"),
])
def test_new_password_fields_state_the_rule_the_check_uses(admin_client, make_user,
                                                           monkeypatch, url, field, hint_id,
                                                           name):
    """Beside the field, read with it by screen readers (aria-describedby), for the browser
    to check first (minlength), made from the same constant as the check: with it at 12,
    the page says 12 and the check refuses 11 characters."""
    from spamguard.services import users

    monkeypatch.setattr(users, "MIN_PASSWORD_LENGTH", 12)
    make_user("mo")  # another account, whose password the users page can reset
    page = admin_client.get(url).get_data(as_text=True)
    assert (f'<input name="{field}" type="password" minlength="12" required '
            f'autocomplete="new-password" aria-describedby="{hint_id}">') in page
    assert (f'<p class="hint" id="{hint_id}">At least 12 characters that are not spaces, and '
            f"neither {name} nor one of the most used passwords.</p>") in page
    assert 'minlength="8"' not in page
    eleven = "eleven-char"
    refused = admin_client.post("/admin/users", data={
        "username": "newbie", "password": eleven, "role": "viewer"}, follow_redirects=True)
    assert "password must have at least 12 characters" in refused.get_data(as_text=True)


def test_the_username_field_states_the_rule_the_check_uses(admin_client, monkeypatch,
                                                           db_session_factory):
    """Under the field, read with it (aria-describedby), made from the constants the check
    uses: changed, the hint and the check change alike. No pattern attribute: capitals,
    which the check accepts and stores in lower case, must reach it."""
    from spamguard.services import users

    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert ('<input name="username" required minlength="2" autocomplete="off" '
            'aria-describedby="username-rule" value="">') in page
    assert ('<p class="hint" id="username-rule">2 to 64 characters: letters a-z, digits 0-9 '
            'and . _ - @ (capitals are stored in lower case).</p>') in page
    assert "pattern=" not in page
    created = admin_client.post("/admin/users", data={
        "username": "Grace.H@Example", "password": "long-enough-secret", "role": "viewer"},
        follow_redirects=True)
    assert ("info", "Created viewer grace.h@example.") in flashes(created)

    monkeypatch.setattr(users, "MIN_USERNAME_LENGTH", 4)
    monkeypatch.setattr(users, "MAX_USERNAME_LENGTH", 6)
    monkeypatch.setattr(users, "USERNAME_MARKS", "_")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert 'minlength="4"' in page
    assert ('<p class="hint" id="username-rule">4 to 6 characters: letters a-z, digits 0-9 '
            'and _ (capitals are stored in lower case).</p>') in page
    for name in ("abc", "abcdefg", "ab.cd"):
        refused = admin_client.post("/admin/users", data={
            "username": name, "password": "long-enough-secret", "role": "viewer"})
        assert flashes(refused) == [("error", "User not created: username must be 4-6 "
                                              "characters of a-z, 0-9, '_'.")], name
    assert ("info", "Created viewer ab_cd.") in flashes(admin_client.post(
        "/admin/users", data={"username": "AB_CD", "password": "long-enough-secret",
                              "role": "viewer"}, follow_redirects=True))


def test_a_refused_new_user_keeps_the_typed_name_and_role_but_not_the_password(admin_client,
                                                                              make_user):
    make_user("dora", "moderator")
    taken = admin_client.post("/admin/users", data={
        "username": "Dora", "password": "long-enough-secret", "role": "viewer"})
    assert taken.status_code == 400
    page = taken.get_data(as_text=True)
    assert "User not created: user &#39;dora&#39; already exists" in page
    # The field at fault is marked, described by the error, then its rule, and focused.
    assert ('<input name="username" required minlength="2" autocomplete="off" '
            'aria-invalid="true" aria-describedby="page-error username-rule" autofocus '
            'value="Dora">') in page
    assert "<option selected>viewer</option>" in page
    assert "long-enough-secret" not in page
    short = admin_client.post("/admin/users", data={
        "username": "<b>eve</b>", "password": "short", "role": "admin"})
    assert short.status_code == 400
    page = short.get_data(as_text=True)
    assert 'value="&lt;b&gt;eve&lt;/b&gt;"' in page and "<b>eve</b>" not in page
    assert "<option selected>admin</option>" in page
    common = admin_client.post("/admin/users", data={
        "username": "frank", "password": "password", "role": "viewer"})
    assert common.status_code == 400
    assert ("User not created: password is one of the most used passwords"
            in common.get_data(as_text=True))
    own_name = admin_client.post("/admin/users", data={
        "username": "frank.lloyd", "password": "Frank.Lloyd", "role": "viewer"})
    assert own_name.status_code == 400
    assert ("User not created: password must not be the username"
            in own_name.get_data(as_text=True))
    odd_role = admin_client.post("/admin/users", data={
        "username": "frank", "password": "long-enough", "role": "owner"})
    assert odd_role.status_code == 400
    assert "<option selected>moderator</option>" in odd_role.get_data(as_text=True)


def test_disabling_a_user_logs_them_out(admin_client, moderator_client, db_session_factory):
    with db_session_factory() as session:
        ids = dict(session.execute(select(User.username, User.id)).all())
    disabled = admin_client.post(f"/admin/users/{ids['moderator']}/active",
                                 data={"active": "0"}, follow_redirects=True)
    assert "User moderator is now disabled." in disabled.get_data(as_text=True)
    logged_out = moderator_client.get("/admin/queue")
    assert logged_out.status_code == 302
    assert logged_out.headers["Location"].startswith("/admin/login")
    # An admin cannot disable their own account: refused, and nothing changes.
    own = admin_client.post(f"/admin/users/{ids['admin']}/active", data={"active": "0"})
    assert own.status_code == 302 and own.headers["Location"] == "/admin/users"
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert ('<p class="flash flash-error" role="alert" data-announce tabindex="-1" '
            'id="page-error">You cannot disable your own account.</p>') in page
    assert "admin is now disabled" not in page
    with db_session_factory() as session:
        assert dict(session.execute(select(User.username, User.is_active)).all()) == {
            "admin": True, "moderator": False}
    assert admin_client.get("/admin/users").status_code == 200  # still logged in


def test_the_users_page_says_what_happened_in_sentences(admin_client, viewer_client, make_user):
    """Each action's message, done or refused, is a sentence: a capital first, one full
    stop at the end (service errors are lower-case phrases without one)."""
    mo = make_user("mo", "moderator")
    gone = mo + 1000  # no such account
    new_user = {"password": "long-enough-secret", "role": "viewer"}
    steps = [
        ("/admin/users", {"username": "mo", **new_user},
         ("error", "User not created: user 'mo' already exists.")),
        ("/admin/users", {"username": "x", **new_user},
         ("error", "User not created: username must be 2-64 characters of a-z, 0-9, '.', "
                   "'_', '-', '@'.")),
        ("/admin/users", {"username": "newbie", **new_user}, ("info", "Created viewer newbie.")),
        ("/admin/password", {"current_password": "wrong-password", "new_password":
                             "new-long-secret", "new_password_again": "new-long-secret"},
         ("error", "Password not changed: the current password is wrong.")),
        (f"/admin/users/{mo}/role", {"role": "root"},
         ("error", "Role not changed: role must be one of admin, moderator, viewer.")),
        (f"/admin/users/{mo}/role", {"role": "viewer"}, ("info", "User mo is now a viewer.")),
        (f"/admin/users/{mo}/role", {"role": "admin"}, ("info", "User mo is now an admin.")),
        (f"/admin/users/{gone}/role", {"role": "viewer"},
         ("error", f"Role not changed: no user {gone}.")),
        (f"/admin/users/{mo}/active", {"active": "0"}, ("info", "User mo is now disabled.")),
        (f"/admin/users/{mo}/active", {"active": "1"}, ("info", "User mo is now enabled.")),
        (f"/admin/users/{gone}/active", {"active": "0"},
         ("error", f"User not disabled: no user {gone}.")),
        (f"/admin/users/{gone}/active", {"active": "1"},
         ("error", f"User not enabled: no user {gone}.")),
        (f"/admin/users/{mo}/unlock", {}, ("info", "User mo was not locked.")),  # nothing to do
        (f"/admin/users/{gone}/unlock", {}, ("error", f"User not unlocked: no user {gone}.")),
    ]
    for url, data, expected in steps:
        client = viewer_client if url == "/admin/password" else admin_client
        assert flashes(client.post(url, data=data, follow_redirects=True)) == [expected], url


def test_a_disabled_moderator_is_told_the_account_is_disabled(admin_client, moderator_client,
                                                             add_messages,
                                                             db_session_factory):
    """Not "you were no longer logged in" nor "please log in": logging in again would not
    help. Said on the next page and on the next form sent (a queue decision)."""
    (mid,) = add_messages(("unsure", 0.5))
    with db_session_factory() as session:
        mo_id = session.scalars(select(User.id).where(User.username == "moderator")).one()
    admin_client.post(f"/admin/users/{mo_id}/active", data={"active": "0"})
    page = moderator_client.get("/admin/queue", follow_redirects=True).get_data(as_text=True)
    assert "Your account has been disabled" in page and "Ask an admin" in page
    assert "Please log in" not in page
    said = _decide_logged_out(moderator_client, mid)
    assert "That was not recorded: your account has been disabled" in said
    assert "no longer logged in" not in said
    login = moderator_client.login()
    assert login.status_code == 401 and "Ask an admin" in login.get_data(as_text=True)


def _decide_logged_out(client, message_id: int) -> str:
    """Label a message from the queue with a login that has ended: the page it leads to."""
    sent = client.post("/admin/queue/decide", data={
        "message_id": message_id, "label": "spam", "seen": "none"}, follow_redirects=True)
    return sent.get_data(as_text=True)


def _delete_user(session_factory, username: str) -> int:
    """Delete the account by hand (the UI and CLI only disable): return its id."""
    from sqlalchemy import delete

    with session_factory() as session:
        user_id = session.scalars(select(User.id).where(User.username == username)).one()
        session.execute(delete(User).where(User.id == user_id))
        session.commit()
    return user_id


def test_a_deleted_moderator_is_told_the_account_no_longer_exists(moderator_client,
                                                                 add_messages,
                                                                 db_session_factory):
    """Said on the next page and on the next form sent; the login page still answers the
    name as any unknown one (it does not tell which names were accounts)."""
    (mid,) = add_messages(("unsure", 0.5))
    _delete_user(db_session_factory, "moderator")
    page = moderator_client.get("/admin/queue", follow_redirects=True).get_data(as_text=True)
    assert "Your account no longer exists, so you were logged out." in page
    assert "Ask an admin if this is a mistake." in page and "Please log in" not in page
    said = _decide_logged_out(moderator_client, mid)
    assert "That was not recorded: your account no longer exists" in said
    assert "no longer logged in" not in said
    login = moderator_client.login()
    assert login.status_code == 401 and "Wrong username or password" in login.get_data(
        as_text=True) and "no longer exists" not in login.get_data(as_text=True)


def test_a_cookie_not_signed_by_the_app_learns_nothing_of_an_account(app, moderator_client,
                                                                     db_session_factory):
    """A session cookie naming the deleted account's login, signed with another key, is
    no session: the visitor is asked to log in as one with no cookie at all is."""
    from flask import Flask

    with moderator_client.client.session_transaction() as cookie:
        login = cookie["_user_id"]
    _delete_user(db_session_factory, "moderator")
    forger = Flask("forger")
    forger.secret_key = "not-the-key-" + "x" * 32
    forged = app.session_interface.get_signing_serializer(forger).dumps(
        {"_user_id": login, "_fresh": True})

    def answer(client) -> str:
        page = client.get("/admin/queue", follow_redirects=True).get_data(as_text=True)
        return TOKEN.sub("", page)

    visitor = app.test_client()
    visitor.set_cookie("session", forged)
    said = answer(visitor)
    assert "Please log in." in said and "no longer exists" not in said
    assert said == answer(app.test_client())


def test_a_login_of_a_deleted_account_never_becomes_the_next_account(app, make_user,
                                                                     db_session_factory,
                                                                     db_backend):
    """SQLite gives a new account the highest id plus one, so the next account after the
    newest was deleted gets the deleted one's id; new accounts start at a random session
    epoch, so the deleted account's login does not match theirs."""
    make_user("leaver", "moderator")
    leaver = AdminClient(app.test_client(), "leaver")
    assert leaver.login().status_code == 302
    gone = _delete_user(db_session_factory, "leaver")
    new = make_user("newcomer", "admin")
    if db_backend == "sqlite":
        assert new == gone  # what made this possible
    response = leaver.get("/admin/users")
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
    assert "newcomer" not in leaver.get("/admin/dashboard", follow_redirects=True).get_data(
        as_text=True)


def test_change_own_password(app, viewer_client):
    page = viewer_client.get("/admin/dashboard").get_data(as_text=True)
    assert 'href="/admin/password"' in page  # in the layout, beside "Log out"
    assert "Change your password" in viewer_client.get("/admin/password").get_data(
        as_text=True)

    def change(current: str, new: str, again: str | None = None) -> str:
        response = viewer_client.post("/admin/password", data={
            "current_password": current, "new_password": new,
            "new_password_again": new if again is None else again}, follow_redirects=True)
        return response.get_data(as_text=True)

    assert "the current password is wrong" in change("wrong-password", "new-long-secret")
    assert "differ" in change(PASSWORD, "new-long-secret", "new-long-secreT")
    assert "at least 8 characters" in change(PASSWORD, "short")
    assert ("Password not changed: password is one of the most used passwords"
            in change(PASSWORD, "Password"))
    assert "Your password was changed." in change(PASSWORD, "new-long-secret")
    assert viewer_client.get("/admin/queue").status_code == 200  # still logged in
    fresh = AdminClient(app.test_client(), "viewer")
    assert fresh.login().status_code == 401
    assert fresh.login("new-long-secret").status_code == 302


def test_password_change_needs_csrf_and_a_login(client, viewer_client):
    refused = viewer_client.client.post("/admin/password", data={
        "current_password": PASSWORD, "new_password": "new-long-secret",
        "new_password_again": "new-long-secret"})
    assert refused.status_code == 400
    assert client.get("/admin/password").status_code == 302


def test_wrong_current_passwords_lock_the_account(app, moderator_client):
    for _ in range(5):
        moderator_client.post("/admin/password", data={
            "current_password": "wrong-password", "new_password": "new-long-secret",
            "new_password_again": "new-long-secret"})
    locked = moderator_client.post("/admin/password", data={
        "current_password": PASSWORD, "new_password": "new-long-secret",
        "new_password_again": "new-long-secret"}, follow_redirects=True)
    assert "too many wrong passwords: try again after" in locked.get_data(as_text=True)
    assert AdminClient(app.test_client(), "moderator").login().status_code == 401


def _copy_session(app, client) -> AdminClient:
    """A second browser holding a copy of ``client``'s session cookie."""
    copy = AdminClient(app.test_client(), client.username)
    copy.client.set_cookie("session", client.client.get_cookie("session").value)
    copy.token = client.token
    return copy


def test_logout_ends_copies_of_the_session_cookie(app, moderator_client):
    copy = _copy_session(app, moderator_client)
    assert copy.get("/admin/queue").status_code == 200  # a copied cookie works like the original
    assert moderator_client.post("/admin/logout").status_code == 302
    assert copy.get("/admin/queue").status_code == 302  # to the login page
    page = copy.get("/admin/queue", follow_redirects=True).get_data(as_text=True)
    assert "Your session has ended" in page and "Please log in again" in page
    again = AdminClient(app.test_client(), "moderator")
    assert again.login().status_code == 302 and again.get("/admin/queue").status_code == 200


def test_a_decision_sent_after_a_logout_elsewhere_says_it_was_not_recorded(
        app, moderator_client, add_messages, db_session_factory):
    """The queue open in one browser, a logout in another: Ham then leads to the login page,
    which says why and that the decision (label and note) was not recorded. A logout sent
    from the first browser has nothing to record, so it does not say so."""
    from spamguard.models import Message

    (mid,) = add_messages(("unsure", 0.5))
    first, second = _copy_session(app, moderator_client), _copy_session(app, moderator_client)
    assert first.get("/admin/queue").status_code == 200
    assert moderator_client.post("/admin/logout").status_code == 302  # the other browser
    sent = first.post("/admin/queue/decide", data={
        "message_id": mid, "label": "ham", "seen": "none", "note": "a friend"})
    assert sent.status_code == 302 and "/admin/login?next=" in sent.headers["Location"]
    said = flashes(first.get(sent.headers["Location"]))
    assert said == [("error", "That was not recorded: your session has ended (this account "
                     "logged out, or its password changed, in another browser). Please log "
                     "in again.")]
    with db_session_factory() as session:
        assert session.get(Message, mid).review_label is None
    assert flashes(second.post("/admin/logout", follow_redirects=True)) == [
        ("info", SESSION_ENDED)]


def test_password_change_ends_other_sessions_but_not_this_one(app, viewer_client):
    other = _copy_session(app, viewer_client)
    elsewhere = AdminClient(app.test_client(), "viewer")
    assert elsewhere.login().status_code == 302
    response = viewer_client.post("/admin/password", data={
        "current_password": PASSWORD, "new_password": "new-long-secret",
        "new_password_again": "new-long-secret"})
    assert response.status_code == 302
    assert viewer_client.get("/admin/queue").status_code == 200
    assert other.get("/admin/queue").status_code == 302
    assert elsewhere.get("/admin/queue").status_code == 302


def test_disabling_or_resetting_an_account_ends_its_sessions(app, admin_client, login_as,
                                                             db_session_factory):
    from spamguard.db import session_scope
    from spamguard.services import users

    moderator = login_as("moderator")
    with session_scope(db_session_factory) as db:
        users.set_password(session=db, username="moderator", password="reset-by-admin")
    assert moderator.get("/admin/queue").status_code == 302
    assert moderator.login("reset-by-admin").status_code == 302
    with session_scope(db_session_factory) as db:
        user_id = db.scalars(select(User.id).where(User.username == "moderator")).one()
        users.set_active(session=db, user_id=user_id, active=False)
        users.set_active(session=db, user_id=user_id, active=True)
    assert moderator.get("/admin/queue").status_code == 302


def test_a_session_from_before_epochs_must_log_in_again(app, moderator_client):
    from spamguard.admin.security import load_user

    with moderator_client.client.session_transaction() as flask_session:
        user_id, _, epoch = flask_session["_user_id"].partition(".")
    with app.test_request_context():
        assert load_user(f"{user_id}.{epoch}") is not None
        assert load_user(user_id) is None  # an id without epoch: made before revision 0003
        assert load_user(f"{user_id}.{int(epoch) + 1}") is None
        assert load_user("x.y") is None


def test_a_login_ends_after_12_idle_hours_but_not_while_used(moderator_client, monkeypatch):
    from itsdangerous import TimestampSigner

    now = TimestampSigner.get_timestamp(TimestampSigner("x"))
    clock = {"offset": 0}
    monkeypatch.setattr(TimestampSigner, "get_timestamp",
                        lambda self: now + clock["offset"])
    response = moderator_client.get("/admin/dashboard")
    assert response.status_code == 200
    assert "Expires=" in response.headers["Set-Cookie"]  # a timed cookie, renewed on use
    for hours in (11, 22, 33):  # used every 11 hours: still logged in after 33
        clock["offset"] = hours * 3600
        assert moderator_client.get("/admin/dashboard").status_code == 200, hours
    clock["offset"] = (33 + 12) * 3600 + 60  # then 12 hours and a minute of nothing
    response = moderator_client.get("/admin/dashboard")
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]


def test_a_decision_sent_after_the_idle_limit_leads_to_the_login_not_a_csrf_error(
        moderator_client, add_messages, monkeypatch, db_session_factory):
    """Idleness ends the whole session cookie, CSRF secret included: the next decision
    (its form still carries the old token) gets the login page saying it was not
    recorded, then its page again; it was a 400 "form expired" page. Logging out after
    the expiry too."""
    from itsdangerous import TimestampSigner

    from spamguard.models import Message

    (mid,) = add_messages(("unsure", 0.5))
    now = TimestampSigner.get_timestamp(TimestampSigner("x"))
    clock = {"offset": 0}
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now + clock["offset"])
    token = csrf_token(moderator_client.client, "/admin/queue")
    clock["offset"] = 13 * 3600
    for path, data, said in (
            ("/admin/queue/decide", {"message_id": mid, "label": "spam", "seen": "none",
                                     "csrf_token": token}, True),
            ("/admin/logout", {"csrf_token": token}, False)):  # nothing to do again there
        sent = moderator_client.client.post(path, data=data)
        assert sent.status_code == 302 and "/admin/login?next=" in sent.headers["Location"]
        if said:  # an expired cookie: nothing written (see the browser's cross-site test)
            assert "Set-Cookie" not in sent.headers
        page = moderator_client.client.get(sent.headers["Location"]).get_data(as_text=True)
        assert ("That was not recorded: you were no longer logged in" in page) == said
    with db_session_factory() as session:
        assert session.get(Message, mid).review_label is None


def test_a_review_form_lasts_as_long_as_the_login(moderator_client, add_messages, monkeypatch,
                                                   db_session_factory):
    """A form's token lasted 8 hours and a login 12: a queue tab left open 10 hours was
    refused (400), its note lost. Now a token lasts as long as an unused login. One older
    (the login kept alive in another tab) is refused saying the label and note were not
    recorded, quoting the note, with the queue to open again."""
    from itsdangerous import TimestampSigner

    from spamguard.models import Message

    first, second = add_messages(("unsure", 0.5), ("also unsure", 0.5))
    now = TimestampSigner.get_timestamp(TimestampSigner("x"))
    clock = {"offset": 0}
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now + clock["offset"])
    token = csrf_token(moderator_client.client, "/admin/queue")
    clock["offset"] = 10 * 3600
    sent = moderator_client.client.post("/admin/queue/decide", data={
        "message_id": first, "label": "spam", "seen": "none", "csrf_token": token})
    assert sent.status_code == 302 and sent.headers["Location"] == "/admin/queue"
    token = csrf_token(moderator_client.client, "/admin/queue")
    clock["offset"] = 21 * 3600  # used meanwhile in another tab: still logged in
    assert moderator_client.get("/admin/dashboard").status_code == 200
    clock["offset"] = 23 * 3600  # this tab's form is 13 hours old
    refused = moderator_client.client.post("/admin/queue/decide", data={
        "message_id": second, "label": "ham", "seen": "none", "note": "my aunt",
        "csrf_token": token})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert ("That was not recorded: this form was loaded before your last login, or more "
            "than 12 hours ago") in page
    assert "so your ham label was not saved. Your note was not saved: “my aunt”." in page
    assert '<a href="/admin/queue">Back to the page</a>' in page
    with db_session_factory() as session:
        assert session.get(Message, first).review_label == "spam"
        assert session.get(Message, second).review_label is None


def test_the_idle_limit_is_a_setting(app_config, install_model, tiny_model_dir):
    from datetime import timedelta

    from spamguard.app import create_app

    install_model(tiny_model_dir)
    app = create_app({**app_config, "session_idle_hours": 2})
    try:
        assert app.permanent_session_lifetime == timedelta(hours=2)
        assert app.config["WTF_CSRF_TIME_LIMIT"] == 2 * 3600  # a form's token as long
    finally:
        app.extensions["spamguard.db"].dispose()


def _limited_app(app_config, install_model, tiny_model_dir, limit: str):
    from spamguard.app import create_app

    install_model(tiny_model_dir)
    return create_app({**app_config, "login_failure_limit": limit})


def test_failed_logins_from_one_address_are_limited_across_accounts(
        app_config, install_model, tiny_model_dir, make_user):
    """Password spraying: one wrong password per account locks no account, but the address
    runs out of failures; then even a right password is refused from it, not elsewhere."""
    app = _limited_app(app_config, install_model, tiny_model_dir, "3 per 15 minutes")
    try:
        for name in ("ann", "bob", "cyd", "dee"):
            make_user(name)
        sprayer = {"REMOTE_ADDR": "203.0.113.9"}
        for name in ("ann", "bob", "cyd"):
            client = app.test_client()
            response = client.post("/admin/login", environ_base=sprayer, data={
                "username": name, "password": "Winter2026!",
                "csrf_token": csrf_token(client)})
            assert response.status_code == 401
        client = app.test_client()
        refused = client.post("/admin/login", environ_base=sprayer, data={
            "username": "dee", "password": PASSWORD, "next": "/admin/queue",
            "csrf_token": csrf_token(client)})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "900"
        page = refused.get_data(as_text=True)
        assert ("Too many failed logins from your network address. Try again in 15 minute(s)."
                in page)
        # As after a wrong password, the form keeps the typed name (it was lost) and next.
        assert 'required value="dee"' in page and 'name="next" value="/admin/queue"' in page
        elsewhere = app.test_client()
        ok = elsewhere.post("/admin/login", environ_base={"REMOTE_ADDR": "198.51.100.7"},
                            data={"username": "dee", "password": PASSWORD,
                                  "csrf_token": csrf_token(elsewhere)})
        assert ok.status_code == 302
    finally:
        app.extensions["spamguard.db"].dispose()


def test_successful_logins_do_not_count(app_config, install_model, tiny_model_dir, make_user):
    app = _limited_app(app_config, install_model, tiny_model_dir, "2 per 15 minutes")
    try:
        make_user("ann")
        for _ in range(4):
            client = AdminClient(app.test_client(), "ann")
            assert client.login().status_code == 302
    finally:
        app.extensions["spamguard.db"].dispose()


def test_disabling_and_role_changes_ask_first(admin_client, make_user):
    """Disable and Change role act on another person's access: the browser asks first (a
    browser audit found them acting at once); Enable, which gives access back, does not."""
    make_user("mo", role="moderator")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert 'data-confirm="Disable mo? Their logins end at once."' in page
    assert 'data-confirm="Change the role of mo to the one selected?"' in page
    assert "data-confirm=\"Enable" not in page
