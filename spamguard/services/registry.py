"""Model version registry: which trained versions exist, which one is active, and rollback.

Functions flush but never commit: the caller owns the transaction (see ``db.session_scope``).
The partial unique index on ``model_versions`` guarantees at most one active version even
when two processes promote at once; the loser gets a :class:`RegistryError`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spamguard.errors import (
    ConcurrentActivationError,
    ModelError,
    RegistryError,
    VersionNotFoundError,
)
from spamguard.ml.version_files import check_complete
from spamguard.models import ModelVersion
from spamguard.sqltypes import as_utc, utcnow

REGISTRABLE_STATUSES = ("candidate", "rejected", "active")
HEADLINE_METRICS = ("spam_f1", "mcc", "ham_fpr")


def read_model_json(version_dir: Path) -> dict[str, Any]:
    """Read and check ``version_dir/model.json`` as loading would (a NaN threshold, a
    missing field), plus the fields only the registry needs, before anything is stored."""
    path = Path(version_dir) / "model.json"
    try:
        info = check_complete(version_dir)
    except ModelError as exc:
        raise RegistryError(str(exc)) from None
    except OSError as exc:
        raise RegistryError(f"{path} cannot be read: {exc.strerror or exc}") from None
    missing = [key for key in ("version", "created_at") if not isinstance(info.get(key), str)]
    if missing:
        raise RegistryError(f"{path}: missing or invalid {', '.join(missing)}; not a usable "
                            "model version")
    return info


def _parse_time(value: str, path: Path) -> datetime:
    """Parse an ISO timestamp from model.json as aware UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RegistryError(f"{path}: created_at {value!r} is not an ISO timestamp") from exc
    return as_utc(parsed)


def register_version(
    *, session: Session, version_dir: Path | str, activate_if_none: bool = True,
    status: str = "candidate",
) -> ModelVersion:
    """Record the version in ``version_dir`` (idempotent); activate it if none is active."""
    if status not in REGISTRABLE_STATUSES:
        raise RegistryError(f"cannot register a version as {status!r}")
    version_dir = Path(version_dir).resolve()
    info = read_model_json(version_dir)
    existing = session.get(ModelVersion, info["version"])
    if existing is not None:
        if Path(existing.directory) != version_dir:
            raise RegistryError(
                f"version {existing.id} is already registered at {existing.directory}"
            )
        return existing
    backbone = info["backbone"]
    version = ModelVersion(
        id=info["version"],
        directory=str(version_dir),
        backbone=str(backbone.get("name", "")),
        backbone_hash=str(backbone.get("hash", "")),
        created_at=_parse_time(info["created_at"], version_dir / "model.json"),
        status="candidate" if status == "active" else status,
        threshold=float(info["threshold"]),
        metrics=info.get("metrics") or {},
    )
    session.add(version)
    session.flush()
    if status == "active" or (
        status == "candidate" and activate_if_none and active_version(session) is None
    ):
        promote(session=session, version_id=version.id)
    return version


def active_version(session: Session) -> ModelVersion | None:
    """Return the active version, or None when there is none."""
    return session.scalars(select(ModelVersion).where(ModelVersion.status == "active")).first()


def get_version(session: Session, version_id: str) -> ModelVersion:
    """Return the version ``version_id`` or raise :class:`VersionNotFoundError`."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise VersionNotFoundError(f"no model version {version_id!r}",
                                   cli_hint=" (see `spamguard models`)")
    return version


def list_versions(session: Session) -> list[ModelVersion]:
    """Return every version, newest first."""
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    return list(session.scalars(query))


def headline_metrics(version: ModelVersion, split: str = "test") -> dict[str, float | None]:
    """Return spam F1, MCC and ham false-positive rate on ``split`` (None where missing)."""
    scores = (version.metrics or {}).get(split) or {}
    return {name: scores.get(name) for name in HEADLINE_METRICS}


def _check_loadable(version: ModelVersion) -> None:
    """Refuse to activate a version whose directory is gone or incomplete (a service
    started after that would have no model)."""
    try:
        check_complete(version.path)
    except ModelError as exc:
        raise RegistryError(f"version {version.id}: {exc}") from None


def _activate(session: Session, version: ModelVersion, *, previous_id: str | None) -> None:
    """Retire whatever is active and make ``version`` active, in the caller's transaction."""
    # Read before the flush: a failed flush ends the transaction, and reading an expired
    # attribute after it raised "Can't operate on closed transaction" instead of the
    # conflict below (two admins promoting at once on PostgreSQL got a 500).
    version_id = version.id
    try:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.status == "active", ModelVersion.id != version.id)
            .values(status="retired")
            .execution_options(synchronize_session="fetch")
        )
        version.status = "active"
        version.activated_at = utcnow()
        version.previous_active_id = previous_id
        session.flush()
    except IntegrityError as exc:
        raise ConcurrentActivationError(
            f"could not activate {version_id}: another version was activated at the same "
            "time; try again"
        ) from exc


def promote(*, session: Session, version_id: str) -> ModelVersion:
    """Make ``version_id`` the active version; the old one is retired and remembered."""
    version = get_version(session, version_id)
    if version.status == "active":
        return version
    _check_loadable(version)
    current = active_version(session)
    _activate(session, version, previous_id=current.id if current else None)
    return version


def rollback(*, session: Session) -> ModelVersion:
    """Re-activate the version that was active before the current one; return it."""
    current = active_version(session)
    if current is None:
        raise RegistryError("no active model version to roll back from")
    if current.previous_active_id is None:
        raise _nothing_to_roll_back_to(session, current)
    previous = get_version(session, current.previous_active_id)
    _check_loadable(previous)
    # Keep the target's own predecessor so repeated rollbacks walk further back.
    _activate(session, previous, previous_id=previous.previous_active_id)
    return previous


def _nothing_to_roll_back_to(session: Session, current: ModelVersion) -> RegistryError:
    """Say why ``current`` has no predecessor and which version ``promote`` could bring back
    (the one activated last before it, e.g. the version a rollback just left)."""
    before = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.id != current.id, ModelVersion.activated_at.is_not(None))
        .order_by(ModelVersion.activated_at.desc(), ModelVersion.id.desc())
    ).first()
    if before is not None:
        again = f"to re-activate {before.id}, active before it, "
        cli_hint, ui_hint = again + f"run `spamguard promote {before.id}`", again + "promote it"
    else:
        cli_hint = "to switch versions, run `spamguard promote VERSION` (see `spamguard models`)"
        ui_hint = "to switch versions, promote another version"
    message = (f"version {current.id} has no previously active version to roll back to "
               "(rollback follows the chain of promotions, so it does not undo a rollback); ")
    return RegistryError(message, cli_hint=cli_hint, ui_hint=ui_hint)


def reject(*, session: Session, version_id: str) -> ModelVersion:
    """Mark a non-active version as rejected (kept with its report, never served)."""
    version = get_version(session, version_id)
    if version.status == "active":
        raise RegistryError(
            f"version {version_id} is active: promote another version or roll back first"
        )
    version.status = "rejected"
    session.flush()
    return version
