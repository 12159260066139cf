"""int8 dynamic quantisation of the backbone: opt-in, same version, separate embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spamguard.ml.backbone_variants import quantize_backbone
from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.embeddings import CachedEncoder

TEXTS = ["WIN a FREE prize now! Call 09061701461", "see you at 6 at the station",
         "URGENT your account is suspended visit http://bit.ly/x", "ok thanks"]


@pytest.fixture(scope="module")
def int8_backbone(tiny_backbone):
    return quantize_backbone(tiny_backbone)


def _linear_kinds(model: torch.nn.Module) -> dict[str, str]:
    return {name: type(m).__module__ for name, m in model.named_modules()
            if "Linear" in type(m).__name__}


def test_quantize_replaces_linears_but_keeps_ffn_output_fp32(tiny_backbone, int8_backbone):
    kinds = _linear_kinds(int8_backbone.model)
    ffn_out = "encoder.layer.0.output.dense"
    assert kinds[ffn_out] == "torch.nn.modules.linear"
    assert "quantized" in kinds["encoder.layer.0.attention.self.query"]
    assert "quantized" in kinds["encoder.layer.0.intermediate.dense"]
    # the source backbone is untouched
    assert all(k == "torch.nn.modules.linear" for k in _linear_kinds(tiny_backbone.model).values())


def test_quantized_backbone_keeps_hash_but_not_cache_key(tiny_backbone, int8_backbone):
    assert int8_backbone.variant == "int8" and tiny_backbone.variant == "fp32"
    assert int8_backbone.hash == tiny_backbone.hash
    assert tiny_backbone.cache_key == tiny_backbone.identity  # fp32 adds nothing to it
    assert int8_backbone.cache_key != tiny_backbone.cache_key
    assert quantize_backbone(int8_backbone) is int8_backbone


def test_int8_embeddings_do_not_share_the_fp32_cache(tmp_path, tiny_backbone, int8_backbone):
    fp32 = CachedEncoder(tiny_backbone, tmp_path)
    fp32_vectors = fp32(TEXTS)
    int8 = CachedEncoder(int8_backbone, tmp_path)
    int8_vectors = int8(TEXTS)
    assert int8.computed == len(TEXTS)  # nothing was served from the fp32 shards
    assert int8.cache.dir != fp32.cache.dir
    assert not np.array_equal(int8_vectors, fp32_vectors)
    again = CachedEncoder(int8_backbone, tmp_path)
    np.testing.assert_array_equal(again(TEXTS), int8_vectors)
    assert again.computed == 0


def test_load_quantized_classifies_close_to_fp32(tiny_model_dir, tiny_backbone, tiny_classifier):
    int8 = SpamClassifier.load(tiny_model_dir, backbone=tiny_backbone, quantize=True)
    assert int8.backbone.variant == "int8" and int8.version == tiny_classifier.version
    probs = int8.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS),) and ((probs >= 0) & (probs <= 1)).all()
    # same head, slightly different embeddings: scores move a little, not to noise
    assert np.abs(probs - tiny_classifier.predict_proba(TEXTS)).max() < 0.25
    assert tiny_classifier.backbone.variant == "fp32"  # the shared backbone was copied


def test_classify_cli_quantize_flag(tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from spamguard.cli import build_cli

    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    env = {"SPAMGUARD_HOME": str(tmp_path / "home"), "SPAMGUARD_DATABASE_URL": ""}
    result = CliRunner().invoke(build_cli(), ["classify", "--quantize", "--model",
                                              str(tiny_model_dir), str(source)], env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert all(r["label"] in {"spam", "ham"} and 0 <= r["spam_probability"] <= 1 for r in rows)
