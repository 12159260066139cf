"""The audit trail: each change to accounts, API keys, sender rules, the model in service,
promotion holds and stored messages writes one event with who made it, in the change's own
transaction; ``spamguard audit`` and the admin UI's Activity page show them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from spamguard.cli import _Group, audit_commands, sender_commands, user_commands
from spamguard.db import session_scope
from spamguard.models import AuditEvent
from spamguard.services import (
    apikeys,
    audit,
    message_deletion,
    promotion_hold,
    registry,
    sender_rules,
    users,
)
from tests.fixtures_admin import new_message

PASSWORD = "a long passphrase 1"


def _events(session, after: int = 0) -> list[tuple]:
    session.expire_all()
    return [(e.actor, e.action, e.target, e.details) for e in session.scalars(
        select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id))]


def test_account_changes_are_recorded_once_each_and_only_when_something_changed(db_session):
    users.create_user(session=db_session, username="root", password=PASSWORD, role="admin",
                      by="setup")
    users.create_user(session=db_session, username="bob", password=PASSWORD,
                      role="moderator", by="alice")
    users.set_role(session=db_session, username="bob", role="admin", by="alice")
    users.set_role(session=db_session, username="bob", role="admin", by="alice")  # no change
    users.set_active(session=db_session, username="bob", active=False, by="alice")
    users.set_active(session=db_session, username="bob", active=False, by="alice")
    users.set_active(session=db_session, username="bob", active=True, by="alice")
    db_session.scalar(select(users.User).where(users.User.username == "bob")).failed_logins = 5
    users.unlock(session=db_session, username="bob", by="alice")
    users.unlock(session=db_session, username="bob", by="alice")  # not locked now: no change
    users.set_password(session=db_session, username="bob", password="another passphrase 2",
                       by="alice")
    users.delete_user(session=db_session, username="bob", by="alice")
    db_session.commit()
    events = _events(db_session)
    assert events[0] == ("setup", "user.create", "root", {"role": "admin"})
    assert [(a, t) for _, a, t, _ in events[1:]] == [
        ("user.create", "bob"), ("user.role", "bob"), ("user.disable", "bob"),
        ("user.enable", "bob"), ("user.unlock", "bob"), ("user.password", "bob"),
        ("user.delete", "bob")]
    assert {actor for actor, *_ in events[1:]} == {"alice"}
    assert events[2][3] == {"role": "admin", "was": "moderator"}
    assert events[-1][3]["now"].startswith("deleted account ")
    assert "password" not in json.dumps([e[3] for e in events]).replace('"user.password"', "")


def test_an_event_is_stored_only_if_its_change_commits(db_session):
    users.create_user(session=db_session, username="carol", password=PASSWORD,
                      role="viewer", by="alice")
    db_session.rollback()
    assert _events(db_session) == []


def test_keys_rules_models_and_holds_are_recorded_with_who_did_them(db_session,
                                                                     make_version_dir):
    first = registry.register_version(session=db_session, version_dir=make_version_dir("v1"))
    registry.register_version(session=db_session, version_dir=make_version_dir(
        "v2", created_at="2026-11-23T10:15:00+00:00"), activate_if_none=False)
    db_session.commit()
    assert first.status == "active"
    assert _events(db_session) == [(None, "model.promote", "v1", None)]  # the first version
    start = db_session.scalar(select(AuditEvent.id))
    row, _ = apikeys.create_api_key(session=db_session, name="gateway", by="alice")
    apikeys.revoke_api_key(session=db_session, key_ref=str(row.id), by="alice")
    apikeys.revoke_api_key(session=db_session, key_ref=str(row.id), by="alice")  # no change
    sender_rules.set_rule(db_session, sender="MyBank", action="allow", note="alerts",
                          by="alice")
    sender_rules.set_rule(db_session, sender="MYBANK", action="allow", note=None, by="alice")
    sender_rules.set_rule(db_session, sender="mybank", action="block", note=None, by="bob")
    sender_rules.remove_rule(db_session, sender="MyBank", by="bob")
    registry.promote(session=db_session, version_id="v2", by="bob")
    registry.rollback(session=db_session, by="carol")
    promotion_hold.hold(db_session, reason="bad night", by="carol")
    promotion_hold.release(db_session, by="carol")
    registry.promote(session=db_session, version_id="v2", by="retrain")
    registry.prune_versions(session=db_session, keep=1, dry_run=True, by="carol")  # no change
    db_session.commit()
    events = _events(db_session, after=start)
    assert [(actor, action, target) for actor, action, target, _ in events] == [
        ("alice", "api_key.create", "gateway"), ("alice", "api_key.revoke", "gateway"),
        ("alice", "sender_rule.set", "MyBank"), ("bob", "sender_rule.set", "mybank"),
        ("bob", "sender_rule.remove", "mybank"), ("bob", "model.promote", "v2"),
        ("carol", "model.rollback", "v1"), ("carol", "promotion.hold", None),
        ("carol", "promotion.release", None), ("retrain", "model.promote", "v2")]
    details = [d for *_, d in events]
    assert details[0]["prefix"] == row.key_prefix and "key_hash" not in details[0]
    assert details[3] == {"rule": "block", "was": "allow", "note": "alerts"}
    assert details[5] == {"was": "v1"} and details[6] == {"was": "v2"}
    assert details[7] == {"reason": "bad night"}


def test_deleting_model_versions_records_each_one(db_session, make_version_dir):
    for i in range(1, 4):
        registry.register_version(session=db_session, version_dir=make_version_dir(
            f"v{i}", created_at=f"2026-11-2{i}T10:15:00+00:00"), activate_if_none=i == 3)
    db_session.commit()
    start = db_session.scalar(select(AuditEvent.id))  # v3's activation
    registry.delete_versions(session=db_session, version_ids=["v1"], by="alice")
    registry.prune_versions(session=db_session, keep=1, by="bob")
    db_session.commit()
    assert [(a, act, t, d) for a, act, t, d in _events(db_session, after=start)] == [
        ("alice", "model.delete", "v1", {"via": "delete"}),
        ("bob", "model.delete", "v2", {"via": "prune --keep 1"})]


def test_deleting_messages_records_counts_but_no_sender_or_text(db_session,
                                                                db_session_factory):
    from datetime import UTC, datetime

    for body in ("my PIN is 4321", "call me"):
        db_session.add(new_message(body, p=0.2, sender="+447911123456",
                                   received_at=datetime(2026, 1, 1, tzinfo=UTC)))
    db_session.commit()
    message_deletion.delete_messages(db_session_factory, message_deletion.Selection(
        sender="+447911123456"), by="alice")
    message_deletion.delete_messages(db_session_factory, message_deletion.Selection(
        before=datetime(2026, 6, 1, tzinfo=UTC), keep_reviewed=True), by="cron")  # nothing
    [(actor, action, target, details)] = _events(db_session)
    assert (actor, action, target) == ("alice", "messages.erase", None)
    assert details == {"messages": 2, "reviewed": 0, "of": "a sender"}
    assert "447911" not in json.dumps(details) and "4321" not in json.dumps(details)


def test_an_unknown_action_is_a_programming_error(db_session):
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.record(db_session, actor="x", action="user.fly")


# The command line.

def test_the_command_lines_user_is_the_process_account_not_the_environment(monkeypatch):
    monkeypatch.setattr(audit.socket, "gethostname", lambda: "sms1")
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LOGNAME", "someone-else")
    monkeypatch.setattr(audit.pwd, "getpwuid", lambda uid: SimpleNamespace(
        pw_name={0: "root", 1000: "alice"}[uid]))
    monkeypatch.setattr(audit.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("SUDO_USER", "mallory")  # not root: anyone could have set it
    assert audit.cli_user() == "alice@sms1"
    monkeypatch.setattr(audit.os, "geteuid", lambda: 0)
    assert audit.cli_user() == "root@sms1 (sudo mallory)"
    monkeypatch.delenv("SUDO_USER")
    assert audit.cli_user() == "root@sms1"

    def nameless(uid):
        raise KeyError(uid)

    monkeypatch.setattr(audit.pwd, "getpwuid", nameless)  # a container's bare uid
    monkeypatch.setattr(audit.os, "geteuid", lambda: 4242)
    assert audit.cli_user() == "uid 4242@sms1"


@pytest.fixture
def cli(migrated_db_url, monkeypatch):
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    monkeypatch.setattr(audit.pwd, "getpwuid", lambda uid: SimpleNamespace(pw_name="ops"))
    monkeypatch.setattr(audit.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(audit.socket, "gethostname", lambda: "host")
    group = _Group("spamguard")
    for module in (audit_commands, sender_commands, user_commands):
        module.register(group)
    return group


def test_cli_changes_are_recorded_as_user_at_host_and_listed_newest_first(cli):
    runner = CliRunner()
    assert runner.invoke(cli, ["senders", "block", "SCAMCO"]).exit_code == 0
    made = runner.invoke(cli, ["user", "create", "dave", "--role", "viewer"],
                         input=f"{PASSWORD}\n{PASSWORD}\n")
    assert made.exit_code == 0, made.output
    listed = runner.invoke(cli, ["audit"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].endswith(" ops@host: created account dave (role viewer)")
    assert lines[1].endswith(" ops@host: set sender rule for SCAMCO (rule block)")
    as_json = [json.loads(line) for line in runner.invoke(
        cli, ["audit", "--json", "--kind", "sender_rule"]).stdout.splitlines()]
    assert [(e["actor"], e["action"], e["target"], e["details"]) for e in as_json] == [
        ("ops@host", "sender_rule.set", "SCAMCO", {"rule": "block"})]
    assert runner.invoke(cli, ["audit", "--kind", "model"]).stdout == (
        "no changes recorded of kind model\n")
    bad = runner.invoke(cli, ["audit", "--kind", "weather"])
    assert bad.exit_code == 2 and "'weather' is not one of" in bad.output


def test_audit_json_is_one_object_a_line_whatever_a_sender_holds(cli):
    # A sender may hold U+2028, U+2029 or U+0085 (only those below U+0020 are refused),
    # which str.splitlines() breaks lines at: --json promises one object a line.
    runner = CliRunner()
    for sender in ("A\u2028B", "C\x85D", "E\u2029F"):
        assert runner.invoke(cli, ["senders", "block", sender]).exit_code == 0
    out = runner.invoke(cli, ["audit", "--json"]).stdout
    assert [json.loads(line)["target"] for line in out.splitlines()] == [
        "E\u2029F", "C\x85D", "A\u2028B"]


# The Activity page.

def test_the_activity_page_shows_who_did_what_to_admins_only(admin_client, moderator_client,
                                                               viewer_client):
    admin_client.post("/admin/senders", data={"sender": "<b>EVIL</b>", "action": "block"})
    page = admin_client.get("/admin/activity")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "set sender rule for <strong>&lt;b&gt;EVIL&lt;/b&gt;</strong>" in text
    assert "<td>admin</td>" in text  # the account that did it
    assert "<b>EVIL</b>" not in text
    assert 'href="/admin/activity"' in text  # in the admins' navigation
    for client in (moderator_client, viewer_client):
        assert client.get("/admin/activity").status_code == 403
        assert 'href="/admin/activity"' not in client.get("/admin/senders").get_data(
            as_text=True)


def test_the_activity_page_shows_hidden_controls_in_every_field(admin_client):
    # A sender (from an SMS), a note or a hold's reason (typed) may hold bidi overrides
    # and invisible characters: named, never obeyed, as on the senders and message pages.
    admin_client.post("/admin/senders", data={
        "sender": "Bank\u202eknaB", "action": "block", "note": "<i>pay</i>\u202e fdp.exe"})
    admin_client.post("/admin/models/hold", data={"reason": "fr\u200bee \u2066night"})
    text = admin_client.get("/admin/activity").get_data(as_text=True)
    for hidden in ("\u202e", "\u200b", "\u2066"):
        assert hidden not in text
        assert f"[U+{ord(hidden):04X}]" in text
    assert "&lt;i&gt;pay&lt;/i&gt;" in text and "<i>pay" not in text


def test_the_activity_page_filters_by_kind_and_pages_by_id(admin_client, db_session_factory,
                                                           monkeypatch):
    from spamguard.admin import activity

    monkeypatch.setattr(activity, "PER_PAGE", 2)
    with session_scope(db_session_factory) as session:
        for i in range(3):
            sender_rules.set_rule(session, sender=f"S{i}", action="allow", note=None, by="x")
    def rows(url: str) -> str:  # the table only: a CSRF token may hold "S1"
        page = admin_client.get(url).get_data(as_text=True)
        return page.split("<tbody>")[1].split("</tbody>")[0] + page.split("</table>")[1]

    first = rows("/admin/activity?kind=sender_rule")
    assert "S2" in first and "S1" in first and "S0" not in first
    assert "Older →" in first
    with session_scope(db_session_factory) as session:
        older = min(e.id for e in audit.recent(session, limit=2, action="sender_rule"))
    second = rows(f"/admin/activity?kind=sender_rule&before={older}")
    assert "S0" in second and "S1" not in second and "Older →" not in second
    assert "No changes recorded of this kind." in admin_client.get(
        "/admin/activity?kind=messages").get_data(as_text=True)
    assert admin_client.get("/admin/activity?kind=weather").status_code == 400
    assert admin_client.get("/admin/activity?before=abc").status_code == 400


def test_a_change_whose_caller_said_nobody_reads_the_same_in_both_places(
        cli, migrated_db_url, admin_client, db_session_factory):
    """docs/admin.md: "someone (Python API)" for a change made by calling spamguard's
    functions without saying who; ``spamguard audit`` prints the same as the page."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    engine = create_engine(migrated_db_url)
    try:
        with session_scope(sessionmaker(engine)) as session:
            apikeys.create_api_key(session=session, name="script key")
    finally:
        engine.dispose()
    listed = CliRunner().invoke(cli, ["audit", "--kind", "api_key"])
    assert listed.exit_code == 0, listed.output
    assert " someone (Python API): created API key script key (" in listed.stdout
    with session_scope(db_session_factory) as session:
        apikeys.create_api_key(session=session, name="page key")
    page = admin_client.get("/admin/activity?kind=api_key").get_data(as_text=True)
    assert "<td>someone (Python API)</td>" in page


def test_recorded_times_read_as_times_in_both_places_and_stay_iso_in_json(
        cli, admin_client, db_session_factory):
    """A purge's cutoff and a restored backup's time are stored as ISO 8601 (``--json``
    keeps them so); people read them as the When column does."""
    from datetime import UTC, datetime

    with session_scope(db_session_factory) as session:
        session.add(new_message("old news", p=0.2, received_at=datetime(2026, 1, 1,
                                                                        tzinfo=UTC)))
    message_deletion.delete_messages(db_session_factory, message_deletion.Selection(
        before=datetime(2026, 6, 1, 8, 30, tzinfo=UTC)), by="cron")
    with session_scope(db_session_factory) as session:
        audit.record(session, actor="ops", action="backup.restore",
                     target="2026-12-02T21:04:05.123456+01:00", versions=2)
    listed = CliRunner().invoke(cli, ["audit"]).stdout.splitlines()
    assert listed[0].endswith(" ops: restored this database from the backup made at "
                              "2026-12-02 20:04 UTC (versions 2)")
    assert listed[1].endswith(" cron: purged messages (messages 1, reviewed 0, "
                              "before 2026-06-01 08:30 UTC)")
    as_json = [json.loads(line) for line in CliRunner().invoke(
        cli, ["audit", "--json"]).stdout.splitlines()]
    assert as_json[0]["target"] == "2026-12-02T21:04:05.123456+01:00"
    assert as_json[1]["details"]["before"] == "2026-06-01T08:30:00+00:00"
    page = admin_client.get("/admin/activity").get_data(as_text=True)
    assert "the backup made at <strong>2026-12-02 20:04 UTC</strong>" in page
    assert "before: 2026-06-01 08:30 UTC" in page and "T08:30" not in page


def test_only_times_are_read_as_times():
    assert audit.shown_detail(["2026-06-01", "x", 3]) == "2026-06-01, x, 3"
    assert audit.shown_detail("2026-13-01T00:00", "before") == "2026-13-01T00:00"  # no time
    assert audit.shown_detail("2026-06-01T00:00", "before") == "2026-06-01 00:00 UTC"
    assert audit.shown_detail("2026-06-01T00:00", "reason") == "2026-06-01T00:00"  # typed
    assert audit.shown_detail(True, "kept_reviewed") == "True"
    user = AuditEvent(action="user.create", target="2026-06-01T00:00")  # a username
    assert audit.shown_target(user) == "2026-06-01T00:00"
