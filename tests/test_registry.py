"""Tests for spamguard.services.registry on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spamguard.db import session_scope
from spamguard.errors import RegistryError, VersionNotFoundError
from spamguard.models import ModelVersion
from spamguard.services import registry


@pytest.fixture
def three(db_session: Session, make_version_dir) -> Session:
    """Register v1 (active), v2 and v3 (candidates), oldest first."""
    for n in (1, 2, 3):
        path = make_version_dir(f"v{n}", created_at=f"2026-11-2{n}T10:00:00Z", mcc=0.8 + n / 100)
        registry.register_version(session=db_session, version_dir=path)
    db_session.commit()
    return db_session


def _statuses(session: Session) -> dict[str, str]:
    return dict(session.execute(select(ModelVersion.id, ModelVersion.status)).all())


def test_first_version_becomes_active(three: Session) -> None:
    assert _statuses(three) == {"v1": "active", "v2": "candidate", "v3": "candidate"}
    active = registry.active_version(three)
    assert active.id == "v1" and active.activated_at is not None
    assert active.backbone == "all-MiniLM-L6-v2" and active.threshold == 0.5
    assert registry.headline_metrics(active) == {"spam_f1": 0.9, "mcc": 0.81, "ham_fpr": 0.01}


def test_register_without_activation(db_session: Session, make_version_dir) -> None:
    registry.register_version(session=db_session, version_dir=make_version_dir("a"),
                              activate_if_none=False)
    registry.register_version(session=db_session, version_dir=make_version_dir("b"),
                              status="rejected")
    assert registry.active_version(db_session) is None
    assert _statuses(db_session) == {"a": "candidate", "b": "rejected"}


def test_register_is_idempotent_for_the_same_directory(three: Session, make_version_dir) -> None:
    again = registry.register_version(session=three, version_dir=make_version_dir("v2"))
    assert again.status == "candidate"
    other = make_version_dir("elsewhere")
    (other / "model.json").write_text(
        (other / "model.json").read_text().replace('"elsewhere"', '"v2"'))
    with pytest.raises(RegistryError, match="already registered"):
        registry.register_version(session=three, version_dir=other)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "is not a model version .no model.json"), ("{not json", "unreadable model metadata"),
     ('{"version": "x"}', "missing or invalid pooling, max_length, input_dim, threshold"),
     ('{"version": "x", "created_at": "2026-01-01", "threshold": NaN, "pooling": "mean", '
      '"max_length": 128, "input_dim": 4, "backbone": {"name": "b", "hash": "h"}}',
      "threshold nan is not a probability")],
)
def test_register_rejects_bad_directories(db_session, tmp_path, content, message) -> None:
    directory = tmp_path / "bad"
    directory.mkdir()
    if content is not None:
        (directory / "model.json").write_text(content)
    with pytest.raises(RegistryError, match=message):
        registry.register_version(session=db_session, version_dir=directory)


def test_list_versions_newest_first(three: Session) -> None:
    assert [v.id for v in registry.list_versions(three)] == ["v3", "v2", "v1"]


def test_promote_retires_the_old_active(three: Session) -> None:
    registry.promote(session=three, version_id="v3")
    three.commit()
    assert _statuses(three) == {"v1": "retired", "v2": "candidate", "v3": "active"}
    assert registry.get_version(three, "v3").previous_active_id == "v1"


def test_promote_errors(three: Session, make_version_dir) -> None:
    with pytest.raises(VersionNotFoundError, match="no model version 'nope'"):
        registry.promote(session=three, version_id="nope")
    folder = make_version_dir("v2")
    (folder / "model.json").unlink()
    with pytest.raises(RegistryError, match="is not a model version"):
        registry.promote(session=three, version_id="v2")
    shutil.rmtree(folder)
    with pytest.raises(RegistryError, match=r"model version folder .*v2 does not exist "
                                            r"\(moved or deleted\?\)"):
        registry.promote(session=three, version_id="v2")
    assert registry.active_version(three).id == "v1"


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "head.safetensors").unlink(), "incomplete model version .no head"),
    (lambda d: (d / "model.json").write_text('{"threshold": 0.5}'), "missing or invalid"),
    (lambda d: (d / "model.json").write_text(
        (d / "model.json").read_text().replace('"input_dim": 384', '"input_dim": 384, '
                                                 '"blend": {"w": 1}')),
     "no lexical.json, lexical.safetensors"),
    # From an audit: a truncated copy was promoted, and every load then failed.
    (lambda d: (d / "head.safetensors").write_bytes((d / "head.safetensors").read_bytes()[:-4]),
     "head.safetensors: not a readable safetensors file"),
    # From an audit: a model from another spamguard's features failed on every message, and
    # /classify answered 400 quoting the mismatch.
    (lambda d: (d / "model.json").write_text(
        (d / "model.json").read_text().replace('"input_dim": 384', '"input_dim": 384, '
                                                 '"features": ["has_url"]')),
     r"features \['has_url'\] are not the ones this spamguard computes"),
])
def test_promote_and_rollback_refuse_an_incomplete_version(three: Session, make_version_dir,
                                                           damage, message) -> None:
    """A service started after such a promote would have no model to serve."""
    damage(make_version_dir("v2"))
    with pytest.raises(RegistryError, match=message):
        registry.promote(session=three, version_id="v2")
    assert registry.active_version(three).id == "v1"


def test_rollback_walks_back(three: Session) -> None:
    registry.promote(session=three, version_id="v2")
    registry.promote(session=three, version_id="v3")
    assert registry.rollback(session=three).id == "v2"
    assert registry.rollback(session=three).id == "v1"
    three.commit()
    assert _statuses(three) == {"v1": "active", "v2": "retired", "v3": "retired"}
    with pytest.raises(RegistryError, match="v1 has no previously active version") as error:
        registry.rollback(session=three)
    assert "does not undo a rollback" in str(error.value)
    assert "to re-activate v2, active before it, run `spamguard promote v2`" in str(error.value)


def test_rollback_of_the_first_version_suggests_promote(three: Session) -> None:
    with pytest.raises(RegistryError, match="v1 has no previously active version") as error:
        registry.rollback(session=three)
    assert "run `spamguard promote VERSION` (see `spamguard models`)" in str(error.value)


def test_rollback_without_active(db_session: Session) -> None:
    with pytest.raises(RegistryError, match="no active model version"):
        registry.rollback(session=db_session)


def test_reject(three: Session) -> None:
    assert registry.reject(session=three, version_id="v2").status == "rejected"
    with pytest.raises(RegistryError, match="v1 is active"):
        registry.reject(session=three, version_id="v1")


def test_a_promotion_that_loses_a_race_says_so(three: Session, db_session_factory) -> None:
    """PostgreSQL, in this order: one promotion (v3) has activated but not committed; a
    second (v2) waits on its row lock; the first commits. The second's retiring UPDATE
    saw no active v3 in its snapshot, so making v2 active breaks the one-active index. It
    must say "try again" (ConcurrentActivationError), not raise "Can't operate on closed
    transaction" (a 500 in the admin UI; seen once when the suite ran two at a time)."""
    import time

    from sqlalchemy import text

    from spamguard.errors import ConcurrentActivationError

    if three.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite lets one writer at a time in: the second sees v3 active")
    first = db_session_factory()
    registry.promote(session=first, version_id="v3")  # flushed, not committed
    outcome: list[object] = []

    def second() -> None:
        time.sleep(0.3)  # after the first look below, which must not be the last
        try:
            with session_scope(db_session_factory) as session:
                registry.promote(session=session, version_id="v2")
            outcome.append("ok")
        except Exception as error:  # noqa: BLE001 - the test reports which one
            outcome.append(error)

    thread = threading.Thread(target=second)
    thread.start()
    deadline = time.monotonic() + 20
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                   "AND datname = current_database()")
    # Wait until the second is blocked on the lock. Each look in its own transaction:
    # pg_stat_activity keeps showing what a transaction first saw of it.
    while True:
        with db_session_factory() as watcher:
            if watcher.scalar(waiting):
                break
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.02)
    first.commit()
    first.close()
    thread.join(timeout=20)
    (error,) = outcome
    assert isinstance(error, ConcurrentActivationError), repr(error)
    assert "could not activate v2: another version was activated at the same time" in str(
        error)
    three.expire_all()
    assert _statuses(three) == {"v1": "retired", "v2": "candidate", "v3": "active"}


def test_concurrent_promotions_leave_one_active(three: Session, db_session_factory) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def promote(version_id: str) -> None:
        barrier.wait()
        try:
            with session_scope(db_session_factory) as session:
                registry.promote(session=session, version_id=version_id)
            outcomes.append("ok")
        except RegistryError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("v2", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    three.expire_all()
    statuses = _statuses(three)
    assert "ok" in outcomes and len(outcomes) == 2
    assert list(statuses.values()).count("active") == 1
    assert statuses["v1"] == "retired"
