"""Which runtime ``auto`` stands for in batch work on this CPU.

The CPU's flags settle two cases: AMX tiles mean bf16 (1.9-2.2x the fp32 runtimes in
batches of 32 on an Intel Xeon), no bf16 instructions at all mean ONNX Runtime fp32.
AVX512-BF16 without AMX does not: on a 2-core AMD EPYC bf16 ran 1.7x fp32, on an Intel
Xeon (model 207) whose hypervisor exposes AVX512-BF16 but not AMX it ran 0.64-0.94x
(docs/performance.md). There ``auto`` times one fp32 and one bf16 forward pass of the
backbone itself (a few seconds, said in a log line), picks bf16 only at
:data:`MIN_BF16_GAIN` or more, and keeps the choice in ``runtime-choice.json`` in the
graph folder, keyed by the CPU, PyTorch version, thread count and backbone, so each
machine measures once per backbone.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from pathlib import Path

import torch

from spamguard.ml.backbone import Backbone
from spamguard.ml.files import folder_lock, replace_durably, temp_beside

CHOICE_FILE = "runtime-choice.json"
# bf16 rounds scores slightly (docs/performance.md): worth it only for a clear gain.
MIN_BF16_GAIN = 1.2
# The timed batch: 32 messages of 48 tokens, about a long SMS in a length-sorted batch.
PROBE_BATCH, PROBE_TOKENS, PROBE_ROUNDS = 32, 48, 3
log = logging.getLogger(__name__)


def cpu_name() -> str:
    """The CPU's model name and model number (``/proc/cpuinfo``), else the platform's."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    parts = [fields.get(key, "") for key in ("vendor_id", "model name", "cpu family", "model")]
    return " | ".join(parts) if any(parts) else platform.processor() or platform.machine()


def choice_key(backbone: Backbone) -> str:
    """What a measured choice depends on: CPU, PyTorch version, threads and backbone."""
    return (f"{cpu_name()} | torch {torch.__version__} | threads {torch.get_num_threads()}"
            f" | {backbone.identity}")


def bf16_speedup(backbone: Backbone) -> float:
    """How many times faster a bf16 copy of ``backbone`` runs a batch than the fp32 one.

    Median of :data:`PROBE_ROUNDS` alternating timings after one warm-up pass each (the
    first bf16 pass also packs oneDNN's weights).
    """
    from spamguard.ml.backbone_variants import bf16_backbone

    config = backbone.model.config
    generator = torch.Generator().manual_seed(0)
    vocab = int(config.vocab_size)  # ids from 1000 up skip most special tokens
    ids = torch.randint(min(1000, vocab - 1), vocab, (PROBE_BATCH, PROBE_TOKENS),
                        generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    models = {"fp32": backbone.model, "bf16": bf16_backbone(backbone).model}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(**inputs)
        for _ in range(PROBE_ROUNDS):
            for name, model in models.items():
                start = time.perf_counter()
                model(**inputs)
                seconds[name].append(time.perf_counter() - start)
    return statistics.median(seconds["fp32"]) / statistics.median(seconds["bf16"])


def read_choices(path: Path) -> dict[str, dict]:
    """The choices kept in ``path`` (empty when missing or damaged: measured again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        choices = data["choices"]
    except (OSError, ValueError, TypeError, KeyError):
        return {}
    return {key: value for key, value in choices.items() if isinstance(value, dict)
            and value.get("runtime") in ("torch-bf16", "onnx")} \
        if isinstance(choices, dict) else {}


def measured_runtime(backbone: Backbone, folder: str | Path) -> str:
    """``torch-bf16`` or ``onnx`` for ``backbone`` on this CPU: measured once, then kept.

    One process measures while others wait for its answer (``flock``). A kept answer is
    read without the lock (the file is only ever replaced whole), so a user who may read
    the folder but not write there (another user's instance) uses it too. A folder that
    cannot be written to still gets a measured answer, only not kept.
    """
    folder = Path(folder)
    key = choice_key(backbone)
    path = folder / CHOICE_FILE
    kept = read_choices(path).get(key)
    if kept is not None:
        return kept["runtime"]
    choice = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder, ".runtime-choice.lock"):
            choices = read_choices(path)
            if key in choices:
                return choices[key]["runtime"]
            choice = _measure(backbone)
            choices[key] = choice
            _write(path, choices)
    except OSError as exc:
        if choice is not None:  # measured, but the file could not be written (a full disk)
            log.warning("cannot keep the runtime choice in %s (%s)", path,
                        exc.strerror or exc)
            return choice["runtime"]
        log.warning("cannot keep the runtime choice in %s (%s): measuring without keeping it",
                    folder, exc.strerror or exc)
        choice = _measure(backbone)
    return choice["runtime"]


def _measure(backbone: Backbone) -> dict:
    log.warning("runtime auto: timing fp32 and bf16 on this CPU once (a few seconds; "
                "AVX512-BF16 without AMX can be faster or slower than fp32)")
    speedup = bf16_speedup(backbone)
    runtime = "torch-bf16" if speedup >= MIN_BF16_GAIN else "onnx"
    log.warning("runtime auto: bf16 ran %.2fx fp32 (%s needed): %s", speedup,
                f"{MIN_BF16_GAIN}x", runtime)
    return {"runtime": runtime, "bf16_speedup": round(speedup, 3),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _write(path: Path, choices: dict[str, dict]) -> None:
    tmp = temp_beside(path)
    try:
        Path(tmp).write_text(json.dumps({"choices": choices}, indent=1, sort_keys=True),
                             encoding="utf-8")
        replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
