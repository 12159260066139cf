"""Time a full ``spamguard retrain`` run: 5,000 base messages + 1,000 new reviewed messages.

Usage: python bench/retrain.py [--home DIR] [--threads N]

Builds a throw-away instance (SQLite) on the packaged backbone, trains the first model from
the base data (cold cache), stores 1,000 reviewed messages, then times retraining runs
(train, evaluate candidate and active on the evaluation set, promote or reject):

- warm: every text's embedding is already cached (the service cached the reviewed messages
  when it classified them), the issue's target scenario (<= 20 s on 2 cores);
- 1,000 uncached: the reviewed texts were never embedded, so they run through the backbone.

Prints a table; timing assertions never go in tests.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from spamguard.config import DEFAULT_DATA, load_settings
from spamguard.db import make_engine, make_session_factory, session_scope, upgrade_schema
from spamguard.ml.backbone import load_backbone
from spamguard.ml.data import LABEL_NAMES, load_labelled, text_hash
from spamguard.ml.embeddings import CachedEncoder
from spamguard.models import Message, Review
from spamguard.services.retrain import run_retrain

BASE_SIZE, REVIEWED = 5000, 1000
WORDS = ("today", "tomorrow", "please", "thanks", "again", "now", "later", "ok", "mate",
         "soon", "tonight", "weekend", "reply", "asap", "cheers", "love", "xx", "btw")


def variants(texts: list[str], labels: list[int], n: int, rng: random.Random,
             seen: set[str]) -> list[tuple[str, int]]:
    """Make ``n`` new messages (new normalised texts) from existing ones, labels kept."""
    out = []
    while len(out) < n:
        i = rng.randrange(len(texts))
        text = f"{texts[i]} {' '.join(rng.choices(WORDS, k=3))}"
        if text_hash(text) not in seen:
            seen.add(text_hash(text))
            out.append((text, labels[i]))
    return out


def write_base(path: Path, rng: random.Random, seen: set[str]) -> tuple[list[str], list[int]]:
    """Write the shipped data topped up with variants to BASE_SIZE rows."""
    data = load_labelled(DEFAULT_DATA)
    texts, labels = list(data.texts), data.labels.tolist()
    seen.update(text_hash(t) for t in texts)
    rows = list(zip(texts, labels, strict=True))
    rows += variants(texts, labels, BASE_SIZE - len(rows), rng, seen)
    path.write_text("".join(f"{LABEL_NAMES[label]}\t{text}\n" for text, label in rows),
                    encoding="utf-8")
    return texts, labels


def store_reviews(factory, rows: list[tuple[str, int]], rng: random.Random,
                  noise: float) -> None:
    """Store messages with a moderator review each (``noise``: share with flipped labels)."""
    with session_scope(factory) as session:
        for text, label in rows:
            label = 1 - label if rng.random() < noise else label
            message = Message(gateway="bench", sender="+1555", recipient="+1556", body=text,
                              text_hash=text_hash(text), review_label=LABEL_NAMES[label])
            session.add(message)
            session.flush()
            session.add(Review(message_id=message.id, label=LABEL_NAMES[label]))


def timed_run(factory, settings) -> dict:
    """Run one retraining (the gate applies; new-review minimum off) and time it."""
    started = time.perf_counter()
    outcome = run_retrain(session_factory=factory, settings=settings, min_new_reviews=0,
                          progress=False, log=lambda line: None)
    wall = time.perf_counter() - started
    if outcome.status == "failed":
        sys.exit(outcome.summary)
    timing = outcome.counts.get("timing", {})
    return {"wall": wall, "status": outcome.status, **timing,
            "train_rows": outcome.counts["training"]["total"],
            "eval_rows": outcome.counts["eval_set"]["total"]}


def print_table(rows: list[tuple[str, dict]]) -> None:
    """Print one line per scenario."""
    columns = [("total s", "wall"), ("load backbone + train s", "train_total_s"),
               ("load + embed s", "load_and_embed_s"), ("train head s", "train_head_s"),
               ("baseline added s", "baseline_s"), ("evaluate s", "evaluate_s"),
               ("texts embedded", "backbone_texts_embedded"), ("train rows", "train_rows"),
               ("eval rows", "eval_rows"), ("outcome", "status")]
    header = ["scenario", *(name for name, _ in columns)]
    lines = [header]
    for name, row in rows:
        cells = [row.get(key, "") for _, key in columns]
        lines.append([name, *(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="share of reviews whose label contradicts the text's origin")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    home = args.home or Path(tempfile.mkdtemp(prefix="spamguard-bench-retrain-"))
    rng, seen = random.Random(7), set()
    base_path = home / "base.tsv"
    home.mkdir(parents=True, exist_ok=True)
    texts, labels = write_base(base_path, rng, seen)
    settings = load_settings({"home": home, "base_data": str(base_path)})
    upgrade_schema(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    rows = [("first model (cold cache)", timed_run(factory, settings))]

    reviewed = variants(texts, labels, REVIEWED, rng, seen)
    store_reviews(factory, reviewed, rng, args.noise)
    # As `spamguard campaigns rebuild` does before a retrain: recent messages embedded into
    # the same cache in one batch (the web service itself does not write the cache).
    encoder = CachedEncoder(load_backbone(settings.backbone or None), settings.cache_dir)
    encoder([text for text, _ in reviewed])
    rows.append(("+1,000 reviewed, warm cache", timed_run(factory, settings)))

    store_reviews(factory, variants(texts, labels, REVIEWED, rng, seen), rng, args.noise)
    rows.append(("+1,000 reviewed, not cached", timed_run(factory, settings)))
    print(f"spamguard retrain benchmark: {BASE_SIZE} base messages, torch threads "
          f"{torch.get_num_threads()}, home {home}")
    print_table(rows)


if __name__ == "__main__":
    main()
