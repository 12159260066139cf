"""The files of a model version and what ``model.json`` must hold, without torch.

:class:`spamguard.ml.classifier.SpamClassifier` loads versions; the registry checks a
version is complete before it becomes active (``promote``, ``rollback``). Both use these
checks, and this module imports no torch or scikit-learn, so a ``promote`` stays quick.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from spamguard.errors import ModelError
from spamguard.ml.features import FEATURE_NAMES

METADATA_FILE = "model.json"
WEIGHTS_FILE = "head.safetensors"
LEXICAL_JSON = "lexical.json"
LEXICAL_WEIGHTS = "lexical.safetensors"
# "mean-last3": the masked means of the last three layers' token states side by side
# (layers 4, 5, 6 of MiniLM-L6): what the default model reads (README, "The model").
POOLINGS = ("mean", "cls", "pooler", "mean-cls", "mean-last3")
DEFAULT_POOLING = "mean-last3"


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """Read ``model.json`` of a version directory."""
    path = Path(directory) / METADATA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not Path(directory).exists():
            raise ModelError(f"model version folder {directory} does not exist (moved or "
                             "deleted?)") from None
        raise ModelError(f"{directory} is not a model version (no {METADATA_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable model metadata ({exc})") from None


# Fields load() relies on, with their types: a version missing one is refused in one line.
REQUIRED_METADATA = {"pooling": str, "max_length": int, "input_dim": int,
                     "threshold": (int, float), "backbone": dict}
# The largest threshold training can choose: just above a validation ham scored 1.0.
MAX_THRESHOLD = math.nextafter(1.0, 2.0)
MAX_TOKENS = 8192


def check_metadata(directory: Path, metadata: Any) -> None:
    """Refuse a ``model.json`` whose values would make the model silently wrong (a NaN
    threshold labels everything ham) or fail on the first message instead of at load."""
    problems = [name for name, kind in REQUIRED_METADATA.items()
                if not isinstance(metadata, dict) or not isinstance(metadata.get(name), kind)
                or isinstance(metadata.get(name), bool)]
    if not problems and not all(isinstance(metadata["backbone"].get(k), str)
                                for k in ("name", "hash")):
        problems = ["backbone.name/hash"]
    if problems:
        raise ModelError(f"{directory / METADATA_FILE}: missing or invalid "
                         f"{', '.join(problems)}; not a usable model version")
    bad = _bad_values(metadata)
    if bad:
        raise ModelError(f"{directory / METADATA_FILE}: {'; '.join(bad)}; not a usable "
                         "model version")


def _bad_values(metadata: dict[str, Any]) -> list[str]:
    bad = []
    threshold = float(metadata["threshold"])
    if not (math.isfinite(threshold) and 0.0 <= threshold <= MAX_THRESHOLD):
        bad.append(f"threshold {metadata['threshold']!r} is not a probability")
    if metadata["pooling"] not in POOLINGS:
        bad.append(f"unknown pooling {metadata['pooling']!r} (one of {', '.join(POOLINGS)})")
    if not 1 <= metadata["max_length"] <= MAX_TOKENS:
        bad.append(f"max_length {metadata['max_length']} is not between 1 and {MAX_TOKENS}")
    if metadata["input_dim"] < 1:
        bad.append(f"input_dim {metadata['input_dim']} is not positive")
    features = metadata.get("features", [])
    if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        bad.append("features is not a list of names")
    elif features and tuple(features) != FEATURE_NAMES:  # every message would fail
        bad.append(f"features {features} are not the ones this spamguard computes "
                   f"({list(FEATURE_NAMES)}): retrain the model")
    if not isinstance(metadata.get("head", {}), dict):
        bad.append("head is not an object of settings")
    return bad


def check_complete(directory: str | Path) -> dict[str, Any]:
    """Read and check ``model.json`` and that every file loading needs is there.

    Returns:
        The metadata.

    Raises:
        ModelError: in one line, naming what is missing or wrong.
    """
    directory = Path(directory)
    metadata = read_metadata(directory)
    check_metadata(directory, metadata)
    needed = [WEIGHTS_FILE] + ([LEXICAL_JSON, LEXICAL_WEIGHTS] if metadata.get("blend") else [])
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise ModelError(f"{directory}: incomplete model version (no {', '.join(missing)})")
    for name in needed:
        if name.endswith(".safetensors"):
            _check_safetensors(directory / name)
    return metadata


def _check_safetensors(path: Path) -> None:
    """Read a weights file's header, which also checks that the file holds all the bytes
    it declares: a truncated or garbled copy is refused at promote, not at the first load
    (promote reads headers only, so it stays quick)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            weights.keys()
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
