"""Free the disk that cached embeddings and exported ONNX graphs of unused backbones hold.

The embedding cache and the ONNX graphs are keyed by the backbone's identity (weights,
configuration and tokenizer). They only grow: a backbone no registered model version uses
any more (one tried once, an upgrade that changed the key) keeps its files forever. Pruning
keeps what any registered version (active, candidate or rejected: all can be promoted) may
load, and anything written recently, which may belong to a training run still in progress.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from spamguard.ml.backbone import backbone_identity
from spamguard.ml.embeddings import SPACE_FILE
from spamguard.ml.version_files import read_metadata
from spamguard.services.registry import list_versions

# Files touched this recently are kept: a `spamguard train` on a new backbone writes its
# embeddings before its version is registered.
RECENT_SECONDS = 24 * 3600
IDENTITY_PREFIX = 24  # ONNX graphs are named <first 24 hex digits of the identity>-<variant>


@dataclass
class PruneResult:
    """What was (or, in a dry run, would be) removed and kept, with sizes in bytes."""

    removed: list[tuple[Path, int]] = field(default_factory=list)
    kept: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def removed_bytes(self) -> int:
        return sum(size for _, size in self.removed)

    @property
    def kept_bytes(self) -> int:
        return sum(size for _, size in self.kept)


def identities_in_use(session: Session) -> set[str]:
    """Backbone identities of every registered version whose model.json can be read."""
    identities = set()
    for version in list_versions(session):
        try:
            recorded = read_metadata(Path(version.directory)).get("backbone")
        except Exception:  # noqa: BLE001 - a missing or damaged folder needs no cache
            continue
        if isinstance(recorded, dict) and isinstance(recorded.get("hash"), str):
            identities.add(backbone_identity(recorded["hash"], recorded.get("settings") or ""))
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


def _space_identity(space: Path) -> str | None:
    """The backbone identity an embedding space was written for (None: unknown, a space
    from before space.json, December 2026, whose key scheme is no longer used)."""
    try:
        key = json.loads((space / SPACE_FILE).read_text(encoding="utf-8"))["backbone_key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(key).split("|")[0]  # "identity" or "identity|variant" (int8, bf16)


def prune_cache(cache_dir: Path, in_use: set[str], *, dry_run: bool = False,
                recent_seconds: float = RECENT_SECONDS, now: float | None = None) -> PruneResult:
    """Remove embedding spaces and ONNX graphs whose backbone identity is not ``in_use``
    and that nothing changed within ``recent_seconds``; with ``dry_run`` only report."""
    now = time.time() if now is None else now
    prefixes = {identity[:IDENTITY_PREFIX] for identity in in_use}
    candidates: list[tuple[Path, bool]] = []  # (path, used)
    spaces = cache_dir / "embeddings"
    if spaces.is_dir():
        for space in sorted(p for p in spaces.iterdir() if p.is_dir()):
            candidates.append((space, _space_identity(space) in in_use))
    graphs = cache_dir / "onnx"
    if graphs.is_dir():
        for graph in sorted(graphs.glob("*.onnx")):
            candidates.append((graph, graph.name.split("-")[0] in prefixes))
    result = PruneResult()
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
