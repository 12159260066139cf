"""Retraining fixtures: an instance on the tiny backbone with a small base data set, and
helpers that store reviewed messages. Parametrised over SQLite and PostgreSQL through
``migrated_db_url``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

RETRAIN_BASE_REPEATS = 6  # 36 spam + 48 ham distinct texts: enough for split + eval set


def write_labelled(path: Path, rows: Iterable[tuple[int | str, str]]) -> Path:
    """Write ``(label, text)`` rows as a headerless TSV (label ham/spam)."""
    lines = []
    for label, text in rows:
        name = label if isinstance(label, str) else ("spam" if label else "ham")
        lines.append(f"{name}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def base_rows(repeats: int = RETRAIN_BASE_REPEATS) -> list[tuple[int, str]]:
    """The tiny sample data as ``(label, text)`` rows."""
    from tests.fixtures_ml import sample_data

    data = sample_data(repeats)
    return list(zip(data.labels.tolist(), data.texts, strict=True))


def inverting_reviews(session_factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    """Every base message outside the evaluation set reviewed with the opposite label: a
    candidate learns nonsense, and the set (whose labels follow reviews) still knows better."""
    from spamguard.db import session_scope
    from spamguard.ml.data import text_hash
    from spamguard.services.evalset import load_evalset

    with session_scope(session_factory) as session:
        held_out = load_evalset(session).hashes
    return [(text, "ham" if label else "spam") for label, text in base_rows()
            if text_hash(text) not in held_out]


def store_reviews(session_factory: sessionmaker[Session],
                  reviews: Iterable[tuple[str, str]]) -> list[int]:
    """Store each ``(text, label)`` as a received message with a moderator's review."""
    from spamguard.db import session_scope
    from spamguard.ml.data import text_hash
    from spamguard.models import Message, Review

    ids = []
    with session_scope(session_factory) as session:
        for text, label in reviews:
            message = Message(gateway="test", sender="+15550001", recipient="+15550002",
                              body=text, text_hash=text_hash(text), review_label=label)
            session.add(message)
            session.flush()
            session.add(Review(message_id=message.id, label=label, is_current=True))
            ids.append(message.id)
    return ids


@pytest.fixture
def retrain_settings(tmp_path: Path, tiny_backbone_dir: Path, migrated_db_url: str):
    """Settings of an instance on the tiny backbone with a small base data set."""
    from spamguard.config import load_settings

    home = tmp_path / "instance"
    base = write_labelled(tmp_path / "base.tsv", base_rows())
    return load_settings({
        "home": home, "database_url": migrated_db_url, "backbone": str(tiny_backbone_dir),
        "base_data": str(base), "retrain_min_new_reviews": 3, "evalset_fraction": 0.2,
        "retrain_min_per_class": 8,
    }, environ={})


@pytest.fixture
def retrain_env(retrain_settings) -> dict[str, str]:
    """Environment for a ``python -m spamguard`` subprocess on the same instance."""
    s = retrain_settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGUARD_")}
    env.update({
        "SPAMGUARD_HOME": str(s.home), "SPAMGUARD_DATABASE_URL": s.database_url,
        "SPAMGUARD_BACKBONE": s.backbone, "SPAMGUARD_BASE_DATA": s.base_data,
        "SPAMGUARD_RETRAIN_MIN_NEW_REVIEWS": str(s.retrain_min_new_reviews),
        "SPAMGUARD_EVALSET_FRACTION": str(s.evalset_fraction),
        "SPAMGUARD_RETRAIN_MIN_PER_CLASS": str(s.retrain_min_per_class),
        "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
    })
    return env


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Train the tiny head on one thread: on a busy 2-core machine, two threads spin-wait
    on each other and a second of work takes twenty."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def retrain(retrain_settings, db_session_factory, one_torch_thread) -> Callable[..., object]:
    """Run :func:`run_retrain` on the test instance (keyword arguments pass through)."""
    from spamguard.services.retrain import run_retrain

    def run(**kwargs):
        kwargs.setdefault("progress", False)
        return run_retrain(session_factory=db_session_factory, settings=retrain_settings,
                           **kwargs)

    return run


@pytest.fixture(scope="session")
def bad_model_dir(tmp_path_factory, tiny_backbone) -> Path:
    """A version trained on inverted labels: any honest candidate beats it."""
    import torch

    from spamguard.ml.data import LabelledData
    from spamguard.ml.train import TrainConfig, train_model
    from tests.fixtures_ml import sample_data

    data = sample_data(RETRAIN_BASE_REPEATS)
    inverted = LabelledData(data.texts, 1 - data.labels)
    root = tmp_path_factory.mktemp("bad-model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_model(inverted, models_dir=root, cache_root=None,
                             backbone=tiny_backbone, config=TrainConfig(epochs=10),
                             progress=False)
    finally:
        torch.set_num_threads(threads)
    return result.directory


def copy_version(source: Path, models_dir: Path) -> Path:
    """Copy a version directory into ``models_dir`` (tests must not change shared ones)."""
    target = models_dir / source.name
    shutil.copytree(source, target)
    return target


class ConnectionRefused(Exception):  # noqa: N818  (named as the server's answer)
    """A psycopg-like error of a server that is down: a connection failure, no SQLSTATE."""

    sqlstate = None


REFUSED = ('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
           "Connection refused")


def read_only_standby() -> Exception:
    """psycopg's error for a write on a read-only PostgreSQL standby (SQLSTATE 25006)."""
    import psycopg.errors

    return psycopg.errors.ReadOnlySqlTransaction(
        "cannot execute INSERT in a read-only transaction")


CANNOT_WRITE = "the database cannot write (a full disk, or read-only)"
# (orig, exit code, the one line said): a server that is down, a full disk.
DATABASE_FAILURES = [
    pytest.param(lambda: ConnectionRefused(REFUSED), 1,
                 f"the database does not answer: {REFUSED}", id="down"),
    pytest.param(lambda: __import__("sqlite3").OperationalError("database or disk is full"),
                 2, f"{CANNOT_WRITE}: database or disk is full", id="disk-full"),
]


def database_fails(monkeypatch: pytest.MonkeyPatch, orig: Exception, *,
                   from_stage: str | None = None) -> None:
    """Make every commit raise the SQLAlchemy error of ``orig``, as a database that went
    down (or whose disk filled) does, from retrain's checkpoint ``from_stage`` on (None: at
    once); ``monkeypatch.undo()`` brings it back. A read-only PostgreSQL standby's error
    (25006) reaches SQLAlchemy as an InternalError, the others as an OperationalError."""
    from sqlalchemy.exc import InternalError, OperationalError
    from sqlalchemy.orm import SessionTransaction

    kind = InternalError if getattr(orig, "sqlstate", None) == "25006" else OperationalError

    from spamguard.services import retrain as retrain_module

    down = [] if from_stage else ["down"]
    real_checkpoint, real_commit = retrain_module.checkpoint, SessionTransaction.commit

    def checkpoint(stage, *args, **kwargs):
        real_checkpoint(stage, *args, **kwargs)
        if stage == from_stage:
            down.append(stage)

    def commit(self, *args, **kwargs):
        if down:
            raise kind("COMMIT", {}, orig)
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(retrain_module, "checkpoint", checkpoint)
    monkeypatch.setattr(SessionTransaction, "commit", commit)
