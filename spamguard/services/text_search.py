"""Finding messages whose text contains a string, without reading every body.

A plain ``lower(body) LIKE lower('%term%')`` (ILIKE on PostgreSQL) reads every message:
about 250 ms at 200,000 messages on SQLite for the count, and again for a page of a rare
term. Migration 0010 keeps a trigram index of the texts, so a term of three or more
characters is looked up rather than read for (shorter terms have no trigram and keep LIKE):

- **SQLite:** an FTS5 table with the trigram tokenizer (``messages_fts``, kept by
  triggers). The term is an FTS phrase of its trigrams: an exact substring match, with
  case folded by FTS5's own Unicode table. That table maps one character to one and
  predates some scripts' case pairs (Cherokee, Georgian Mtavruli, Adlam, ...), where it
  would miss matches that the LIKE, with Python's ``str.lower`` (spamguard.db registers it
  as SQLite's ``lower``), finds. So the index is used only for terms whose every character
  is caseless (digits, punctuation, CJK, emoji) or Latin, Greek or Cyrillic, and not a
  combining mark, nor İ (which Python lowers to two characters); other terms keep the
  LIKE. Where the two differ on those terms the index finds more, never less: it folds a
  final sigma like any sigma ("δοσ" finds "ΟΔΟΣ" and "οδος", which the LIKE of a shorter
  term, "οσ", does not), and the long s like s.
- **PostgreSQL:** a pg_trgm GIN index on ``body``, which the planner uses for ``ILIKE``
  unasked, so the query stays ``ILIKE``.

A database where the migration could not make its index (a SQLite before 3.34; a
PostgreSQL user not allowed to create the extension) keeps reading every body.
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import ColumnElement, TextClause, text
from sqlalchemy.orm import Session

from spamguard.models import Message

INDEX_TABLE = "messages_fts"  # SQLite
PG_INDEX = "ix_messages_body_trgm"  # PostgreSQL (pg_trgm), which ILIKE uses unasked
MIN_INDEXED_LENGTH = 3  # a trigram index finds nothing for a shorter term


def is_index_table(name: str) -> bool:
    """True for the FTS table and the shadow tables SQLite keeps for it (``messages_fts_data``
    and the like), which migrations make and models.py does not describe."""
    return name == INDEX_TABLE or name.startswith(INDEX_TABLE + "_")


def include_in_autogenerate(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name``: leave the search indexes out when comparing the database
    with models.py (migrations/env.py, and the test that they match). models.py does not
    describe them: each exists on one kind of database only, and only if it could be made."""
    if type_ == "table" and name is not None and is_index_table(name):
        return False
    return not (type_ == "index" and name == PG_INDEX)


def has_index(session: Session) -> bool:
    """Whether this database keeps the trigram index (SQLite with migration 0010 applied)."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    found = session.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                 "AND name = :name"), {"name": INDEX_TABLE}).first()
    return found is not None


# Case pairs of Unicode 7 (Greek yot, U+037F / U+03F3) that FTS5's table lacks; the
# Cyrillic Supplement's last pairs (U+0528-052F) are left out by _folds_alike's range. A
# sweep of every code point (tests/test_text_search.py checks the cased ones) found no
# other miss.
_NEWER_GREEK = frozenset({0x37F, 0x3F3})


def _folds_alike(char: str) -> bool:
    """Whether FTS5's case folding treats ``char`` as Python's ``str.lower`` does, as far
    as a search for it goes (see the module docstring)."""
    if unicodedata.combining(char) or char == "\x00":  # FTS5 stops reading a query at NUL
        return False
    if len(char.lower()) != 1:  # İ: Python lowers it to i and a combining dot, FTS5 not
        return False
    if char.lower() == char == char.upper():  # no case to fold
        return True
    code = ord(char)
    return (code < 0x250  # Latin: ASCII, Latin-1, Extended-A and -B
            or (0x370 <= code < 0x528 and code not in _NEWER_GREEK)  # Greek, Cyrillic
            or 0x1E00 <= code < 0x1F00)  # Latin Extended Additional


def indexable(term: str) -> bool:
    """Whether the trigram index finds everything ``term`` should find."""
    return len(term) >= MIN_INDEXED_LENGTH and all(_folds_alike(char) for char in term)


def like_pattern(term: str) -> str:
    """``%term%`` with LIKE's wildcards in ``term`` escaped by a backslash."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def phrase(term: str) -> str:
    """An FTS5 query matching ``term`` as one phrase, every character taken literally."""
    return '"' + term.replace('"', '""') + '"'


def body_contains(term: str, *, indexed: bool, in_order: bool = False
                  ) -> ColumnElement[bool] | TextClause:
    """The condition "the message's text contains ``term``", ignoring case.

    ``indexed`` (from :func:`has_index`) uses the trigram index for terms it serves
    (:func:`indexable`): the
    ids it finds are then a set. ``in_order`` is for a query that reads a page in the
    order of another index (the messages list, newest first): the unary ``+`` keeps
    SQLite from fetching every found message by id and sorting them all, and each message
    the list's index walks to is checked against the set instead, stopping after a page.
    A count fetches the found ones, which is cheaper when the list's order does not matter
    (bench/admin_pages.py, 200,000 messages, a word in 35% of them: a page 22 ms against
    90, a count 61 ms against 109; a term in none: 0 ms against 12 for a count).
    """
    if not indexed or not indexable(term):
        return Message.body.ilike(like_pattern(term), escape="\\")
    column = "+messages.id" if in_order else "messages.id"
    return text(f"{column} IN (SELECT rowid FROM {INDEX_TABLE} "
                f"WHERE {INDEX_TABLE} MATCH :text_search_phrase)").bindparams(
        text_search_phrase=phrase(term))
