"""Holding automatic promotion: the service (SQLite and PostgreSQL) and `spamguard
promotion hold / release / status`, `rollback` and `promote` on the command line."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from spamguard import db
from spamguard.cli import _Group, model_commands, promotion_commands
from spamguard.db import session_scope
from spamguard.models import PromotionHold
from spamguard.services import promotion_hold, registry


def test_hold_release_and_history(db_session_factory) -> None:
    with session_scope(db_session_factory) as session:
        assert promotion_hold.current(session) is None
        made = promotion_hold.hold(session, reason="  bad\nmodel  ", by="alice")
        assert made.changed and made.hold.reason == "bad model"  # one line
    with session_scope(db_session_factory) as session:
        held = promotion_hold.current(session)
        assert (held.created_by, held.reason, held.released_at) == ("alice", "bad model", None)
        assert promotion_hold.describe(held).startswith("on hold since ")
        assert promotion_hold.describe(held).endswith(" UTC by alice (bad model)")
        # Holding again keeps the first hold, its author and reason.
        again = promotion_hold.hold(session, reason="other", by="bob")
        assert not again.changed and again.hold.id == held.id and again.hold.reason == "bad model"
    with session_scope(db_session_factory) as session:
        released = promotion_hold.release(session, by="bob")
        assert released.changed and released.hold.released_by == "bob"
    with session_scope(db_session_factory) as session:
        assert promotion_hold.current(session) is None
        assert promotion_hold.release(session, by="bob") == promotion_hold.Change(None, False)
        second = promotion_hold.hold(session, reason="", by="carol")
        assert second.changed and second.hold.reason is None
        assert promotion_hold.describe(second.hold).endswith(" by carol")
        assert promotion_hold.last_released(session).released_by == "bob"
    with session_scope(db_session_factory) as session:  # the history stays
        rows = session.execute(select(PromotionHold.created_by, PromotionHold.released_by)
                               .order_by(PromotionHold.id)).all()
        assert rows == [("alice", "bob"), ("carol", None)]


def test_the_database_allows_one_hold_in_force(db_session_factory, monkeypatch) -> None:
    """Two holds made at once (each seeing none) cannot both be in force: the second
    hold() keeps the first one instead of failing."""
    from sqlalchemy.exc import IntegrityError

    from spamguard.sqltypes import utcnow

    with session_scope(db_session_factory) as session:
        promotion_hold.hold(session, reason="first", by="alice")
    with pytest.raises(IntegrityError), session_scope(db_session_factory) as session:
        session.add(PromotionHold(created_at=utcnow(), created_by="bob", active=True))
    with pytest.raises(IntegrityError), session_scope(db_session_factory) as session:
        session.add(PromotionHold(created_at=utcnow(), created_by="bob", active=False))
    real, calls = promotion_hold.current, []

    def not_committed_yet(session):  # the first look misses it, as in a race
        calls.append(1)
        return None if len(calls) == 1 else real(session)

    monkeypatch.setattr(promotion_hold, "current", not_committed_yet)
    with db_session_factory() as session:
        kept = promotion_hold.hold(session, reason="second", by="bob")
        assert not kept.changed and kept.hold.reason == "first"
        session.commit()
    with session_scope(db_session_factory) as session:
        assert session.query(PromotionHold).count() == 1


def test_cli_user_names_user_and_host() -> None:
    import socket

    assert promotion_hold.cli_user().endswith(f"@{socket.gethostname()}")


# The command line ------------------------------------------------------------------------


@pytest.fixture
def cli() -> click.Group:
    group = _Group("spamguard")
    model_commands.register(group)
    promotion_commands.register(group)
    return group


@pytest.fixture
def registered(migrated_db_url, make_version_dir, monkeypatch) -> str:
    """v1 active, v2 promoted after it (so a rollback returns to v1)."""
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    engine = db.make_engine(migrated_db_url)
    with db.session_scope(db.make_session_factory(engine)) as session:
        for name in ("v1", "v2"):
            registry.register_version(session=session, version_dir=make_version_dir(name))
        registry.promote(session=session, version_id="v2")
    engine.dispose()
    return migrated_db_url


def run(cli: click.Group, *args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _status(cli: click.Group) -> dict:
    result = run(cli, "promotion", "status", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_hold_status_release(cli, registered) -> None:
    off = run(cli, "promotion", "status")
    assert off.exit_code == 0 and off.stdout.startswith("automatic promotion is not on hold")
    assert _status(cli) == {"held": False}
    made = run(cli, "promotion", "hold", "--reason", "spam wave, checking by hand")
    assert made.exit_code == 0, made.output
    assert made.stdout.startswith("automatic promotion is now on hold since ")
    assert "(spam wave, checking by hand)" in made.stdout
    assert "`spamguard promotion release`" in made.stdout
    status = _status(cli)
    assert status["held"] and status["reason"] == "spam wave, checking by hand"
    assert status["by"] == promotion_hold.cli_user() and status["since"]
    shown = run(cli, "promotion", "status").stdout
    assert shown.startswith("automatic promotion is on hold since ")
    assert f"by {promotion_hold.cli_user()} (spam wave, checking by hand)" in shown
    again = run(cli, "promotion", "hold", "--reason", "another")
    assert again.exit_code == 0
    assert again.stdout.startswith("automatic promotion was already on hold since ")
    assert "(spam wave, checking by hand); that hold stays" in again.stdout
    assert _status(cli)["reason"] == "spam wave, checking by hand"
    released = run(cli, "promotion", "release")
    assert released.exit_code == 0
    assert released.stdout.startswith("released the hold on automatic promotion (on hold since ")
    assert _status(cli) == {"held": False}
    assert "last hold released " in run(cli, "promotion", "status").stdout
    nothing = run(cli, "promotion", "release")
    assert nothing.exit_code == 0
    assert nothing.stdout.strip() == "automatic promotion is not on hold; nothing changed"


def test_rollback_holds_automatic_promotion(cli, registered) -> None:
    result = run(cli, "rollback")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "rolled back to v1 (was v2); running services switch without restart"
    assert lines[1].startswith("automatic promotion is now on hold since ")
    assert lines[1].endswith("(rollback from v2 to v1), so the next `spamguard retrain` "
                             "cannot undo this rollback: it still trains and reports, but "
                             "promotes nothing until `spamguard promotion release`")
    status = _status(cli)
    assert status["held"] and status["reason"] == "rollback from v2 to v1"
    # `promote` by hand works while held, keeps the hold and says so.
    promoted = run(cli, "promote", "v2")
    assert promoted.exit_code == 0 and "promoted v2 (was v1)" in promoted.stdout
    assert ("note: automatic promotion is still on hold since " in promoted.stderr
            and "(rollback from v2 to v1); `spamguard promotion release` lets retraining "
            "promote again" in promoted.stderr)
    assert _status(cli)["reason"] == "rollback from v2 to v1"
    # A second rollback keeps the first hold (and says so).
    second = run(cli, "rollback")
    assert second.exit_code == 0
    assert "automatic promotion was already on hold since " in second.stdout
    assert "(rollback from v2 to v1); that hold stays" in second.stdout


def test_rollback_no_hold(cli, registered) -> None:
    result = run(cli, "rollback", "--no-hold")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("rolled back to v1 (was v2); running services switch "
                                     "without restart")
    assert _status(cli) == {"held": False}
    promoted = run(cli, "promote", "v2")
    assert promoted.exit_code == 0 and "on hold" not in promoted.output


def test_a_refused_rollback_holds_nothing(cli, registered) -> None:
    run(cli, "rollback", "--no-hold")
    refused = CliRunner().invoke(cli, ["rollback"])
    assert refused.exit_code == 2 and "no previously active version" in refused.output
    assert _status(cli) == {"held": False}


def test_models_says_when_promotion_is_held(cli, registered) -> None:
    """`spamguard models` notes the hold in force on stderr after its table, since a held
    run exits 0 and a forgotten hold would keep every retrained version out of service;
    the JSON lines stay one version each."""
    assert "on hold" not in run(cli, "models").output
    run(cli, "promotion", "hold", "--reason", "checking v2")
    listed = run(cli, "models")
    assert "on hold" not in listed.stdout  # the table stays the table
    assert listed.stderr.startswith("note: automatic promotion is still on hold since ")
    assert listed.stderr.rstrip().endswith(
        "(checking v2); `spamguard promotion release` lets retraining promote again")
    lines = run(cli, "models", "--json").stdout.splitlines()
    assert sorted(json.loads(line)["version"] for line in lines) == ["v1", "v2"]
