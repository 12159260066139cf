"""Admin UI accounts: create users with a scrypt password hash, authenticate with lock-out,
change and reset passwords.

Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from spamguard.db import sqlite_write_lock
from spamguard.errors import SpamguardError
from spamguard.models import ROLES, User
from spamguard.services import audit
from spamguard.sqltypes import as_utc, utcnow

MAX_FAILURES = 5  # failed logins in a row before the account is locked
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 8
# A username: letters a-z, digits and these marks (stored in lower case, so upper case is
# accepted and folded), MIN_USERNAME_LENGTH to MAX_USERNAME_LENGTH characters (the column
# holds 64).
MIN_USERNAME_LENGTH, MAX_USERNAME_LENGTH = 2, 64
USERNAME_MARKS = "._-@"
# Checked when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("spamguard-dummy-password", method="scrypt")


class UserError(SpamguardError):
    """A user that cannot be created or changed as asked."""


@dataclass(frozen=True)
class LoginResult:
    """Outcome of :func:`authenticate`: the user on success, else why not."""

    user: User | None
    reason: str = ""  # "", "invalid", "locked", "inactive"

    @property
    def ok(self) -> bool:
        return self.user is not None


def hash_password(password: str) -> str:
    """Hash ``password`` with scrypt (Werkzeug)."""
    return generate_password_hash(password, method="scrypt")


def validate_new_user(username: str, password: str, role: str) -> str:
    """Check a new account's fields; return the normalised username."""
    name = username.strip().lower()
    allowed = set(string.ascii_lowercase + string.digits + USERNAME_MARKS)
    if not MIN_USERNAME_LENGTH <= len(name) <= MAX_USERNAME_LENGTH or not set(name) <= allowed:
        marks = ", ".join(f"'{mark}'" for mark in USERNAME_MARKS)
        raise UserError(f"username must be {MIN_USERNAME_LENGTH}-{MAX_USERNAME_LENGTH} "
                        f"characters of a-z, 0-9, {marks}", field="username")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}", field="role")
    validate_password(password, username=name)
    return name


def validate_password(password: str, *, username: str) -> None:
    """Check a new password against the rule every password follows: at least
    :data:`MIN_PASSWORD_LENGTH` characters, not counting spaces (eight spaces are no
    password), not the account's name and not one of the most used passwords (both
    ignoring case and surrounding spaces: the first guesses of anyone trying)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters",
                        field="password")
    if len("".join(password.split())) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters that "
                        "are not spaces", field="password")
    folded = password.strip().casefold()
    if folded == username.strip().casefold():
        raise UserError("password must not be the username", field="password")
    if folded in common_passwords():
        raise UserError("password is one of the most used passwords, which are guessed "
                        "first; choose another", field="password")


def password_rule(name: str = "the username") -> str:
    """The rule :func:`validate_password` checks, in words, for the forms and ``--help``
    that ask for a new password (made of the same constants: no second copy to forget)."""
    return (f"At least {MIN_PASSWORD_LENGTH} characters that are not spaces, and neither "
            f"{name} nor one of the most used passwords.")


def username_rule() -> str:
    """The rule :func:`validate_new_user` checks a username against, in words, for the form
    that adds an account and ``user create --help`` (made of the same constants)."""
    return (f"{MIN_USERNAME_LENGTH} to {MAX_USERNAME_LENGTH} characters: letters a-z, digits "
            f"0-9 and {' '.join(USERNAME_MARKS)} (capitals are stored in lower case).")


@cache
def common_passwords() -> frozenset[str]:
    """The most used passwords (``common_passwords.txt`` beside this module), read the first
    time a password is checked, never at import."""
    text = files(__package__).joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def create_user(*, session: Session, username: str, password: str, role: str,
                by: str | None = None) -> User:
    """Create an account; refuse a taken name, a short password or an unknown role."""
    name = validate_new_user(username, password, role)
    if session.scalars(select(User).where(User.username == name)).first() is not None:
        raise UserError(f"user {name!r} already exists", field="username")
    user = User(username=name, password_hash=hash_password(password), role=role,
                is_active=True, failed_logins=0, session_epoch=first_epoch())
    session.add(user)
    session.flush()
    audit.record(session, actor=by, action="user.create", target=name, role=role)
    return user


def first_epoch() -> int:
    """A new account's session epoch (see :func:`end_sessions`): random, not 0.

    A login's cookie names the account by id and epoch, and SQLite gives a new row the
    highest id in the table plus one: after the newest account is deleted, the next one
    gets its id. Had both started at epoch 0, a login of the deleted account still held by
    a browser would have become a login of the new one. (Below 2**30: the column is a
    32-bit integer on PostgreSQL, and each end of sessions adds one.)"""
    return 1 + secrets.randbelow(2**30 - 1)


def get_user(session: Session, user_id: int) -> User | None:
    """Return the user ``user_id`` or None."""
    return session.get(User, user_id)


def _by_name(session: Session, username: str) -> User | None:
    """The account ``username`` names (names are stored lower-case), or None (for a name
    with a NUL character, which no account has and PostgreSQL cannot compare: a 500 on the
    login page)."""
    if "\x00" in username:
        return None
    return session.scalars(select(User).where(User.username == username.strip().lower())).first()


def list_users(session: Session) -> list[User]:
    """Return every account by name (deleted ones left out)."""
    return list(session.scalars(select(User).where(User.deleted_at.is_(None))
                                .order_by(User.username)))


def set_active(*, session: Session, user_id: int | None = None, username: str | None = None,
               active: bool, by: str | None = None) -> User:
    """Enable or disable an account, by id or by name (a disabled account cannot log in,
    and its open sessions end). The last enabled admin cannot be disabled."""
    user = _find(session, user_id, username)
    if not active:
        _keep_an_admin(session, user)
    if user.is_active != active:
        audit.record(session, actor=by, action="user.enable" if active else "user.disable",
                     target=user.username)
    user.is_active = active
    if active:
        user.failed_logins, user.locked_until = 0, None
    else:
        end_sessions(session=session, user_id=user.id)
    session.flush()
    return user


def find_user(session: Session, username: str) -> User:
    """The account ``username`` names (in any case), or a UserError saying there is none."""
    return _find(session, None, username)


def _find(session: Session, user_id: int | None, username: str | None) -> User:
    user = session.get(User, user_id) if user_id is not None else _by_name(session, username or "")
    if user is None or user.deleted_at is not None:
        raise UserError(f"no user {user_id if user_id is not None else username!r}")
    return user


DELETED_NAME = "deleted account {id}"  # a space: no username can be made with it
NO_PASSWORD = "!"  # not a Werkzeug hash: check_password_hash is False for every password


@dataclass(frozen=True)
class DeletedAccount:
    """What :func:`delete_user` did: the account's former name, the name its reviews now
    show, and how many reviews it made."""

    former: str
    shown_as: str
    reviews: int


def delete_user(*, session: Session, user_id: int | None = None,
                username: str | None = None, by: str | None = None) -> DeletedAccount:
    """Delete an account (by id or by name): it can never log in again, its sessions and
    queue claims end, and its name is free for a new account.

    The row stays, renamed :data:`DELETED_NAME`, with no password and ``deleted_at`` set
    (migration 0018): its reviews keep their author and its spot-check draws keep counting
    in the estimates. The last enabled admin cannot be deleted."""
    from spamguard.models import Review

    user = _find(session, user_id, username)
    _keep_an_admin(session, user)
    name = user.username
    end_sessions(session=session, user_id=user.id)
    _close_open_draws(session, user.id)
    user = session.get(User, user.id)  # end_sessions expired it
    user.username, user.password_hash = DELETED_NAME.format(id=user.id), NO_PASSWORD
    user.is_active, user.role, user.deleted_at = False, "viewer", utcnow()
    user.failed_logins, user.locked_until = 0, None
    session.flush()
    audit.record(session, actor=by, action="user.delete", target=name, now=user.username)
    reviews = session.scalar(select(func.count()).select_from(Review)
                             .where(Review.user_id == user.id)) or 0
    return DeletedAccount(former=name, shown_as=user.username, reviews=int(reviews))


def set_role(*, session: Session, role: str, user_id: int | None = None,
             username: str | None = None, by: str | None = None) -> User:
    """Give an account another role (by id or by name); it applies from its next request.
    The last enabled admin keeps the role: without one, nobody could manage accounts from
    the web UI."""
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    user = _find(session, user_id, username)
    if role != "admin":
        _keep_an_admin(session, user)
    if user.role != role:
        audit.record(session, actor=by, action="user.role", target=user.username,
                     role=role, was=user.role)
    user.role = role
    if role == "viewer":  # a viewer reviews nothing: its queue claims go to the others now
        _release_claims(session, user.id)
    session.flush()
    return user


def _keep_an_admin(session: Session, user: User) -> None:
    """Refuse to take away the last enabled admin (by a role change or by disabling it):
    without one, nobody could manage accounts from the web UI.

    Decided under a lock, until the transaction ends: two admins disabling each other at
    once both saw the other still enabled, and both went (an audit). PostgreSQL locks every
    enabled admin's row, in id order (a concurrent change waits, then reads them again);
    SQLite takes its write lock first (:func:`~spamguard.db.sqlite_write_lock`)."""
    sqlite_write_lock(session, User.role, user.id)
    admins = set(session.scalars(select(User.id).where(User.role == "admin", User.is_active)
                                 .order_by(User.id).with_for_update()))
    if admins == {user.id}:
        raise UserError(f"{user.username} is the last enabled admin; make another admin "
                        "first")


def unlock(*, session: Session, user_id: int | None = None,
           username: str | None = None, by: str | None = None) -> tuple[User, bool]:
    """Lift the lock after failed logins (and forget those failures) at once. Returns the
    account and whether there was anything to lift (a lock, or failures counted)."""
    user = _find(session, user_id, username)
    changed = bool(user.failed_logins or user.locked_until is not None)
    if changed:
        audit.record(session, actor=by, action="user.unlock", target=user.username)
    user.failed_logins, user.locked_until = 0, None
    session.flush()
    return user, changed


def end_sessions(*, session: Session, user_id: int, carry_on: bool = False) -> None:
    """End every login session of the account (sessions are signed cookies, kept by the
    browser: each carries the account's epoch, and an old epoch is no longer accepted), and
    its claims on the review queue, so that other moderators get those messages at once
    rather than when the claims run out (services.queue_claims). A session that should
    carry on (after a password change: ``carry_on``) keeps the claims and logs in again
    with the new epoch.
    """
    session.execute(update(User).where(User.id == user_id)
                    .values(session_epoch=User.session_epoch + 1))
    if not carry_on:
        _release_claims(session, user_id)
    session.expire_all()


def _close_open_draws(session: Session, user_id: int) -> None:
    """Close a deleted account's open spot-check draws as skipped (left undecided, which
    the estimates count as they count skips): nobody can decide them any more, and open
    ones would stay "undecided" on the page for ever."""
    from spamguard.models import SpotCheckDraw

    session.execute(update(SpotCheckDraw)
                    .where(SpotCheckDraw.user_id == user_id, SpotCheckDraw.outcome.is_(None))
                    .values(outcome="skipped", closed_at=utcnow())
                    .execution_options(synchronize_session=False))


def _release_claims(session: Session, user_id: int) -> None:
    """End the account's claims on review queue messages (services.queue_claims)."""
    from spamguard.services import queue_claims  # imported here: it loads numpy

    queue_claims.release(session, user_id=user_id)


def locked_until(user: User) -> datetime | None:
    """When the account's lock after failed logins ends, or None if it is not locked (the
    login page does not say so: admins see it on the users page)."""
    if user.locked_until is None or as_utc(user.locked_until) <= utcnow():
        return None
    return as_utc(user.locked_until)


def authenticate(*, session: Session, username: str, password: str) -> LoginResult:
    """Check a login; count failures and lock the account after :data:`MAX_FAILURES`.

    Every answer costs one password hash check, so the time taken does not tell an unknown
    name or a locked account from a wrong password. A locked account answers "locked"
    whatever the password is (else guessing could go on, unlimited, during the lock); the
    login page shows "locked" and "invalid" alike, since only real accounts can be locked."""
    user = _by_name(session, username)
    if user is None or user.deleted_at is not None:  # "deleted account N": no account
        check_password_hash(_DUMMY_HASH, password)
        return LoginResult(None, "invalid")
    now = utcnow()
    if locked_until(user) is not None:
        check_password_hash(user.password_hash, password)  # for the time only
        return LoginResult(None, "locked")
    if not check_password_hash(user.password_hash, password):
        _count_failure(session, user)
        return LoginResult(None, "invalid")
    if not user.is_active:
        return LoginResult(None, "inactive")
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    session.flush()
    return LoginResult(user)


def _count_failure(session: Session, user: User) -> None:
    """Count a wrong password; the :data:`MAX_FAILURES`-th in a row locks the account."""
    # One atomic increment in SQL: parallel wrong guesses must each count (a read,
    # increment and write in Python let them overwrite each other, and never lock).
    failures = session.execute(
        update(User).where(User.id == user.id)
        .values(failed_logins=func.coalesce(User.failed_logins, 0) + 1)
        .returning(User.failed_logins)).scalar_one()
    if failures >= MAX_FAILURES:
        session.execute(update(User).where(User.id == user.id)
                        .values(locked_until=utcnow() + LOCKOUT, failed_logins=0))
    session.expire(user)


def change_password(*, session: Session, user_id: int, current: str, new: str,
                    repeated: str) -> User:
    """Change a user's own password: ``current`` must be right, ``new`` typed twice alike.

    A wrong current password counts as a failed login (a stolen session must not become a
    way to guess the password without limit), so while the account is locked no change is
    made either. The only write before an error is that count: the caller commits even
    when this raises, as after a failed login."""
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"no user {user_id}")
    until = locked_until(user)
    if until is not None:
        raise UserError(f"too many wrong passwords: try again after "
                        f"{until:%H:%M} UTC")
    if not check_password_hash(user.password_hash, current):
        _count_failure(session, user)
        raise UserError("the current password is wrong", field="current")
    if new != repeated:
        raise UserError("the new password and its repetition differ", field="repeated")
    if new == current:
        raise UserError("the new password is the current one", field="password")
    validate_password(new, username=user.username)
    user.password_hash, user.failed_logins = hash_password(new), 0
    session.flush()
    # In the trail: a password changed by whoever held the session is what an admin looks
    # for after a stolen laptop.
    audit.record(session, actor=user.username, action="user.password_change",
                 target=user.username)
    # A stolen session ends with the change; this one goes on (with its queue claim).
    end_sessions(session=session, user_id=user.id, carry_on=True)
    return user


def set_password(*, session: Session, password: str, username: str | None = None,
                 user_id: int | None = None, repeated: str | None = None,
                 by: str | None = None) -> User:
    """Give an account (by name or by id) a new password: an admin's reset, from
    `spamguard user set-password` or the users page. Lifts a lock and ends the account's
    sessions and queue claims. ``repeated``, when given, must be the same password again
    (a form asks for it twice; the CLI's prompt checks that itself)."""
    if username is not None:
        username = username.strip().lower()
    user = _find(session, user_id, username)
    if repeated is not None and repeated != password:
        raise UserError("the new password and its repetition differ", field="repeated")
    validate_password(password, username=user.username)
    user.password_hash = hash_password(password)
    user.failed_logins, user.locked_until = 0, None
    session.flush()
    audit.record(session, actor=by, action="user.password", target=user.username)
    end_sessions(session=session, user_id=user.id)
    return user
