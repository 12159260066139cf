"""Run a frozen backbone with ONNX Runtime instead of PyTorch eager mode.

The backbone never trains, so it can be exported once to an ONNX graph (a protobuf file,
not a pickle) and run by ONNX Runtime, which fuses the encoder's operations and has far
less per-call overhead than eager PyTorch: one SMS goes through all-MiniLM-L6-v2 in less
than half the time (6.7 vs 14.8 ms p50); batches of 32 run at about the same speed, since
the per-call overhead is then shared by 32 messages (docs/performance.md).

The fp32 graph computes the same function as the PyTorch model up to float rounding
(largest difference 1e-6 on the shipped data, cosine 0.9999998), so it keeps the PyTorch
backbone's ``variant`` and shares its embedding cache. The int8 graph (ONNX Runtime's
dynamic quantisation) computes a different function and is cached apart (its variant,
:data:`INT8_VARIANT`, names the quantisation recipe, so a changed recipe never reuses old
graphs or embeddings).

Exported graphs are kept in a folder (normally the instance's ``cache/onnx``), named by the
first 24 hex digits of the backbone's identity and the variant. A file lock makes one
process export while the others wait (gunicorn workers start together), and files are
written to a temporary name and renamed, so no process ever reads a half-written graph.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from spamguard.config import check_number_format
from spamguard.errors import ModelError
from spamguard.ml.backbone import Backbone, freeze
from spamguard.ml.files import folder_lock, replace_durably, temp_beside

# "torch-bf16": PyTorch with bfloat16 weights (fast only on CPUs with bf16 matrix units);
# "auto": the fastest measured for batches on this CPU (resolve_runtime).
RUNTIMES = ("auto", "onnx", "torch", "torch-bf16")
OPSET = 17
# int8 recipe: every MatMul/Gemm, per-channel weight scales (see quantize()). Change the
# tag with the recipe: it names the graph file and the embedding-cache space ("pc1", until
# 2026-12-04, kept the feed-forward output projections in fp32).
INT8_VARIANT = "onnx-int8-pc2"
# Replaced int8 recipes: their graphs and cached embeddings are never read again, and
# `cache prune` removes them.
RETIRED_VARIANTS = frozenset({"onnx-int8-pc1"})
log = logging.getLogger(__name__)


# The states of the layers before the last that a graph also outputs, newest first, for
# the poolings that read several layers (embeddings.LAYER_POOLINGS reads at most 3 in all;
# a one-layer backbone has only the embeddings' output before its last layer).
EARLIER_STATES = ("hidden_state_minus_1", "hidden_state_minus_2")
# Part of every graph's file name, so graphs of an older format are never opened (`cache
# prune` removes them): "h3" added the earlier layers' states (December 2026), "h4" records
# eager attention instead of SDPA (2026-12-04; see export()).
GRAPH_FORMAT = "h4"
GRAPH_ID_CHARS = 24  # hex digits of the backbone identity that start a graph's file name


def graph_name(identity: str, variant: str) -> str:
    """``<identity prefix>-<format>-<variant>.onnx`` (what ``cache prune`` parses back)."""
    return f"{identity[:GRAPH_ID_CHARS]}-{GRAPH_FORMAT}-{variant}.onnx"


def graph_prefix(file_name: str) -> str | None:
    """The identity prefix of a file :func:`graph_name` named; None for a graph of an older
    format or a retired int8 recipe (never opened)."""
    prefix, _, rest = file_name.partition("-")
    if not rest.startswith(f"{GRAPH_FORMAT}-"):
        return None
    variant = rest.removeprefix(f"{GRAPH_FORMAT}-").removesuffix(".onnx")
    return None if variant in RETIRED_VARIANTS else prefix


class _Exportable(nn.Module):
    """Positional inputs in: the last hidden states, the pooler output (if any), then the
    states of the layers before the last (:data:`EARLIER_STATES`) out."""

    def __init__(self, model: nn.Module, input_names: list[str], with_pooler: bool,
                 earlier: int):
        super().__init__()
        self.model, self.input_names, self.with_pooler = model, input_names, with_pooler
        self.earlier = earlier

    def forward(self, *tensors: torch.Tensor):
        output = self.model(**dict(zip(self.input_names, tensors, strict=True)),
                            output_hidden_states=True)
        earlier = tuple(reversed(output.hidden_states[-1 - self.earlier:-1]))
        pooler = (output.pooler_output,) if self.with_pooler else ()
        return (output.last_hidden_state, *pooler, *earlier)


def _input_names(backbone: Backbone) -> list[str]:
    names = list(getattr(backbone.tokenizer, "model_input_names", None) or [])
    return names or ["input_ids", "attention_mask"]


def export(backbone: Backbone, path: Path) -> None:
    """Write ``backbone`` (a PyTorch fp32 backbone) to ``path`` as an ONNX graph.

    The trace runs on two texts of different lengths, so the padding path is what gets
    recorded; batch and sequence axes are dynamic. Attention is recorded in its eager form
    (the same function): the SDPA form transformers loads by default exports with NaN
    guards (``IsNaN``/``Where`` on every attention matrix) that cost ONNX Runtime about a
    tenth of the int8 backbone's time (docs/performance.md).
    """
    names = _input_names(backbone)
    example = backbone.tokenizer(["spamguard export", "a longer example message, 0800 123"],
                                 padding=True, return_tensors="pt")
    with torch.inference_mode():
        probe = backbone.model(**{k: example[k] for k in names}, output_hidden_states=True)
    with_pooler = getattr(probe, "pooler_output", None) is not None
    earlier = EARLIER_STATES[:max(0, len(probe.hidden_states or ()) - 1)]
    outputs = ["last_hidden_state"] + (["pooler_output"] if with_pooler else [])
    outputs += earlier
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, *earlier]}
    axes["last_hidden_state"] = {0: "batch", 1: "tokens"}
    if with_pooler:
        axes["pooler_output"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        with warnings.catch_warnings():
            # The tracer warns about Python-side shape checks inside transformers; the
            # exported graph is checked against the PyTorch model in the tests.
            warnings.simplefilter("ignore")
            # eval(): the exporter restores the wrapper's train/eval mode afterwards, and
            # a wrapper left in training mode would switch the backbone's dropout back on.
            with _eager_attention(backbone.model):
                torch.onnx.export(_Exportable(backbone.model, names, with_pooler,
                                              len(earlier)).eval(),
                                  tuple(example[k] for k in names), tmp, input_names=names,
                                  output_names=outputs, dynamic_axes=axes,
                                  opset_version=OPSET, dynamo=False)
        replace_durably(tmp, path)  # also undoes mkstemp's 0600
    finally:
        Path(tmp).unlink(missing_ok=True)
        freeze(backbone.model)  # whatever the exporter did, the backbone stays frozen


# Held while an export has switched the shared model's attention (_eager_attention).
_EXPORTING = threading.Lock()


@contextmanager
def _eager_attention(model: nn.Module):
    """Run ``model`` with eager attention inside the block, then as it was (the PyTorch
    backbone stays in use after an export). A model that cannot switch is left as it is.

    One export at a time in a process (:data:`_EXPORTING`): the switch changes the shared
    model, so two overlapping exports could otherwise restore each other's state.
    """
    with _EXPORTING:
        before = getattr(model.config, "_attn_implementation", None)
        switched = False
        try:
            model.set_attn_implementation("eager")
            switched = True
        except (AttributeError, ValueError, ImportError) as exc:
            reason = _first_line(exc)
        else:  # transformers may only warn and keep its implementation
            reason = "the model kept it"
        if getattr(model.config, "_attn_implementation", None) != "eager":
            log.info("exporting with %s attention (%s)", before, reason)
        try:
            yield
        finally:
            if switched:
                try:
                    model.set_attn_implementation(before)
                except Exception as exc:  # never hide the export's own outcome
                    log.warning("could not restore %s attention after the export: %s",
                                before, _first_line(exc))


def quantize(source: Path, path: Path) -> None:
    """Write an int8 copy of the fp32 graph ``source`` to ``path``.

    Every MatMul/Gemm gets int8 weights with one scale per output channel; activations are
    quantised on the fly to uint8 with their own zero point. Unlike the PyTorch int8 path
    the feed-forward output projections are quantised too: on ONNX Runtime that cost the
    mean-pooled embeddings little (worst cosine to fp32 0.970 against 0.978 with them kept
    fp32) and ran 25% faster (docs/performance.md; decisions in bench/README.md).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    tmp = temp_beside(path)
    root = logging.getLogger()
    hint = _DropMessage("pre-processing before quantization")
    root.addFilter(hint)  # quantize_dynamic logs this hint on the root logger
    try:
        # A ModelProto, not a path: given a path, quantize_dynamic writes a scratch
        # "-inferred.onnx" file beside the source.
        quantize_dynamic(model, tmp, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], per_channel=True)
        replace_durably(tmp, path)  # also undoes mkstemp's 0600
    finally:
        root.removeFilter(hint)
        Path(tmp).unlink(missing_ok=True)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class OnnxEncoder:
    """An ONNX Runtime session that answers like the Hugging Face model it was exported from.

    ``encoder(input_ids=..., attention_mask=...)`` returns an object with
    ``last_hidden_state`` (and ``pooler_output``) as torch tensors, so
    :func:`spamguard.ml.embeddings.encode` and its pooling work unchanged; with
    ``output_hidden_states=True`` also ``hidden_states``, the last three layers' states
    (the earlier ones are not exported; nothing reads them).
    """

    def __init__(self, path: Path, config, *, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.config = config
        self.path = path

    def __call__(self, output_hidden_states: bool = False,
                 **inputs: torch.Tensor) -> SimpleNamespace:
        feeds = {name: np.asarray(inputs[name], dtype=np.int64) for name in self.input_names}
        # Earlier layers' states are fetched only when asked: copying them out costs time.
        wanted = [name for name in self.output_names
                  if output_hidden_states or name not in EARLIER_STATES]
        values = self.session.run(wanted, feeds)
        out = {name: torch.from_numpy(value) for name, value in zip(wanted, values, strict=True)}
        last = out["last_hidden_state"]
        hidden_states = ((*(out[name] for name in reversed(EARLIER_STATES) if name in out),
                          last) if output_hidden_states else None)
        return SimpleNamespace(last_hidden_state=last, pooler_output=out.get("pooler_output"),
                               hidden_states=hidden_states)

    def eval(self) -> OnnxEncoder:  # the PyTorch module API callers may use
        return self


def onnx_backbone(backbone: Backbone, folder: str | Path, *, int8: bool = False) -> Backbone:
    """Return ``backbone`` running on ONNX Runtime, exporting (and quantising) on first use.

    Args:
        backbone: a PyTorch fp32 backbone (returned unchanged if it already runs on ONNX).
        folder: where exported graphs are kept (created if missing).
        int8: run ONNX Runtime's int8 dynamic quantisation of the Linear layers.

    Raises:
        ModelError: in one line, when the backbone cannot be exported or run.
    """
    variant = INT8_VARIANT if int8 else "fp32"
    if isinstance(backbone.model, OnnxEncoder):
        if backbone.variant != variant:
            raise ModelError(f"this backbone runs {backbone.variant} on ONNX Runtime, not "
                             f"{variant}; load it again")
        return backbone
    if backbone.variant != "fp32":
        raise ModelError(f"cannot run a {backbone.variant} PyTorch backbone on ONNX Runtime")
    folder = Path(folder)
    fp32 = folder / graph_name(backbone.identity, "fp32")
    target = folder / graph_name(backbone.identity, variant) if int8 else fp32
    try:
        if not target.exists():
            _build(backbone, folder, fp32, target)
        try:
            encoder = OnnxEncoder(target, backbone.model.config)
        except Exception as exc:  # damaged on disk (a crash, a full disk): make it again
            log.warning("cannot open %s (%s); exporting the backbone again", target,
                        _first_line(exc))
            _build(backbone, folder, fp32, target, damaged=_identity(target))
            encoder = OnnxEncoder(target, backbone.model.config)
    except ModelError:
        raise
    except PermissionError as exc:  # e.g. a home root made (restore, train), a service user
        raise ModelError(f"cannot run backbone {backbone.name!r} on ONNX Runtime: cannot "
                         f"write its graph into {folder} ({exc.strerror}: {exc.filename}): "
                         "the user this runs as must be able to write there (the service's "
                         "user should own SPAMGUARD_HOME: chown -R it)") from None
    except Exception as exc:  # exporter and runtime raise many types
        raise ModelError(f"cannot run backbone {backbone.name!r} on ONNX Runtime: "
                         f"{_first_line(exc)} (use the torch runtime)") from None
    return replace(backbone, model=encoder, variant=variant)


def _build(backbone: Backbone, folder: Path, fp32: Path, target: Path, *,
            damaged: tuple[int, int] | None = None) -> None:
    """Export (and quantise) what is missing, one process at a time.

    ``damaged`` is the (inode, mtime) of a ``target`` that would not open: it is replaced
    unless another process already replaced it while this one waited for the lock. For an
    int8 target the fp32 graph it came from is checked too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        if damaged is not None and _identity(target) == damaged:
            target.unlink(missing_ok=True)
        if target != fp32 and not target.exists() and fp32.exists() and not _opens(fp32,
                                                                                   backbone):
            fp32.unlink()  # the int8 graph is made from it: a damaged one is exported again
        if not fp32.exists():  # checked again: another process may have made it
            log.info("exporting backbone %s to %s", backbone.name, fp32)
            export(backbone, fp32)
        if not target.exists():
            quantize(fp32, target)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _opens(path: Path, backbone: Backbone) -> bool:
    try:
        OnnxEncoder(path, backbone.model.config)
    except Exception:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_runtime(runtime: str, *, int8: bool = False, backbone: Backbone | None = None,
                    folder: str | Path | None = None) -> str:
    """The runtime ``"auto"`` stands for in batch work on this CPU; other names unchanged.

    ``torch-bf16`` where the CPU has AMX tiles: in batches of 32 it ran at 1.9-2.2x the
    fp32 runtimes with no validation or test decision changed (docs/performance.md). With
    AVX512-BF16 but no AMX, bf16 ran 1.7x fp32 on one CPU and 0.64-0.94x on another, so
    ``backbone`` is timed in both once and the choice kept in ``folder``
    (:func:`~spamguard.ml.runtime_choice.measured_runtime`; without a backbone, ``onnx``).
    Elsewhere, and with int8 (one backbone has one number format), ``onnx``. For one
    message at a time bf16 gains nothing, so the service maps ``auto`` to ``onnx`` itself.
    """
    if runtime != "auto":
        return runtime
    from spamguard.ml.backbone_variants import amx_tiles, native_bf16

    if backbone is not None and isinstance(backbone.loaded_model, OnnxEncoder):
        return "onnx"  # runs on ONNX Runtime already (a reused backbone), AMX or not
    if int8 or not native_bf16():
        return "onnx"
    if amx_tiles():
        return "torch-bf16"
    if backbone is not None and backbone.variant == "bf16":
        return "torch-bf16"  # converted already (a reused backbone)
    if backbone is None or backbone.variant != "fp32":
        return "onnx"
    from spamguard.ml.runtime_choice import measured_runtime

    return measured_runtime(backbone, folder or default_graph_folder())


def default_graph_folder() -> Path:
    """Where graphs (and the runtime choice) go when no folder is given: a private folder
    in the user's home, so a graph another user could plant is never loaded."""
    return Path.home() / ".cache" / "spamguard" / "onnx"


def with_runtime(backbone: Backbone, runtime: str, *, folder: str | Path | None,
                 int8: bool = False) -> Backbone:
    """``backbone`` on the asked runtime (one of :data:`RUNTIMES`; ``auto`` as
    :func:`resolve_runtime` says), int8 if asked."""
    from spamguard.ml.backbone_variants import bf16_backbone, native_bf16, quantize_backbone

    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    runtime = resolve_runtime(runtime, int8=int8, backbone=backbone, folder=folder)
    try:
        check_number_format(runtime, int8)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    if runtime.startswith("torch"):
        if isinstance(backbone.loaded_model, OnnxEncoder):  # a deferred one is not loaded
            raise ModelError("this backbone already runs on ONNX Runtime; load it again "
                             f"for the {runtime} runtime")
        wanted = "bf16" if runtime == "torch-bf16" else "int8" if int8 else "fp32"
        if backbone.variant not in ("fp32", wanted):  # only an fp32 backbone is converted
            raise ModelError(f"this backbone runs in {backbone.variant}; load it again for "
                             f"the {runtime} runtime{' with int8' if int8 else ''}")
        if wanted == "bf16":
            if not native_bf16():
                log.warning("this CPU has no bf16 matrix instructions: the torch-bf16 "
                            "runtime will be slower than torch")
            return bf16_backbone(backbone)
        return quantize_backbone(backbone) if int8 else backbone
    return onnx_backbone(backbone, folder or default_graph_folder(), int8=int8)
