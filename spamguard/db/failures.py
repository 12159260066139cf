"""What a database failure means: busy or unreachable (retry), unable to write, or a
setting a person must fix; and the one line a command or log says about it.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import SQLAlchemyError

from spamguard.errors import DatabaseError, DatabaseUnavailableError

# PostgreSQL error classes that pass (SQLSTATE): connection exceptions, transaction
# rollbacks (serialization, deadlock), lock not available, too many connections, query
# cancelled (statement timeout), server shutting down. A wrong password (28P01), a missing
# database (3D000) or a full disk (53100) need a person, not a retry.
TRANSIENT_SQLSTATES = ("08", "40", "55P03", "53300", "57014", "57P01", "57P02", "57P03")
# A login the server refuses reaches psycopg without a SQLSTATE (libpq reports connection
# failures as text), so these, in the server's English wording, mark the ones a person must
# fix: a wrong or missing password, an unknown database or role, no pg_hba.conf entry, no
# CONNECT privilege, a NOLOGIN role, SSL required of a server without it. A
# server that words them in another language counts them as unavailable (retry) instead.
REFUSED_LOGIN_TEXTS = ("password authentication failed", "no password supplied",
                       "does not exist", "no pg_hba.conf entry",
                       "permission denied for database", "is not permitted to log in",
                       "does not support SSL")
# libpq refusing a connection option's value in the URL ("invalid sslmode value: "bogus"",
# also gssencmode, target_session_attrs...): a typo to fix, not a server to wait for.
BAD_OPTION_VALUE = re.compile(r"\binvalid \w+ value\b")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a busy or unreachable database (worth a retry), not a bad statement
    or a setting someone must fix.

    SQLite: locked past its busy timeout (SQLite also says OperationalError for a missing
    table, hence the text check). PostgreSQL: a lost connection, or a server error of a
    class in :data:`TRANSIENT_SQLSTATES`; a connection that fails has no SQLSTATE and counts
    as unavailable too, unless the server refused the login (:data:`REFUSED_LOGIN_TEXTS`)
    or libpq a value in the URL (:data:`BAD_OPTION_VALUE`).
    """
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError):
        return False
    if exc.connection_invalidated:
        return True
    if _from_sqlite(exc):
        return _sqlite_locked(exc)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is None:
        text = str(exc.orig)
        return not (any(refused in text for refused in REFUSED_LOGIN_TEXTS)
                    or BAD_OPTION_VALUE.search(text))
    return sqlstate.startswith(TRANSIENT_SQLSTATES)


# PostgreSQL: lock_not_available (lock_timeout), query_canceled (statement_timeout).
BUSY_SQLSTATES = ("55P03", "57014")
# A database that answers but cannot store anything: PostgreSQL's disk_full and
# read_only_sql_transaction (a standby after a failover), SQLite's own wording of each.
CANNOT_WRITE_SQLSTATES = ("53100", "25006")
SQLITE_READ_ONLY = "attempt to write a readonly database"
CANNOT_WRITE_TEXTS = ("database or disk is full", SQLITE_READ_ONLY)


def database_cannot_write(exc: BaseException) -> bool:
    """Whether ``exc`` is a database that cannot write now (a full disk, read-only): not a
    retry in seconds, and a person must act, but no fault of the request either."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    if _from_sqlite(exc):
        return any(words in str(exc.orig).lower() for words in CANNOT_WRITE_TEXTS)
    return getattr(exc.orig, "sqlstate", None) in CANNOT_WRITE_SQLSTATES


def database_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is a database that answers but is busy (a lock or statement timeout;
    SQLite still locked after its busy timeout), as opposed to one that cannot be reached."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError) or exc.connection_invalidated:
        return False
    if _from_sqlite(exc):
        return _sqlite_locked(exc)
    return getattr(exc.orig, "sqlstate", None) in BUSY_SQLSTATES


def database_error(exc: SQLAlchemyError) -> DatabaseError | None:
    """What a command says, in one line, when the database fails under it: a
    :class:`DatabaseUnavailableError` (exit 1, retry) for one that does not answer or is
    busy (:func:`database_unavailable`), a :class:`DatabaseError` (exit 2, a person must fix
    it) for another operational error (a full disk, a read-only SQLite file); None for any
    other error, a bug whose traceback is wanted."""
    from sqlalchemy.exc import OperationalError

    if database_unavailable(exc):
        state = "is busy" if database_busy(exc) else "does not answer"
        return DatabaseUnavailableError(f"the database {state}: {first_line(exc)}")
    if database_cannot_write(exc):
        return DatabaseError(f"the database cannot write (a full disk, or read-only): "
                             f"{first_line(exc)}")
    if isinstance(exc, OperationalError):
        return DatabaseError(f"database error: {first_line(exc)}")
    return None


def _from_sqlite(exc: SQLAlchemyError) -> bool:
    return type(getattr(exc, "orig", None)).__module__.startswith("sqlite3")


def _sqlite_locked(exc: SQLAlchemyError) -> bool:
    """SQLite still locked after its busy timeout (it also says OperationalError for a
    missing table, hence the text check)."""
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def first_line(exc: BaseException) -> str:
    """Return the first line of a driver error (SQLAlchemy appends SQL and links)."""
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(original).__name__])[0]
