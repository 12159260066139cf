"""Admin page latency with 50,000 messages on SQLite (or PostgreSQL).

Builds a fresh instance in a temporary folder (schema at head, 50,000 messages with
verdicts, the oldest ``--old-share`` of them by a retired model version and the rest by the
active one, 10% reviewed, campaigns), logs in with the Flask test client and times each page
in-process (no network), printing p50/p95/max per page. Target: list pages under 200 ms.

    python bench/admin_pages.py [--messages 50000] [--repeats 15] [--old-share 0.5]
                                [--database-url postgresql+psycopg://.../scratch]

``--database-url`` must name an empty scratch database (the run fills it and leaves it
filled); the default is SQLite in the temporary folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from sqlalchemy import func, insert, select, update

from spamguard.app import create_app
from spamguard.db import make_engine, make_session_factory, session_scope, upgrade_schema
from spamguard.ml.data import text_hash
from spamguard.models import Campaign, Message, ModelVersion, Review
from spamguard.services import registry, spot_checks, users
from spamguard.sqltypes import utcnow

WORDS = ("free prize call now win cash claim txt reply stop lunch tomorrow home late see you "
         "meeting ok thanks love running station milk birthday voucher urgent account").split()
PAGES = [
    ("dashboard", "/admin/dashboard"),
    ("dashboard chart (svg)", "/admin/dashboard/volume.svg?bucket=day"),
    ("review queue", "/admin/queue"),
    ("messages, newest", "/admin/messages"),
    ("messages, page 500", "/admin/messages?page={deep}"),  # the last, when fewer
    ("messages, model says spam", "/admin/messages?model_label=spam"),
    ("messages, unreviewed", "/admin/messages?review=unreviewed"),
    ("messages, disagreement", "/admin/messages?disagreement=1"),
    ("messages, P 0.4-0.6", "/admin/messages?min_p=0.4&max_p=0.6"),
    ("messages, sender", "/admin/messages?sender=%2B447700900007"),
    ("messages, text search", "/admin/messages?q=voucher"),  # a word in 35% of them
    ("messages, rare text", "/admin/messages?q=996"),  # 0.1%: every body ends "i % 997"
    ("messages, date range", "/admin/messages?since={day}&until={day}"),
    ("message detail", "/admin/messages/{mid}"),
    ("campaigns", "/admin/campaigns"),
    ("models", "/admin/models"),
    ("spot check, spam (kept draw)", "/admin/spot-check?verdict=spam"),
    ("spot check, ham (kept draw)", "/admin/spot-check?verdict=ham"),
]


def register(session, home: Path, name: str, now) -> None:
    """Register a model version folder that is never loaded (the pages read its JSON)."""
    version_dir = home / "models" / name
    version_dir.mkdir(parents=True)
    (version_dir / "model.json").write_text(json.dumps({
        "version": name, "created_at": now.isoformat(), "threshold": 0.5,
        "backbone": {"name": "bench", "hash": "0" * 16}, "pooling": "mean",
        "max_length": 128, "input_dim": 392,
        "metrics": {"test": {"spam_f1": 0.95, "mcc": 0.94, "ham_fpr": 0.002}}}))
    # A readable weights file: registering reads its header (version_files).
    save_file({"unused": np.zeros(1, dtype=np.float32)}, str(version_dir / "head.safetensors"))
    registry.register_version(session=session, version_dir=version_dir)


def seed(url: str, home: Path, n: int, old_share: float) -> None:
    """Fill the database: messages, reviews, campaigns, two model versions and an admin."""
    rng = random.Random(7)
    engine = make_engine(url)
    now = utcnow()
    old = int(n * old_share)
    with session_scope(make_session_factory(engine)) as session:
        if session.scalar(select(func.count()).select_from(Message)):
            raise SystemExit(f"{url}: not empty; give an empty scratch database")
        register(session, home, "bench-v0", now)
        register(session, home, "bench-v1", now)
        session.execute(update(ModelVersion).values(status="retired"))
        session.execute(update(ModelVersion).where(ModelVersion.id == "bench-v1")
                        .values(status="active", previous_active_id="bench-v0"))
        users.create_user(session=session, username="bench", password="bench-password",
                          role="admin")
        rows = []
        for i in range(n):
            body = " ".join(rng.choices(WORDS, k=rng.randint(4, 20))) + f" {i % 997}"
            p = rng.betavariate(0.5, 2.0)
            rows.append({"gateway": "bench", "external_id": f"SM{i}",
                         "sender": f"+4477009{i % 5000:05d}", "recipient": "+15550000000",
                         "body": body, "received_at": now - timedelta(minutes=n - i),
                         "created_at": now, "text_hash": text_hash(body),
                         "verdict_status": "classified", "spam_probability": p,
                         "model_label": "spam" if p >= 0.5 else "ham",
                         "threshold_distance": abs(p - 0.5),
                         "model_version_id": "bench-v0" if i < old else "bench-v1"})
        session.execute(insert(Message), rows)
        reviewed = list(range(1, n + 1, 10))
        decided = {i: rng.choice(["spam", "ham"]) for i in reviewed}
        session.execute(insert(Review), [
            {"message_id": i, "user_id": None, "label": label, "created_at": now,
             "is_current": True} for i, label in decided.items()])
        for label in ("spam", "ham"):  # each message carries its own review's label
            ids = [i for i, chosen in decided.items() if chosen == label]
            for start in range(0, len(ids), 1000):
                session.execute(update(Message).where(Message.id.in_(ids[start:start + 1000]))
                                .values(review_label=label, reviewed_at=now))
        # Up to 200 campaigns of 3-30 messages, 40 ids apart, within the n messages.
        for c in range(min(200, max(0, (n - 32) // 40 + 1))):
            members = list(range(2 + c * 40, 2 + c * 40 + rng.randint(3, 30)))
            campaign = Campaign(first_seen=now - timedelta(days=1), last_seen=now,
                                size=len(members), representative_message_id=members[0])
            session.add(campaign)
            session.flush()
            session.execute(update(Message).where(Message.id.in_(members))
                            .values(campaign_id=campaign.id))
    if engine.dialect.name == "postgresql":  # a live database has statistics; plans use them
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def login(client) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      client.get("/admin/login").get_data(as_text=True)).group(1)
    response = client.post("/admin/login", data={"username": "bench", "password":
                                                 "bench-password", "csrf_token": token})
    assert response.status_code == 302, "login failed"


def time_page(client, url: str, repeats: int) -> list[float]:
    """Return the latency of each GET in milliseconds (after one warm-up)."""

    def get() -> bool:
        assert client.get(url).status_code == 200, url
        return True

    return time_call(get, repeats)


def time_call(call, repeats: int) -> list[float]:
    """Return the duration of each call in milliseconds (after one warm-up)."""
    assert call() is not None
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--old-share", type=float, default=0.5,
                        help="share of the messages (the oldest) classified by a retired "
                             "model version (default 0.5)")
    parser.add_argument("--database-url", help="an empty scratch database (default: "
                                               "SQLite in a temporary folder)")
    args = parser.parse_args()
    # Not every request's access line on stderr: the table is what this prints.
    logging.getLogger("spamguard.access").addHandler(logging.NullHandler())
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url = args.database_url or f"sqlite:///{home / 'spamguard.db'}"
        upgrade_schema(url)
        started = time.perf_counter()
        seed(url, home, args.messages, args.old_share)
        print(f"seeded {args.messages} messages in {time.perf_counter() - started:.1f} s")
        app = create_app({"home": home, "database_url": url, "secret_key": "bench",
                          "TESTING": True})
        with app.app_context():
            from spamguard.extensions import db_session

            mid = db_session().scalar(select(Message.id).order_by(Message.id.desc()))
        client = app.test_client()
        login(client)
        day = (utcnow() - timedelta(days=2)).date().isoformat()
        print(f"{'page':30} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  target")
        for name, template in PAGES:
            deep = min(500, max(1, args.messages // 50))  # 50 a page (admin/messages.py)
            samples = sorted(time_page(client, template.format(mid=mid, day=day, deep=deep),
                                       args.repeats))
            p50, p95 = statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]
            verdict = "ok" if p95 < 200 else "SLOW"
            print(f"{name:30} {p50:8.1f} {p95:8.1f} {samples[-1]:8.1f}  {verdict}")
        with app.app_context():  # a new draw (after a decision or a skip)
            for label in ("spam", "ham"):
                samples = sorted(time_call(lambda label=label: spot_checks.draw(
                    db_session(), label), args.repeats))
                p50, p95 = statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]
                print(f"{'spot-check draw, ' + label:30} {p50:8.1f} {p95:8.1f} "
                      f"{samples[-1]:8.1f}  {'ok' if p95 < 200 else 'SLOW'}")
        app.extensions["spamguard.db"].dispose()


if __name__ == "__main__":
    main()
