"""Turn texts into fixed-size vectors with a frozen backbone, batched by length, cached on disk.

A frozen backbone makes each embedding a pure function of (backbone identity, pooling, max
length, text), so :class:`EmbeddingCache` keys vectors by a hash of exactly that and a
second training run on the same data never runs the backbone again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from spamguard.ml.backbone import Backbone
from spamguard.ml.files import folder_lock, replace_durably
from spamguard.ml.version_files import POOLINGS

MAX_SHARDS = 16
KEY_BYTES = 32  # SHA-256
SCAN_ATTEMPTS = 5
STALE_TMP_SECONDS = 3600
SPACE_FILE = "space.json"
log = logging.getLogger(__name__)


# Poolings that read several layers' states (the backbone is asked for all of them), and
# how many of the last layers each reads.
LAYER_POOLINGS = {"mean-last3": 3}


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    states = states.float()
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def pool(output, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce token states to one vector per text (in float32, whatever the backbone's
    number format: a bf16 sum over 100 tokens would lose digits)."""
    hidden = output.last_hidden_state.float()
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "pooler":
        if getattr(output, "pooler_output", None) is None:
            raise ValueError("this backbone has no pooler output; use mean or cls pooling")
        return output.pooler_output.float()
    mask = attention_mask.unsqueeze(-1).float()
    if pooling in LAYER_POOLINGS:
        layers = output.hidden_states[-LAYER_POOLINGS[pooling]:]
        if len(layers) < LAYER_POOLINGS[pooling]:  # setting_problem refuses such backbones
            raise ValueError(f"pooling {pooling} needs {LAYER_POOLINGS[pooling]} layers' "
                             f"states; the backbone gave {len(layers)}")
        return torch.cat([_masked_mean(states, mask) for states in layers], dim=1)
    mean = _masked_mean(hidden, mask)
    if pooling == "mean":
        return mean
    if pooling == "mean-cls":
        return torch.cat([mean, hidden[:, 0]], dim=1)
    raise ValueError(f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")


def last_layer_mean(vectors: np.ndarray, pooling: str, hidden_size: int) -> np.ndarray:
    """The last layer's masked mean inside vectors pooled with ``pooling`` (all of them for
    the single-part poolings).

    Near-duplicate detection (campaigns) compares messages by cosine on it, whatever the
    head reads: earlier layers' means are much alike for any two texts (random pairs of
    the shipped messages: cosine 0.48 with the last three layers, 0.13 with the last one),
    so the campaign threshold would join unrelated messages.
    """
    if pooling in LAYER_POOLINGS:
        return vectors[:, -hidden_size:]  # the last layer is the last part
    if pooling == "mean-cls":
        return vectors[:, :hidden_size]
    return vectors


def setting_problem(backbone: Backbone, pooling: str, max_length: int) -> str | None:
    """Why ``backbone`` cannot embed with this pooling and max length, or None (training,
    loading and :func:`encode` all ask)."""
    if pooling not in POOLINGS:
        return f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})"
    if pooling == "pooler" and not backbone.trained_pooler:
        return (f"backbone {backbone.name}'s checkpoint has no pooler weights (transformers "
                "would make up random ones); use mean or cls pooling")
    layers = getattr(backbone.config, "num_hidden_layers", None)
    if pooling in LAYER_POOLINGS and isinstance(layers, int) and layers < LAYER_POOLINGS[pooling]:
        return (f"pooling {pooling} reads the last {LAYER_POOLINGS[pooling]} layers, but "
                f"backbone {backbone.name} has {layers}; use mean pooling")
    positions = getattr(backbone.config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        return (f"max length {max_length} is more than backbone {backbone.name} can read "
                f"({positions} positions)")
    return None


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Group positions into batches of similar length, longest first (dynamic padding)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def encode(backbone: Backbone, texts: Sequence[str], *, pooling: str = "mean",
           max_length: int = 128, batch_size: int = 32, progress: bool | None = None
           ) -> np.ndarray:
    """Run the backbone over ``texts`` and pool.

    Args:
        backbone: the frozen encoder.
        texts: messages.
        pooling: one of :data:`POOLINGS`.
        max_length: tokens kept per message (longer ones are truncated).
        batch_size: texts per forward pass; batches are formed by length.
        progress: show a tqdm bar (None: only on a terminal and for more than a few batches).

    Returns:
        float32 array of shape (len(texts), dim) in input order.
    """
    if problem := setting_problem(backbone, pooling, max_length):
        raise ValueError(problem)
    if not texts:
        return np.zeros((0, embedding_dim(backbone, pooling)), dtype=np.float32)
    tokenizer = backbone.tokenizer
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    batches = length_batches([len(x) for x in ids], batch_size)
    out = np.zeros((len(texts), embedding_dim(backbone, pooling)), dtype=np.float32)
    show = show_progress(progress, len(batches))
    hidden_states = {"output_hidden_states": True} if pooling in LAYER_POOLINGS else {}
    with torch.inference_mode():
        for batch in tqdm(batches, desc="embedding", unit="batch", disable=not show):
            features = {k: [encoded[k][i] for i in batch] for k in encoded.keys()}
            padded = tokenizer.pad(features, return_tensors="pt")
            output = backbone.model(**padded, **hidden_states)
            out[batch] = pool(output, padded["attention_mask"], pooling).float().numpy()
    return out


def show_progress(progress: bool | None, steps: int) -> bool:
    """Whether to draw a bar: as asked, else only on a terminal and for more than a few steps."""
    if progress is not None:
        return progress
    import sys

    return sys.stderr.isatty() and steps > 8


def embedding_dim(backbone: Backbone, pooling: str) -> int:
    """Width of the pooled vector."""
    return backbone.hidden_size * (2 if pooling == "mean-cls" else LAYER_POOLINGS.get(pooling, 1))


class EmbeddingCache:
    """Embeddings on disk, in safetensors shards under ``root/<space>/``.

    A *space* is one (backbone cache key, pooling, max length), described in its
    ``space.json`` (what ``spamguard cache prune`` reads); inside it a vector is found by
    the SHA-256 of its text. Several processes share a space (web workers, retraining,
    campaign rebuilds), so:

    - shards are written to a temporary name, synced and renamed: no reader sees half a
      file, and a power cut cannot leave a truncated shard under a shard's name;
    - a shard that vanishes while being read (another process compacted it away) makes
      the reader scan again, picking up the merged shard;
    - one process compacts at a time (a file lock); the others skip it;
    - an unreadable shard (damaged on disk) is logged and deleted: the cache only holds
      what the backbone can compute again, so the worst case is recomputing it.
    """

    def __init__(self, root: str | Path, backbone_key: str, pooling: str, max_length: int):
        space = hashlib.sha256(f"{backbone_key}|{pooling}|{max_length}".encode()).hexdigest()
        self.dir = Path(root) / "embeddings" / space[:24]
        self.description = {"backbone_key": backbone_key, "pooling": pooling,
                            "max_length": max_length}
        self._index: dict[bytes, np.ndarray] | None = None

    @staticmethod
    def key(text: str) -> bytes:
        """Digest a text is stored under."""
        return hashlib.sha256(text.encode("utf-8")).digest()

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.safetensors"))

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            self._mend_description()
            for _ in range(SCAN_ATTEMPTS):
                try:
                    self._index = self._scan()
                    break
                except FileNotFoundError:  # compacted away under us: scan again
                    continue
            else:
                log.warning("embedding cache %s kept changing while being read; "
                            "starting from an empty index", self.dir)
                self._index = {}
        return self._index

    def _mend_description(self) -> None:
        """Rewrite a damaged ``space.json`` of a space in use when it is first read: a
        space that is only read (every text cached) is otherwise never written again, and
        ``spamguard cache prune`` cannot tell whose it is. A read-only cache stays as it is."""
        if not self.dir.is_dir() or self._described():
            return
        try:
            self._describe()
        except OSError as exc:
            log.warning("cannot mend %s in %s (%s)", SPACE_FILE, self.dir, exc)

    def _scan(self) -> dict[bytes, np.ndarray]:
        index: dict[bytes, np.ndarray] = {}
        for shard in self._shards():
            for key, vector in self._read(shard):
                index[key.tobytes()] = vector
        return index

    def _read(self, shard: Path) -> list[tuple[np.ndarray, np.ndarray]]:
        """The (key, vector) pairs of one shard; [] for a damaged shard, which is deleted.

        Raises:
            FileNotFoundError: the shard vanished (compaction).
        """
        try:
            tensors = load_file(shard)
            keys, vectors = tensors["keys"], tensors["vectors"]
            if (keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != KEY_BYTES
                    or vectors.ndim != 2 or len(vectors) != len(keys)):
                raise ValueError(f"keys {keys.dtype}{keys.shape}, vectors {vectors.shape}")
        except FileNotFoundError:
            raise
        except Exception as exc:  # truncated, zero-length, not safetensors, wrong tensors
            log.warning("embedding cache: deleting unreadable shard %s (%s); its texts "
                        "will be embedded again", shard, str(exc).strip() or type(exc).__name__)
            shard.unlink(missing_ok=True)
            return []
        return list(zip(keys, vectors.astype(np.float32, copy=False), strict=True))

    def __len__(self) -> int:
        return len(self._load())

    def get(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Vectors for ``texts`` (None where not cached)."""
        index = self._load()
        return [index.get(self.key(t)) for t in texts]

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors for ``texts`` in a new shard (and compact when shards pile up)."""
        if not len(texts):
            return
        keys = np.stack([np.frombuffer(self.key(t), dtype=np.uint8) for t in texts])
        self._write(keys, np.asarray(vectors, dtype=np.float32))
        index = self._load()
        for key, vector in zip(keys, vectors, strict=True):
            index[key.tobytes()] = np.asarray(vector, dtype=np.float32)
        if len(self._shards()) > MAX_SHARDS:
            self.compact()

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._describe()
        final = self.dir / f"{uuid.uuid4().hex}.safetensors"
        tmp = self.dir / f".{final.name}.{os.getpid()}.tmp"
        try:
            save_file({"keys": np.ascontiguousarray(keys),
                       "vectors": np.ascontiguousarray(vectors)}, str(tmp))
            replace_durably(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def _described(self) -> bool:
        """Whether ``space.json`` reads back as this space's description."""
        try:
            return json.loads((self.dir / SPACE_FILE).read_text(encoding="utf-8")) == \
                self.description
        except (OSError, ValueError):  # missing, unreadable, not JSON, not UTF-8
            return False

    def _describe(self) -> None:
        """Write ``space.json``, so the space can be told apart without the backbone (what
        ``spamguard cache prune`` keeps it by), unless it already says so: a damaged one
        (truncated, edited) is written again."""
        if self._described():
            return
        final = self.dir / SPACE_FILE
        tmp = self.dir / f".{SPACE_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(self.description), encoding="utf-8")
            replace_durably(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def compact(self) -> bool:
        """Merge all shards into one; returns False (doing nothing) while another process
        is compacting this space. Also removes temporary files that crashed writers left
        more than an hour ago."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.dir, ".compact.lock", wait=False) as held:
            if not held:
                return False
            old = self._shards()
            self._index = None
            index = self._load()
            if index:
                keys = np.stack([np.frombuffer(k, dtype=np.uint8) for k in index])
                merged = self._write(keys, np.stack(list(index.values())))
            else:
                merged = None
            for shard in old:
                if shard != merged:
                    shard.unlink(missing_ok=True)
            stale = time.time() - STALE_TMP_SECONDS
            for tmp in self.dir.glob(".*.tmp"):
                try:
                    if tmp.stat().st_mtime < stale:
                        tmp.unlink()
                except FileNotFoundError:
                    pass
            return True


class CachedEncoder:
    """:func:`encode` with an :class:`EmbeddingCache` in front of it."""

    def __init__(self, backbone: Backbone, cache_root: str | Path | None, *,
                 pooling: str = "mean", max_length: int = 128, batch_size: int = 32):
        self.backbone = backbone
        self.pooling, self.max_length, self.batch_size = pooling, max_length, batch_size
        self.cache = (EmbeddingCache(cache_root, backbone.cache_key, pooling, max_length)
                      if cache_root is not None else None)
        self.computed = 0  # texts that went through the backbone (tests and logs read it)
        self.cache_writes = True  # off after a write failed: the cache is only a speed-up

    def reading_only(self) -> CachedEncoder:
        """The same encoder and cache, never writing it: for texts that come once (recent
        traffic compared across versions), which would otherwise grow the cache for ever."""
        copy = CachedEncoder.__new__(CachedEncoder)
        copy.__dict__.update(self.__dict__, computed=0, cache_writes=False)
        return copy

    def _store(self, texts: list[str], vectors: np.ndarray) -> None:
        """Cache fresh vectors; a full or read-only disk costs speed later, not this call."""
        try:
            self.cache.put(texts, vectors)
        except (OSError, SafetensorError) as exc:
            self.cache_writes = False
            log.warning("cannot write the embedding cache in %s (%s); carrying on without "
                        "caching new embeddings", self.cache.dir, exc)

    def __call__(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Embeddings for ``texts`` in order; only texts not cached run the backbone."""
        texts = list(texts)
        found = self.cache.get(texts) if self.cache is not None else [None] * len(texts)
        missing = sorted({t for t, v in zip(texts, found, strict=True) if v is None})
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vectors = encode(self.backbone, missing, pooling=self.pooling,
                             max_length=self.max_length, batch_size=self.batch_size,
                             progress=progress)
            self.computed += len(missing)
            fresh = dict(zip(missing, vectors, strict=True))
            if self.cache is not None and self.cache_writes:
                self._store(missing, vectors)
        dim = embedding_dim(self.backbone, self.pooling)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, (text, vector) in enumerate(zip(texts, found, strict=True)):
            out[i] = vector if vector is not None else fresh[text]
        return out
