"""Free the disk that cached embeddings and exported ONNX graphs of unused backbones hold,
and drop backbone memos (``cache/backbones``) that no longer describe their folder.

The embedding cache and the ONNX graphs are keyed by the backbone's identity (weights,
configuration and tokenizer). They only grow: a backbone no registered model version uses
any more (one tried once, an upgrade that changed the key) keeps its files forever. Pruning
keeps what any registered version (active, candidate, retired or rejected: all can be
promoted; not a deleted one) may load, and anything written recently, which may belong to
a training run still in progress.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from spamguard.errors import ModelError, SpamguardError
from spamguard.ml.backbone import MEMO_FOLDER, backbone_identity, folder_digest, resolve
from spamguard.ml.embeddings import SPACE_FILE
from spamguard.ml.onnx_runtime import GRAPH_ID_CHARS, RETIRED_VARIANTS, graph_prefix
from spamguard.ml.version_files import read_metadata
from spamguard.services.registry import list_versions

# Files touched this recently are kept: a `spamguard train` on a new backbone writes its
# embeddings before its version is registered.
RECENT_SECONDS = 24 * 3600


@dataclass
class PruneResult:
    """What was (or, in a dry run, would be) removed and kept, with sizes in bytes."""

    removed: list[tuple[Path, int]] = field(default_factory=list)
    kept: list[tuple[Path, int]] = field(default_factory=list)
    # Spaces kept because their space.json is there but does not read (damaged): whose
    # they are cannot be told, and one in use would cost a full re-embedding.
    undescribed: list[Path] = field(default_factory=list)

    @property
    def removed_bytes(self) -> int:
        return sum(size for _, size in self.removed)

    @property
    def kept_bytes(self) -> int:
        return sum(size for _, size in self.kept)


def identities_in_use(session: Session, load=None) -> set[str]:
    """Backbone identities of every registered version whose folder still exists.

    A version from before settings fingerprints (December 2026) recorded only its weights
    hash; loading it today computes the settings afresh, and its embeddings and graphs are
    keyed by that, so its backbone is loaded (``load``: :func:`load_backbone`, once per
    name) to learn the identity. One that no longer loads, or loads other weights, cannot
    be served and needs no cache.

    Raises:
        SpamguardError: a version folder exists but its model.json cannot be read (a
            permission problem, say): better to remove nothing than to guess.
    """
    if load is None:
        from spamguard.ml.backbone import load_backbone as load
    identities, loaded = set(), {}
    for version in list_versions(session):
        directory = Path(version.directory)
        if version.status == "deleted" or not directory.exists():
            continue  # a deleted version (or version folder) needs no cache
        try:
            recorded = read_metadata(directory).get("backbone")
        except (ModelError, OSError) as exc:
            raise SpamguardError(f"cannot tell what version {version.id} uses ({exc}); "
                                 "nothing was removed") from None
        if not isinstance(recorded, dict) or not isinstance(recorded.get("hash"), str):
            continue
        if recorded.get("settings"):
            identities.add(backbone_identity(recorded["hash"], recorded["settings"]))
            continue
        name = str(recorded.get("name") or "")
        if name not in loaded:
            try:
                loaded[name] = load(name or None)
            except ModelError:
                loaded[name] = None
        backbone = loaded[name]
        if backbone is not None and backbone.hash == recorded["hash"]:
            identities.add(backbone.identity)
    return identities


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _newest_change(path: Path) -> float:
    times = [path.stat().st_mtime]
    if path.is_dir():
        times += [p.stat().st_mtime for p in path.rglob("*")]
    return max(times)


class Undescribed(Exception):
    """An embedding space's space.json is there but does not read."""


def _space_identity(space: Path) -> str | None:
    """The backbone identity an embedding space was written for (None: a space from before
    space.json, December 2026, whose key scheme is no longer used, or one of a retired int8
    recipe).

    Raises:
        Undescribed: space.json is there but is damaged or unreadable (the cache mends it
            when the space is next read).
    """
    description = space / SPACE_FILE
    if not description.exists():
        return None
    try:
        key = json.loads(description.read_text(encoding="utf-8"))["backbone_key"]
        if not isinstance(key, str):
            raise TypeError(f"backbone_key {key!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Undescribed(str(exc)) from None
    identity, _, variant = key.partition("|")  # "identity" or "identity|variant" (int8, bf16)
    return None if variant in RETIRED_VARIANTS else identity


def _memo_current(memo: Path, in_use: set[str], digests: dict[Path, str]) -> bool:
    """Whether a backbone memo still describes a backbone in use as its folder is now (same
    digest: same files and library versions). One left by a library upgrade, an edited or
    removed folder, or an unused backbone is not. ``digests`` keeps each folder's digest
    for the other memos of the same folder."""
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
        if backbone_identity(data["hash"], data["settings"]) not in in_use:
            return False
        folder = Path(resolve(data["name"])[1])
        if not folder.is_dir():
            return False
        if folder not in digests:
            digests[folder] = folder_digest(folder)
        return digests[folder] == memo.stem
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def prune_cache(cache_dir: Path, in_use: set[str], *, dry_run: bool = False,
                recent_seconds: float = RECENT_SECONDS, now: float | None = None) -> PruneResult:
    """Remove embedding spaces and ONNX graphs whose backbone identity is not ``in_use``,
    and backbone memos that are not current (:func:`_memo_current`), when nothing changed
    them within ``recent_seconds``; with ``dry_run`` only report."""
    now = time.time() if now is None else now
    prefixes = {identity[:GRAPH_ID_CHARS] for identity in in_use}
    candidates: list[tuple[Path, bool]] = []  # (path, used)
    result = PruneResult()
    spaces = cache_dir / "embeddings"
    if spaces.is_dir():
        for space in sorted(p for p in spaces.iterdir() if p.is_dir()):
            try:
                candidates.append((space, _space_identity(space) in in_use))
            except Undescribed:  # whose it is cannot be told: better kept than guessed
                result.undescribed.append(space)
                candidates.append((space, True))
    graphs = cache_dir / "onnx"
    if graphs.is_dir():
        for graph in sorted(graphs.glob("*.onnx")):
            candidates.append((graph, graph_prefix(graph.name) in prefixes))
    memos = cache_dir / MEMO_FOLDER
    if memos.is_dir():
        digests: dict[Path, str] = {}
        for memo in sorted(memos.glob("*.json")):
            candidates.append((memo, _memo_current(memo, in_use, digests)))
    for path, used in candidates:
        try:
            size = _size(path)
            keep = used or now - _newest_change(path) < recent_seconds
        except FileNotFoundError:  # removed meanwhile (compaction, another prune)
            continue
        if keep:
            result.kept.append((path, size))
            continue
        result.removed.append((path, size))
        if not dry_run:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return result
