"""API keys for the JSON API: shown once at creation, stored only as a SHA-256 hash.

A key looks like ``sg_<43 url-safe characters>`` (256 random bits); its first 12 characters
are kept as a prefix so operators can tell keys apart in lists and revoke one by prefix.
Each key has scopes (:data:`SCOPES`): a client that only sends messages can be given a key
that cannot read anyone's stored messages back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from spamguard.db import sqlite_write_lock
from spamguard.errors import SpamguardError
from spamguard.models import API_SCOPES, ApiKey
from spamguard.services import audit
from spamguard.sqltypes import MAX_INTEGER_ID, as_utc, utcnow

KEY_PREFIX = "sg_"
PREFIX_CHARS = 12
# Writing last_used_at on every request would make each API call a write; a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
NAMES_LOCK_KEY = 0x5347_414B  # PostgreSQL advisory lock id of a key's creation ("SGAK")


SCOPES = API_SCOPES
# What each scope allows, as `api-key create --help` and the docs say it.
SCOPE_HELP = {
    "submit": "store and classify messages (POST /api/v1/messages)",
    "classify": "classify texts without storing them (POST /api/v1/classify)",
    "read": "read stored messages with their verdicts and reviews "
            "(GET /api/v1/messages/<message_id>)",
}


class ApiKeyError(SpamguardError):
    """An API key that cannot be created, found or revoked."""


def key_scopes(row: ApiKey) -> tuple[str, ...]:
    """The scopes ``row`` holds, in :data:`SCOPES` order (unknown names are ignored)."""
    held = set((row.scopes or "").split(","))
    return tuple(scope for scope in SCOPES if scope in held)


def _scopes_text(scopes: Iterable[str] | None) -> str:
    """Check scope names; return them as stored (all of them when None)."""
    if scopes is None:
        return ",".join(SCOPES)
    asked = {scope.strip().lower() for scope in scopes}
    if unknown := sorted(asked - set(SCOPES)):
        raise ApiKeyError(f"unknown API key scope {', '.join(map(repr, unknown))}; "
                          f"the scopes are {', '.join(SCOPES)}", field="scope")
    if not asked:
        raise ApiKeyError(f"an API key needs at least one scope of {', '.join(SCOPES)}",
                          field="scope")
    return ",".join(scope for scope in SCOPES if scope in asked)


def hash_key(key: str) -> str:
    """Return the hex SHA-256 of a plaintext key (what the database stores)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# Bidirectional embeddings, overrides and isolates: they reorder the rest of a terminal line.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _garbles_a_listing(char: str) -> bool:
    """A character that would break or disguise an `api-key list` line: control codes
    (line breaks, tabs, escape sequences), line and paragraph separators, bidi controls.
    No-break spaces, zero-width joiners in emoji and right-to-left marks are fine."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in BIDI_CONTROLS


def create_api_key(*, session: Session, name: str, scopes: Iterable[str] | None = None,
                   by: str | None = None) -> tuple[ApiKey, str]:
    """Create a key named ``name`` holding ``scopes`` (None: every scope); return the row and
    the plaintext (shown only this once)."""
    scopes_text = _scopes_text(scopes)
    name = name.strip()
    if not name or len(name) > 100:
        raise ApiKeyError("an API key needs a name of 1 to 100 characters", field="name")
    if any(_garbles_a_listing(c) for c in name):
        raise ApiKeyError("an API key name cannot hold a line break, tab, escape or other "
                          "control character", field="name")
    _refuse_a_name_in_use(session, name)
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_prefix=plaintext[:PREFIX_CHARS], key_hash=hash_key(plaintext),
                 scopes=scopes_text)
    session.add(row)
    session.flush()
    audit.record(session, actor=by, action="api_key.create", target=name, id=row.id,
                 prefix=row.key_prefix, scopes=scopes_text)
    return row, plaintext


def _refuse_a_name_in_use(session: Session, name: str) -> None:
    """Refuse ``name`` when a key that is not revoked has it, ignoring case and surrounding
    spaces: two live keys of one name cannot be told apart in a list (which one to revoke?).

    Decided under a lock until the transaction ends, so two creations at once cannot both
    find the name free: SQLite's write lock (a no-op UPDATE, of no row: ids start at 1), on
    PostgreSQL a transaction-scoped advisory lock that only other key creations wait for."""
    sqlite_write_lock(session, ApiKey.name, 0)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": NAMES_LOCK_KEY})
    # Compared here, not by the database's lower(): PostgreSQL's folds only ASCII under the
    # C locale. Keys that are not revoked are few.
    folded = name.strip().casefold()
    for taken in session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))):
        if taken.name.strip().casefold() == folded:
            raise ApiKeyError(f"an API key named {taken.name!r} already exists (id {taken.id}, "
                              f"{taken.key_prefix}); choose another name, or revoke that key "
                              "first", field="name")


def verify_api_key(*, session: Session, key: str) -> ApiKey | None:
    """Return the active key matching the plaintext ``key``, or None (unknown or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = hash_key(key)
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
        return None
    now = utcnow()
    if row.last_used_at is None or now - as_utc(row.last_used_at) >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.flush()
    return row


def list_api_keys(*, session: Session) -> list[ApiKey]:
    """Return every key, oldest first (revoked ones included)."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_api_key(*, session: Session, key_ref: str,
                   by: str | None = None) -> tuple[ApiKey, bool]:
    """Revoke the key whose id or prefix is ``key_ref``; return it and whether this call
    revoked it (False: it was revoked already, and keeps its first revocation time)."""
    rows = _find(session, key_ref)
    if not rows:
        named = session.scalars(select(ApiKey).where(ApiKey.name == key_ref)
                                .order_by(ApiKey.id)).all()
        if named:  # names are not ids: say which key that name is, not "no API key"
            ids = ", ".join(f"{k.id} ({k.key_prefix}{', revoked' if k.revoked_at else ''})"
                            for k in named)
            raise ApiKeyError(f"{key_ref!r} is a key's name; revoke by its id or prefix: "
                              f"{ids}")
        raise ApiKeyError(f"no API key {key_ref!r}", cli_hint=" (see `spamguard api-key list`)")
    if len(rows) > 1:
        raise ApiKeyError(f"{key_ref!r} matches {len(rows)} keys: use the numeric id")
    row = rows[0]
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    session.flush()
    audit.record(session, actor=by, action="api_key.revoke", target=row.name, id=row.id,
                 prefix=row.key_prefix)
    return row, True


def _find(session: Session, key_ref: str) -> list[ApiKey]:
    """Keys matching an id or a (leading part of a) prefix."""
    if key_ref.isascii() and key_ref.isdigit():
        key_id = int(key_ref)
        row = session.get(ApiKey, key_id) if key_id <= MAX_INTEGER_ID else None
        return [row] if row is not None else []
    if len(key_ref) < 4:
        return []
    # A pasted whole key works too: only its first PREFIX_CHARS characters are compared.
    prefix = key_ref[:PREFIX_CHARS]
    return list(session.scalars(
        select(ApiKey).where(ApiKey.key_prefix.startswith(prefix, autoescape=True))))
