"""Deleting model versions: the registry change, then their folders.

The registry decides which versions are deleted and which must stay
(:func:`registry.delete_versions`, :func:`registry.prune_versions`); this module removes
their files once that has committed. :func:`delete_versions` does both, for
``spamguard models delete`` and the admin UI's Delete alike. Only a folder inside
``$SPAMGUARD_HOME/models`` is removed: ``promote FOLDER`` registers a version where it is,
and a folder elsewhere (someone's working copy, a shared drive) is left there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from spamguard.models import ModelVersion
from spamguard.services import registry


@dataclass
class VersionFolder:
    """A deleted version's folder: whether it is ours to remove, and its size in bytes."""

    version_id: str
    directory: Path
    inside: bool  # under the models folder: removed; elsewhere: left where it is
    present: bool  # the folder was there when described
    size: int  # 0 when the folder is gone
    already_deleted: bool = False  # deleted by an earlier command

    @property
    def removable(self) -> bool:
        return self.inside and self.present


def folder_size(directory: Path) -> int:
    """Bytes of the files under ``directory`` (symbolic links not followed; 0 if gone)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # gone meanwhile
    return total


def inside(directory: Path, models_dir: Path) -> bool:
    """Whether ``directory`` (its real path, links resolved) lies inside ``models_dir``."""
    real, root = Path(directory).resolve(), Path(models_dir).resolve()
    return real != root and real.is_relative_to(root)


def describe(versions: list[ModelVersion], models_dir: Path, *,
             already_deleted: frozenset[str] = frozenset()) -> list[VersionFolder]:
    """The folders of ``versions`` (those in ``already_deleted`` were deleted before)."""
    folders = []
    for version in versions:
        directory = Path(version.directory)
        present = directory.is_dir()
        folders.append(VersionFolder(
            version.id, directory, inside(directory, models_dir), present,
            folder_size(directory) if present else 0,
            already_deleted=version.id in already_deleted))
    return folders


def remove(folders: list[VersionFolder]) -> list[tuple[VersionFolder, str]]:
    """Remove the folders that are ours and still there; return those that could not be
    removed (entirely), each with the reason."""
    failed = []
    for folder in folders:
        if not folder.removable:
            continue
        try:
            shutil.rmtree(folder.directory)
        except OSError as exc:
            failed.append((folder, exc.strerror or str(exc)))
    return failed


@dataclass
class Deletion:
    """What deleting versions did (or, in a dry run, would do) to their folders."""

    folders: list[VersionFolder]
    failed: dict[str, str] = field(default_factory=dict)  # version id: why its folder stays

    @property
    def freed(self) -> int:
        """Bytes the removed folders took (would take, in a dry run)."""
        return sum(f.size for f in self.folders if f.removable and f.version_id not in self.failed)

    @property
    def newly_deleted(self) -> int:
        """How many of the versions were not deleted before."""
        return sum(not f.already_deleted for f in self.folders)


def remove_folders(versions: list[ModelVersion], models_dir: Path, *,
                   already_deleted: frozenset[str] = frozenset(),
                   dry_run: bool = False) -> Deletion:
    """Describe the folders of ``versions``, whose deletion has committed, and remove those
    that are ours (``dry_run``: only describe them)."""
    folders = describe(versions, models_dir, already_deleted=already_deleted)
    if dry_run:
        return Deletion(folders)
    return Deletion(folders, {folder.version_id: reason for folder, reason in remove(folders)})


def delete_versions(transaction: Callable[[], AbstractContextManager[Session]],
                    version_ids: list[str], models_dir: Path, *,
                    dry_run: bool = False, by: str | None = None) -> Deletion:
    """Delete ``version_ids``: mark them deleted in one transaction (``transaction()``
    yields its session and commits when the block ends), then remove their folders.

    Raises:
        RegistryError: from :func:`registry.delete_versions`: a version is unknown or must
            stay (the message says which and why); nothing is deleted.
    """
    with transaction() as session:
        versions, already = registry.delete_versions(session=session, version_ids=version_ids,
                                                     dry_run=dry_run, by=by)
    return remove_folders(versions, models_dir, already_deleted=already, dry_run=dry_run)
