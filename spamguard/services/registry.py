"""Model version registry: which trained versions exist, which one is active, rollback,
and which versions may be deleted.

Functions flush but never commit: the caller owns the transaction (see ``db.session_scope``).
The partial unique index on ``model_versions`` guarantees at most one active version even
when two processes promote at once; the loser gets a :class:`RegistryError`.

A deleted version keeps its row (verdicts and training runs name it) with the status
``deleted``; it is never activated again. Deleting and activating lock the rows involved,
so a version being deleted is never made active at the same time (see
:func:`delete_versions`); its files are removed only after the deletion commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spamguard.db import sqlite_write_lock
from spamguard.errors import (
    ConcurrentActivationError,
    ModelError,
    RegistryError,
    VersionNotFoundError,
)
from spamguard.ml.version_files import check_complete
from spamguard.models import ModelVersion, TrainingRun
from spamguard.services import audit
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
    status: str = "candidate", by: str | None = None,
) -> ModelVersion:
    """Record the version in ``version_dir`` (idempotent); activate it if none is active
    (``by``: who, for the audit trail)."""
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
        promote(session=session, version_id=version.id, by=by)
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


def rejected_by_retraining(session: Session) -> set[str]:
    """Ids of versions whose retraining run's gate rejected them: runs recorded as
    ``rejected``, and others (dry runs, ``--force`` promotions, runs failed because the
    active version changed meanwhile) whose recorded decision did not pass. A
    version's status says so only until someone promotes it anyway (after a rollback it is
    ``retired``), and its Promote button should still warn."""
    runs = session.execute(  # a run failed as stale keeps the gate's decision too
        select(TrainingRun.candidate_version_id, TrainingRun.status, TrainingRun.counts)
        .where(TrainingRun.candidate_version_id.is_not(None)))
    return {version_id for version_id, status, counts in runs
            if status == "rejected"
            or ((counts or {}).get("decision") or {}).get("passed") is False}


def eval_size(version: ModelVersion) -> int | None:
    """How many messages the evaluation set held when ``version``'s Eval numbers were
    measured (None: never compared)."""
    return ((version.metrics or {}).get("eval") or {}).get("n")


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
        # After that UPDATE (SQLite's write lock; on PostgreSQL it waited for a deletion
        # holding the active row), lock this row and read its status as committed: a
        # deletion that committed meanwhile is seen here, and one that comes later waits
        # for this transaction and then finds the version active.
        status = session.scalar(select(ModelVersion.status)
                                .where(ModelVersion.id == version_id)
                                .with_for_update(key_share=True))
        if status == "deleted":
            raise _deleted(version_id, "was deleted meanwhile")
        version.status = "active"
        version.activated_at = utcnow()
        version.previous_active_id = previous_id
        session.flush()
    except IntegrityError as exc:
        raise ConcurrentActivationError(
            f"could not activate {version_id}: another version was activated at the same "
            "time; try again"
        ) from exc


def promote(*, session: Session, version_id: str, by: str | None = None) -> ModelVersion:
    """Make ``version_id`` the active version; the old one is retired and remembered."""
    version = get_version(session, version_id)
    if version.status == "active":
        return version
    if version.status == "deleted":
        raise _deleted(version.id, "was deleted")
    _check_loadable(version)
    current = active_version(session)
    _activate(session, version, previous_id=current.id if current else None)
    audit.record(session, actor=by, action="model.promote", target=version.id,
                 was=current.id if current else None)
    return version


def rollback(*, session: Session, by: str | None = None) -> ModelVersion:
    """Re-activate the version that was active before the current one; return it."""
    current = active_version(session)
    if current is None:
        raise RegistryError("no active model version to roll back from")
    if current.previous_active_id is None:
        raise _nothing_to_roll_back_to(session, current)
    previous = get_version(session, current.previous_active_id)
    if previous.status == "deleted":
        raise RegistryError(
            f"version {current.id} rolls back to {previous.id}, which was deleted; ",
            cli_hint="run `spamguard promote VERSION` instead (see "
            "`spamguard models`)", ui_hint="promote another version instead")
    _check_loadable(previous)
    # Keep the target's own predecessor so repeated rollbacks walk further back.
    _activate(session, previous, previous_id=previous.previous_active_id)
    audit.record(session, actor=by, action="model.rollback", target=previous.id, was=current.id)
    return previous


def last_active_before(session: Session, current: ModelVersion) -> ModelVersion | None:
    """The version activated last before ``current`` (not deleted), e.g. the one a rollback
    just left: what ``promote`` would bring back."""
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.id != current.id, ModelVersion.activated_at.is_not(None),
               ModelVersion.status != "deleted")
        .order_by(ModelVersion.activated_at.desc(), ModelVersion.id.desc())
    ).first()


def _nothing_to_roll_back_to(session: Session, current: ModelVersion) -> RegistryError:
    """Say why ``current`` has no predecessor and which version ``promote`` could bring back
    (:func:`last_active_before`)."""
    before = last_active_before(session, current)
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
    if version.status == "deleted":
        raise _deleted(version_id, "was deleted")
    version.status = "rejected"
    session.flush()
    return version


def _deleted(version_id: str, what: str) -> RegistryError:
    """A deleted version cannot become active (or anything else) again."""
    return RegistryError(f"version {version_id} {what} and cannot be promoted again; ",
                         cli_hint="choose another version (see `spamguard models`)",
                         ui_hint="choose another version")


def rollback_target(session: Session) -> ModelVersion | None:
    """The version :func:`rollback` would re-activate (None: there is none to go back to,
    or it was deleted)."""
    current = active_version(session)
    if current is None or current.previous_active_id is None:
        return None
    target = session.get(ModelVersion, current.previous_active_id)
    return None if target is None or target.status == "deleted" else target


# How protected_versions names what a person can do, on the command line and in the admin
# UI (which shows no command lines).
_WORDS = {"cli": {"rollback": "`spamguard rollback`", "retrain": "`spamguard retrain`"},
          "ui": {"rollback": "Roll back", "retrain": "retraining"}}


def protected_versions(session: Session, *, ui: bool = False) -> dict[str, str]:
    """The versions whose files must stay, each with why (``ui``: in the admin UI's words):
    the active version, the one ``rollback`` would return to, and those a training run
    recorded as running uses (the version that was active when it started, which it
    compares its candidate with)."""
    words = _WORDS["ui" if ui else "cli"]
    reasons: dict[str, str] = {}
    running = session.scalars(select(TrainingRun).where(TrainingRun.status == "running")
                              .order_by(TrainingRun.id))
    for run in running:
        for version_id in (run.active_version_id, run.candidate_version_id):
            if version_id and version_id not in reasons:
                reasons[version_id] = (
                    f"training run {run.id}, recorded as running, uses it (a run that was "
                    f"killed stays so until the next {words['retrain']})")
    current = active_version(session)
    if current is not None:
        target = rollback_target(session)  # not one deleted already: its folder may be retried
        if target is not None:
            reasons[target.id] = (
                f"it is the version {words['rollback']} would return to (active before "
                f"{current.id})")
        reasons[current.id] = "it is the active version (promote another one first)"
    return reasons


def _lock_for_deletion(session: Session) -> None:
    """Make what follows see the registry as committed and keep it so until the end of the
    transaction: SQLite's write lock; on PostgreSQL the active version's row (FOR NO KEY
    UPDATE, so storing verdicts, whose foreign key takes FOR KEY SHARE, is not held up),
    which every promote and rollback must update to retire it."""
    sqlite_write_lock(session, ModelVersion.status, "")
    session.execute(select(ModelVersion.id).where(ModelVersion.status == "active")
                    .with_for_update(key_share=True))
    session.expire_all()  # read again what others committed before the lock


def _mark_deleted(session: Session, versions: list[ModelVersion], *, by: str | None,
                  how: str) -> None:
    ids = [v.id for v in versions if v.status != "deleted"]
    if not ids:
        return
    for version_id in ids:
        audit.record(session, actor=by, action="model.delete", target=version_id, via=how)
    marked = session.execute(
        update(ModelVersion).where(ModelVersion.id.in_(ids), ModelVersion.status != "active")
        .values(status="deleted").execution_options(synchronize_session="fetch"))
    if marked.rowcount != len(ids):  # the locks above should make this impossible
        raise ConcurrentActivationError("a version was activated while it was being deleted; "
                                        "nothing was deleted: try again")


def delete_versions(*, session: Session, version_ids: list[str], dry_run: bool = False,
                    by: str | None = None) -> tuple[list[ModelVersion], frozenset[str]]:
    """Mark ``version_ids`` deleted and return them with the ids of those that were deleted
    already (they stay so); the caller removes their folders once the transaction has
    committed. ``dry_run``: check, mark nothing.

    Raises:
        RegistryError: an id is not registered, or a version must keep its files
            (:func:`protected_versions`): the message says which and why; nothing is
            marked.
    """
    if not dry_run:
        _lock_for_deletion(session)
    found = {version_id: session.get(ModelVersion, version_id)
             for version_id in dict.fromkeys(version_ids)}
    versions = [v for v in found.values() if v is not None]
    unknown = [f"no model version {version_id!r}" for version_id, v in found.items()
               if v is None]

    def refusal(ui: bool) -> str:
        protected = protected_versions(session, ui=ui)
        refused = unknown + [f"cannot delete {v.id}: {protected[v.id]}" for v in versions
                             if v.id in protected]
        return "; ".join([*refused, "nothing was deleted"]) if refused else ""

    if cli := refusal(ui=False):
        # The reasons name commands mid-sentence, so the whole message is the hint: the
        # command line's (str(error)), or the admin UI's (error.for_ui()).
        raise RegistryError("", cli_hint=cli + (" (see `spamguard models`)" if unknown else ""),
                            ui_hint=refusal(ui=True))
    already = frozenset(v.id for v in versions if v.status == "deleted")
    if not dry_run:
        _mark_deleted(session, versions, by=by, how="delete")
    return versions, already


@dataclass
class Pruning:
    """What :func:`prune_versions` deleted (or would), newest first, and what it kept."""

    deleted: list[ModelVersion]
    newest: list[str]  # the ids of the versions kept as the newest
    protected: dict[str, str]  # older versions kept all the same, each with why


def prune_versions(*, session: Session, keep: int, dry_run: bool = False,
                   by: str | None = None) -> Pruning:
    """Mark deleted every version but the ``keep`` newest (by creation time), those that
    must keep their files (:func:`protected_versions`) and the version active last before
    the active one (:func:`last_active_before`: after a rollback, the one it left, which
    the rollback's own hint says to promote; a lifecycle audit saw a nightly prune delete
    it, the only version the gate had promoted, behind three newer rejected candidates).
    ``dry_run``: mark nothing."""
    if keep < 1:
        raise RegistryError(f"--keep must be at least 1 (got {keep}): the newest version "
                            "always stays")
    if not dry_run:
        _lock_for_deletion(session)
    remaining = [v for v in list_versions(session) if v.status != "deleted"]
    protected = protected_versions(session)
    current = active_version(session)
    before = last_active_before(session, current) if current is not None else None
    if before is not None and before.id not in protected:
        protected[before.id] = (f"it was active last before {current.id} (`spamguard "
                                "promote` brings it back)")
    older = remaining[keep:]
    pruning = Pruning([v for v in older if v.id not in protected],
                      [v.id for v in remaining[:keep]],
                      {v.id: protected[v.id] for v in older if v.id in protected})
    if not dry_run:
        _mark_deleted(session, pruning.deleted, by=by, how=f"prune --keep {keep}")
    return pruning


def locked_active_id(session: Session) -> str | None:
    """The active version's id, its row locked until the transaction ends (PostgreSQL), so
    a promote or rollback cannot slip in between this check and what the caller then does
    (a retraining run's own promotion; a hold on automatic promotion).

    On SQLite, which ignores FOR UPDATE, the database's write lock is taken first (a no-op
    UPDATE of no row): otherwise a promote, rollback or ``promotion hold`` could commit
    between what the run reads here (the active version, then the hold) and its first write,
    and the run would promote over it. FOR NO KEY UPDATE (``key_share``), as promote and
    rollback here lock rows: they wait for each other, while verdicts stored meanwhile
    (whose foreign-key checks take a key-share lock on the row) do not wait."""
    sqlite_write_lock(session, ModelVersion.status, "")
    query = (select(ModelVersion.id).where(ModelVersion.status == "active")
             .with_for_update(key_share=True))
    active = session.scalars(query).first()
    if active is None:
        # PostgreSQL: having waited for a promote or rollback, the statement re-checks only
        # the row it found (now retired), not the one made active; a new statement sees it.
        active = session.scalars(query).first()
    return active
