"""Column types and constraint builders shared by :mod:`spamguard.models`."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Integer, text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Return ``value`` in UTC, taking a naive datetime to be UTC already."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime stored as UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def one_of(column: str, values: tuple[str, ...], *, nullable: bool = False) -> CheckConstraint:
    """Build a CHECK constraint, named ``ck_<table>_<column>``, allowing only ``values``."""
    allowed = ", ".join(f"'{value}'" for value in values)
    sql = f'"{column}" IN ({allowed})'  # quoted: "trigger" is an SQL keyword
    if nullable:
        sql = f'"{column}" IS NULL OR {sql}'
    return CheckConstraint(sql, name=column)


def unique_where(name: str, *columns: str, sqlite: str, postgresql: str) -> Index:
    """Build a partial unique index (the predicate is spelled per dialect)."""
    return Index(
        name, *columns, unique=True, sqlite_where=text(sqlite), postgresql_where=text(postgresql)
    )


# The id of a table that grows with traffic (messages, and the verdicts, reviews and spot
# check draws of messages) and every column that holds one: BIGINT on PostgreSQL, where a
# 32-bit INTEGER runs out after 2,147,483,647 ids (about 250 days at 100 messages a
# second, retried deliveries' ON CONFLICT DO NOTHING using ids up too; migration 0011).
# On SQLite the type must stay exactly INTEGER: only an "INTEGER PRIMARY KEY" is the rowid
# (and may be AUTOINCREMENT), and SQLite's integers are 64-bit anyway.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# The largest id of those tables (BIGINT on PostgreSQL, and SQLite's integers): a larger
# number cannot name a row, and asking the database for it fails ("integer out of range",
# or Python's int too large for SQLite) instead of finding nothing.
MAX_ID = 2**63 - 1
# The largest id of the tables whose ids stay 32-bit INTEGER on PostgreSQL (users, API keys,
# campaigns, training runs, the evaluation set: they grow with people, not traffic).
# PostgreSQL compares an INTEGER column with a parameter cast to INTEGER, so a larger
# number must be refused before it is asked for.
MAX_INTEGER_ID = 2**31 - 1


def parse_id(value: str, *, max_id: int = MAX_ID) -> int:
    """Parse a row id from a form or URL; ValueError unless it is a whole number from 1 to
    ``max_id`` (:data:`MAX_INTEGER_ID` for a table whose ids are INTEGER)."""
    value = (value or "").strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= max_id:
        raise ValueError(f"{value[:30]!r} is not a valid id")
    return int(value)


def id_converters() -> dict[str, type]:
    """The URL converters for row ids: ``<id:name>`` from 1 to :data:`MAX_ID` (messages and
    the other 64-bit tables) and ``<integer_id:name>`` from 1 to :data:`MAX_INTEGER_ID`
    (users, API keys, campaigns), in ASCII digits; anything else is a 404 (no such row)
    instead of an overflow in the database."""
    from werkzeug.routing import IntegerConverter

    def up_to(largest: int) -> type:
        class RowIdConverter(IntegerConverter):
            regex = r"[0-9]+"  # werkzeug's \d+ takes other scripts' digits: /messages/١ was 1

            def __init__(self, url_map) -> None:
                super().__init__(url_map, min=1, max=largest)

        return RowIdConverter

    return {"id": up_to(MAX_ID), "integer_id": up_to(MAX_INTEGER_ID)}
