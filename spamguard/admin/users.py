"""The users page (admins): add accounts, disable and enable them, change their role,
unlock them, and reset another account's password."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from spamguard.admin.auth import password_rule
from spamguard.admin.base import bp, fail, role_required, run_action, session
from spamguard.models import ROLES
from spamguard.services import users
from spamguard.sqltypes import MAX_INTEGER_ID, parse_id
from spamguard.wording import sentence


@bp.route("/users")
@role_required("admin")
def user_list():
    """List accounts, with a form to add one."""
    return _users_page()


# The fields of the add and reset forms, by what services.users names in a UserError.
CREATE_FIELDS = {"username": "username", "password": "password", "role": "role"}
RESET_FIELDS = {"password": "new_password", "repeated": "new_password_again"}


def _users_page(typed: dict[str, str] | None = None, status: int = 200,
                reset_for: int | None = None, error_field: str = ""):
    """The users page; ``typed`` refills the add form after a refusal (never the password),
    ``reset_for`` keeps the account chosen in the reset form after one; ``error_field``
    names the field at fault (marked, and focused)."""
    accounts = users.list_users(session())
    locked = {user.id: until for user in accounts if (until := users.locked_until(user))}
    return render_template("admin/users.html", users=accounts, locked=locked, roles=ROLES,
                           typed=typed or {}, reset_for=reset_for, error_field=error_field,
                           username_rule=users.username_rule(),
                           username_min=users.MIN_USERNAME_LENGTH,
                           **password_rule("the username")), status


@bp.route("/users", methods=["POST"])
@role_required("admin")
def user_create():
    """Create an account from the form; a refused one comes back as a 400 with the typed
    username and role still in the form."""
    form = request.form
    db = session()
    try:
        user = users.create_user(session=db, username=form.get("username", ""),
                                 password=form.get("password", ""), role=form.get("role", ""),
                                 by=current_user.username)
    except users.UserError as exc:
        db.rollback()
        flash(sentence(f"User not created: {exc.for_ui()}"), "error")
        return _users_page({"username": form.get("username", "")[:150],
                            "role": form.get("role", "")}, 400,
                           error_field=CREATE_FIELDS.get(exc.field, ""))
    db.commit()
    flash(f"Created {user.role} {user.username}.", "info")
    return redirect(url_for("admin.user_list"))


@bp.route("/users/<integer_id:user_id>/active", methods=["POST"])
@role_required("admin")
def user_active(user_id: int):
    """Enable or disable an account (not your own)."""
    if user_id == int(current_user.id):
        return fail("You cannot disable your own account.", "admin.user_list")
    active = request.form.get("active") == "1"
    return run_action(
        lambda db: users.set_active(session=db, user_id=user_id, active=active,
                                   by=current_user.username),
        done=lambda u: f"User {u.username} is now {'enabled' if u.is_active else 'disabled'}.",
        refused=f"User not {'enabled' if active else 'disabled'}", endpoint="admin.user_list")


@bp.route("/users/<integer_id:user_id>/role", methods=["POST"])
@role_required("admin")
def user_role(user_id: int):
    """Give an account another role (not your own: an admin cannot demote themself out of
    this page)."""
    if user_id == int(current_user.id):
        return fail("You cannot change your own role.", "admin.user_list")
    role = request.form.get("role", "")
    return run_action(
        lambda db: users.set_role(session=db, user_id=user_id, role=role,
                                 by=current_user.username),
        done=lambda u: f"User {u.username} is now {'an' if u.role == 'admin' else 'a'} "
                       f"{u.role}.",
        refused="Role not changed", endpoint="admin.user_list")


@bp.route("/users/<integer_id:user_id>/delete", methods=["POST"])
@role_required("admin")
def user_delete(user_id: int):
    """Delete an account (not your own): it never logs in again, its reviews stay."""
    if user_id == int(current_user.id):
        return fail("You cannot delete your own account.", "admin.user_list")
    return run_action(
        lambda db: users.delete_user(session=db, user_id=user_id, by=current_user.username),
        done=lambda d: (f"Deleted {d.former}. Its reviews ({d.reviews}) are kept, shown as "
                        f"by \u201c{d.shown_as}\u201d."),
        refused="User not deleted", endpoint="admin.user_list")


@bp.route("/users/<integer_id:user_id>/unlock", methods=["POST"])
@role_required("admin")
def user_unlock(user_id: int):
    """Lift an account's lock after failed logins."""
    return run_action(lambda db: users.unlock(session=db, user_id=user_id,
                                              by=current_user.username),
                      done=lambda done: (f"User {done[0].username} is unlocked." if done[1]
                                         else f"User {done[0].username} was not locked."),
                      refused="User not unlocked", endpoint="admin.user_list")


OWN_PASSWORD = ("Your own password is not reset here: change it at Password, which asks for "
                "your current one and keeps you logged in in this browser.")


@bp.route("/users/password", methods=["POST"])
@role_required("admin")
def user_password_reset():
    """Give another account a new password (typed twice), as `spamguard user set-password`
    does: its logins and queue claims end, and a lock after failed logins is lifted. One's
    own goes through the Password page (the current password, this login kept)."""
    form = request.form
    try:
        target = parse_id(form.get("user_id", ""), max_id=MAX_INTEGER_ID)
    except ValueError:
        return fail("Password not reset: choose an account.", "admin.user_list")
    if target == int(current_user.id):
        return fail(OWN_PASSWORD, "admin.user_list")
    db = session()
    try:
        user = users.set_password(session=db, user_id=target,
                                  password=form.get("new_password", ""),
                                  repeated=form.get("new_password_again", ""),
                                  by=current_user.username)
    except users.UserError as exc:
        db.rollback()
        flash(sentence(f"Password not reset: {exc.for_ui()}"), "error")
        return _users_page(status=400, reset_for=target,
                           error_field=RESET_FIELDS.get(exc.field, ""))
    db.commit()
    flash(f"New password set for {user.username}: their logins have ended, on every browser, "
          "and a lock after failed logins is lifted. Give them the password in a safe way.",
          "info")
    return redirect(url_for("admin.user_list"))
