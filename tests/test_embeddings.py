"""Pooling, length batching and the on-disk embedding cache."""

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from spamguard.ml.embeddings import (
    SPACE_FILE,
    CachedEncoder,
    EmbeddingCache,
    encode,
    length_batches,
)
from spamguard.ml.files import folder_lock


def test_length_batches_group_similar_lengths():
    batches = length_batches([3, 50, 4, 49, 5, 48], batch_size=2)
    assert [sorted(b.tolist()) for b in batches] == [[1, 3], [4, 5], [0, 2]]


@pytest.mark.parametrize("pooling, width", [("mean", 32), ("cls", 32), ("mean-cls", 64),
                                            ("mean-last3", 96)])
def test_encode_shapes_and_order_independent_of_batching(tiny_backbone, pooling, width):
    texts = ["short", "a much longer message with many more words in it", "mid length one"]
    one = encode(tiny_backbone, texts, pooling=pooling, batch_size=1, progress=False)
    many = encode(tiny_backbone, texts, pooling=pooling, batch_size=3, progress=False)
    assert one.shape == (3, width)
    # dynamic padding must not change a text's vector (padding is masked out)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_mean_last3_is_the_last_three_layers_mean_pooled_side_by_side(tiny_backbone):
    """The head reads layers 1, 2 and 3 of the 3-layer tiny BERT (4, 5, 6 of MiniLM): each
    part equals mean pooling of a copy of the backbone cut after that layer."""
    import copy
    from dataclasses import replace

    texts = ["short", "a much longer message with many more words in it"]
    got = encode(tiny_backbone, texts, pooling="mean-last3", progress=False)
    parts = []
    for layers in (1, 2, 3):
        model = copy.deepcopy(tiny_backbone.model)
        model.encoder.layer = model.encoder.layer[:layers]
        cut = replace(tiny_backbone, model=model)
        parts.append(encode(cut, texts, pooling="mean", progress=False))
    np.testing.assert_allclose(got, np.concatenate(parts, axis=1), atol=1e-5)
    np.testing.assert_allclose(got[:, 64:], encode(tiny_backbone, texts, progress=False,
                                                   pooling="mean"), atol=1e-6)


def test_layer_pooling_needs_enough_layers(tmp_path):
    from spamguard.ml.backbone import load_backbone
    from tests.fixtures_ml import make_tiny_backbone_dir

    shallow = load_backbone(str(make_tiny_backbone_dir(tmp_path / "shallow", layers=2)))
    with pytest.raises(ValueError, match="pooling mean-last3 reads the last 3 layers, but "
                       "backbone .* has 2; use mean pooling"):
        encode(shallow, ["x"], pooling="mean-last3")


def test_unknown_pooling_is_rejected(tiny_backbone):
    with pytest.raises(ValueError, match="unknown pooling"):
        encode(tiny_backbone, ["x"], pooling="max")


def test_cache_second_run_does_not_call_backbone(tiny_backbone, tmp_path, monkeypatch):
    texts = ["hello there", "WIN a prize now", "see you at 6"]
    first = CachedEncoder(tiny_backbone, tmp_path)
    a = first(texts, progress=False)
    assert first.computed == 3

    second = CachedEncoder(tiny_backbone, tmp_path)  # a new process would start like this

    def boom(*args, **kwargs):
        raise AssertionError("backbone called despite a warm cache")

    monkeypatch.setattr(tiny_backbone.model, "forward", boom)
    b = second(texts, progress=False)
    assert second.computed == 0
    np.testing.assert_array_equal(a, b)


def test_cache_is_keyed_by_pooling_and_max_length(tiny_backbone, tmp_path):
    CachedEncoder(tiny_backbone, tmp_path, pooling="mean")(["hi"], progress=False)
    other = CachedEncoder(tiny_backbone, tmp_path, pooling="cls")
    other(["hi"], progress=False)
    shorter = CachedEncoder(tiny_backbone, tmp_path, max_length=16)
    shorter(["hi"], progress=False)
    assert other.computed == 1 and shorter.computed == 1


def test_cache_only_computes_new_texts(tiny_backbone, tmp_path):
    encoder = CachedEncoder(tiny_backbone, tmp_path)
    encoder(["a", "b"], progress=False)
    encoder(["a", "b", "c", "c"], progress=False)
    assert encoder.computed == 3


def test_cache_compacts_shards(tmp_path):
    cache = EmbeddingCache(tmp_path, "hash", "mean", 128)
    for i in range(20):
        cache.put([f"text {i}"], np.full((1, 4), i, dtype=np.float32))
    assert len(list(cache.dir.glob("*.safetensors"))) <= 17
    fresh = EmbeddingCache(tmp_path, "hash", "mean", 128)
    assert len(fresh) == 20
    assert fresh.get(["text 7"])[0].tolist() == [7.0] * 4


def _cache_with(tmp_path, count: int) -> EmbeddingCache:
    cache = EmbeddingCache(tmp_path, "hash", "mean", 128)
    for i in range(count):
        cache.put([f"text {i}"], np.full((1, 4), i, dtype=np.float32))
    return cache


@pytest.mark.parametrize("damage", [b"", b"not safetensors at all", "wrong tensors"])
def test_damaged_shard_is_dropped_not_fatal(tmp_path, caplog, damage):
    cache = _cache_with(tmp_path, 3)
    bad = cache.dir / "0damaged.safetensors"
    if damage == "wrong tensors":
        save_file({"keys": np.zeros((2, 5), dtype=np.uint8),
                   "vectors": np.zeros((2, 4), dtype=np.float32)}, str(bad))
    else:
        bad.write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="spamguard.ml.embeddings"):
        fresh = EmbeddingCache(tmp_path, "hash", "mean", 128)
        assert len(fresh) == 3  # the good shards still load
    assert not bad.exists()
    assert "deleting unreadable shard" in caplog.text


def test_encoder_recomputes_texts_of_a_damaged_shard(tiny_backbone, tmp_path):
    CachedEncoder(tiny_backbone, tmp_path)(["a", "b"], progress=False)
    for shard in (tmp_path / "embeddings").rglob("*.safetensors"):
        shard.write_bytes(b"")  # what a power cut before the data reached the disk leaves
    again = CachedEncoder(tiny_backbone, tmp_path)
    again(["a", "b"], progress=False)
    assert again.computed == 2


def test_reader_scans_again_when_a_shard_is_compacted_away(tmp_path, monkeypatch):
    cache = _cache_with(tmp_path, 4)
    shards = cache._shards()
    vanished = cache.dir / "vanished.safetensors"  # listed, then gone before it is read
    calls = []

    def shards_once_stale(self):
        calls.append(1)
        return ([vanished] if len(calls) == 1 else []) + shards

    monkeypatch.setattr(EmbeddingCache, "_shards", shards_once_stale)
    fresh = EmbeddingCache(tmp_path, "hash", "mean", 128)
    assert len(fresh) == 4
    assert len(calls) == 2


def test_one_compaction_at_a_time(tmp_path):
    cache = _cache_with(tmp_path, 3)
    with folder_lock(cache.dir, ".compact.lock"):  # another process is compacting
        assert cache.compact() is False
        assert len(cache._shards()) == 3
    assert cache.compact() is True
    assert len(cache._shards()) == 1
    assert len(EmbeddingCache(tmp_path, "hash", "mean", 128)) == 3


def test_compaction_removes_old_temporary_files_only(tmp_path):
    cache = _cache_with(tmp_path, 2)
    old, new = cache.dir / ".x.safetensors.1.tmp", cache.dir / ".y.safetensors.2.tmp"
    old.write_bytes(b"half")
    new.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cache.compact()
    assert not old.exists() and new.exists()


def test_shards_are_synced_before_they_get_their_name(tmp_path, monkeypatch):
    synced = []
    import spamguard.ml.files as files

    real = files.sync_file
    monkeypatch.setattr(files, "sync_file", lambda path: (synced.append(Path(path)),
                                                          real(path)))
    cache = _cache_with(tmp_path, 1)
    assert [p.suffix for p in synced] == [".tmp", ".tmp"]  # under temporary names only
    assert sorted(p.name.split(".")[1:3] for p in synced) == sorted(
        [SPACE_FILE.split("."), [cache._shards()[0].stem, "safetensors"]])
    assert len(cache._shards()) == 1


@pytest.mark.parametrize("failure", ["oserror", "safetensors"])
def test_a_cache_that_cannot_be_written_is_only_a_warning(tiny_backbone, tmp_path, monkeypatch,
                                                          caplog, failure):
    """A full or read-only cache folder used to abort a whole retraining after hours of
    embedding; the cache only saves time, so the vectors are returned all the same."""
    import errno

    from safetensors import SafetensorError

    def refuse(self, texts, vectors):
        if failure == "oserror":
            raise OSError(errno.EROFS, "Read-only file system")
        raise SafetensorError("Error while serializing: I/O error: Read-only file system")

    monkeypatch.setattr(EmbeddingCache, "put", refuse)
    encoder = CachedEncoder(tiny_backbone, tmp_path)
    with caplog.at_level("WARNING"):
        first = encoder(["hello there", "WIN a prize"])
        second = encoder(["hello there", "another one"])
    assert first.shape[0] == 2 and second.shape[0] == 2
    assert np.allclose(first[0], second[0], atol=1e-5)
    assert caplog.text.count("cannot write the embedding cache") == 1  # said once
    assert encoder.computed == 4  # nothing was cached, so "hello there" ran twice
