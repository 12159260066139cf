"""Turn texts into fixed-size vectors with a frozen backbone, batched by length, cached on disk.

A frozen backbone makes each embedding a pure function of (backbone hash, pooling, max
length, text), so :class:`EmbeddingCache` keys vectors by a hash of exactly that and a
second training run on the same data never runs the backbone again.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from spamguard.ml.backbone import Backbone

POOLINGS = ("mean", "cls", "pooler", "mean-cls")
MAX_SHARDS = 16


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
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    if pooling == "mean":
        return mean
    if pooling == "mean-cls":
        return torch.cat([mean, hidden[:, 0]], dim=1)
    raise ValueError(f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")


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
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")
    if not texts:
        return np.zeros((0, embedding_dim(backbone, pooling)), dtype=np.float32)
    tokenizer = backbone.tokenizer
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    batches = length_batches([len(x) for x in ids], batch_size)
    out = np.zeros((len(texts), embedding_dim(backbone, pooling)), dtype=np.float32)
    show = show_progress(progress, len(batches))
    with torch.inference_mode():
        for batch in tqdm(batches, desc="embedding", unit="batch", disable=not show):
            features = {k: [encoded[k][i] for i in batch] for k in encoded.keys()}
            padded = tokenizer.pad(features, return_tensors="pt")
            output = backbone.model(**padded)
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
    return backbone.hidden_size * (2 if pooling == "mean-cls" else 1)


class EmbeddingCache:
    """Embeddings on disk, in safetensors shards under ``root/<space>/``.

    A *space* is one (backbone hash, pooling, max length); inside it a vector is found by
    the SHA-256 of its text. Shards are written to a temporary name and renamed, so
    concurrent writers (web workers, retraining) never see half a file.
    """

    def __init__(self, root: str | Path, backbone_hash: str, pooling: str, max_length: int):
        space = hashlib.sha256(f"{backbone_hash}|{pooling}|{max_length}".encode()).hexdigest()
        self.dir = Path(root) / "embeddings" / space[:24]
        self._index: dict[bytes, np.ndarray] | None = None

    @staticmethod
    def key(text: str) -> bytes:
        """Digest a text is stored under."""
        return hashlib.sha256(text.encode("utf-8")).digest()

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            self._index = {}
            for shard in sorted(self.dir.glob("*.safetensors")):
                tensors = load_file(shard)
                for key, vector in zip(tensors["keys"], tensors["vectors"], strict=True):
                    self._index[key.tobytes()] = vector
        return self._index

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
        if len(list(self.dir.glob("*.safetensors"))) > MAX_SHARDS:
            self.compact()

    def _write(self, keys: np.ndarray, vectors: np.ndarray, name: str | None = None) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / (name or f"{uuid.uuid4().hex}.safetensors")
        tmp = self.dir / f".{final.name}.{os.getpid()}.tmp"
        save_file({"keys": np.ascontiguousarray(keys), "vectors": np.ascontiguousarray(vectors)},
                  str(tmp))
        os.replace(tmp, final)
        return final

    def compact(self) -> None:
        """Merge all shards into one."""
        old = sorted(self.dir.glob("*.safetensors"))
        self._index = None
        index = self._load()
        keys = np.stack([np.frombuffer(k, dtype=np.uint8) for k in index])
        merged = self._write(keys, np.stack(list(index.values())))
        for shard in old:
            if shard != merged:
                shard.unlink(missing_ok=True)


class CachedEncoder:
    """:func:`encode` with an :class:`EmbeddingCache` in front of it."""

    def __init__(self, backbone: Backbone, cache_root: str | Path | None, *,
                 pooling: str = "mean", max_length: int = 128, batch_size: int = 32):
        self.backbone = backbone
        self.pooling, self.max_length, self.batch_size = pooling, max_length, batch_size
        self.cache = (EmbeddingCache(cache_root, backbone.cache_key, pooling, max_length)
                      if cache_root is not None else None)
        self.computed = 0  # texts that went through the backbone (tests and logs read it)

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
            if self.cache is not None:
                self.cache.put(missing, vectors)
        dim = embedding_dim(self.backbone, self.pooling)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, (text, vector) in enumerate(zip(texts, found, strict=True)):
            out[i] = vector if vector is not None else fresh[text]
        return out
