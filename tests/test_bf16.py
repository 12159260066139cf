"""The torch-bf16 runtime: a bfloat16 copy of the backbone, opt-in, cached apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spamguard.config import load_settings
from spamguard.errors import ModelError
from spamguard.ml.backbone_variants import bf16_backbone
from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.embeddings import CachedEncoder, encode
from spamguard.ml.onnx_runtime import with_runtime

TEXTS = ["WIN a FREE prize now! Call 09061701461", "see you at 6 at the station",
         "URGENT your account is suspended visit http://bit.ly/x", "ok thanks"]


@pytest.fixture(scope="module")
def bf16(tiny_backbone):
    return bf16_backbone(tiny_backbone)


def test_bf16_copy_is_frozen_and_leaves_the_source_alone(tiny_backbone, bf16):
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_backbone.model.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in bf16.model.parameters())
    assert not any(m.training for m in bf16.model.modules())
    assert bf16.hash == tiny_backbone.hash and bf16.variant == "bf16"
    assert bf16.cache_key != tiny_backbone.cache_key
    assert bf16_backbone(bf16) is bf16


def test_bf16_embeddings_are_float32_and_close_to_fp32(tiny_backbone, bf16):
    ref = encode(tiny_backbone, TEXTS)
    out = encode(bf16, TEXTS)
    assert out.shape == ref.shape
    cosine = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > 0.99
    assert not np.array_equal(out, ref)  # it really ran in bf16


def test_bf16_embeddings_are_cached_apart(tiny_backbone, bf16, tmp_path):
    CachedEncoder(tiny_backbone, tmp_path)(TEXTS)
    encoder = CachedEncoder(bf16, tmp_path)
    encoder(TEXTS)
    assert encoder.computed == len(TEXTS)  # the fp32 vectors were not reused


def test_runtime_option_and_its_conflicts(tiny_backbone, tiny_model_dir, monkeypatch):
    assert with_runtime(tiny_backbone, "torch-bf16", folder=None).variant == "bf16"
    with pytest.raises(ModelError, match="exclude each other"):
        with_runtime(tiny_backbone, "torch-bf16", folder=None, int8=True)
    clf = SpamClassifier.load(tiny_model_dir, backbone=tiny_backbone, runtime="torch-bf16")
    assert clf.backbone.variant == "bf16" and len(clf.classify(TEXTS)) == len(TEXTS)
    monkeypatch.setenv("SPAMGUARD_RUNTIME", "torch-bf16")
    assert load_settings().runtime == "torch-bf16"
    monkeypatch.setenv("SPAMGUARD_QUANTIZE", "1")
    with pytest.raises(ValueError, match="exclude each other"):
        load_settings()


def test_a_cpu_without_bf16_units_gets_a_warning(tiny_backbone, monkeypatch, caplog):
    import torch.cpu

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    with caplog.at_level("WARNING"):
        assert with_runtime(tiny_backbone, "torch-bf16", folder=None).variant == "bf16"
    assert "no bf16 matrix instructions" in caplog.text


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler", "mean-cls"])
def test_pooling_of_bf16_states_is_float32(pooling):
    from types import SimpleNamespace

    from spamguard.ml.embeddings import pool

    states = torch.randn(2, 5, 8).to(torch.bfloat16)
    output = SimpleNamespace(last_hidden_state=states,
                             pooler_output=torch.randn(2, 8).to(torch.bfloat16))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert pool(output, mask, pooling).dtype == torch.float32


def test_a_bf16_backbone_is_not_passed_off_as_fp32(bf16):
    with pytest.raises(ModelError, match="runs in bf16"):
        with_runtime(bf16, "torch", folder=None)


def bf16_units(monkeypatch, present: bool, *, amx: bool | None = None) -> None:
    """Pretend the CPU has (or lacks) bf16 matrix units; AMX tiles too unless ``amx`` says."""
    import spamguard.ml.backbone_variants as variants

    monkeypatch.setattr(variants, "native_bf16", lambda: present)
    monkeypatch.setattr(variants, "amx_tiles", lambda: present if amx is None else amx)


@pytest.mark.parametrize(("present", "int8", "expected"), [
    (True, False, "torch-bf16"), (False, False, "onnx"), (True, True, "onnx")])
def test_auto_is_bf16_on_a_cpu_with_amx(monkeypatch, present, int8, expected):
    from spamguard.ml.onnx_runtime import resolve_runtime

    bf16_units(monkeypatch, present)
    assert resolve_runtime("auto", int8=int8) == expected
    for name in ("onnx", "torch", "torch-bf16"):  # a named runtime is kept as asked
        assert resolve_runtime(name) == name


def test_auto_runtime_loads_the_resolved_backbone(tiny_backbone, tiny_model_dir, monkeypatch):
    bf16_units(monkeypatch, True)
    assert with_runtime(tiny_backbone, "auto", folder=None).variant == "bf16"
    clf = SpamClassifier.load(tiny_model_dir, backbone=tiny_backbone, runtime="auto")
    assert clf.backbone.variant == "bf16"


def test_the_service_maps_auto_to_onnx(monkeypatch):
    from spamguard.services.model_provider import ModelProvider

    bf16_units(monkeypatch, True)
    assert load_settings(environ={}).runtime == "auto"
    assert ModelProvider.from_settings(load_settings(environ={})).runtime == "onnx"
    settings = load_settings(environ={"SPAMGUARD_RUNTIME": "torch-bf16"})
    assert ModelProvider.from_settings(settings).runtime == "torch-bf16"


def variants_classified(monkeypatch) -> list[str]:
    """The backbone variant of each SpamClassifier.classify call, as calls come."""
    variants = []
    original = SpamClassifier.classify

    def spy(self, texts, progress=None):
        variants.append(self.backbone.variant)
        return original(self, texts, progress)

    monkeypatch.setattr(SpamClassifier, "classify", spy)
    return variants


@pytest.mark.parametrize(("args", "env_runtime", "present", "expected"), [
    (["--runtime", "torch-bf16"], "", False, ["bf16"]),
    ([], "", True, ["bf16"]),  # the default, auto, on a CPU with bf16 units
    ([], "torch", True, ["fp32"]),  # SPAMGUARD_RUNTIME is the default when it is set
])
def test_classify_cli_runs_the_bf16_backbone(tiny_model_dir, tmp_path, monkeypatch, args,
                                             env_runtime, present, expected):
    import json

    from click.testing import CliRunner

    from spamguard.cli import build_cli

    bf16_units(monkeypatch, present)
    variants = variants_classified(monkeypatch)
    env = {"SPAMGUARD_HOME": str(tmp_path / "home"), "SPAMGUARD_DATABASE_URL": "",
           "SPAMGUARD_RUNTIME": env_runtime}
    result = CliRunner().invoke(build_cli(), ["classify", *args, "--model",
                                              str(tiny_model_dir), "-"], env=env,
                                input="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["text"] for x in result.output.splitlines()] == TEXTS
    assert variants == expected


@pytest.mark.parametrize("tty", [True, False])
def test_classify_names_the_runtime_auto_picked_only_to_a_person(tiny_model_dir, tmp_path,
                                                                 monkeypatch, tty):
    from click.testing import CliRunner

    from spamguard.cli import build_cli, ml_commands

    bf16_units(monkeypatch, True)
    monkeypatch.setattr(ml_commands, "stderr_is_terminal", lambda: tty)
    env = {"SPAMGUARD_HOME": str(tmp_path / "home"), "SPAMGUARD_DATABASE_URL": ""}
    result = CliRunner().invoke(build_cli(), ["classify", "--model", str(tiny_model_dir), "-"],
                                env=env, input="hello\n")
    assert result.exit_code == 0, result.output
    assert ("note: runtime torch-bf16 (auto" in result.stderr) is tty


class Timings:
    """A stand-in for runtime_choice.bf16_speedup that counts its calls."""

    def __init__(self, speedup: float):
        self.speedup, self.calls = speedup, 0

    def __call__(self, backbone):
        self.calls += 1
        return self.speedup


@pytest.fixture()
def avx512_bf16_only(monkeypatch):
    """A CPU with AVX512-BF16 but no AMX, whose bf16 speed is what the test says."""
    from spamguard.ml import runtime_choice

    bf16_units(monkeypatch, True, amx=False)

    def timed(speedup: float) -> Timings:
        timings = Timings(speedup)
        monkeypatch.setattr(runtime_choice, "bf16_speedup", timings)
        return timings

    return timed


@pytest.mark.parametrize(("speedup", "expected"), [(1.5, "torch-bf16"), (1.2, "torch-bf16"),
                                                   (1.19, "onnx"), (0.8, "onnx")])
def test_without_amx_auto_measures_once_and_keeps_the_choice(
        tiny_backbone, tmp_path, avx512_bf16_only, speedup, expected, caplog):
    import json

    from spamguard.ml.onnx_runtime import resolve_runtime
    from spamguard.ml.runtime_choice import CHOICE_FILE, choice_key

    timings = avx512_bf16_only(speedup)
    with caplog.at_level("WARNING"):
        assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == expected
    assert "timing fp32 and bf16" in caplog.text and f"{speedup:.2f}x" in caplog.text
    kept = json.loads((tmp_path / CHOICE_FILE).read_text())["choices"]
    assert kept[choice_key(tiny_backbone)]["runtime"] == expected
    assert kept[choice_key(tiny_backbone)]["bf16_speedup"] == speedup
    timings.speedup = 3.0 if expected == "onnx" else 0.5  # the kept answer is used
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == expected
    assert timings.calls == 1


def test_the_kept_choice_is_per_thread_count_and_backbone(tiny_backbone, tmp_path,
                                                          avx512_bf16_only, monkeypatch):
    from dataclasses import replace

    from spamguard.ml.onnx_runtime import resolve_runtime

    timings = avx512_bf16_only(0.8)
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "onnx"
    timings.speedup = 2.0
    other = replace(tiny_backbone, hash="0" * 64)
    assert resolve_runtime("auto", backbone=other, folder=tmp_path) == "torch-bf16"
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "torch-bf16"
    assert timings.calls == 3
    monkeypatch.undo()  # back to the first thread count: its choice is still kept
    bf16_units(monkeypatch, True, amx=False)
    from spamguard.ml import runtime_choice

    monkeypatch.setattr(runtime_choice, "bf16_speedup", timings)
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "onnx"
    assert timings.calls == 3


@pytest.mark.parametrize("content", ["", "{not json", '{"choices": []}', '[1, 2]',
                                     '{"choices": {"KEY": {"runtime": "tpu"}}}'])
def test_a_damaged_choice_file_is_measured_again(tiny_backbone, tmp_path, avx512_bf16_only,
                                                 content):
    import json

    from spamguard.ml.onnx_runtime import resolve_runtime
    from spamguard.ml.runtime_choice import CHOICE_FILE, choice_key

    (tmp_path / CHOICE_FILE).write_text(content.replace("KEY", choice_key(tiny_backbone)))
    timings = avx512_bf16_only(1.6)
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "torch-bf16"
    assert timings.calls == 1
    kept = json.loads((tmp_path / CHOICE_FILE).read_text())["choices"]
    assert kept[choice_key(tiny_backbone)]["runtime"] == "torch-bf16"


def test_an_unwritable_folder_still_gets_a_measured_answer(tiny_backbone, tmp_path,
                                                           avx512_bf16_only, caplog):
    from spamguard.ml.onnx_runtime import resolve_runtime

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    timings = avx512_bf16_only(1.5)
    with caplog.at_level("WARNING"):
        assert resolve_runtime("auto", backbone=tiny_backbone,
                               folder=blocker / "onnx") == "torch-bf16"
    assert timings.calls == 1 and "cannot keep the runtime choice" in caplog.text


def test_auto_does_not_measure_where_the_answer_is_known(tiny_backbone, tmp_path,
                                                         avx512_bf16_only, monkeypatch):
    from spamguard.ml.onnx_runtime import resolve_runtime

    timings = avx512_bf16_only(2.0)
    assert resolve_runtime("auto", int8=True, backbone=tiny_backbone, folder=tmp_path) == "onnx"
    assert resolve_runtime("auto", folder=tmp_path) == "onnx"  # nothing to time
    assert resolve_runtime("auto", backbone=bf16_backbone(tiny_backbone),
                           folder=tmp_path) == "torch-bf16"  # converted already
    bf16_units(monkeypatch, True, amx=True)
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "torch-bf16"
    bf16_units(monkeypatch, False, amx=False)
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "onnx"
    assert timings.calls == 0 and not list(tmp_path.iterdir())


def test_classify_without_amx_runs_what_was_measured(tiny_model_dir, tmp_path,
                                                     avx512_bf16_only, monkeypatch):
    from click.testing import CliRunner

    from spamguard.cli import build_cli
    from spamguard.ml.runtime_choice import CHOICE_FILE

    timings = avx512_bf16_only(0.7)
    variants = variants_classified(monkeypatch)
    home = tmp_path / "home"
    env = {"SPAMGUARD_HOME": str(home), "SPAMGUARD_DATABASE_URL": "",
           "SPAMGUARD_RUNTIME": ""}
    for _ in range(2):
        result = CliRunner().invoke(build_cli(), ["classify", "--model", str(tiny_model_dir),
                                                  "-"], env=env, input="hello\n")
        assert result.exit_code == 0, result.output
    assert variants == ["fp32", "fp32"] and timings.calls == 1  # onnx keeps the fp32 variant
    assert (home / "cache" / "onnx" / CHOICE_FILE).exists()
    assert list((home / "cache" / "onnx").glob("*-fp32.onnx"))  # ONNX Runtime, not torch


def test_bf16_speedup_times_the_real_backbone(tiny_backbone):
    from spamguard.ml.runtime_choice import bf16_speedup, cpu_name

    assert bf16_speedup(tiny_backbone) > 0
    assert cpu_name()
    assert tiny_backbone.model.dtype == torch.float32  # the source was left alone


def test_bf16_speedup_times_a_backbone_with_a_small_vocabulary(tiny_backbone):
    from dataclasses import replace

    from transformers import BertConfig, BertModel

    from spamguard.ml.backbone import freeze
    from spamguard.ml.runtime_choice import bf16_speedup

    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    model = BertModel(config)
    freeze(model)
    assert bf16_speedup(replace(tiny_backbone, model=model)) > 0


@pytest.mark.parametrize("failure", ["disk full", "file is a folder"])
def test_a_choice_that_cannot_be_written_is_measured_once(tiny_backbone, tmp_path,
                                                          avx512_bf16_only, monkeypatch,
                                                          failure, caplog):
    import errno

    from spamguard.ml import runtime_choice
    from spamguard.ml.onnx_runtime import resolve_runtime

    if failure == "disk full":
        def full(tmp, final):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(runtime_choice, "replace_durably", full)
    else:
        (tmp_path / runtime_choice.CHOICE_FILE).mkdir()
    timings = avx512_bf16_only(1.5)
    with caplog.at_level("WARNING"):
        assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "torch-bf16"
    assert timings.calls == 1  # the answer measured is used, not measured again
    assert "cannot keep the runtime choice" in caplog.text
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_kept_choice_is_read_where_the_lock_cannot_be_taken(tiny_backbone, tmp_path,
                                                              avx512_bf16_only, monkeypatch):
    """Another user's instance (its lock file is theirs, mode 0644): the choice they kept is
    readable, so it is used; only a missing one is measured."""
    from contextlib import contextmanager

    from spamguard.ml import runtime_choice
    from spamguard.ml.onnx_runtime import resolve_runtime

    timings = avx512_bf16_only(0.8)
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "onnx"

    @contextmanager
    def not_ours(folder, name=".lock", *, wait=True):
        raise PermissionError(13, "Permission denied", str(folder / name))
        yield  # pragma: no cover

    monkeypatch.setattr(runtime_choice, "folder_lock", not_ours)
    timings.speedup = 2.0
    assert resolve_runtime("auto", backbone=tiny_backbone, folder=tmp_path) == "onnx"
    assert timings.calls == 1


def test_a_reused_backbone_keeps_its_runtime_on_any_bf16_cpu(tiny_backbone, tmp_path,
                                                             monkeypatch):
    """auto with a backbone that runs on ONNX Runtime already: onnx with AMX too (as
    without it), not torch-bf16, which with_runtime then refuses."""
    from spamguard.ml.onnx_runtime import onnx_backbone, resolve_runtime

    on_onnx = onnx_backbone(tiny_backbone, tmp_path)
    for amx in (False, True):
        bf16_units(monkeypatch, True, amx=amx)
        assert resolve_runtime("auto", backbone=on_onnx, folder=tmp_path) == "onnx"
        assert with_runtime(on_onnx, "auto", folder=tmp_path) is on_onnx
