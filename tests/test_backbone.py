"""Loading and freezing backbones of any hidden size, and their fingerprints."""

import pytest

from spamguard.errors import ModelError
from spamguard.ml.backbone import load_backbone
from tests.fixtures_ml import make_tiny_backbone_dir


def test_backbone_is_frozen_and_in_eval_mode(tiny_backbone):
    assert all(not p.requires_grad for p in tiny_backbone.model.parameters())
    assert not tiny_backbone.model.training
    assert tiny_backbone.hidden_size == 32


def test_fingerprint_is_stable_and_weight_sensitive(tiny_backbone_dir, tmp_path):
    again = load_backbone(str(tiny_backbone_dir))
    other = load_backbone(str(make_tiny_backbone_dir(tmp_path / "other", seed=1)))
    assert again.hash == load_backbone(str(tiny_backbone_dir)).hash
    assert again.hash != other.hash


def test_missing_backbone_is_one_clear_line(tmp_path):
    with pytest.raises(ModelError) as info:
        load_backbone(str(tmp_path / "no-such-model"))
    message = str(info.value)
    assert "cannot load backbone" in message and "\n" not in message
    assert f"no such directory {tmp_path / 'no-such-model'}" in message


def test_an_existing_directory_that_is_no_model_says_why(tmp_path):
    with pytest.raises(ModelError, match="cannot load backbone .* from "):
        load_backbone(str(tmp_path))


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
