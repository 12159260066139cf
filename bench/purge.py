"""How fast ``spamguard messages purge`` deletes, and what it costs the service meanwhile.

Usage::

    python bench/purge.py [--messages 100000] [--database-url URL]

Fills a database with ``--messages`` classified messages (one verdict each; every 20th
reviewed; every 10th in a campaign of 20) received over the last 200 days, then purges
those received more than 100 days ago (reviewed ones kept, as by default), timing it,
then compacts the database (``spamguard db compact``), timing that too.
Meanwhile a thread stores messages one at a time through
``spamguard.services.messages.ingest`` (commit, classify with a stand-in model that answers
at once, commit the verdict, as the webhook does); the same is timed with no purge running,
so the table shows what a purge and a compaction add to storing a message. Without
``--database-url`` a new SQLite database in a temporary folder; with one, an empty scratch
PostgreSQL database, which it fills (drop it afterwards). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from spamguard import db
from spamguard.ml.data import text_hash
from spamguard.models import Campaign, Message, Review, Verdict
from spamguard.services import message_deletion, messages
from spamguard.services.compaction import compact
from spamguard.sqltypes import utcnow
from spamguard.wording import megabytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sender_rules import InstantModel, scratch_database, sender  # noqa: E402  (bench/: no package)

DAYS = 200
CAMPAIGN = 20


def fill(factory, count: int) -> None:
    """``count`` classified messages over the last :data:`DAYS` days, oldest first, by
    the version "bench" (:func:`scratch_database` made it)."""
    now = utcnow()
    with db.session_scope(factory) as session:
        campaigns = count // 10 // CAMPAIGN
        session.add_all(Campaign(first_seen=now, last_seen=now, size=CAMPAIGN)
                        for _ in range(campaigns))
        session.flush()
        first_campaign = session.scalar(select(func.min(Campaign.id)))
        for start in range(0, count, 5000):
            rows = []
            for i in range(start, min(start + 5000, count)):
                body = f"message {i} about the parcel you ordered"
                in_campaign = i % 10 == 0 and i // 10 < campaigns * CAMPAIGN
                rows.append({
                    "gateway": "bench", "external_id": f"fill-{i}", "sender": f"+4477{i:09d}",
                    "recipient": "+2", "body": body, "text_hash": text_hash(body),
                    "received_at": now - timedelta(days=DAYS) * (1 - i / count),
                    "verdict_status": "classified", "spam_probability": 0.9,
                    "model_label": "spam", "threshold_distance": 0.4,
                    "model_version_id": "bench",
                    "review_label": "spam" if i % 20 == 0 else None,
                    "campaign_id": first_campaign + i // 10 // CAMPAIGN if in_campaign else None})
            session.execute(insert(Message), rows)
        ids = select(Message.id, Message.review_label)
        for start in range(0, count, 5000):
            batch = session.execute(ids.order_by(Message.id).offset(start).limit(5000)).all()
            session.execute(insert(Verdict), [
                {"message_id": m.id, "model_version_id": "bench", "spam_probability": 0.9,
                 "label": "spam", "threshold": 0.5} for m in batch])
            reviewed = [{"message_id": m.id, "label": "spam", "is_current": True}
                        for m in batch if m.review_label]
            if reviewed:
                session.execute(insert(Review), reviewed)


def ingest_while(factory, work, tag: str) -> tuple[list[float], float, int]:
    """Store messages one at a time in a thread for as long as ``work()`` runs here (at
    least 200 stored); return the ingest latencies (ms), ``work``'s seconds and how many
    stores failed because the database was busy (the webhook answers those 503: SQLite
    gives some writers "database is locked" at once, without its busy timeout, while a
    checkpoint empties the log)."""
    took: list[float] = []
    failed = [0]
    finished = threading.Event()

    def store() -> None:
        with factory() as session:
            count = 0
            while not finished.is_set() or len(took) < 200:
                started = time.perf_counter()
                try:
                    messages.ingest(session=session, classifier=InstantModel(),
                                    gateway="bench", external_id=f"{tag}-{count}",
                                    sender=sender(count), recipient="+2",
                                    body=f"message {count}")
                    took.append((time.perf_counter() - started) * 1000)
                except DBAPIError as exc:
                    if not db.database_unavailable(exc):
                        raise
                    session.rollback()
                    failed[0] += 1
                count += 1

    thread = threading.Thread(target=store)
    thread.start()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    finished.set()
    thread.join()
    return took, seconds, failed[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--database-url", default=None,
                        help="an empty scratch database (default: SQLite in a temp folder)")
    args = parser.parse_args(argv)
    folder, engine, factory = scratch_database(args.database_url)
    fill(factory, args.messages)
    cutoff = utcnow() - timedelta(days=DAYS // 2)
    selection = message_deletion.Selection(before=cutoff, keep_reviewed=True)
    with db.session_scope(factory) as session:
        selected, _ = message_deletion.count(session, selection)
    quiet, _, _ = ingest_while(factory, lambda: None, "quiet")
    done: list = []
    busy, seconds, failed_purging = ingest_while(
        factory, lambda: done.append(message_deletion.delete_messages(factory, selection)),
        "busy")
    deleted = done[0]
    compacted: list = []
    during_compaction, compact_seconds, failed_compacting = ingest_while(
        factory, lambda: compacted.append(compact(engine)), "compact")
    print(f"| {engine.dialect.name}: purge {deleted.messages:,} of {args.messages:,} messages "
          f"(selected {selected:,}) | seconds | messages/s | ingest p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for label, took, secs in ((f"storing {len(quiet):,} messages, no purge", quiet, None),
                              (f"storing {len(busy):,} messages during the purge", busy, seconds),
                              (f"storing {len(during_compaction):,} messages during "
                               "`db compact`", during_compaction, compact_seconds)):
        rate = (f"{deleted.messages / secs:,.0f}" if secs and took is busy else "-")
        print(f"| {label} | {f'{secs:.1f}' if secs else '-'} | {rate} | "
              f"{statistics.median(took):.2f} | {float(np.percentile(took, 99)):.2f} | "
              f"{max(took):.2f} |")
    print(f"\ncampaigns recounted {len(deleted.campaigns_recounted):,}, removed "
          f"{len(deleted.campaigns_removed):,}")
    print(f"stores refused as busy: {failed_purging:,} during the purge, "
          f"{failed_compacting:,} during `db compact`")
    done_compacting = compacted[0]
    if done_compacting.bytes_before is not None:
        emptied = "emptied" if done_compacting.log_emptied else "NOT emptied"
        print(f"compaction: {megabytes(done_compacting.bytes_before)} -> "
              f"{megabytes(done_compacting.bytes_after)} (database file and its log, "
              f"log {emptied})")
    engine.dispose()
    folder.cleanup()


if __name__ == "__main__":
    main()
