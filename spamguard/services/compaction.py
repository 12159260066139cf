"""``spamguard db compact``: give back the space deleted messages held, and on SQLite
rewrite the database file so their text is gone from it.

Deleting a row (a purge, an erase) leaves its bytes where they were until the space is
reused. On SQLite that is the database file's free pages, and the text index
(``messages_fts``, FTS5) keeps a deleted message's trigrams in its older segments until
they are merged. So an erase is whole in the file only after the index is merged
(``'optimize'``), the file rebuilt (``VACUUM``) and the write-ahead log emptied into it
(``wal_checkpoint(TRUNCATE)``). Before, the docs told operators to do this with the
``sqlite3`` shell, which this machine kind does not even install.

On PostgreSQL a plain ``VACUUM`` of spamguard's tables makes the dead rows' space reusable
and keeps the service running; it does not promise to overwrite their bytes (``VACUUM
FULL`` rewrites a table, but locks it while it does, so the service's writes would wait
or fail: that one is left to the operator, docs/service.md says how).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, text

from spamguard.db import engines, sqlite_file
from spamguard.services.text_search import INDEX_TABLE

CHECKPOINT_TRIES = 20
CHECKPOINT_PAUSE_SECONDS = 0.1
CHECKPOINT_WAIT_MS = 100


@dataclass(frozen=True)
class Compaction:
    """What a compaction did. Sizes are of the database file plus its write-ahead log (None
    on PostgreSQL); ``index_merged``: the SQLite text index was merged (False where the
    database has none); ``log_emptied``: the write-ahead log was emptied into the file (a
    reader that kept a transaction open meanwhile can stop that; False on PostgreSQL);
    ``warnings``: on PostgreSQL, ``table: what the server warned`` for each table whose
    VACUUM warned (see :func:`_vacuum_postgres`)."""

    backend: str
    seconds: float
    bytes_before: int | None = None
    bytes_after: int | None = None
    index_merged: bool = False
    log_emptied: bool = False
    tables: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def compact(engine: Engine) -> Compaction:
    """Compact the database ``engine`` connects to (see the module's docstring)."""
    started = time.perf_counter()
    if engine.dialect.name == "sqlite":
        return _compact_sqlite(engine, started)
    return _vacuum_postgres(engine, started)


def _file_bytes(path: Path | None) -> int | None:
    if path is None:
        return None
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"))
               if p.exists())


def _compact_sqlite(engine: Engine, started: float) -> Compaction:
    path = sqlite_file(engine.url)
    before = _file_bytes(path)
    # VACUUM cannot run inside a transaction: AUTOCOMMIT makes each statement its own.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        merged = connection.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
            {"name": INDEX_TABLE}).first() is not None
        if merged:
            connection.exec_driver_sql(
                f"INSERT INTO {INDEX_TABLE} ({INDEX_TABLE}) VALUES ('optimize')")
        connection.exec_driver_sql("VACUUM")
        emptied = _empty_log(connection)
    return Compaction(backend="sqlite", seconds=time.perf_counter() - started,
                      bytes_before=before, bytes_after=_file_bytes(path),
                      index_merged=merged, log_emptied=emptied)


def _empty_log(connection) -> bool:
    """Copy the write-ahead log into the file and truncate it; False if transactions kept
    it from completing in :data:`CHECKPOINT_TRIES` tries. Under steady traffic one try
    often finds a transaction in the way (``bench/purge.py``), the next a gap. Each try
    waits at most :data:`CHECKPOINT_WAIT_MS` for one (not the 5 s busy timeout, which a
    reader holding a snapshot would make every try wait)."""
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
    try:
        for attempt in range(CHECKPOINT_TRIES):
            # (busy, log frames, frames checkpointed): busy 1 when a transaction was in
            # the way.
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            if not busy:
                return True
            if attempt < CHECKPOINT_TRIES - 1:
                time.sleep(CHECKPOINT_PAUSE_SECONDS)
        return False
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {engines.SQLITE_BUSY_TIMEOUT_MS}")


def _vacuum_postgres(engine: Engine, started: float) -> Compaction:
    """VACUUM (ANALYZE) each table, keeping the warnings the server sends meanwhile.

    A role that does not own a table (the service's role, where another one owns the
    schema) gets no error from its VACUUM, only a WARNING ("skipping ... only table or
    database owner can vacuum it") and a success: without these the command said every
    table was vacuumed when none was. A transaction held open for too long warns too
    ("oldest xmin is far in the past"): the dead rows then stay."""
    warned: list[str] = []

    def heard(diagnostic) -> None:
        if diagnostic.severity_nonlocalized == "WARNING":
            warned.append(diagnostic.message_primary or "")

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        tables = tuple(sorted(inspect(connection).get_table_names()))
        preparer = engine.dialect.identifier_preparer
        driver = connection.connection.driver_connection
        driver.add_notice_handler(heard)
        warnings = []
        try:
            for table in tables:
                before = len(warned)
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {preparer.quote(table)}")
                warnings.extend(f"{table}: {said}" for said in warned[before:])
        finally:
            driver.remove_notice_handler(heard)
    return Compaction(backend=engine.dialect.name, seconds=time.perf_counter() - started,
                      tables=tables, warnings=tuple(warnings))
