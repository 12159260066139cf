"""Backing up, verifying and restoring an instance while the service stores messages.

    python bench/backup.py [--messages 200000] [--database-url URL --restore-url URL]

Fills a scratch database (SQLite in a temporary folder, or the empty PostgreSQL databases
given) with classified messages and their verdicts (every 20th reviewed), and a model
version folder of 5 MB; then times ``spamguard backup create`` while a thread keeps storing
messages one at a time (how long a message waits is what the gateway sees), ``backup
verify`` and ``backup restore`` into a second empty database. Prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy import update

from spamguard.models import ModelVersion
from spamguard.services import backup, backup_restore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from purge import fill, ingest_while  # noqa: E402  (bench/: no package)
from sender_rules import scratch_database  # noqa: E402

VERSION_BYTES = 5_000_000  # about what one trained version takes


def version_folder(parent: Path) -> Path:
    """A model version folder of about :data:`VERSION_BYTES` (what the backup copies)."""
    folder = parent / "models" / "bench"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text('{"version": "bench"}', encoding="utf-8")
    (folder / "head.safetensors").write_bytes(np.random.default_rng(0).bytes(VERSION_BYTES))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--database-url", default=None,
                        help="an empty scratch database (default: SQLite in a temp folder)")
    parser.add_argument("--restore-url", default=None,
                        help="a second empty database to restore into (with --database-url)")
    args = parser.parse_args(argv)
    if bool(args.database_url) != bool(args.restore_url):
        parser.error("give --database-url and --restore-url together")
    folder, engine, factory = scratch_database(args.database_url)
    work = Path(folder.name)
    source_url = engine.url.render_as_string(hide_password=False)
    with factory.begin() as session:
        session.execute(update(ModelVersion).values(directory=str(version_folder(work))))
    fill(factory, args.messages)
    quiet, _, _ = ingest_while(factory, lambda: None, "quiet")
    made: list[backup.Backup] = []
    busy, create_s, _ = ingest_while(
        factory, lambda: made.append(backup.create_backup(source_url, work / "bk")), "busy")
    started = time.perf_counter()
    problems = backup.verify_backup(work / "bk").problems
    verify_s = time.perf_counter() - started
    restore_url = args.restore_url or f"sqlite:///{work / 'restored' / 'spamguard.db'}"
    started = time.perf_counter()
    backup_restore.restore_backup(work / "bk", url=restore_url,
                                  models_dir=work / "restored" / "models")
    restore_s = time.perf_counter() - started
    size = sum(f["size"] for f in made[0].manifest["files"].values())
    print(f"| {engine.dialect.name}: {args.messages:,} messages, backup {size / 1e6:.1f} MB "
          "| seconds | ingest p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, took, secs in ((f"storing {len(quiet):,} messages, no backup", quiet, None),
                              (f"backup create, storing {len(busy):,} meanwhile", busy,
                               create_s)):
        print(f"| {label} | {f'{secs:.1f}' if secs else '-'} | "
              f"{statistics.median(took):.2f} | {float(np.percentile(took, 99)):.2f} | "
              f"{max(took):.2f} |")
    print(f"| backup verify ({'ok' if not problems else problems[0]}) | {verify_s:.1f} "
          "| - | - | - |")
    print(f"| backup restore (with the schema check and upgrade) | {restore_s:.1f} "
          "| - | - | - |")
    engine.dispose()
    folder.cleanup()


if __name__ == "__main__":
    main()
