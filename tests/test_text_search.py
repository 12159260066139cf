"""The messages' text search: the same answers with the trigram indexes of migration 0010
(SQLite's FTS5 table, PostgreSQL's pg_trgm) as reading every body, and the index kept in
step."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from spamguard.db import session_scope
from spamguard.models import Message
from spamguard.services import message_queries, text_search
from spamguard.services.message_queries import MessageFilter
from tests.fixtures_db import captured_statements, query_plan

BODIES = [
    "WIN a FREE prize! Call 09061701461 now",
    "free entry in 2 a wkly comp",
    "Are you free for lunch at noon?",
    "100% guaranteed cash_back, reply STOP",
    "path C:\\temp\\x and 50%_off",
    'she said "hello there" twice',
    "Prize PRIZE prize",
    "Привет, ваш ПРИЗ ждёт",
    "Delivery 🚚 failed, pay £1.99 at parcel-fee.example",
    "ok",
]
# ASCII terms: every database and path must give Python's case-insensitive "in".
ASCII_TERMS = ["free", "FREE", "prize", "ze! ca", "100%", "%", "_", "cash_b", "50%_",
               "\\temp\\", '"hello', 'o" t', "ok", "o", "zzz", "noon?", "0% g", "'", "; --"]


@pytest.fixture
def stored(add_messages) -> dict[int, str]:
    ids = add_messages(*BODIES)
    return dict(zip(ids, BODIES, strict=True))


def found(session, term: str) -> set[int]:
    f = MessageFilter(q=term)
    page = message_queries.list_messages(session, f, per_page=100)
    assert page.total == len(page.items) == message_queries.count_messages(session, f)
    ids = {m.id for m in page.items}
    assert set(session.scalars(message_queries.matching_ids(session, f))) == ids
    return ids


def test_each_database_has_its_index(db_session) -> None:
    """SQLite: the FTS5 table the search's query names, and its three triggers (a table
    rebuilt by a later migration's batch mode would lose them); PostgreSQL: the pg_trgm
    index."""
    sqlite = db_session.get_bind().dialect.name == "sqlite"
    assert text_search.has_index(db_session) == sqlite
    if sqlite:
        triggers = db_session.scalars(text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages' "
            "ORDER BY name")).all()
        assert triggers == ["messages_fts_delete", "messages_fts_insert",
                            "messages_fts_update"]
    if not sqlite:
        assert db_session.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = "
                                       ":name"), {"name": text_search.PG_INDEX}).scalar() == (
            "CREATE INDEX ix_messages_body_trgm ON public.messages USING gin (body gin_trgm_ops)")


@pytest.mark.parametrize("term", ASCII_TERMS)
def test_a_search_finds_what_contains_the_term_ignoring_case(db_session, stored, term) -> None:
    expected = {i for i, body in stored.items() if term.lower() in body.lower()}
    assert found(db_session, term) == expected


def test_letters_beyond_ascii_ignore_case_when_the_term_is_indexed(db_session, stored) -> None:
    """"ПРИЗ" finds "ПРИЗ" and "приз" alike, through the index on SQLite. Emoji and £ are
    characters like others."""
    russian = next(i for i, body in stored.items() if body.startswith("Привет"))
    assert found(db_session, "приз") == {russian} == found(db_session, "ПРИЗ")
    assert found(db_session, "ривет") == {russian}
    delivery = next(i for i, body in stored.items() if "🚚" in body)
    assert found(db_session, "🚚 fa") == {delivery} == found(db_session, "£1.9")


def test_postgresql_can_read_the_trigram_index_for_ilike(db_session_factory, stored) -> None:
    """The count of a search, with sequential scans priced out as in a big table, reads
    ix_messages_body_trgm (a few rows are cheaper to read than any index)."""
    with session_scope(db_session_factory) as session:
        connection = session.connection()
        if connection.dialect.name != "postgresql":
            pytest.skip("pg_trgm is PostgreSQL's")
        with captured_statements(connection) as statements:
            message_queries.count_messages(session, MessageFilter(q="Prize"))
        (sql, params), = [s for s in statements if "ILIKE" in s[0]]
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = query_plan(connection, sql, params)
    assert f"Bitmap Index Scan on {text_search.PG_INDEX}" in plan, plan


def test_sqlite_reads_the_index_not_every_body(db_session_factory, stored) -> None:
    with session_scope(db_session_factory) as session:
        connection = session.connection()
        if connection.dialect.name != "sqlite":
            pytest.skip("the FTS5 table is SQLite's")
        with captured_statements(connection) as statements:
            found(session, "prize")
        searches = [(sql, params) for sql, params in statements if "messages_fts" in sql]
        assert len(searches) == 4  # the page and its count, a count, the ids of a bulk relabel
        assert all("LIKE" not in sql for sql, _ in searches)
        # Only the page checks ids against the found set (a count fetches the found ones).
        assert [sql for sql, _ in searches if "+messages.id IN" in sql] == [
            sql for sql, _ in searches if "ORDER BY" in sql]
        for sql, params in searches:
            plan = query_plan(connection, sql, params)
            assert "VIRTUAL TABLE INDEX 0:M" in plan, plan  # a MATCH lookup, not a scan
        # The page walks the newest-first index and checks each id against the found set,
        # rather than fetching every found message and sorting them all.
        page = next(query_plan(connection, sql, params) for sql, params in searches
                    if "ORDER BY messages.received_at DESC" in sql)
        assert "ix_messages_received_at" in page and "TEMP B-TREE" not in page, page


def test_the_index_follows_new_changed_and_deleted_messages(db_session_factory, stored,
                                                            add_messages) -> None:
    prize = {i for i, body in stored.items() if "prize" in body.lower()}
    (late,) = add_messages("a late PRIZE notice")
    with session_scope(db_session_factory) as session:
        assert found(session, "prize") == prize | {late}
        first = min(prize)
        session.get(Message, first).body = "nothing to see"
        session.delete(session.get(Message, late))
    with session_scope(db_session_factory) as session:
        assert found(session, "prize") == prize - {first}
        assert found(session, "nothing to s") == {first}
        if text_search.has_index(session):  # FTS5's own check of index against texts
            session.execute(text("INSERT INTO messages_fts (messages_fts, rank) "
                                 "VALUES ('integrity-check', 1)"))


def test_without_the_index_the_search_reads_every_body(db_session_factory, stored) -> None:
    """Before migration 0010 (or on a SQLite without the trigram tokenizer) the same
    answers come from LIKE. The index goes as 0010's downgrade removes it (a downgrade to
    0009 would also take later columns of messages, which the model reads)."""
    with session_scope(db_session_factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("DROP INDEX ix_messages_body_trgm"))
        else:
            for name in ("insert", "delete", "update"):
                session.execute(text(f"DROP TRIGGER messages_fts_{name}"))
            session.execute(text("DROP TABLE messages_fts"))
    with session_scope(db_session_factory) as session:
        assert not text_search.has_index(session)
        expected = {i for i, body in stored.items() if "prize" in body.lower()}
        assert found(session, "prize") == expected


@pytest.mark.parametrize(("bodies", "term"), [
    (["ᎠᎡᎢ cherokee", "ꭰꭱꭲ cherokee"], "ꭰꭱꭲ"),  # case pairs FTS5's table lacks
    (["ᲐᲑᲒ georgian", "აბგ georgian"], "აბგ"),
    (["𞤀𞤁𞤂 adlam", "𞤢𞤣𞤤 adlam"], "𞤢𞤣𞤤"),
    (["ͿΑΒ greek yot", "ϳαβ greek yot"], "ϳαβ"),
    (["İSTANBUL", "istanbul"], "i\u0307st"),  # İ lowers to i and a combining dot
    (["i\u0307stanbul", "istanbul"], "İST"),  # ... and FTS5 does not fold it so (an audit)
])
def test_terms_the_index_would_miss_read_every_body(db_session, add_messages, bodies, term):
    """From a review: in these scripts FTS5's case folding is not Python's, and the index
    missed what the LIKE (Python's lower, registered by spamguard.db) finds."""
    if "İ" in "".join(bodies) + term and db_session.get_bind().dialect.name == "postgresql":
        pytest.skip("PostgreSQL's ILIKE lowers İ to i alone, as it always did")
    ids = add_messages(*bodies)
    expected = {i for i, body in zip(ids, bodies, strict=True)
                if term.lower() in body.lower()}
    assert expected and not text_search.indexable(term)
    assert found(db_session, term) == expected


def test_where_the_index_differs_it_finds_more() -> None:
    """Every cased character the index is used for finds, in FTS5, every character Python
    lowers to the same letter ("qXz" for a term "qYz"). A sweep of every code point,
    caseless ones too, found the same (session notes, 2026-12-02)."""
    import sqlite3
    from collections import defaultdict

    same_lower: dict[str, list[str]] = defaultdict(list)
    for code in (*range(0x250), *range(0x370, 0x530), *range(0x1E00, 0x1F00)):
        same_lower[chr(code).lower()].append(chr(code))
    cased = [chr(code) for chars in same_lower.values() for code in map(ord, chars)
             if text_search.indexable(f"q{chr(code)}z") and len(chars) > 1]
    assert len(cased) > 1000
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='trigram')")
    connection.executemany("INSERT INTO t (body) VALUES (?)",
                           [(f"q{char}z",) for chars in same_lower.values() for char in chars])
    for char in cased:
        want = {f"q{other}z" for other in same_lower[char.lower()]}
        got = {row[0] for row in connection.execute(
            "SELECT body FROM t WHERE t MATCH ?", (text_search.phrase(f"q{char}z"),))}
        assert want <= got, (hex(ord(char)), want - got)
    # ... and a final sigma is folded like any sigma, which Python's lower does not do.
    assert not "ΟΔΟΣ".lower().count("δοσ") and text_search.indexable("δοσ")
