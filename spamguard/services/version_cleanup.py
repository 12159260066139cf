"""The folders of deleted model versions: which may be removed, their sizes, removing them.

The registry decides which versions are deleted (:func:`registry.delete_versions`,
:func:`registry.prune_versions`); this module handles their files once that has committed.
Only a folder inside ``$SPAMGUARD_HOME/models`` is removed: ``promote FOLDER`` registers a
version where it is, and a folder elsewhere (someone's working copy, a shared drive) is
left there.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from spamguard.models import ModelVersion


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
