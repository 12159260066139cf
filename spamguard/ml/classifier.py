"""A trained model version: load it from its directory, classify texts, save it.

A version directory holds ``head.safetensors`` (the head's weights, never a pickle),
``model.json`` (everything needed to rebuild the inputs exactly as in training, plus data
hashes, metrics and library versions) and the report files. A version that blends in the
TF-IDF + SVM model (``model.json`` has ``blend``) also holds ``lexical.json`` and
``lexical.safetensors``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from spamguard.errors import NEEDS_A_PERSON, ModelError
from spamguard.ml.backbone import Backbone, load_backbone, settings_mismatch
from spamguard.ml.baseline import TfidfSvmBaseline
from spamguard.ml.blend import Blend, head_logit, shown_probability
from spamguard.ml.embeddings import CachedEncoder, setting_problem
from spamguard.ml.features import FEATURE_NAMES, message_features
from spamguard.ml.files import give_usual_mode, os_error_of, sync_folder
from spamguard.ml.head import BertArch
from spamguard.ml.onnx_runtime import with_runtime
from spamguard.ml.version_files import (  # noqa: F401  (read_metadata: part of this API)
    METADATA_FILE,
    WEIGHTS_FILE,
    check_metadata,
    read_metadata,
)

LABEL_MAP = {0: "ham", 1: "spam"}
log = logging.getLogger(__name__)


def build_inputs(encoder: CachedEncoder, texts: Sequence[str], features: Sequence[str],
                 progress: bool | None = None) -> np.ndarray:
    """Head inputs for ``texts``: pooled embedding, then the message features if any.

    Training and serving both call this, so preprocessing is written once.
    """
    embeddings = encoder(texts, progress=progress)
    if not features:
        return embeddings
    if tuple(features) != FEATURE_NAMES:
        raise ModelError(f"model expects features {list(features)}, this spamguard computes "
                         f"{list(FEATURE_NAMES)}: retrain the model")
    return np.concatenate([embeddings, message_features(texts)], axis=1)


def temporary_name(version: str) -> str:
    """``.tmp-<version>@<host>-<pid>``: where :meth:`SpamClassifier.save` writes first. The
    host and pid let a cleanup tell a dead writer's leftovers from a live writer's work,
    also on a models folder that several machines share."""
    return f".tmp-{version}@{socket.gethostname()}-{os.getpid()}"


def temporary_writer(name: str) -> tuple[str | None, int | None]:
    """The (host, pid) of a :func:`temporary_name` (host None for the older
    ``.tmp-<version>-<pid>`` names; pid None when there is none)."""
    head, _, pid = name.rpartition("-")
    host = head.rpartition("@")[2] if "@" in head else None
    return host, int(pid) if pid.isdigit() else None


class SpamClassifier:
    """Frozen backbone + trained head + the settings that link them."""

    def __init__(self, *, backbone: Backbone, head: BertArch, metadata: dict[str, Any],
                 cache_root: str | Path | None = None, batch_size: int = 32,
                 lexical: TfidfSvmBaseline | None = None):
        self.backbone, self.head, self.metadata = backbone, head, metadata
        self.head.eval()
        self.lexical = lexical
        try:
            self.blend = Blend.from_json(metadata["blend"]) if metadata.get("blend") else None
        except ValueError as exc:
            raise ModelError(f"model {metadata.get('version', '')}: {exc}") from None
        if (self.blend is None) != (lexical is None):
            raise ModelError("a blended model needs both its blend settings and its "
                             "lexical model")
        self.encoder = CachedEncoder(backbone, cache_root, pooling=metadata["pooling"],
                                     max_length=metadata["max_length"], batch_size=batch_size)

    @property
    def version(self) -> str:
        return self.metadata.get("version", "")

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @classmethod
    def load(cls, directory: str | Path, *, backbone: Backbone | None = None,
             reusable: Backbone | None = None, cache_root: str | Path | None = None,
             batch_size: int = 32, quantize: bool = False, runtime: str = "torch",
             onnx_dir: str | Path | None = None) -> SpamClassifier:
        """Load a version directory.

        Args:
            directory: the version's folder.
            backbone: an already loaded backbone to reuse (its hash must match).
            reusable: a loaded backbone to use if it is the encoder this version was
                trained on (same weights and settings), else the version's own is loaded
                (a service switching versions keeps its backbone when it can).
            cache_root: folder of the embedding cache (None: no cache).
            batch_size: texts per backbone forward pass.
            quantize: run the backbone with int8 dynamically quantised Linear layers
                (faster on CPUs with int8 instructions; scores shift slightly, see
                docs/performance.md).
            runtime: ``"torch"`` (PyTorch eager), ``"onnx"`` (the backbone exported once
                to ONNX and run by ONNX Runtime: same scores in fp32, faster) or
                ``"torch-bf16"`` (PyTorch in bfloat16: much faster on CPUs with bf16
                matrix units, scores shift slightly; not with ``quantize``) or ``"auto"``
                (for batches: torch-bf16 where this CPU runs it faster, else onnx; see
                :func:`~spamguard.ml.onnx_runtime.resolve_runtime`).
            onnx_dir: where exported graphs are kept (default: ``cache_root/onnx``).

        Raises:
            ModelError: the folder is not a complete version, or the backbone's weights
                differ from those the head was trained on.
        """
        directory = Path(directory)
        metadata = read_metadata(directory)
        check_metadata(directory, metadata)
        # The version's own files first: a broken one is refused before the backbone's
        # seconds of loading (and its slow first-time ONNX export).
        try:
            state = load_file(str(directory / WEIGHTS_FILE))
        except Exception as exc:  # missing, truncated or not safetensors at all
            raise ModelError(f"{directory}: cannot read {WEIGHTS_FILE} ({exc})") from None
        lexical = None
        if metadata.get("blend"):
            try:
                lexical = TfidfSvmBaseline.load(directory)
            except ValueError as exc:
                raise ModelError(str(exc)) from None
        expected = metadata["backbone"]
        if backbone is None and reusable is not None and reusable.hash == expected["hash"] \
                and not settings_mismatch(reusable, expected):
            backbone = reusable
        backbone = backbone or load_backbone(expected["name"])
        if backbone.hash != expected["hash"]:
            raise ModelError(
                f"backbone mismatch for model {metadata.get('version', directory)}: it was "
                f"trained on {expected['name']} with weights {expected['hash'][:12]}, but the "
                f"loaded backbone's weights are {backbone.hash[:12]}")
        if problem := settings_mismatch(backbone, expected):  # same weights: serve, but say
            log.warning("model %s: %s", metadata.get("version", directory), problem)
        if problem := setting_problem(backbone, metadata["pooling"], metadata["max_length"]):
            raise ModelError(f"model {metadata.get('version', directory)}: {problem}")
        if onnx_dir is None and cache_root is not None:
            onnx_dir = Path(cache_root) / "onnx"
        # A no-op for a reused backbone that already runs as asked.
        backbone = with_runtime(backbone, runtime, folder=onnx_dir, int8=quantize)
        try:
            head = BertArch(metadata["input_dim"], **metadata.get("head", {}))
            head.load_state_dict(state)
        except (TypeError, ValueError, RuntimeError) as exc:  # weights that do not fit
            reason = str(exc).strip().splitlines()[0]
            raise ModelError(f"{directory}: {WEIGHTS_FILE} does not fit {METADATA_FILE} "
                             f"({reason})") from None
        return cls(backbone=backbone, head=head, metadata=metadata, cache_root=cache_root,
                   batch_size=batch_size, lexical=lexical)

    def inputs(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Head inputs (embedding + features) for ``texts``."""
        return build_inputs(self.encoder, texts, self.metadata.get("features", []), progress)

    def predict_proba(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Spam probability of each text, in order.

        Args:
            texts: messages.
            progress: show a progress bar (None: only when long and on a terminal).

        Returns:
            float array of shape (len(texts),) with values in [0, 1].
        """
        if not len(texts):
            return np.zeros(0, dtype=np.float64)
        return self.proba_from_inputs(self.inputs(texts, progress), texts)

    def _head(self, inputs: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return self.head(torch.from_numpy(np.asarray(inputs, dtype=np.float32)))

    def head_log_probs(self, inputs: np.ndarray) -> np.ndarray:
        """The head's (n, 2) log-probabilities (ham, spam) for precomputed inputs."""
        return self._head(inputs).double().numpy()

    def head_proba(self, inputs: np.ndarray) -> np.ndarray:
        """The head's own spam probability (exp in float32 first, exactly as versions
        trained before the blend computed it, so their thresholds still mean the same)."""
        return self._head(inputs)[:, 1].exp().double().numpy()

    def proba_from_inputs(self, inputs: np.ndarray, texts: Sequence[str] | None = None, *,
                          lexical_scores: np.ndarray | None = None) -> np.ndarray:
        """Spam probability from precomputed head inputs (and, for a blended model, the
        texts they came from, or the lexical half's scores of them when already known)."""
        if self.blend is None:
            return self.head_proba(inputs)
        log_probs = self.head_log_probs(inputs)
        if lexical_scores is not None:
            lexical = np.asarray(lexical_scores, dtype=float)
            if lexical.shape != (len(log_probs),):
                raise ValueError("lexical_scores needs one score per input")
        elif texts is None or len(texts) != len(log_probs):
            raise ValueError("a blended model needs the texts of its inputs")
        else:
            lexical = self.lexical.decision_function(texts)
        return self.blend.probability(self.blend.score(head_logit(log_probs), lexical))

    def classify(self, texts: Sequence[str], progress: bool | None = None) -> list[dict]:
        """``{"text", "label", "spam_probability"}`` for each text, in order."""
        probs = self.predict_proba(texts, progress)
        return [{"text": t, "label": self.label_for(p),
                 "spam_probability": shown_probability(p)}
                for t, p in zip(texts, probs, strict=True)]

    def label_for(self, probability: float) -> str:
        """``"spam"`` at or above the version's threshold, else ``"ham"``."""
        return LABEL_MAP[int(probability >= self.threshold)]

    def save(self, directory: str | Path, extra_files: dict[str, Path] | None = None) -> Path:
        """Write the version to ``directory`` atomically (temporary folder, then rename).

        Raises:
            ModelError: ``directory`` exists, or the disk is full, read-only or forbidden
                (one line; a person must fix it). Whatever fails, the temporary folder is
                removed.
        """
        directory = Path(directory)
        tmp = directory.parent / temporary_name(directory.name)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            state = {k: v.contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            give_usual_mode(tmp / WEIGHTS_FILE)  # safetensors writes 0600
            if self.lexical is not None:
                self.lexical.save(tmp)
            (tmp / METADATA_FILE).write_text(
                json.dumps(self.metadata, indent=2, sort_keys=True), encoding="utf-8")
            for name, path in (extra_files or {}).items():
                shutil.copyfile(path, tmp / name)
            if directory.exists():
                raise ModelError(f"{directory} already exists")
            sync_folder(tmp)  # on disk before the rename makes it a version a registry names
            os.replace(tmp, directory)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            error = os_error_of(exc)  # safetensors' own error says "(os error 28)"
            if error is not None and error.errno in NEEDS_A_PERSON:
                raise ModelError(f"cannot write model version {directory.name} to "
                                 f"{directory.parent}: {error.strerror}") from None
            raise
        sync_folder(directory.parent, files=False)  # and the rename itself
        return directory
