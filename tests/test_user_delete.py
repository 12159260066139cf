"""Deleting an account (`spamguard user delete`, the users page): it never logs in again,
its name is free, its reviews keep counting (migration 0018)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select, text

from spamguard import db
from spamguard.cli import _Group, user_commands
from spamguard.models import Review, User
from spamguard.services import reviews, users
from spamguard.services.users import UserError
from tests.fixtures_admin import PASSWORD, AdminClient


def _id(session, name: str) -> int:
    return session.scalar(select(User.id).where(User.username == name))


def test_a_deleted_account_cannot_log_in_and_its_reviews_stay(db_session, add_messages):
    for name, role in (("alice", "admin"), ("bob", "moderator")):
        users.create_user(session=db_session, username=name, password=PASSWORD, role=role)
    db_session.commit()
    bob = _id(db_session, "bob")
    [message_id] = add_messages(("hello", 0.4))
    reviews.add_review(session=db_session, message_id=message_id, label="ham", user_id=bob)
    db_session.commit()

    deleted = users.delete_user(session=db_session, username="Bob")
    db_session.commit()
    assert deleted == users.DeletedAccount(former="bob", shown_as=f"deleted account {bob}",
                                           reviews=1)
    row = db_session.get(User, bob)
    assert (row.is_active, row.role, row.deleted_at is not None) == (False, "viewer", True)
    assert db_session.scalar(select(Review.user_id)) == bob  # the review keeps its author
    assert [u.username for u in users.list_users(db_session)] == ["alice"]
    for name in ("bob", f"deleted account {bob}"):
        assert not users.authenticate(session=db_session, username=name,
                                      password=PASSWORD).ok
    for change in (lambda: users.set_role(session=db_session, user_id=bob, role="admin"),
                   lambda: users.set_active(session=db_session, user_id=bob, active=True),
                   lambda: users.delete_user(session=db_session, user_id=bob)):
        with pytest.raises(UserError, match=f"no user {bob}"):
            change()
    # the name is free again, for a new account with nothing of the old one's
    again = users.create_user(session=db_session, username="bob", password=PASSWORD,
                              role="moderator")
    assert again.id != bob


def test_the_last_enabled_admin_cannot_be_deleted(db_session):
    users.create_user(session=db_session, username="alice", password=PASSWORD, role="admin")
    with pytest.raises(UserError, match="alice is the last enabled admin"):
        users.delete_user(session=db_session, username="alice")


def test_an_admin_deletes_an_account_on_the_users_page_and_its_logins_end(
        app, admin_client, moderator_client, db_session_factory):
    with db_session_factory() as session:
        moderator, admin = _id(session, "moderator"), _id(session, "admin")
    assert moderator_client.get("/admin/queue").status_code == 200
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert 'data-confirm="Delete the account moderator? It can never log in again' in page
    assert f'/admin/users/{admin}/delete' not in page  # not one's own
    done = admin_client.post(f"/admin/users/{moderator}/delete")
    assert done.status_code == 302
    listing = admin_client.get("/admin/users").get_data(as_text=True)
    assert "<td>moderator</td>" not in listing
    # the moderator's session ends at once, and logging in again fails
    assert moderator_client.get("/admin/queue").status_code == 302
    again = AdminClient(app.test_client(), "moderator")
    assert again.login().status_code != 302


def test_the_page_says_what_was_deleted_and_refuses_ones_own(admin_client, make_user,
                                                            db_session_factory):
    carol = make_user("carol")
    done = admin_client.post(f"/admin/users/{carol}/delete", follow_redirects=True)
    assert (f"Deleted carol. Its reviews (0) are kept, shown as by \u201cdeleted account "
            f"{carol}\u201d.") in done.get_data(as_text=True)
    with db_session_factory() as session:
        admin = _id(session, "admin")
    own = admin_client.post(f"/admin/users/{admin}/delete", follow_redirects=True)
    assert "You cannot delete your own account." in own.get_data(as_text=True)
    gone = admin_client.post(f"/admin/users/{carol}/delete", follow_redirects=True)
    assert f"User not deleted: no user {carol}." in gone.get_data(as_text=True)


def test_a_deleted_moderator_is_told_the_account_no_longer_exists(
        admin_client, moderator_client, db_session_factory):
    """Not "disabled ... ask an admin to enable it again": a deleted account cannot be
    enabled. As for an account whose row is gone (test_admin_auth)."""
    with db_session_factory() as session:
        moderator = _id(session, "moderator")
    admin_client.post(f"/admin/users/{moderator}/delete")
    page = moderator_client.get("/admin/queue", follow_redirects=True).get_data(as_text=True)
    assert "Your account no longer exists, so you were logged out." in page
    assert "enable it again" not in page


def test_a_deleted_account_never_logs_in_whatever_its_row_says(db_session):
    """Its row may still change after the delete: an enable or a password reset that read
    the account just before the delete committed writes to it afterwards. The name
    "deleted account N" is still no account: no login, and nothing counted on the row."""
    users.create_user(session=db_session, username="alice", password=PASSWORD, role="admin")
    bob = users.create_user(session=db_session, username="bob", password=PASSWORD,
                            role="moderator").id
    users.delete_user(session=db_session, user_id=bob)
    db_session.commit()
    row = db_session.get(User, bob)
    row.password_hash, row.is_active = users.hash_password(PASSWORD), True  # the late writes
    db_session.commit()
    for password in (PASSWORD, "wrong-password"):
        result = users.authenticate(session=db_session, username=f"deleted account {bob}",
                                    password=password)
        assert (result.ok, result.reason) == (False, "invalid")
    db_session.commit()
    db_session.refresh(row)
    assert row.failed_logins == 0 and row.last_login_at is None


def test_only_admins_delete(moderator_client, viewer_client, make_user):
    carol = make_user("carol")
    for client in (moderator_client, viewer_client):
        assert client.post(f"/admin/users/{carol}/delete").status_code == 403


def test_the_command_asks_first_or_wants_yes(migrated_db_url, monkeypatch, make_user):
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    cli = _Group("spamguard")
    user_commands.register(cli)
    make_user("alice", "admin")
    make_user("bob")
    refused = CliRunner().invoke(cli, ["user", "delete", "bob"])
    assert refused.exit_code == 2
    assert "deleting bob cannot be undone: add --yes to confirm" in refused.stderr
    monkeypatch.setattr(user_commands, "is_terminal", lambda stream: True)
    kept = CliRunner().invoke(cli, ["user", "delete", "bob"], input="n\n")
    assert kept.exit_code == 1 and "Delete the account bob? This cannot be undone" in (
        kept.output)
    done = CliRunner().invoke(cli, ["user", "delete", "bob"], input="y\n")
    assert done.exit_code == 0 and "deleted bob; its reviews (0) are kept, shown as by " \
        "'deleted account" in done.stdout
    last = CliRunner().invoke(cli, ["user", "delete", "alice", "--yes"])
    assert last.exit_code == 2 and "alice is the last enabled admin" in last.stderr


def test_0018_adds_deleted_at_and_takes_it_away(db_url: str) -> None:
    from tests.fixtures_db import downgrade

    db.upgrade_schema(db_url, "0017")
    db.upgrade_schema(db_url)
    engine = db.make_engine(db_url)
    assert "deleted_at" in {c["name"] for c in inspect(engine).get_columns("users")}
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO users (username, password_hash, role, is_active, created_at, "
            "failed_logins, session_epoch, deleted_at) VALUES ('deleted account 1', '!', "
            "'viewer', false, CURRENT_TIMESTAMP, 0, 0, CURRENT_TIMESTAMP)"))
    engine.dispose()
    downgrade(db_url, "0017")
    engine = db.make_engine(db_url)
    assert "deleted_at" not in {c["name"] for c in inspect(engine).get_columns("users")}
    with engine.connect() as connection:  # the row stays, disabled, without a password
        assert connection.execute(text("SELECT username, password_hash, is_active FROM "
                                       "users")).all() == [("deleted account 1", "!", False)]
    engine.dispose()
    db.upgrade_schema(db_url)


def test_a_deleted_accounts_open_spot_check_draws_are_closed_as_skipped(
        db_session, add_messages, make_version_dir):
    from spamguard.models import SpotCheckDraw
    from spamguard.services import registry

    version = registry.register_version(session=db_session, version_dir=make_version_dir("v1"))
    for name, role in (("alice", "admin"), ("bob", "moderator")):
        users.create_user(session=db_session, username=name, password=PASSWORD, role=role)
    db_session.commit()
    bob, alice = _id(db_session, "bob"), _id(db_session, "alice")
    first, second = add_messages(("win", 0.9), ("win again", 0.9))
    db_session.add_all([
        SpotCheckDraw(user_id=bob, verdict="spam", message_id=first,
                      model_version_id=version.id, mode="spam"),
        SpotCheckDraw(user_id=alice, verdict="spam", message_id=second,
                      model_version_id=version.id, mode="spam")])
    db_session.commit()
    users.delete_user(session=db_session, username="bob")
    db_session.commit()
    outcomes = dict(db_session.execute(select(SpotCheckDraw.user_id, SpotCheckDraw.outcome)).all())
    assert outcomes == {bob: "skipped", alice: None}  # only the deleted account's
