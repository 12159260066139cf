"""Loading and freezing backbones of any hidden size, and their fingerprints."""

import numpy as np
import pytest

from spamguard.errors import ModelError
from spamguard.ml.backbone import load_backbone
from tests.fixtures_ml import edited_backbone_copy, make_tiny_backbone_dir


def test_backbone_is_frozen_and_in_eval_mode(tiny_backbone):
    assert all(not p.requires_grad for p in tiny_backbone.model.parameters())
    assert not tiny_backbone.model.training
    assert tiny_backbone.hidden_size == 32


def test_fingerprint_is_stable_and_weight_sensitive(tiny_backbone_dir, tmp_path):
    again = load_backbone(str(tiny_backbone_dir))
    other = load_backbone(str(make_tiny_backbone_dir(tmp_path / "other", seed=1)))
    assert again.hash == load_backbone(str(tiny_backbone_dir)).hash
    assert again.hash != other.hash


def test_checkpoint_without_pooler_keeps_its_hash_and_refuses_pooler_pooling(tmp_path):
    """transformers fills a missing pooler with random weights on every load: they must
    not enter the hash (or no version trained on it would load again), nor the pooling."""
    from spamguard.ml.train import TrainConfig, train_model
    from tests.fixtures_ml import sample_data

    directory = make_tiny_backbone_dir(tmp_path / "no-pooler", pooler=False)
    first, second = load_backbone(str(directory)), load_backbone(str(directory))
    assert first.hash == second.hash
    assert not first.trained_pooler
    assert first.untrained == {"pooler.dense.weight", "pooler.dense.bias"}
    with pytest.raises(ModelError, match="no pooler weights.*use mean or cls pooling"):
        train_model(sample_data(), models_dir=tmp_path / "models", cache_root=None,
                    backbone=first, config=TrainConfig(epochs=1, pooling="pooler"))
    result = train_model(sample_data(), models_dir=tmp_path / "models", cache_root=None,
                         backbone=first, config=TrainConfig(epochs=1, lexical=False))
    from spamguard.ml.classifier import SpamClassifier

    loaded = SpamClassifier.load(result.directory)  # loads the backbone from disk again
    assert loaded.backbone.hash == first.hash


def test_a_complete_checkpoint_has_every_weight_in_its_hash(tiny_backbone):
    assert tiny_backbone.untrained == frozenset() and tiny_backbone.trained_pooler


def test_missing_backbone_is_one_clear_line(tmp_path):
    with pytest.raises(ModelError) as info:
        load_backbone(str(tmp_path / "no-such-model"))
    message = str(info.value)
    assert "cannot load backbone" in message and "\n" not in message
    assert f"no such directory {tmp_path / 'no-such-model'}" in message


def test_an_existing_directory_that_is_no_model_says_why(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    for wrong in (tmp_path, tmp_path / "notes.txt"):  # a folder without a model, a file
        with pytest.raises(ModelError) as info:
            load_backbone(str(wrong))
        message = str(info.value)
        assert message == (f"cannot load backbone {str(wrong)!r}: {wrong} is not a model "
                           "directory (it has no config.json; give the folder a transformers "
                           "model was saved to, or a hub id)")


def test_pickled_weights_are_never_loaded(tiny_backbone_dir, tmp_path):
    """A folder with only pytorch_model.bin (a pickle, which can run code when read) is
    refused in one line instead of being unpickled."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_backbone_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    unpickled = []
    real_load = torch.load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "load", lambda *a, **k: unpickled.append(a) or real_load(*a, **k))
        with pytest.raises(ModelError) as info:
            load_backbone(str(folder))
    assert str(info.value) == (
        f"cannot load backbone {str(folder)!r}: {folder} has no .safetensors weights "
        "(pickled .bin/.pt weights are never loaded: they can run code; re-save the model "
        "with save_pretrained, which writes safetensors)")
    assert unpickled == []


def test_from_pretrained_is_asked_for_safetensors_only(tiny_backbone_dir, monkeypatch):
    import transformers

    seen = []
    real = transformers.AutoModel.from_pretrained

    def spy(location, **options):
        seen.append(options.get("use_safetensors"))
        return real(location, **options)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    load_backbone(str(tiny_backbone_dir))
    assert seen == [True]


@pytest.mark.integration
def test_packaged_default_backbone_loads_offline():
    backbone = load_backbone(None)
    assert backbone.name == "all-MiniLM-L6-v2"
    assert backbone.hidden_size == 384


def test_local_backbone_is_named_by_absolute_path(tiny_backbone_dir, monkeypatch):
    """model.json records the name; a relative one would only load from one directory."""
    monkeypatch.chdir(tiny_backbone_dir.parent)
    backbone = load_backbone(tiny_backbone_dir.name)
    assert backbone.name == str(tiny_backbone_dir.resolve())
    monkeypatch.chdir("/")
    assert load_backbone(backbone.name).hash == backbone.hash


@pytest.mark.parametrize(("cached", "offline", "reachable", "calls"), [
    (True, False, False, [True]),  # in the local hub cache: no network at all
    (False, False, True, [True, False]),  # not cached: then the hub
    (False, True, True, [True]),  # not cached and HF_HUB_OFFLINE: fail at once
    (False, False, False, [True]),  # not cached and no route to the hub: fail at once
])
def test_a_hub_id_is_looked_up_locally_first(tiny_backbone_dir, monkeypatch, cached, offline,
                                             reachable, calls):
    """Offline, going to the hub first cost about 50 s of retries and a dozen log lines."""
    from transformers import AutoModel, AutoTokenizer

    from spamguard.errors import ModelError
    from spamguard.ml import hub
    from spamguard.ml.backbone import load_backbone

    monkeypatch.setattr(hub, "hub_unreachable", lambda: None if reachable else
                        "the hub (https://hub.example) cannot be reached (no route)")

    seen: list[bool] = []
    real_tokenizer, real_model = AutoTokenizer.from_pretrained, AutoModel.from_pretrained

    def fake(real):
        def load(_name, **options):
            local = options.pop("local_files_only", False)
            if real is real_tokenizer:
                seen.append(local)
            if local and not cached:
                raise OSError("not in the local cache")
            return real(str(tiny_backbone_dir), **options)
        return load

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fake(real_tokenizer))
    monkeypatch.setattr(AutoModel, "from_pretrained", fake(real_model))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    if offline and not cached:
        with pytest.raises(ModelError, match="not in the local cache"):
            load_backbone("some-org/some-bert")
    elif not cached and not reachable:
        with pytest.raises(ModelError) as caught:
            load_backbone("some-org/some-bert")
        assert str(caught.value) == (
            "cannot load backbone 'some-org/some-bert' from some-org/some-bert: not in the "
            "local hub cache, and the hub (https://hub.example) cannot be reached (no route); "
            "copy the model to a folder on this machine and give its path")
    else:
        assert load_backbone("some-org/some-bert").hidden_size > 0
    assert seen == calls


@pytest.fixture
def hub_at(monkeypatch):
    """``hub_at(url, addresses)``: the hub endpoint is ``url`` and its name resolves to
    ``addresses`` (a list of (host, port)), or fails to resolve when that is an exception;
    no proxy is set."""
    import socket

    from huggingface_hub import constants

    from spamguard.ml.hub import PROXY_VARIABLES

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    looked_up = []

    def set_up(url: str, addresses):
        monkeypatch.setattr(constants, "ENDPOINT", url)  # what HF_ENDPOINT sets

        def getaddrinfo(host, port, *args, **kwargs):
            looked_up.append((host, port))
            if isinstance(addresses, BaseException):
                raise addresses
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in addresses]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return looked_up

    return set_up


def test_hub_unreachable_tries_each_address_unless_a_proxy_decides(monkeypatch, hub_at):
    import socket

    from spamguard.ml.hub import hub_unreachable

    looked_up = hub_at("https://huggingface.co", [("10.0.0.1", 443), ("10.0.0.2", 443)])
    tried = []

    class Connection:
        def close(self):
            tried.append("closed")

    def refuse(address, timeout):
        tried.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert hub_unreachable() == ("the hub (https://huggingface.co) cannot be reached "
                                 "(Connection refused)")
    assert looked_up == [("huggingface.co", 443)]
    assert tried == [("10.0.0.1", 443), ("10.0.0.2", 443)]
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Connection())
    assert hub_unreachable() is None and tried[-1] == "closed"
    hub_at("https://huggingface.co", socket.gaierror(-2, "Name or service not known"))
    assert hub_unreachable() == ("the hub (https://huggingface.co) cannot be reached "
                                 "(Name or service not known)")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub_unreachable() is None  # the proxy, not a direct connection, reaches the hub


def test_hub_check_gives_up_after_its_timeout_however_slow_the_lookup(monkeypatch, hub_at):
    """A name lookup that hangs (no socket timeout covers it) ends the check on time."""
    import socket
    import threading
    import time

    from spamguard.ml.hub import hub_unreachable

    hub_at("https://huggingface.co", [])
    release = threading.Event()

    def hang(host, port, *args, **kwargs):
        release.wait(10)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    started = time.monotonic()
    try:
        assert hub_unreachable(timeout=0.2) == ("the hub (https://huggingface.co) cannot be "
                                                "reached (no answer within 0.2 s)")
        assert time.monotonic() - started < 5
    finally:
        release.set()


def test_a_hub_whose_first_address_drops_packets_is_reached_on_the_next(hub_at):
    """As with broken IPv6: the first address never answers, the second does. Each address
    gets a share of the time, so the second is tried before the check runs out."""
    import socket

    from spamguard.ml.hub import hub_unreachable

    hole = socket.socket()  # a listener whose accept queue is full: connect() hangs
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.settimeout(0.2)
        try:
            filler.connect(hole.getsockname())
        except OSError:
            filler.close()
            break
        fillers.append(filler)
    good = socket.socket()
    good.bind(("127.0.0.1", 0))
    good.listen(8)
    hub_at("http://hub.test", [hole.getsockname(), good.getsockname()])
    try:
        assert hub_unreachable(timeout=1.0) is None
    finally:
        for sock in (hole, good, *fillers):
            sock.close()


def test_settings_fingerprint_is_stable_and_ignores_file_metadata(tiny_backbone_dir, tmp_path):
    first, again = load_backbone(str(tiny_backbone_dir)), load_backbone(str(tiny_backbone_dir))
    assert first.settings and first.settings == again.settings
    assert first.identity == again.identity != first.hash
    relabelled = load_backbone(str(edited_backbone_copy(
        tiny_backbone_dir, tmp_path / "meta", config={"transformers_version": "0.0.1",
                                                      "architectures": ["Other"]})))
    assert relabelled.settings == first.settings


@pytest.mark.parametrize(("config", "tokenizer"), [
    ({"layer_norm_eps": 1e-3}, None),
    ({"hidden_act": "relu"}, None),
    (None, {"do_lower_case": False}),
    (None, {"truncation_side": "left"}),
])
def test_an_edited_config_or_tokenizer_is_another_encoder(tiny_backbone_dir, tmp_path, config,
                                                          tokenizer):
    original = load_backbone(str(tiny_backbone_dir))
    edited = load_backbone(str(edited_backbone_copy(tiny_backbone_dir, tmp_path / "edited",
                                            config=config, tokenizer=tokenizer)))
    assert edited.hash == original.hash  # same weights and vocabulary
    assert edited.settings != original.settings
    assert edited.cache_key != original.cache_key  # so no embedding is reused


def test_a_version_warns_about_a_backbone_edited_since_training(tiny_model_dir,
                                                                tiny_backbone_dir, tmp_path,
                                                                caplog):
    """Same weights, other tokenizer behaviour: the version still loads (a library upgrade
    must not take a service down), but the log says its scores may have moved."""
    import json
    import logging
    import shutil

    from spamguard.ml.classifier import SpamClassifier

    edited = load_backbone(str(edited_backbone_copy(tiny_backbone_dir, tmp_path / "edited",
                                                    tokenizer={"do_lower_case": False})))
    with caplog.at_level(logging.WARNING, logger="spamguard.ml.classifier"):
        assert SpamClassifier.load(tiny_model_dir, backbone=edited).classify(["hi"])[0]["label"]
    assert "has the weights this version was trained on but another configuration or " \
        "tokenizer behaviour" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spamguard.ml.classifier"):
        SpamClassifier.load(tiny_model_dir, backbone=load_backbone(str(tiny_backbone_dir)))
    assert "another configuration" not in caplog.text  # the same files: nothing to say
    old = shutil.copytree(tiny_model_dir, tmp_path / "old-version")  # before fingerprints
    metadata = json.loads((old / "model.json").read_text())
    del metadata["backbone"]["settings"]
    (old / "model.json").write_text(json.dumps(metadata))
    with caplog.at_level(logging.WARNING, logger="spamguard.ml.classifier"):
        assert SpamClassifier.load(old, backbone=edited).classify(["hello"])[0]["label"]
    assert "another configuration" not in caplog.text


def test_settings_fingerprint_ignores_library_defaults(tiny_backbone):
    """A transformers release that adds or drops a default config attribute (torchscript,
    is_decoder=False) must not change any fingerprint: it would orphan every cache."""
    import copy

    from spamguard.ml.backbone import settings_fingerprint

    model = copy.deepcopy(tiny_backbone.model)
    model.config.torchscript = True
    model.config.some_future_default = {"a": 1}
    del model.config.is_decoder
    assert settings_fingerprint(model, tiny_backbone.tokenizer) == tiny_backbone.settings
    model.config.num_attention_heads = 1  # what the encoder computes: counted
    assert settings_fingerprint(model, tiny_backbone.tokenizer) != tiny_backbone.settings


@pytest.mark.parametrize(("endpoint", "variable"), [
    ("http://hf-mirror.internal", "HTTP_PROXY"),  # an http mirror goes through HTTP_PROXY
    ("http://hf-mirror.internal", "http_proxy"),
    ("https://huggingface.co", "HTTPS_PROXY"),
])
def test_hub_unreachable_leaves_it_to_the_proxy_for_the_endpoint_scheme(monkeypatch, endpoint,
                                                                        variable):
    """The hub client (httpx, like requests) takes the proxy for the URL's scheme from
    urllib's getproxies(): HTTP_PROXY for an http HF_ENDPOINT. A direct connection there may
    well be refused by a firewall that the proxy gets through."""
    import socket

    from huggingface_hub import constants

    from spamguard.ml.hub import PROXY_VARIABLES, hub_unreachable

    for name in (*PROXY_VARIABLES, "HTTP_PROXY", "http_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)

    def refuse(address, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv(variable, "http://proxy.example:3128")
    assert hub_unreachable() is None


def test_a_folder_loaded_before_is_deferred_until_its_encoder_is_used(tiny_backbone_dir,
                                                                      tmp_path, monkeypatch):
    """With a cache root, the second load of the same folder knows its fingerprints from
    the memo and loads nothing until the model or tokenizer is used."""
    from transformers import AutoModel

    from spamguard.ml.backbone import DeferredBackbone

    cache = tmp_path / "cache"
    first = load_backbone(str(tiny_backbone_dir), cache_root=cache)
    assert not isinstance(first, DeferredBackbone)
    assert len(list((cache / "backbones").glob("*.json"))) == 1
    loads = []
    real = AutoModel.from_pretrained
    monkeypatch.setattr(AutoModel, "from_pretrained",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    again = load_backbone(str(tiny_backbone_dir), cache_root=cache)
    assert isinstance(again, DeferredBackbone) and loads == []
    assert (again.hash, again.settings, again.identity, again.cache_key, again.hidden_size,
            again.untrained) == (first.hash, first.settings, first.identity, first.cache_key,
                                 first.hidden_size, first.untrained)
    assert again.config.num_hidden_layers == first.config.num_hidden_layers and loads == []
    assert again.model is not None and len(loads) == 1  # first use loads it, once
    assert again.tokenizer is not None and again.config is again.model.config
    assert len(loads) == 1
    texts = ["win a prize now", "see you at 6"]
    from spamguard.ml.embeddings import encode

    assert np.allclose(encode(again, texts), encode(first, texts))


def test_a_changed_folder_or_a_bad_memo_is_loaded_in_full(tiny_backbone_dir, tmp_path):
    import json

    from spamguard.ml.backbone import DeferredBackbone

    cache = tmp_path / "cache"
    folder = edited_backbone_copy(tiny_backbone_dir, tmp_path / "copy")
    original = load_backbone(str(folder), cache_root=cache)
    assert isinstance(load_backbone(str(folder), cache_root=cache), DeferredBackbone)
    config = json.loads((folder / "config.json").read_text())
    config["layer_norm_eps"] = 1e-3  # same weights, another computation
    (folder / "config.json").write_text(json.dumps(config))
    edited = load_backbone(str(folder), cache_root=cache)
    assert not isinstance(edited, DeferredBackbone)
    assert edited.settings != original.settings and edited.hash == original.hash
    for memo in (cache / "backbones").glob("*.json"):
        memo.write_text("{not json")
    assert not isinstance(load_backbone(str(folder), cache_root=cache), DeferredBackbone)
    assert isinstance(load_backbone(str(folder), cache_root=cache), DeferredBackbone)


def test_a_memo_the_folder_does_not_match_fails_once_and_is_removed(tiny_backbone_dir,
                                                                    tmp_path):
    import json

    from spamguard.errors import ModelError
    from spamguard.ml.backbone import DeferredBackbone

    cache = tmp_path / "cache"
    load_backbone(str(tiny_backbone_dir), cache_root=cache)
    (memo,) = (cache / "backbones").glob("*.json")
    memo.write_text(json.dumps({**json.loads(memo.read_text()), "hash": "0" * 64}))
    deferred = load_backbone(str(tiny_backbone_dir), cache_root=cache)
    assert isinstance(deferred, DeferredBackbone) and deferred.hash == "0" * 64
    with pytest.raises(ModelError, match="does not have the fingerprints remembered for its "
                                         "folder .* that record is removed: run again"):
        _ = deferred.model
    assert not memo.exists()
    again = load_backbone(str(tiny_backbone_dir), cache_root=cache)  # in full, remembered anew
    assert not isinstance(again, DeferredBackbone) and again.hash != "0" * 64
    assert isinstance(load_backbone(str(tiny_backbone_dir), cache_root=cache), DeferredBackbone)


def test_a_folder_edited_while_it_loads_is_not_remembered(tiny_backbone_dir, tmp_path,
                                                          monkeypatch):
    """An edit between the digest and the load (a deploy, a checkout) would file the edited
    encoder under the old content's digest; the folder is hashed again after loading."""
    import json

    from spamguard.ml import backbone as backbone_module
    from spamguard.ml.backbone import DeferredBackbone

    folder = edited_backbone_copy(tiny_backbone_dir, tmp_path / "bert")
    original = (folder / "config.json").read_bytes()
    cache = tmp_path / "cache"
    real = backbone_module._load_now

    def edited_meanwhile(display, location):
        config = json.loads(original)
        config["layer_norm_eps"] = 1e-3
        (folder / "config.json").write_text(json.dumps(config))
        return real(display, location)

    monkeypatch.setattr(backbone_module, "_load_now", edited_meanwhile)
    load_backbone(str(folder), cache_root=cache)
    monkeypatch.setattr(backbone_module, "_load_now", real)
    assert not list((cache / "backbones").glob("*.json"))
    (folder / "config.json").write_bytes(original)  # the edit is undone
    truth = load_backbone(str(folder), cache_root=cache)
    assert not isinstance(truth, DeferredBackbone)
    deferred = load_backbone(str(folder), cache_root=cache)
    assert isinstance(deferred, DeferredBackbone) and deferred.identity == truth.identity


def test_the_folder_digest_reads_only_what_loading_reads_and_tells_files_apart(tmp_path):
    from spamguard.ml.backbone import folder_digest

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "vocab.txt").write_text("[PAD]\nhello\n")
    (a / "zz.txt").write_text("world\n")
    (b / "vocab.txt").write_text("[PAD]\nhello\nzz.txt\nworld\n")  # one file swallowing another
    assert folder_digest(a) != folder_digest(b)
    before = folder_digest(a)
    (a / ".git").mkdir()
    (a / ".git" / "pack").write_bytes(b"x" * 1000)
    (a / "pytorch_model.bin").write_bytes(b"never loaded")
    (a / "README.md").write_text("docs")
    (a / "onnx").mkdir()
    (a / "onnx" / "model.onnx").write_bytes(b"another format")
    assert folder_digest(a) == before
    (a / "tokenizer_config.json").write_text("{}")
    assert folder_digest(a) != before


def test_threads_sharing_a_deferred_backbone_load_it_once(tiny_backbone_dir, tmp_path,
                                                           monkeypatch):
    import threading

    from spamguard.ml import backbone as backbone_module
    from spamguard.ml.backbone import DeferredBackbone

    cache = tmp_path / "cache"
    load_backbone(str(tiny_backbone_dir), cache_root=cache)
    deferred = load_backbone(str(tiny_backbone_dir), cache_root=cache)
    assert isinstance(deferred, DeferredBackbone)
    assert "loaded=False" in repr(deferred)  # repr does not load it
    loads = []
    real = backbone_module._load_now
    monkeypatch.setattr(backbone_module, "_load_now",
                        lambda *args: loads.append(args) or real(*args))
    barrier, seen = threading.Barrier(4), []

    def use(attribute):
        barrier.wait()
        seen.append(id(getattr(deferred, attribute)))

    threads = [threading.Thread(target=use, args=(name,))
               for name in ("model", "tokenizer", "model", "tokenizer")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert set(seen) == {id(deferred.model), id(deferred.tokenizer)}
