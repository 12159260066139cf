"""Pooling, length batching and the on-disk embedding cache."""

import numpy as np
import pytest

from spamguard.ml.embeddings import CachedEncoder, EmbeddingCache, encode, length_batches


def test_length_batches_group_similar_lengths():
    batches = length_batches([3, 50, 4, 49, 5, 48], batch_size=2)
    assert [sorted(b.tolist()) for b in batches] == [[1, 3], [4, 5], [0, 2]]


@pytest.mark.parametrize("pooling, width", [("mean", 32), ("cls", 32), ("mean-cls", 64)])
def test_encode_shapes_and_order_independent_of_batching(tiny_backbone, pooling, width):
    texts = ["short", "a much longer message with many more words in it", "mid length one"]
    one = encode(tiny_backbone, texts, pooling=pooling, batch_size=1, progress=False)
    many = encode(tiny_backbone, texts, pooling=pooling, batch_size=3, progress=False)
    assert one.shape == (3, width)
    # dynamic padding must not change a text's vector (padding is masked out)
    np.testing.assert_allclose(one, many, atol=1e-5)


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
