"""Accounts: creation rules, password hashing, lock-out, and `spamguard user create`."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from spamguard.models import User
from spamguard.services import users
from spamguard.services.users import UserError
from tests.fixtures_db import waits_for_commit


def test_create_hashes_with_scrypt(db_session):
    user = users.create_user(session=db_session, username="Alice", password="s3cret-pass",
                             role="admin")
    assert user.username == "alice"
    assert user.password_hash.startswith("scrypt:") and "s3cret-pass" not in user.password_hash


@pytest.mark.parametrize(("username", "password", "role", "problem"), [
    ("a", "long-enough", "moderator", "username"),
    ("bad name", "long-enough", "moderator", "username"),
    ("bob", "short", "moderator", "password"),
    ("bob", "long-enough", "root", "role"),
])
def test_create_rejects_bad_fields(db_session, username, password, role, problem):
    with pytest.raises(UserError, match=problem):
        users.create_user(session=db_session, username=username, password=password, role=role)


COMMON = "password is one of the most used passwords, which are guessed first; choose another"
SAME = "password must not be the username"


@pytest.mark.parametrize(("username", "password", "problem"), [
    ("bob", "password", COMMON),
    ("bob", "PassWord1", COMMON),  # in any case
    ("bob", " iloveyou ", COMMON),  # and with spaces around
    ("bob", "qwertyuiop", COMMON),
    ("longname1", "LongName1", SAME),
    ("Rosalind.Franklin", " rosalind.franklin ", SAME),
    ("bob", "passwor", "at least 8 characters"),  # the length rule first, as before
])
def test_common_passwords_and_the_username_are_refused(db_session, username, password, problem):
    with pytest.raises(UserError) as refused:
        users.create_user(session=db_session, username=username, password=password,
                          role="viewer")
    assert problem in str(refused.value)


def test_an_admins_reset_refuses_a_common_password_or_the_username(db_session):
    users.create_user(session=db_session, username="judith.k", password="long-enough",
                      role="viewer")
    for password, problem in (("football", COMMON), ("JUDITH.K", SAME)):
        with pytest.raises(UserError) as refused:
            users.set_password(session=db_session, username="judith.k", password=password)
        assert str(refused.value) == problem
    users.set_password(session=db_session, username="judith.k", password="football-fan-1")


def test_the_list_of_common_passwords_is_read_when_first_needed_not_at_import():
    import subprocess
    import sys

    code = ("import spamguard.cli, spamguard.app, spamguard.services.users as users; "
            "print(users.common_passwords.cache_info().currsize); "
            "print(len(users.common_passwords()), 'password' in users.common_passwords())")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, check=True).stdout.split()
    assert shown == ["0", "121", "True"]


def test_create_rejects_taken_name(db_session):
    users.create_user(session=db_session, username="bob", password="long-enough", role="viewer")
    with pytest.raises(UserError, match="already exists"):
        users.create_user(session=db_session, username="BOB", password="long-enough",
                          role="viewer")


def test_authenticate(db_session):
    users.create_user(session=db_session, username="carol", password="long-enough",
                      role="moderator")
    assert users.authenticate(session=db_session, username="carol", password="long-enough").ok
    assert users.authenticate(session=db_session, username="carol", password="nope").reason \
        == "invalid"
    assert users.authenticate(session=db_session, username="nobody", password="x").reason \
        == "invalid"


def test_lockout_after_repeated_failures(db_session):
    users.create_user(session=db_session, username="dave", password="long-enough",
                      role="moderator")
    for _ in range(users.MAX_FAILURES):
        assert not users.authenticate(session=db_session, username="dave", password="bad").ok
    # Locked now: even the right password is refused until the lock expires.
    result = users.authenticate(session=db_session, username="dave", password="long-enough")
    assert result.reason == "locked"
    user = db_session.scalars(select(User).where(User.username == "dave")).one()
    user.locked_until = user.locked_until - users.LOCKOUT
    assert users.authenticate(session=db_session, username="dave", password="long-enough").ok


def test_every_refusal_costs_one_password_check(db_session, monkeypatch):
    """An unknown name and a locked account take as long as a wrong password: one scrypt
    check each, and a locked account says "locked" whether or not the password is right."""
    users.create_user(session=db_session, username="gina", password="long-enough",
                      role="moderator")
    checks = []

    def check(pwhash: str, password: str) -> bool:
        checks.append(password)
        return real_check(pwhash, password)

    real_check = users.check_password_hash
    monkeypatch.setattr(users, "check_password_hash", check)
    for username, password, reason in [("nobody", "x", "invalid"), ("gina", "bad", "invalid"),
                                       *[("gina", "bad", "invalid")] * (users.MAX_FAILURES - 1),
                                       ("gina", "long-enough", "locked"),
                                       ("gina", "bad", "locked")]:
        checks.clear()
        result = users.authenticate(session=db_session, username=username, password=password)
        assert (result.reason, checks) == (reason, [password])
    user = db_session.scalars(select(User).where(User.username == "gina")).one()
    assert users.locked_until(user) is not None


def test_disabled_user_cannot_log_in(db_session):
    user = users.create_user(session=db_session, username="erin", password="long-enough",
                             role="viewer")
    users.set_active(session=db_session, user_id=user.id, active=False)
    result = users.authenticate(session=db_session, username="erin", password="long-enough")
    assert result.reason == "inactive"


@pytest.fixture
def cli_env(monkeypatch, tmp_path, migrated_db_url):
    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)


def test_cli_user_create_reads_stdin(cli_env, db_session_factory):
    from click.testing import CliRunner

    from spamguard.cli import build_cli

    result = CliRunner().invoke(build_cli(), ["user", "create", "Frank", "--role", "admin"],
                                input="long-enough\n")
    assert result.exit_code == 0, result.output
    assert "created admin frank" in result.output
    with db_session_factory() as session:
        assert users.authenticate(session=session, username="frank", password="long-enough").ok
    again = CliRunner().invoke(build_cli(), ["user", "create", "frank"], input="long-enough\n")
    assert again.exit_code != 0 and "already exists" in again.output


def test_cli_prompt_asks_again_for_a_common_password_or_the_username(cli_env, monkeypatch,
                                                                    db_session_factory):
    from click.testing import CliRunner

    from spamguard.cli import build_cli, user_commands

    monkeypatch.setattr(user_commands, "is_terminal", lambda _stream: True)
    typed = "".join(f"{p}\n{p}\n" for p in ("password", "Kathleen.B", "long-enough"))
    result = CliRunner().invoke(build_cli(), ["user", "create", "kathleen.b"], input=typed)
    assert result.exit_code == 0, result.output
    assert f"{COMMON}; try again" in result.output and f"{SAME}; try again" in result.output
    with db_session_factory() as session:
        assert users.authenticate(session=session, username="kathleen.b",
                                  password="long-enough").ok


@pytest.mark.parametrize("command", ["create", "set-password"])
def test_cli_help_states_the_password_rule_from_the_constants_the_check_uses(monkeypatch,
                                                                            command):
    from click.testing import CliRunner

    from spamguard.cli import build_cli

    monkeypatch.setattr(users, "MIN_PASSWORD_LENGTH", 12)  # no second copy of the 8
    result = CliRunner().invoke(build_cli(), ["user", command, "--help"])
    assert result.exit_code == 0, result.output
    assert ("Password rule: At least 12 characters that are not spaces, and neither NAME "
            "nor one of the most used passwords.") in " ".join(result.output.split())


def test_cli_help_states_the_username_rule_from_the_constants_the_check_uses(monkeypatch):
    from click.testing import CliRunner

    from spamguard.cli import build_cli

    monkeypatch.setattr(users, "MAX_USERNAME_LENGTH", 32)
    result = CliRunner().invoke(build_cli(), ["user", "create", "--help"])
    assert result.exit_code == 0, result.output
    assert ("NAME: 2 to 32 characters: letters a-z, digits 0-9 and . _ - @ (capitals are "
            "stored in lower case).") in " ".join(result.output.split())
    with pytest.raises(users.UserError, match="^username must be 2-32 characters of a-z, "
                                              "0-9, '.', '_', '-', '@'$"):
        users.validate_new_user("x" * 33, "long-enough-secret", "viewer")
    assert users.validate_new_user(" Ann.Lee ", "long-enough-secret", "viewer") == "ann.lee"


def test_cli_user_create_rejects_bad_role(cli_env):
    from click.testing import CliRunner

    from spamguard.cli import build_cli

    result = CliRunner().invoke(build_cli(), ["user", "create", "gina", "--role", "root"],
                                input="long-enough\n")
    assert result.exit_code != 0 and "root" in result.output


def test_cli_sets_roles_and_unlocks_but_keeps_the_last_admin(cli_env, db_session_factory):
    from click.testing import CliRunner

    from spamguard.cli import build_cli
    from spamguard.models import User

    run = lambda *args: CliRunner().invoke(build_cli(), list(args),  # noqa: E731
                                           input="long-enough\n")
    assert run("user", "create", "ada", "--role", "admin").exit_code == 0
    assert run("user", "create", "bo").exit_code == 0
    last = run("user", "set-role", "ada", "viewer")
    assert last.exit_code != 0 and "ada is the last enabled admin" in last.output
    # From an audit: `user disable` took the last admin away, though set-role refused to.
    disabled = run("user", "disable", "ada")
    assert disabled.exit_code != 0 and "ada is the last enabled admin" in disabled.output
    assert run("user", "disable", "bo").exit_code == 0  # not an admin
    assert run("user", "enable", "bo").exit_code == 0
    made = run("user", "set-role", "bo", "admin")
    assert made.exit_code == 0 and "bo is now admin" in made.output
    assert run("user", "set-role", "ada", "viewer").exit_code == 0  # bo is admin now
    assert run("user", "set-role", "bo", "root").exit_code != 0
    with db_session_factory() as session:
        for _ in range(5):
            users.authenticate(session=session, username="bo", password="wrong-password")
        session.commit()
        assert users.locked_until(session.query(User).filter_by(username="bo").one())
    for guessed in ("password123", "Admin123", "changeme", "spamguard1"):  # tried first
        refused = CliRunner().invoke(build_cli(), ["user", "set-password", "bo"],
                                     input=f"{guessed}\n{guessed}\n")
        assert refused.exit_code != 0 and "most used passwords" in refused.output, guessed
    unlocked = run("user", "unlock", "bo")
    assert unlocked.exit_code == 0 and "unlocked bo" in unlocked.output
    again = run("user", "unlock", "bo")  # said "unlocked bo" too, and the trail nothing
    assert again.exit_code == 0 and "bo was not locked: nothing changed" in again.output
    with db_session_factory() as session:
        bo = session.query(User).filter_by(username="bo").one()
        assert users.locked_until(bo) is None and bo.failed_logins == 0
        assert users.authenticate(session=session, username="bo", password="long-enough").ok


def test_parallel_wrong_guesses_all_count(db_session_factory):
    """Guesses sent at once must still lock the account at the fifth failure."""
    import threading

    from spamguard.db import session_scope

    with session_scope(db_session_factory) as session:
        users.create_user(session=session, username="frank", password="long-enough",
                          role="moderator")
    barrier, reasons = threading.Barrier(8), []

    def guess() -> None:
        barrier.wait(timeout=30)
        with session_scope(db_session_factory) as session:
            reasons.append(users.authenticate(session=session, username="frank",
                                              password="bad").reason)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with session_scope(db_session_factory) as session:
        result = users.authenticate(session=session, username="frank", password="long-enough")
    assert result.reason == "locked", reasons


def _password_events(session) -> list[tuple]:
    from sqlalchemy import select

    from spamguard.models import AuditEvent

    return [tuple(row) for row in session.execute(
        select(AuditEvent.actor, AuditEvent.action, AuditEvent.target)
        .where(AuditEvent.action.like("user.password%")))]


def test_change_password_checks_the_current_one(db_session):
    user = users.create_user(session=db_session, username="hal", password="long-enough",
                             role="viewer")
    with pytest.raises(UserError, match="current password is wrong"):
        users.change_password(session=db_session, user_id=user.id, current="nope",
                              new="new-password", repeated="new-password")
    db_session.refresh(user)
    assert user.failed_logins == 1  # counted like a failed login
    with pytest.raises(UserError, match="differ"):
        users.change_password(session=db_session, user_id=user.id, current="long-enough",
                              new="new-password", repeated="new-passwort")
    with pytest.raises(UserError, match="at least 8"):
        users.change_password(session=db_session, user_id=user.id, current="long-enough",
                              new="short", repeated="short")
    for blank in (" " * 8, "\t" * 12, " a b c d e f g "):  # spaces do not count
        with pytest.raises(UserError, match="at least 8 characters that are not spaces"):
            users.change_password(session=db_session, user_id=user.id, current="long-enough",
                                  new=blank, repeated=blank)
    with pytest.raises(UserError, match="is the current one"):
        users.change_password(session=db_session, user_id=user.id, current="long-enough",
                              new="long-enough", repeated="long-enough")
    with pytest.raises(UserError, match="most used passwords"):
        users.change_password(session=db_session, user_id=user.id, current="long-enough",
                              new="Sunshine", repeated="Sunshine")
    assert _password_events(db_session) == []  # refused changes leave no event
    users.change_password(session=db_session, user_id=user.id, current="long-enough",
                          new="new-password", repeated="new-password")
    assert _password_events(db_session) == [("hal", "user.password_change", "hal")]
    assert users.authenticate(session=db_session, username="hal", password="new-password").ok
    assert not users.authenticate(session=db_session, username="hal",
                                  password="long-enough").ok


def test_cli_user_set_password(cli_env, db_session_factory):
    from click.testing import CliRunner

    from spamguard.cli import build_cli
    from spamguard.db import session_scope

    with session_scope(db_session_factory) as session:
        users.create_user(session=session, username="ivy", password="long-enough",
                          role="moderator")
        for _ in range(users.MAX_FAILURES):
            users.authenticate(session=session, username="ivy", password="bad")
    result = CliRunner().invoke(build_cli(), ["user", "set-password", "IVY"],
                                input="brand-new-pass\n")
    assert result.exit_code == 0 and "new password set for ivy" in result.output
    with session_scope(db_session_factory) as session:  # and the lock is lifted
        assert users.authenticate(session=session, username="ivy",
                                  password="brand-new-pass").ok
    for args, stdin, problem in [(["nobody"], "brand-new-pass\n", "no user 'nobody'"),
                                 (["ivy"], "short\n", "at least 8 characters"),
                                 (["ivy"], "12345678\n", "error: " + COMMON + "\n"),
                                 (["ivy"], "", "no password on standard input")]:
        refused = CliRunner().invoke(build_cli(), ["user", "set-password", *args], input=stdin)
        assert refused.exit_code != 0 and problem in refused.output, refused.output


def test_cli_set_password_says_what_is_missing_before_asking(cli_env, db_session_factory,
                                                              monkeypatch, tmp_path):
    """On a terminal, a missing account or database is said before the password is asked
    for twice (it was asked for first, then refused)."""
    import click
    from click.testing import CliRunner

    from spamguard.cli import build_cli, user_commands

    asked = []
    monkeypatch.setattr(user_commands, "is_terminal", lambda stream: True)
    monkeypatch.setattr(click, "prompt", lambda *a, **k: asked.append(a) or "brand-new-pass")
    with db_session_factory() as session:
        users.create_user(session=session, username="ivy", password="long-enough",
                          role="moderator")
        session.commit()
    refused = CliRunner().invoke(build_cli(), ["user", "set-password", "nobody"])
    assert refused.exit_code != 0 and "no user 'nobody'" in refused.output, refused.output
    assert asked == []
    done = CliRunner().invoke(build_cli(), ["user", "set-password", "IVY"])
    assert done.exit_code == 0 and "new password set for ivy" in done.output, done.output
    assert len(asked) == 1
    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path / "typo"))  # a mistyped home
    monkeypatch.delenv("SPAMGUARD_DATABASE_URL")
    refused = CliRunner().invoke(build_cli(), ["user", "set-password", "ivy"])
    assert refused.exit_code != 0 and "database" in refused.output, refused.output
    assert len(asked) == 1 and not (tmp_path / "typo").exists()


def test_cli_user_list_disable_enable(cli_env, db_session_factory):
    """Accounts can be managed without the web UI (and an admin locked out of it can be
    let back in)."""
    from click.testing import CliRunner

    from spamguard.cli import build_cli
    from spamguard.db import session_scope

    def run(*args):
        return CliRunner().invoke(build_cli(), ["user", *args])

    assert "no accounts yet" in run("list").output
    with session_scope(db_session_factory) as session:
        users.create_user(session=session, username="jo", password="long-enough", role="admin")
        # Another admin: the last enabled one cannot be disabled.
        users.create_user(session=session, username="zed", password="long-enough", role="admin")
    assert run("list").output.splitlines()[1].split() == ["jo", "admin", "enabled", "never"]
    assert run("disable", "JO").output.strip() == "disabled jo"
    with session_scope(db_session_factory) as session:
        assert not users.authenticate(session=session, username="jo", password="long-enough").ok
    assert run("list").output.splitlines()[1].split()[2] == "disabled"
    assert run("enable", "jo").output.strip() == "enabled jo"
    with session_scope(db_session_factory) as session:
        assert users.authenticate(session=session, username="jo", password="long-enough").ok
    refused = run("disable", "nobody")
    assert refused.exit_code == 2 and "no user 'nobody'" in refused.output


@pytest.mark.parametrize("command", [["user", "create", "zed"], ["user", "set-password", "zed"]])
def test_a_closed_stdin_is_no_password_not_a_traceback(tmp_path, command):
    """`spamguard user create zed <&-` (stdin closed, so sys.stdin is None)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SPAMGUARD_HOME": str(tmp_path / "home")}
    if command[1] == "set-password":  # which names a missing account before asking
        subprocess.run([sys.executable, "-m", "spamguard", "user", "create", "zed"],
                       input="long-enough-pass\n", text=True, env=env, check=True,
                       capture_output=True, timeout=120)
    result = subprocess.run(
        [sys.executable, "-m", "spamguard", *command], capture_output=True, text=True,
        env=env, preexec_fn=lambda: os.close(0), timeout=120)
    assert (result.returncode, result.stderr) == (2, "error: no password on standard input\n")


@pytest.mark.parametrize("change", ["disable", "demote"])
def test_two_admins_taking_each_other_away_at_once_leave_one(db_session_factory, change):
    """From an audit: two admins disabling (or demoting) each other at the same moment both
    saw the other still enabled, and the instance was left without an admin. The second
    change now waits for the first and is refused."""
    from spamguard.db import session_scope

    with session_scope(db_session_factory) as session:
        first = users.create_user(session=session, username="ann", password="long-enough",
                                  role="admin").id
        second = users.create_user(session=session, username="bea", password="long-enough",
                                   role="admin").id

    def take_away(session, user_id):
        if change == "disable":
            users.set_active(session=session, user_id=user_id, active=False)
        else:
            users.set_role(session=session, user_id=user_id, role="moderator")

    holder = db_session_factory()
    take_away(holder, second)  # ann takes bea away, and has not committed yet

    def other_side() -> str:
        with db_session_factory() as session:
            try:
                take_away(session, first)  # bea takes ann away at the same moment
                session.commit()
                return "done"
            except users.UserError as exc:
                session.rollback()
                return str(exc)

    # bea's change waits for ann's transaction
    assert waits_for_commit(holder, other_side) == ("ann is the last enabled admin; make "
                                                    "another admin first")
    with db_session_factory() as session:
        enabled_admins = [u.username for u in users.list_users(session)
                          if u.role == "admin" and u.is_active]
    assert enabled_admins == ["ann"]


def test_sigterm_at_a_password_prompt_is_a_stop_not_an_abort(cli_env, monkeypatch):
    """Click turns an interrupt at a prompt into Abort ("Aborted!", exit 1): SIGTERM there
    is said as it is everywhere else (a review)."""
    import click.termui
    from click.testing import CliRunner

    from spamguard.cli import Terminated, build_cli, user_commands

    def terminated(*_args):
        raise Terminated

    monkeypatch.setattr(user_commands, "is_terminal", lambda stream: True)
    # (CliRunner puts its own hidden_prompt_func in place: the step under it, then)
    monkeypatch.setattr(click.termui, "_readline_prompt", terminated)
    result = CliRunner().invoke(build_cli(), ["user", "create", "zed"])
    assert result.exit_code == 143  # (the newline ends the prompt's line, as at Ctrl-C)
    assert result.output == "\nerror: stopped by SIGTERM\n"
