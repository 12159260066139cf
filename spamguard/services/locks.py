"""Named leases in the ``locks`` table, so one retraining runs at a time across machines.

A lease has an owner (``host:pid:token``) and an expiry. Another process may take it over
when it has expired, or when its owner ran on the same host and that process is gone (a
``kill -9`` leaves the row behind). Every change is a single conditional INSERT, UPDATE or
DELETE in its own transaction, which is atomic on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from spamguard.db import first_line
from spamguard.errors import LockHeldError, LockLostError
from spamguard.models import Lock
from spamguard.sqltypes import as_utc, utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: host name, process id and a random token for this acquisition."""

    host: str
    pid: int
    token: str

    @classmethod
    def current(cls) -> Owner:
        """Return an owner for this process (a fresh token each time)."""
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(4))

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """Read ``host:pid:token`` back (None for an owner written by something else)."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        host, pid, token = parts
        return cls(host, int(pid), token)

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"


def pid_alive(pid: int) -> bool:
    """Return True if process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state letter follows the parenthesised command name, which may hold spaces.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale(lock: Lock, *, now: datetime | None = None) -> bool:
    """Return True if ``lock`` may be taken over: expired, or its local owner is dead."""
    now = now or utcnow()
    if as_utc(lock.expires_at) <= now:
        return True
    owner = Owner.parse(lock.owner)
    return (owner is not None and owner.host == socket.gethostname()
            and not pid_alive(owner.pid))


class Lease:
    """A held lock: renew it while working, release it when done (or use ``with``)."""

    def __init__(self, session_factory: sessionmaker[Session], name: str, owner: Owner,
                 ttl: float, *, took_over: str | None = None) -> None:
        self.session_factory, self.name, self.owner, self.ttl = session_factory, name, owner, ttl
        self.took_over = took_over  # the stale owner this lease replaced, if any

    def renew(self) -> None:
        """Push the expiry ``ttl`` seconds ahead; raise LockLostError if no longer ours."""
        with self.session_factory() as session, session.begin():
            result = session.execute(
                update(Lock).where(Lock.name == self.name, Lock.owner == str(self.owner))
                .values(expires_at=utcnow() + timedelta(seconds=self.ttl)))
        if result.rowcount != 1:
            raise LockLostError(f"lock {self.name!r} was taken over by another process")

    @contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the lease in a background thread every third of its ttl while the block
        runs, so one long stage (training a large backbone) cannot outlive it. A lease lost
        anyway is noticed by the next :meth:`renew` of the work itself."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(max(self.ttl / 3, 0.05)):
                try:
                    self.renew()
                except LockLostError:
                    return
                except SQLAlchemyError as exc:  # a database hiccup: the next beat tries again
                    logger.debug("renewing lock %r failed", self.name, exc_info=True)
                    logger.warning("could not renew lock %r (%s); trying again in %.0f s",
                                   self.name, first_line(exc), max(self.ttl / 3, 0.05))
                except Exception:  # a bug: its traceback is wanted
                    logger.warning("could not renew lock %r", self.name, exc_info=True)

        thread = threading.Thread(target=beat, name=f"lease-{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        """Drop the lock if this process still holds it. A database that fails now (down,
        a full disk) costs a warning, not the caller's outcome: the lock expires by itself
        (sooner on this host, where a dead owner's lock is taken over at once)."""
        try:
            with self.session_factory() as session, session.begin():
                session.execute(delete(Lock).where(Lock.name == self.name,
                                                   Lock.owner == str(self.owner)))
        except SQLAlchemyError as exc:
            logger.debug("releasing lock %r failed", self.name, exc_info=True)
            logger.warning("could not release lock %r (%s); it expires by itself within "
                           "%.0f s", self.name, first_line(exc), self.ttl)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _try_insert(session_factory: sessionmaker[Session], name: str, owner: Owner,
                ttl: float) -> bool:
    """Insert the lock row; False when a row with that name exists."""
    now = utcnow()
    try:
        with session_factory() as session, session.begin():
            session.add(Lock(name=name, owner=str(owner), acquired_at=now,
                             expires_at=now + timedelta(seconds=ttl)))
    except IntegrityError:
        return False
    return True


def _try_take_over(session_factory: sessionmaker[Session], name: str, owner: Owner,
                   ttl: float) -> tuple[bool, str | None]:
    """Replace a stale row (compare-and-swap on its owner and expiry).

    Returns:
        (taken, previous owner); previous owner is None when the row vanished meanwhile.
    """
    with session_factory() as session, session.begin():
        current = session.get(Lock, name)
        if current is None:
            return False, None
        if not is_stale(current):
            raise LockHeldError(describe_holder(current))
        now, previous = utcnow(), current.owner
        result = session.execute(
            update(Lock).where(Lock.name == name, Lock.owner == previous,
                               Lock.expires_at == current.expires_at)
            .values(owner=str(owner), acquired_at=now, expires_at=now + timedelta(seconds=ttl))
            .execution_options(synchronize_session=False))
        return result.rowcount == 1, previous


def describe_holder(lock: Lock) -> str:
    """One line naming who holds ``lock`` and until when."""
    owner = Owner.parse(lock.owner)
    who = f"pid {owner.pid} on {owner.host}" if owner else lock.owner
    since = as_utc(lock.acquired_at)
    return (f"lock {lock.name!r} is held by {who} since {since:%Y-%m-%d %H:%M:%S} UTC "
            f"(expires {as_utc(lock.expires_at):%H:%M:%S} UTC)")


# "name:token" of a lock a parent took for the job it starts (see :func:`reserve`), and
# the stale owner the parent took it over from, if any (so the job can record it).
HANDOVER_ENV = "SPAMGUARD_LOCK_HANDOVER"
TOOK_OVER_ENV = "SPAMGUARD_LOCK_TOOK_OVER"


def reserve(*, session_factory: sessionmaker[Session], name: str, ttl: float) -> Lease:
    """Take lock ``name`` for a job this process is about to start, before starting it.

    A web request that starts a background job (Retrain now, Rebuild campaigns) used to
    check the lock and start the job, which took the lock seconds later: two presses in
    that time started two jobs, and the second only logged "locked". The request now takes
    the lock first (LockHeldError if a live process holds it), starts the job with
    :func:`handover_environment`, names the job's pid as owner (:func:`hand_over`: a job
    that dies before taking over frees the lock at once), and the job's :func:`acquire`
    takes the lock over by the token."""
    return acquire(session_factory=session_factory, name=name, ttl=ttl)


def handover_environment(lease: Lease) -> dict[str, str]:
    """The environment entries that let the started job take over the reserved lock."""
    env = {HANDOVER_ENV: f"{lease.name}:{lease.owner.token}"}
    if lease.took_over:
        env[TOOK_OVER_ENV] = lease.took_over
    return env


def hand_over(lease: Lease, pid: int) -> None:
    """Name the started job (``pid``, this host) as the reserved lock's owner, unless the
    job took it over already."""
    owner = lease.owner
    with lease.session_factory() as session, session.begin():
        session.execute(update(Lock).where(Lock.name == lease.name, Lock.owner == str(owner))
                        .values(owner=str(Owner(owner.host, pid, owner.token)))
                        .execution_options(synchronize_session=False))


def _take_handover(session_factory: sessionmaker[Session], name: str, owner: Owner,
                   ttl: float) -> Lease | None:
    """Take over lock ``name`` if this process's parent reserved it for this process
    (:data:`HANDOVER_ENV`); the entries are used once and not passed on."""
    held, _, token = os.environ.get(HANDOVER_ENV, "").partition(":")
    if held != name or not token:
        return None
    os.environ.pop(HANDOVER_ENV, None)
    took_over = os.environ.pop(TOOK_OVER_ENV, None)
    with session_factory() as session, session.begin():
        current = session.get(Lock, name)
        reserved = Owner.parse(current.owner) if current is not None else None
        if reserved is None or reserved.token != token:
            return None
        now = utcnow()
        taken = session.execute(
            update(Lock).where(Lock.name == name, Lock.owner == current.owner)
            .values(owner=str(owner), acquired_at=now, expires_at=now + timedelta(seconds=ttl))
            .execution_options(synchronize_session=False)).rowcount == 1
    return Lease(session_factory, name, owner, ttl, took_over=took_over) if taken else None


def acquire(*, session_factory: sessionmaker[Session], name: str, ttl: float,
            owner: Owner | None = None) -> Lease:
    """Take the lock ``name`` for ``ttl`` seconds, taking over a stale holder, or the
    reservation this process's parent made for it (:func:`reserve`).

    Raises:
        LockHeldError: a live process holds it.
    """
    owner = owner or Owner.current()
    handed = _take_handover(session_factory, name, owner, ttl)
    if handed is not None:
        return handed
    for _ in range(3):  # a row may vanish or change between our reads; retry briefly
        if _try_insert(session_factory, name, owner, ttl):
            return Lease(session_factory, name, owner, ttl)
        taken, previous = _try_take_over(session_factory, name, owner, ttl)
        if taken:
            return Lease(session_factory, name, owner, ttl, took_over=previous)
    raise LockHeldError(f"lock {name!r} is changing hands too fast; try again")
