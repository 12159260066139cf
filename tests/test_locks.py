"""Tests for spamguard.services.locks on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from spamguard.db import session_scope
from spamguard.errors import LockHeldError, LockLostError
from spamguard.models import Lock
from spamguard.services import locks


def _dead_pid() -> int:
    """Return the pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _row(factory) -> Lock | None:
    with session_scope(factory) as session:
        return session.get(Lock, "job")


def test_acquire_release_and_reacquire(db_session_factory) -> None:
    lease = locks.acquire(session_factory=db_session_factory, name="job", ttl=60)
    assert _row(db_session_factory).owner == str(lease.owner) and lease.took_over is None
    lease.release()
    assert _row(db_session_factory) is None
    with locks.acquire(session_factory=db_session_factory, name="job", ttl=60):
        pass
    assert _row(db_session_factory) is None


def test_a_release_the_database_refuses_is_a_warning(db_session_factory, monkeypatch,
                                                     caplog) -> None:
    """The lock expires by itself: the caller's outcome (retrain's one line) stands."""
    from tests.fixtures_retrain import REFUSED, ConnectionRefused, database_fails

    lease = locks.acquire(session_factory=db_session_factory, name="job", ttl=60)
    database_fails(monkeypatch, ConnectionRefused(REFUSED))
    with caplog.at_level("WARNING"):
        lease.release()
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [
        (f"could not release lock 'job' ({REFUSED}); it expires by itself within 60 s", None)]
    monkeypatch.undo()
    assert _row(db_session_factory).owner == str(lease.owner)


def test_a_renewal_the_database_refuses_is_one_line_and_tried_again(db_session_factory,
                                                                    monkeypatch, caplog):
    """While the database is down, each beat of a long retraining logged a traceback."""
    import threading

    from tests.fixtures_retrain import REFUSED, ConnectionRefused, database_fails

    lease = locks.acquire(session_factory=db_session_factory, name="job", ttl=0.3)
    database_fails(monkeypatch, ConnectionRefused(REFUSED))
    beats = threading.Event()
    real_renew = lease.renew

    def renew():
        try:
            real_renew()
        finally:
            beats.set()

    monkeypatch.setattr(lease, "renew", renew)
    with caplog.at_level("WARNING"), lease.kept_alive():
        assert beats.wait(30)
    warned = [r for r in caplog.records if "renew" in r.getMessage()]
    assert warned and all(r.exc_info is None for r in warned)
    assert warned[0].getMessage() == (f"could not renew lock 'job' ({REFUSED}); trying "
                                      "again in 0 s")


def test_a_live_holder_keeps_the_lock(db_session_factory) -> None:
    with locks.acquire(session_factory=db_session_factory, name="job", ttl=60):
        with pytest.raises(LockHeldError, match=f"held by pid {os.getpid()}"):
            locks.acquire(session_factory=db_session_factory, name="job", ttl=60)


@pytest.mark.parametrize(("owner", "ttl"), [
    pytest.param(lambda: locks.Owner("other-host", 1, "x"), -1, id="expired"),
    pytest.param(lambda: locks.Owner(socket.gethostname(), _dead_pid(), "x"), 600,
                 id="dead-pid-same-host"),
])
def test_a_stale_lock_is_taken_over(db_session_factory, owner, ttl) -> None:
    stale_owner = owner()
    locks.acquire(session_factory=db_session_factory, name="job", ttl=ttl, owner=stale_owner)
    lease = locks.acquire(session_factory=db_session_factory, name="job", ttl=60)
    assert lease.took_over == str(stale_owner)
    assert _row(db_session_factory).owner == str(lease.owner)


def test_a_live_lock_on_another_host_is_not_taken_over(db_session_factory) -> None:
    locks.acquire(session_factory=db_session_factory, name="job", ttl=600,
                  owner=locks.Owner("other-host", 1, "x"))
    with pytest.raises(LockHeldError, match="on other-host"):
        locks.acquire(session_factory=db_session_factory, name="job", ttl=60)


def test_renew_extends_and_detects_a_takeover(db_session_factory) -> None:
    lease = locks.acquire(session_factory=db_session_factory, name="job", ttl=1)
    first = _row(db_session_factory).expires_at
    lease.ttl = 600
    lease.renew()
    assert _row(db_session_factory).expires_at > first
    with session_scope(db_session_factory) as session:
        session.get(Lock, "job").owner = "someone-else"
    with pytest.raises(LockLostError):
        lease.renew()
    lease.release()  # not ours any more: left alone
    assert _row(db_session_factory).owner == "someone-else"


def test_only_one_of_many_concurrent_acquirers_wins(db_session_factory) -> None:
    results: list[str] = []
    barrier = threading.Barrier(4)

    def contend() -> None:
        barrier.wait()
        try:
            locks.acquire(session_factory=db_session_factory, name="job", ttl=60)
            results.append("won")
        except LockHeldError:
            results.append("lost")

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["lost", "lost", "lost", "won"]


@pytest.mark.parametrize(("text", "parsed"), [
    ("host:12:abc", locks.Owner("host", 12, "abc")),
    ("a:b:12:abc", locks.Owner("a:b", 12, "abc")),
    ("not-an-owner", None),
    ("host:pid:abc", None),
])
def test_owner_parse(text, parsed) -> None:
    assert locks.Owner.parse(text) == parsed


def test_pid_alive() -> None:
    assert locks.pid_alive(os.getpid())
    assert not locks.pid_alive(_dead_pid())


def test_kept_alive_outlives_its_ttl(db_session_factory) -> None:
    """A stage longer than the ttl: the background renewal keeps the lease; once the block
    ends, renewal stops and the lease expires as before."""
    import time

    lease = locks.acquire(session_factory=db_session_factory, name="job", ttl=2)
    with lease.kept_alive():
        time.sleep(2.5)  # longer than the ttl
        with pytest.raises(LockHeldError):
            locks.acquire(session_factory=db_session_factory, name="job", ttl=60)
    time.sleep(2.5)
    taker = locks.acquire(session_factory=db_session_factory, name="job", ttl=60)
    assert taker.took_over == str(lease.owner)
    with pytest.raises(LockLostError):
        lease.renew()
