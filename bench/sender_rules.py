"""What sender rules cost each stored message: the lookup's share of ingesting.

Usage::

    python bench/sender_rules.py [--messages 2000] [--rules 1000 100000] [--database-url URL]

Stores messages one at a time through ``spamguard.services.messages.ingest`` (commit, then
classify, then commit the verdict, as the webhook does) with a stand-in model that answers
at once, so the table shows the database's share only; the real model adds 5-15 ms a
message (docs/service.md). Rows: no rules, 1,000 and 100,000 rules (``--rules``; a tenth
of the senders covered), and the rule lookup left out (what the service did before
migration 0017).
Without ``--database-url`` a new SQLite database in a temporary folder; with one, an empty
scratch PostgreSQL database, which it fills (drop it afterwards). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from spamguard import db
from spamguard.models import ModelVersion, SenderRule
from spamguard.senders import sender_key
from spamguard.services import messages, sender_rules  # noqa: F401 (messages calls it)
from spamguard.sqltypes import utcnow


class InstantModel:
    """The classifier's serving interface, answering at once (0.9 for every text)."""

    version, threshold = "bench", 0.5

    def predict_proba(self, texts):
        return np.full(len(texts), 0.9)

    def label_for(self, probability: float) -> str:
        return "spam" if probability >= self.threshold else "ham"


def sender(i: int) -> str:
    return f"+44 7700 {i:07d}"


def add_rules(factory, count: int) -> None:
    """``count`` rules, one for every tenth sender the run sends from."""
    with db.session_scope(factory) as session:
        session.query(SenderRule).delete()
        rows = [{"sender_key": sender_key(sender(i * 10)), "sender": sender(i * 10),
                 "action": "allow", "set_by": "bench", "set_at": utcnow()}
                for i in range(count)]
        for start in range(0, len(rows), 5000):
            session.execute(insert(SenderRule), rows[start:start + 5000])


def time_ingest(factory, count: int, tag: str) -> list[float]:
    """Milliseconds per message, one message at a time."""
    took = []
    with factory() as session:
        for i in range(count):
            started = time.perf_counter()
            messages.ingest(session=session, classifier=InstantModel(), gateway="bench",
                            external_id=f"{tag}-{i}", sender=sender(i), recipient="+2",
                            body=f"message {i}")
            took.append((time.perf_counter() - started) * 1000)
    return took


def scratch_database(database_url: str | None):
    """A migrated database (``database_url``, an empty scratch one, or SQLite in a new
    temporary folder) with an active version "bench" for :class:`InstantModel`; returns
    (the folder to clean up, the engine, a session factory)."""
    folder = tempfile.TemporaryDirectory()
    url = database_url or f"sqlite:///{Path(folder.name) / 'bench.db'}"
    db.upgrade_schema(url)
    engine = db.make_engine(url)
    factory = db.make_session_factory(engine)
    with db.session_scope(factory) as session:
        session.add(ModelVersion(id="bench", directory="/bench", backbone="b",
                                 backbone_hash="h", created_at=utcnow(),
                                 registered_at=utcnow(), status="active", threshold=0.5,
                                 metrics={}))
    return folder, engine, factory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rules", type=int, nargs="+", default=[1000, 100_000],
                        help="rule counts to measure besides none")
    parser.add_argument("--database-url", default=None,
                        help="an empty scratch database (default: SQLite in a temp folder)")
    args = parser.parse_args(argv)
    folder, engine, factory = scratch_database(args.database_url)
    time_ingest(factory, 200, "warm-up")
    rows = []
    lookup = sender_rules.actions_for
    runs = [("no rules", 0, False), *((f"{n:,} rules", n, False) for n in args.rules),
            ("lookup left out", 0, True)]
    try:
        for label, rules, off in runs:
            add_rules(factory, rules)
            sender_rules.actions_for = (lambda session, senders: {}) if off else lookup
            took = time_ingest(factory, args.messages, label)
            rows.append((label, statistics.median(took), float(np.percentile(took, 99)),
                         statistics.fmean(took)))
    finally:
        sender_rules.actions_for = lookup
    print(f"| {engine.dialect.name}, {args.messages:,} messages each | p50 ms | p99 ms "
          "| mean ms |")
    print("|---|---|---|---|")
    for label, p50, p99, mean in rows:
        print(f"| {label} | {p50:.2f} | {p99:.2f} | {mean:.2f} |")
    engine.dispose()
    folder.cleanup()


if __name__ == "__main__":
    main()
