"""`spamguard cache prune`: unused backbones' embeddings and ONNX graphs go, used ones stay."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
from click.testing import CliRunner

from spamguard.cli import build_cli
from spamguard.errors import SpamguardError
from spamguard.ml.embeddings import SPACE_FILE, EmbeddingCache
from spamguard.ml.onnx_runtime import INT8_VARIANT
from spamguard.services.cache_prune import identities_in_use, prune_cache
from spamguard.services.registry import register_version

IN_USE, OTHER = "a" * 64, "b" * 64
DAY = 24 * 3600


def _space(cache_dir, key: str, *, age: float = 0.0) -> EmbeddingCache:
    """An embedding space with one vector, its files made ``age`` seconds old."""
    cache = EmbeddingCache(cache_dir, key, "mean", 128)
    cache.put(["hello"], np.ones((1, 4), dtype=np.float32))
    _age(cache.dir, age)
    return cache


def _age(path, seconds: float) -> None:
    when = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (when, when))


def test_prune_keeps_used_and_recent_entries_and_removes_the_rest(tmp_path):
    used = _space(tmp_path, IN_USE, age=30 * DAY)
    used_int8 = _space(tmp_path, f"{IN_USE}|int8", age=30 * DAY)
    used_onnx_int8 = _space(tmp_path, f"{IN_USE}|{INT8_VARIANT}", age=30 * DAY)
    retired = _space(tmp_path, f"{IN_USE}|onnx-int8-pc1", age=2 * DAY)  # replaced recipe
    stale = _space(tmp_path, OTHER, age=2 * DAY)
    recent = _space(tmp_path, "c" * 64, age=3600)  # a training run may be writing it
    legacy = _space(tmp_path, "d" * 64, age=2 * DAY)
    (legacy.dir / SPACE_FILE).unlink()  # written before spaces described themselves
    _age(legacy.dir, 2 * DAY)
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    graphs = {name: onnx / name for name in (f"{IN_USE[:24]}-h4-fp32.onnx",
                                              f"{IN_USE[:24]}-fp32.onnx",  # an older format
                                              f"{OTHER[:24]}-h4-fp32.onnx",
                                              f"{OTHER[:24]}-h4-int8.onnx",
                                              f"{IN_USE[:24]}-h4-{INT8_VARIANT}.onnx",
                                              f"{IN_USE[:24]}-h4-onnx-int8-pc1.onnx",
                                              f"{IN_USE[:24]}-h3-fp32.onnx")}  # older
    for graph in graphs.values():
        graph.write_bytes(b"x" * 1000)
        _age(graph, 2 * DAY)

    dry = prune_cache(tmp_path, {IN_USE}, dry_run=True)
    removable = {stale.dir, legacy.dir, retired.dir, graphs[f"{OTHER[:24]}-h4-fp32.onnx"],
                 graphs[f"{OTHER[:24]}-h4-int8.onnx"], graphs[f"{IN_USE[:24]}-fp32.onnx"],
                 graphs[f"{IN_USE[:24]}-h4-onnx-int8-pc1.onnx"],
                 graphs[f"{IN_USE[:24]}-h3-fp32.onnx"]}
    assert {path for path, _ in dry.removed} == removable
    assert all(path.exists() for path in removable)  # a dry run removes nothing
    assert dry.removed_bytes > 2000

    done = prune_cache(tmp_path, {IN_USE})
    assert {path for path, _ in done.removed} == removable
    assert not any(path.exists() for path in removable)
    kept = {used.dir, used_int8.dir, used_onnx_int8.dir, recent.dir,
            graphs[f"{IN_USE[:24]}-h4-fp32.onnx"], graphs[f"{IN_USE[:24]}-h4-{INT8_VARIANT}.onnx"]}
    assert {path for path, _ in done.kept} == kept and all(path.exists() for path in kept)
    assert EmbeddingCache(tmp_path, IN_USE, "mean", 128).get(["hello"])[0] is not None


def test_prune_drops_backbone_memos_that_no_longer_describe_their_folder(tmp_path,
                                                                         tiny_backbone_dir):
    from spamguard.ml.backbone import DeferredBackbone, load_backbone

    folder = tmp_path / "bert"
    shutil.copytree(tiny_backbone_dir, folder)
    cache = tmp_path / "cache"
    backbone = load_backbone(str(folder), cache_root=cache)
    (current,) = (cache / "backbones").glob("*.json")
    stale = current.with_name("0" * 64 + ".json")  # as a library upgrade leaves one
    shutil.copy(current, stale)
    unused = current.with_name("1" * 64 + ".json")
    unused.write_text(json.dumps({**json.loads(current.read_text()), "hash": "f" * 64}))
    for memo in (current, stale, unused):
        _age(memo, 30 * DAY)
    done = prune_cache(cache, {backbone.identity})
    assert sorted(p for p, _ in done.removed) == sorted([stale, unused])
    assert [p for p, _ in done.kept] == [current]
    assert isinstance(load_backbone(str(folder), cache_root=cache), DeferredBackbone)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-3}))
    assert [p for p, _ in prune_cache(cache, {backbone.identity}).removed] == [current]


def test_the_graph_format_in_the_test_names_is_current():
    from spamguard.ml.onnx_runtime import GRAPH_FORMAT

    assert GRAPH_FORMAT == "h4"  # the names above; change them with the format


def test_a_space_describes_itself(tmp_path):
    cache = _space(tmp_path, f"{IN_USE}|bf16")
    assert json.loads((cache.dir / SPACE_FILE).read_text()) == {
        "backbone_key": f"{IN_USE}|bf16", "pooling": "mean", "max_length": 128}
    assert [p.name for p in cache.dir.glob("*.safetensors")]  # still read as a shard folder
    assert len(EmbeddingCache(tmp_path, f"{IN_USE}|bf16", "mean", 128)) == 1


@pytest.mark.parametrize("damage", ['{"broken', '{"backbone_key": "x"}', "", "[1]"])
def test_a_damaged_description_is_written_again_when_the_space_is_used(tmp_path, damage):
    space = _space(tmp_path, IN_USE)
    description = space.dir / SPACE_FILE
    expected = description.read_text()
    description.write_text(damage)
    reader = EmbeddingCache(tmp_path, IN_USE, "mean", 128)
    assert reader.get(["hello"])[0] is not None  # only read: every text is cached
    assert description.read_text() == expected
    description.write_text(damage)
    space.put(["again"], np.ones((1, 4), dtype=np.float32))  # an instance that read it before
    assert description.read_text() == expected
    assert not list(space.dir.glob(".*.tmp"))


def test_prune_keeps_a_space_whose_description_is_damaged(tmp_path):
    used = _space(tmp_path, IN_USE, age=3 * DAY)
    (used.dir / SPACE_FILE).write_text('{"broken')
    _age(used.dir, 3 * DAY)
    for dry_run in (True, False):
        result = prune_cache(tmp_path, {IN_USE}, dry_run=dry_run)
        assert not result.removed and result.undescribed == [used.dir]
        assert [path for path, _ in result.kept] == [used.dir]
    assert EmbeddingCache(tmp_path, IN_USE, "mean", 128).get(["hello"])[0] is not None
    assert prune_cache(tmp_path, {IN_USE}).undescribed == []  # mended by that read


def test_registered_versions_name_the_backbones_in_use(db_session, tiny_model_dir, tiny_backbone,
                                                       tmp_path):
    register_version(session=db_session, version_dir=tiny_model_dir)
    gone = shutil.copytree(tiny_model_dir, tmp_path / "gone")
    metadata = json.loads((gone / "model.json").read_text())
    metadata["version"] = "gone"
    (gone / "model.json").write_text(json.dumps(metadata))
    register_version(session=db_session, version_dir=gone)
    shutil.rmtree(gone)  # a registered version whose folder was deleted needs no cache
    db_session.flush()
    assert identities_in_use(db_session) == {tiny_backbone.identity}


def _registered_copy(session, source, target, **changes):
    """Register a copy of the version folder ``source`` with model.json entries changed."""
    folder = shutil.copytree(source, target)
    metadata = json.loads((folder / "model.json").read_text())
    metadata["version"] = target.name
    for key, value in changes.items():
        metadata["backbone"][key] = value
    metadata["backbone"] = {k: v for k, v in metadata["backbone"].items() if v is not None}
    (folder / "model.json").write_text(json.dumps(metadata))
    register_version(session=session, version_dir=folder)
    session.flush()
    return folder


def test_a_version_from_before_fingerprints_keeps_the_cache_it_uses(db_session, tiny_model_dir,
                                                                   tiny_backbone, tmp_path):
    """Its model.json has no settings; loading it keys the cache by the backbone's identity
    as loaded today, so that is what prune must keep (not the bare weights hash)."""
    _registered_copy(db_session, tiny_model_dir, tmp_path / "legacy", settings=None)
    loads = []

    def load(name):
        from spamguard.ml.backbone import load_backbone

        loads.append(name)
        return load_backbone(name)

    assert identities_in_use(db_session, load=load) == {tiny_backbone.identity}
    assert loads == [tiny_backbone.name]  # loaded once, by the name it recorded


def test_a_legacy_version_whose_backbone_is_gone_needs_no_cache(db_session, tiny_model_dir,
                                                                tmp_path):
    _registered_copy(db_session, tiny_model_dir, tmp_path / "legacy", settings=None,
                     name=str(tmp_path / "no-such-backbone"))
    assert identities_in_use(db_session) == set()


def test_a_deleted_version_left_in_place_needs_no_cache(db_session, tiny_model_dir,
                                                       tiny_backbone, tmp_path):
    """Its folder (registered outside the models folder) is still there, but a deleted
    version can never be promoted again."""
    from spamguard.models import ModelVersion

    register_version(session=db_session, version_dir=tiny_model_dir)
    _registered_copy(db_session, tiny_model_dir, tmp_path / "left", hash="c" * 16)
    assert len(identities_in_use(db_session)) == 2
    db_session.get(ModelVersion, "left").status = "deleted"
    db_session.flush()
    assert identities_in_use(db_session) == {tiny_backbone.identity}


def test_an_unreadable_version_stops_the_prune(db_session, tiny_model_dir, tmp_path):
    folder = _registered_copy(db_session, tiny_model_dir, tmp_path / "odd")
    (folder / "model.json").unlink()
    (folder / "model.json").mkdir()  # unreadable as a file: the error is not "it is gone"
    with pytest.raises(SpamguardError, match="cannot tell what version odd uses .*nothing "
                       "was removed"):
        identities_in_use(db_session)


def test_cli_prunes_a_stale_space_and_keeps_the_active_models(tmp_path, tiny_backbone_dir):
    from tests.fixtures_ml import sample_data

    home = tmp_path / "instance"
    env = {"SPAMGUARD_HOME": str(home), "SPAMGUARD_DATABASE_URL": ""}
    data = tmp_path / "train.tsv"
    sample = sample_data()
    data.write_text("".join(f"{'spam' if y else 'ham'}\t{t}\n"
                            for t, y in zip(sample.texts, sample.labels, strict=True)))
    runner = CliRunner()
    trained = runner.invoke(build_cli(), ["train", "--data", str(data), "--backbone",
                                          str(tiny_backbone_dir), "--epochs", "2"], env=env)
    assert trained.exit_code == 0, trained.output
    used = [p for p in (home / "cache" / "embeddings").iterdir()]
    _age(home / "cache", 2 * DAY)
    stale = _space(home / "cache", OTHER, age=2 * DAY)

    (used[0] / SPACE_FILE).write_text('{"broken')  # damaged: kept, and said so
    _age(used[0], 2 * DAY)
    dry = runner.invoke(build_cli(), ["cache", "prune", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[0].startswith(f"would remove {stale.dir} (")
    assert dry.output.splitlines()[1].startswith(f"kept {used[0]}: its space.json is damaged")
    assert dry.output.splitlines()[-1].startswith("would remove 1 cache entries (")
    assert stale.dir.exists()

    pruned = runner.invoke(build_cli(), ["cache", "prune"], env=env)
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.splitlines()[-1].startswith("removed 1 cache entries (")
    assert "the 1 backbone(s) registered versions use" in pruned.output
    assert not stale.dir.exists() and all(p.exists() for p in used)


def test_cli_prune_needs_an_instance(tmp_path):
    env = {"SPAMGUARD_HOME": str(tmp_path / "nowhere"), "SPAMGUARD_DATABASE_URL": ""}
    result = CliRunner().invoke(build_cli(), ["cache", "prune"], env=env)
    assert result.exit_code == 2 and "no spamguard database at" in result.output
    assert not (tmp_path / "nowhere").exists()
