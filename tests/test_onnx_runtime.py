"""ONNX Runtime backbone: PyTorch-equal embeddings in fp32, int8 cached apart, exported once."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
import torch

from spamguard.config import load_settings
from spamguard.errors import ModelError
from spamguard.ml import onnx_runtime
from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.embeddings import CachedEncoder, encode
from spamguard.ml.onnx_runtime import (
    GRAPH_FORMAT,
    INT8_VARIANT,
    OnnxEncoder,
    graph_prefix,
    onnx_backbone,
    with_runtime,
)

# Different lengths, so every batch is padded; one longer than the tiny model's usual input.
TEXTS = ["WIN a FREE prize now! Call 09061701461", "ok", "see you at 6 at the station",
         "URGENT your account is suspended visit http://bit.ly/x " * 6, "ok thanks"]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def fp32_onnx(tiny_backbone, onnx_dir):
    return onnx_backbone(tiny_backbone, onnx_dir)


@pytest.fixture(scope="module")
def int8_onnx(tiny_backbone, onnx_dir):
    return onnx_backbone(tiny_backbone, onnx_dir, int8=True)


@pytest.mark.parametrize("pooling", ["mean", "cls", "mean-cls", "mean-last3"])
@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_fp32_embeddings_match_pytorch(tiny_backbone, fp32_onnx, pooling, batch_size):
    expected = encode(tiny_backbone, TEXTS, pooling=pooling, batch_size=batch_size)
    got = encode(fp32_onnx, TEXTS, pooling=pooling, batch_size=batch_size)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_fp32_shares_the_pytorch_cache_and_int8_does_not(tmp_path, tiny_backbone, fp32_onnx,
                                                          int8_onnx):
    assert isinstance(fp32_onnx.model, OnnxEncoder)
    assert fp32_onnx.hash == int8_onnx.hash == tiny_backbone.hash  # versions still match
    assert fp32_onnx.cache_key == tiny_backbone.cache_key
    assert int8_onnx.variant == INT8_VARIANT
    assert int8_onnx.cache_key != tiny_backbone.cache_key
    warm = CachedEncoder(tiny_backbone, tmp_path)
    warm(TEXTS)
    assert CachedEncoder(fp32_onnx, tmp_path)(TEXTS) is not None
    reused = CachedEncoder(fp32_onnx, tmp_path)
    reused(TEXTS)
    assert reused.computed == 0
    int8 = CachedEncoder(int8_onnx, tmp_path)
    int8(TEXTS)
    assert int8.computed == len(TEXTS)


def test_int8_graph_quantises_every_dense_layer(int8_onnx):
    graph = onnx.load(str(int8_onnx.model.path)).graph
    float_dense = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")
                   and "/dense/" in n.name]
    int8_matmuls = [n.name for n in graph.node if n.op_type == "MatMulInteger"]
    layers = int8_onnx.model.config.num_hidden_layers
    assert float_dense == []
    pooler = [name for name in int8_matmuls if "/pooler/" in name]
    # query, key, value, attention output, FFN input and FFN output in every layer, and
    # the pooler (the attention products of activations stay float: they have no weights)
    assert len(int8_matmuls) == 6 * layers + len(pooler) and len(pooler) <= 1
    assert sum("/output/dense/" in name and "attention" not in name
               for name in int8_matmuls) == layers


def test_attention_is_exported_eager_and_the_backbone_keeps_its_own(tiny_backbone, tmp_path,
                                                                   monkeypatch):
    assert tiny_backbone.model.config._attn_implementation == "sdpa"  # transformers' default
    seen = []
    real_export = torch.onnx.export

    def export(*args, **kwargs):
        seen.append(tiny_backbone.model.config._attn_implementation)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    onnx_runtime.export(tiny_backbone, tmp_path / "graph.onnx")
    assert seen == ["eager"]
    ops = [n.op_type for n in onnx.load(str(tmp_path / "graph.onnx")).graph.node]
    layers = tiny_backbone.model.config.num_hidden_layers
    # SDPA's NaN guards (an IsNaN and a Where on every layer's attention) are not recorded;
    # the mask is still built once
    assert "IsNaN" not in ops and ops.count("Where") < layers
    assert tiny_backbone.model.config._attn_implementation == "sdpa"


def test_a_failed_export_still_gives_the_backbone_its_attention_back(tiny_backbone, tmp_path,
                                                                     monkeypatch):
    def fail(*_args, **_kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(RuntimeError, match="exporter broke") as caught:
        onnx_runtime.export(tiny_backbone, tmp_path / "graph.onnx")
    assert caught.value.__context__ is None  # no unrelated error chained onto it
    assert tiny_backbone.model.config._attn_implementation == "sdpa"
    assert not list(tmp_path.iterdir())  # no half-written graph left


def test_a_model_that_cannot_switch_attention_still_exports(tiny_backbone, tmp_path,
                                                            monkeypatch):
    def refuse(_model, _name):
        raise ValueError("eager attention is not supported")

    monkeypatch.setattr(type(tiny_backbone.model), "set_attn_implementation", refuse)
    onnx_runtime.export(tiny_backbone, tmp_path / "graph.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "graph.onnx")).graph.node}
    assert "IsNaN" in ops  # recorded as it runs: SDPA
    assert tiny_backbone.model.config._attn_implementation == "sdpa"


def test_graphs_of_an_older_format_or_a_retired_int8_recipe_are_never_opened(tiny_backbone):
    prefix = tiny_backbone.identity[:24]
    assert graph_prefix(f"{prefix}-{GRAPH_FORMAT}-fp32.onnx") == prefix
    assert graph_prefix(f"{prefix}-{GRAPH_FORMAT}-{INT8_VARIANT}.onnx") == prefix
    # so `cache prune` removes them: the retired recipe in today's format, older formats
    assert graph_prefix(f"{prefix}-{GRAPH_FORMAT}-onnx-int8-pc1.onnx") is None
    assert graph_prefix(f"{prefix}-h3-onnx-int8-pc2.onnx") is None
    assert graph_prefix(f"{prefix}-h3-fp32.onnx") is None


def test_export_leaves_the_pytorch_backbone_frozen(tiny_backbone, tmp_path):
    onnx_backbone(tiny_backbone, tmp_path)
    assert not any(module.training for module in tiny_backbone.model.modules())
    np.testing.assert_array_equal(encode(tiny_backbone, TEXTS), encode(tiny_backbone, TEXTS))


def test_graphs_are_exported_once_and_reused(tiny_backbone, tmp_path, monkeypatch):
    first = onnx_backbone(tiny_backbone, tmp_path, int8=True)
    prefix = tiny_backbone.identity[:24]
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [
        f"{prefix}-{GRAPH_FORMAT}-fp32.onnx",
        f"{prefix}-{GRAPH_FORMAT}-{INT8_VARIANT}.onnx"]  # no scratch files either
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(onnx_runtime, "export", lambda *a: pytest.fail("exported again"))
    monkeypatch.setattr(onnx_runtime, "quantize", lambda *a: pytest.fail("quantised again"))
    again = onnx_backbone(tiny_backbone, tmp_path, int8=True)
    np.testing.assert_array_equal(encode(again, TEXTS), encode(first, TEXTS))
    assert onnx_backbone(again, tmp_path, int8=True) is again  # already as asked: unchanged
    with pytest.raises(ModelError, match="load it again"):
        onnx_backbone(again, tmp_path)  # int8 on ONNX Runtime cannot become fp32 in place


def test_graphs_are_readable_like_other_cache_files(tiny_backbone, tmp_path):
    onnx_backbone(tiny_backbone, tmp_path, int8=True)
    umask = os.umask(0)
    os.umask(umask)
    for graph in tmp_path.glob("*.onnx"):
        assert stat.S_IMODE(graph.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_concurrent_first_use_exports_once(tiny_backbone, tmp_path, monkeypatch):
    """gunicorn workers start together: one exports and quantises, the others wait."""
    calls = {"export": 0, "quantize": 0}
    real_export, real_quantize = onnx_runtime.export, onnx_runtime.quantize

    def counted(name, real):
        def call(*args):
            calls[name] += 1
            return real(*args)
        return call

    monkeypatch.setattr(onnx_runtime, "export", counted("export", real_export))
    monkeypatch.setattr(onnx_runtime, "quantize", counted("quantize", real_quantize))
    with ThreadPoolExecutor(4) as pool:
        backbones = list(pool.map(lambda _: onnx_backbone(tiny_backbone, tmp_path, int8=True),
                                  range(4)))
    assert calls == {"export": 1, "quantize": 1}
    assert all(b.variant == INT8_VARIANT for b in backbones)


def test_export_failure_is_one_clear_line(tiny_backbone, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: aten::weird_op\nlong traceback text")

    monkeypatch.setattr(onnx_runtime.torch.onnx, "export", broken)
    with pytest.raises(ModelError) as caught:
        onnx_backbone(tiny_backbone, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "aten::weird_op" in message and "torch runtime" in message
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # no half-written graph left
    assert not any(module.training for module in tiny_backbone.model.modules())


def test_unknown_runtime_is_refused(tiny_backbone, monkeypatch):
    with pytest.raises(ModelError, match="unknown runtime 'tpu'"):
        with_runtime(tiny_backbone, "tpu", folder=None)
    monkeypatch.setenv("SPAMGUARD_RUNTIME", "tpu")
    with pytest.raises(ValueError, match="SPAMGUARD_RUNTIME='tpu'"):
        load_settings()


def test_torch_runtime_keeps_the_pytorch_backbone(tiny_backbone, fp32_onnx):
    assert with_runtime(tiny_backbone, "torch", folder=None) is tiny_backbone
    assert with_runtime(tiny_backbone, "torch", folder=None, int8=True).variant == "int8"
    with pytest.raises(ModelError, match="already runs on ONNX Runtime"):
        with_runtime(fp32_onnx, "torch", folder=None)


def test_classifier_on_onnx_scores_like_pytorch(tiny_model_dir, tiny_backbone, tiny_classifier,
                                                tmp_path):
    fast = SpamClassifier.load(tiny_model_dir, backbone=tiny_backbone, runtime="onnx",
                               cache_root=tmp_path)
    assert isinstance(fast.backbone.model, OnnxEncoder)
    assert fast.backbone.model.path.parent == tmp_path / "onnx"  # beside the embeddings
    np.testing.assert_allclose(fast.predict_proba(TEXTS), tiny_classifier.predict_proba(TEXTS),
                               atol=1e-5)
    int8 = SpamClassifier.load(tiny_model_dir, backbone=tiny_backbone, runtime="onnx",
                               quantize=True, onnx_dir=tmp_path / "elsewhere")
    assert int8.backbone.variant == INT8_VARIANT
    assert np.abs(int8.predict_proba(TEXTS) - tiny_classifier.predict_proba(TEXTS)).max() < 0.25


@pytest.mark.parametrize("runtime", ["onnx", "torch", "torch-bf16"])
def test_classify_cli_runtime_option(tiny_model_dir, tmp_path, runtime):
    from click.testing import CliRunner

    from spamguard.cli import build_cli

    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    home = tmp_path / "home"
    env = {"SPAMGUARD_HOME": str(home), "SPAMGUARD_DATABASE_URL": ""}
    result = CliRunner().invoke(build_cli(), ["classify", "--runtime", runtime, "--model",
                                              str(tiny_model_dir), str(source)], env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    exported = list((home / "cache" / "onnx").glob("*.onnx"))
    assert len(exported) == (1 if runtime == "onnx" else 0)


def _no_more(monkeypatch, *names):
    for name in names:
        monkeypatch.setattr(onnx_runtime, name, lambda *a, _n=name: pytest.fail(f"{_n} again"))


@pytest.mark.parametrize("damage", [b"", b"\x08\x07garbage"])
def test_a_damaged_fp32_graph_is_exported_again(tiny_backbone, tmp_path, caplog, damage):
    onnx_backbone(tiny_backbone, tmp_path)
    graph = tmp_path / f"{tiny_backbone.identity[:24]}-{GRAPH_FORMAT}-fp32.onnx"
    graph.write_bytes(damage)  # what a power cut or a full disk can leave
    with caplog.at_level("WARNING", logger="spamguard.ml.onnx_runtime"):
        again = onnx_backbone(tiny_backbone, tmp_path)
    assert "exporting the backbone again" in caplog.text
    assert graph.stat().st_size > 1000
    np.testing.assert_allclose(encode(again, TEXTS), encode(tiny_backbone, TEXTS),
                               atol=1e-5, rtol=1e-4)


def test_a_damaged_int8_graph_is_quantised_again_from_a_good_fp32(tiny_backbone, tmp_path,
                                                                   monkeypatch):
    first = onnx_backbone(tiny_backbone, tmp_path, int8=True)
    graph = tmp_path / f"{tiny_backbone.identity[:24]}-{GRAPH_FORMAT}-{INT8_VARIANT}.onnx"
    graph.write_bytes(b"")
    _no_more(monkeypatch, "export")  # the fp32 graph is fine: only the int8 one is redone
    again = onnx_backbone(tiny_backbone, tmp_path, int8=True)
    np.testing.assert_array_equal(encode(again, TEXTS), encode(first, TEXTS))


def test_int8_from_a_damaged_fp32_graph_redoes_both(tiny_backbone, tmp_path):
    onnx_backbone(tiny_backbone, tmp_path, int8=True)
    for graph in tmp_path.glob("*.onnx"):
        graph.write_bytes(b"")
    again = onnx_backbone(tiny_backbone, tmp_path, int8=True)
    assert again.variant == INT8_VARIANT
    assert all(graph.stat().st_size > 1000 for graph in tmp_path.glob("*.onnx"))


def test_a_graph_another_process_already_replaced_is_kept(tiny_backbone, tmp_path,
                                                          monkeypatch):
    onnx_backbone(tiny_backbone, tmp_path)
    graph = tmp_path / f"{tiny_backbone.identity[:24]}-{GRAPH_FORMAT}-fp32.onnx"
    _no_more(monkeypatch, "export", "quantize")
    # This process saw a damaged file, but while it waited for the lock another process
    # wrote a good one (a different inode): nothing is deleted or redone.
    onnx_runtime._build(tiny_backbone, tmp_path, graph, graph, damaged=(-1, -1))
    assert graph.stat().st_size > 1000


def test_int8_first_used_on_a_damaged_fp32_graph_exports_it_again(tiny_backbone, tmp_path):
    """SPAMGUARD_QUANTIZE switched on after a power cut truncated the fp32 graph."""
    onnx_backbone(tiny_backbone, tmp_path)
    fp32 = tmp_path / f"{tiny_backbone.identity[:24]}-{GRAPH_FORMAT}-fp32.onnx"
    fp32.write_bytes(b"")
    again = onnx_backbone(tiny_backbone, tmp_path, int8=True)
    assert again.variant == INT8_VARIANT and fp32.stat().st_size > 1000


def test_a_graph_named_like_an_older_release_is_never_opened(tiny_backbone, tmp_path):
    """Graphs exported before the earlier layers' states were outputs (December 2026)
    lack them; they keep their old names, so a new export is made beside them."""
    old = tmp_path / f"{tiny_backbone.identity[:24]}-fp32.onnx"
    old.write_bytes(b"an older graph")
    onnx_backbone(tiny_backbone, tmp_path)
    assert old.read_bytes() == b"an older graph"
    assert (tmp_path / f"{tiny_backbone.identity[:24]}-{GRAPH_FORMAT}-fp32.onnx").exists()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_one_layer_backbone_still_runs_on_onnx(tmp_path, pooling):
    from spamguard.ml.backbone import load_backbone
    from tests.fixtures_ml import make_tiny_backbone_dir

    shallow = load_backbone(str(make_tiny_backbone_dir(tmp_path / "one", layers=1)))
    on_onnx = onnx_backbone(shallow, tmp_path / "onnx")
    np.testing.assert_allclose(encode(on_onnx, TEXTS, pooling=pooling),
                               encode(shallow, TEXTS, pooling=pooling), atol=1e-5)


def test_a_cache_folder_the_user_may_not_write_says_so(tmp_path, tiny_backbone, monkeypatch):
    """A home made by root (restore, train) and a service run as its own user: the error
    names the folder and the owner to fix, not "use the torch runtime" alone."""
    folder = tmp_path / "instance" / "cache" / "onnx"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(folder.parent))

    monkeypatch.setattr(onnx_runtime, "_build", refuse)
    with pytest.raises(ModelError) as caught:
        onnx_backbone(tiny_backbone, folder)
    message = str(caught.value)
    assert f"cannot write its graph into {folder} (Permission denied: {folder.parent})" in message
    assert "the user this runs as must be able to write there" in message
