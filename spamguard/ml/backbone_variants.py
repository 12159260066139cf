"""Faster copies of a frozen backbone: int8 dynamic quantisation and bfloat16 (CPU).

Each copy keeps the weights' ``hash`` (a model version still matches it) and has its own
``variant``, so its embeddings are cached apart from the fp32 ones (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from spamguard.errors import ModelError
from spamguard.ml.backbone import Backbone, freeze


def int8_layers(model: nn.Module) -> set[str]:
    """Names of the Linear layers to quantise: all but the feed-forward output projections.

    The FFN output layer reads GELU activations with large outliers; quantising its input
    per tensor to int8 moved mean-pooled embeddings of all-MiniLM-L6-v2 to a cosine of 0.76
    (worst of 120 validation texts) from the fp32 ones, against 0.93 when it stays fp32.
    """
    return {name for name, module in model.named_modules()
            if isinstance(module, nn.Linear)
            and not (name.endswith("output.dense") and "attention" not in name)}


def quantize_backbone(backbone: Backbone) -> Backbone:
    """Copy ``backbone`` with its Linear layers dynamically quantised to int8 (CPU only).

    The copy keeps the source weights' ``hash`` (a model version still matches it) but has
    ``variant="int8"``, so its embeddings are cached apart from the fp32 ones.

    Args:
        backbone: a frozen fp32 backbone (it is not modified).

    Returns:
        The quantised backbone.
    """
    if backbone.variant != "fp32":
        return backbone
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao's eager quantisation announces its move to torchao on every call; it is
        # still the supported CPU int8 path in torch 2.13 (docs/performance.md).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor", category=UserWarning)
        model = quantize_dynamic(backbone.model, int8_layers(backbone.model),
                                 dtype=torch.qint8, inplace=False)
    model.eval()
    return replace(backbone, model=model, variant="int8")


def bf16_backbone(backbone: Backbone) -> Backbone:
    """Copy ``backbone`` with its weights and activations in bfloat16 (PyTorch, CPU).

    Worth it on CPUs with native bf16 matrix units: 2.3x the fp32 throughput of
    all-MiniLM-L6-v2 on a 2-core Xeon with AMX, with pooled embeddings at a cosine of at
    least 0.9998 to the fp32 ones. Without such units bf16 is emulated and slower than
    fp32; with AVX512-BF16 alone it can go either way, so the ``auto`` runtime picks it
    only where it is faster (:mod:`spamguard.ml.runtime_choice`, docs/performance.md).
    The copy keeps the weights ``hash`` but has ``variant="bf16"``: its embeddings are
    cached apart.
    """
    if backbone.variant == "bf16":
        return backbone
    if backbone.variant != "fp32":
        raise ModelError(f"cannot make a bf16 copy of a {backbone.variant} backbone")
    import copy

    model = copy.deepcopy(backbone.model).to(torch.bfloat16)
    freeze(model)
    return replace(backbone, model=model, variant="bf16")


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions, AMX or AVX512-BF16 (without them
    oneDNN emulates bf16 and it is slower than fp32)."""
    return _cpu_reports("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def amx_tiles() -> bool:
    """Whether this CPU has AMX tiles, with which bf16 is always the fastest (AVX512-BF16
    alone may not be: see :mod:`spamguard.ml.runtime_choice`)."""
    return _cpu_reports("_is_amx_tile_supported")


def _cpu_reports(*checks: str) -> bool:
    import torch.cpu

    try:
        return any(bool(getattr(torch.cpu, name)()) for name in checks
                   if hasattr(torch.cpu, name))
    except RuntimeError:
        return False
