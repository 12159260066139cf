"""Head training, threshold choice, determinism and the version directory it writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.head import BertArch
from spamguard.ml.head_fit import class_weights
from spamguard.ml.threshold import choose_threshold
from spamguard.ml.train import TrainConfig, train_model
from tests.fixtures_ml import make_tiny_backbone_dir, python_prints, sample_data


def test_head_shape_follows_input_and_outputs_log_probs():
    head = BertArch(40).eval()
    out = head(torch.randn(5, 40))
    assert out.shape == (5, 2)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5))


def test_class_weights_are_balanced():
    weights = class_weights(np.array([0] * 87 + [1] * 13))
    assert weights[1] > weights[0]
    assert float(weights[0] * 87 + weights[1] * 13) == pytest.approx(100)


def test_threshold_respects_fpr_budget():
    labels = np.array([0] * 100 + [1] * 10)
    scores = np.concatenate([np.linspace(0, 0.6, 100), np.linspace(0.5, 1, 10)])
    threshold, info = choose_threshold(labels, scores, max_ham_fpr=0.0)
    assert ((scores >= threshold) & (labels == 0)).sum() == 0
    assert info["val_ham_fpr"] == 0.0 and info["raised"]
    assert threshold == pytest.approx(0.6)  # just above the top ham, no further
    loose, info = choose_threshold(labels, scores, max_ham_fpr=0.05)
    assert loose <= threshold
    assert ((scores >= loose) & (labels == 0)).sum() == 5  # 5% of 100 ham
    assert info["val_ham_fpr"] == 0.05


def test_threshold_keeps_the_natural_boundary_when_it_fits_the_budget():
    labels = np.array([0] * 100 + [1] * 10)
    scores = np.concatenate([np.linspace(0, 0.3, 100), np.linspace(0.2, 1, 10)])
    threshold, info = choose_threshold(labels, scores, max_ham_fpr=0.0, boundary=0.4)
    assert threshold == 0.4 and not info["raised"] and info["boundary"] == 0.4
    # The rule never lowers the boundary to catch more spam on validation data.
    assert ((scores < 0.4) & (labels == 1)).sum() > 0


def test_threshold_budget_counts_whole_messages():
    labels = np.array([0] * 594 + [1] * 78)
    scores = np.concatenate([np.full(592, 0.1), [0.7, 0.9], np.full(78, 0.95)])
    # 0.2% of 594 ham is 1.19 messages: one may be blocked, not two.
    threshold, info = choose_threshold(labels, scores, max_ham_fpr=0.002)
    assert 0.7 < threshold <= 0.9
    assert info["val_ham_fpr"] == pytest.approx(1 / 594)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("train")
    result = train_model(sample_data(), models_dir=root / "models", cache_root=root / "cache",
                         backbone=tiny_backbone, config=TrainConfig(epochs=4),
                         data_source="sample", progress=False)
    return root, result


def test_version_directory_contents(trained):
    _, result = trained
    names = {p.name for p in result.directory.iterdir()}
    assert {"head.safetensors", "model.json", "report.json", "report.md", "pr_curve.png",
            "confusion_matrix.png"} <= names
    assert not any(p.suffix in {".pt", ".pkl", ".bin"} for p in result.directory.iterdir())
    meta = json.loads((result.directory / "model.json").read_text())
    for key in ("backbone", "pooling", "max_length", "features", "threshold", "label_map",
                "data", "seed", "versions", "timing", "metrics"):
        assert key in meta
    assert meta["backbone"]["hidden_size"] == 32
    assert meta["data"]["counts"]["input"]["total"] == len(sample_data())
    assert set(meta["metrics"]) == {"test", "val", "baseline_test", "head_test"}
    assert set(meta["blend"]) == {"head_scale", "lexical_scale", "platt_a", "platt_b"}
    assert {"lexical.json", "lexical.safetensors"} <= names
    report = (result.directory / "report.md").read_text()
    assert "TF-IDF" in report and "duplicates removed" in report
    assert "BERT head alone" in report and "BERT head alone" in result.summary


def test_blended_score_uses_both_halves(trained, tiny_backbone):
    from spamguard.ml.blend import head_logit

    _, result = trained
    clf = result.classifier
    texts = ["WIN a £500 prize, call 09061701461", "see you at lunch", "ok"]
    inputs = clf.inputs(texts)
    logits = head_logit(clf.head_log_probs(inputs))
    lexical = clf.lexical.decision_function(texts)
    expected = clf.blend.probability(clf.blend.score(logits, lexical))
    np.testing.assert_allclose(clf.predict_proba(texts), expected)
    # Neither half alone decides the order: each half's own ranking differs from the blend's
    # on some pair, or the blend moves when either half's score moves.
    assert not np.allclose(clf.predict_proba(texts), clf.head_proba(inputs))
    shifted = clf.blend.probability(clf.blend.score(logits, lexical + 0.5))
    assert (shifted > expected).all()
    shifted = clf.blend.probability(clf.blend.score(logits + 1.0, lexical))
    assert (shifted > expected).all()
    with pytest.raises(ValueError, match="texts"):
        clf.proba_from_inputs(inputs)


def test_head_only_model_has_no_lexical_files(tmp_path, tiny_backbone):
    result = train_model(sample_data(), models_dir=tmp_path / "models", cache_root=None,
                         backbone=tiny_backbone, config=TrainConfig(epochs=2, lexical=False),
                         progress=False)
    names = {p.name for p in result.directory.iterdir()}
    assert "lexical.json" not in names and "blend" not in result.metadata
    assert set(result.metadata["metrics"]) == {"test", "val", "baseline_test"}
    loaded = SpamClassifier.load(result.directory, backbone=tiny_backbone)
    assert loaded.lexical is None
    inputs = loaded.inputs(["hello there"])
    np.testing.assert_allclose(loaded.predict_proba(["hello there"]),
                               loaded.head_proba(inputs))


def test_blended_version_missing_its_lexical_model_is_refused(trained, tiny_backbone, tmp_path):
    import shutil

    from spamguard.errors import ModelError

    _, result = trained
    copy = tmp_path / "copy"
    shutil.copytree(result.directory, copy)
    (copy / "lexical.safetensors").unlink()
    with pytest.raises(ModelError, match="unreadable lexical model"):
        SpamClassifier.load(copy, backbone=tiny_backbone)


def test_same_data_and_settings_give_the_same_model(trained, tiny_backbone):
    root, first = trained
    second = train_model(sample_data(), models_dir=root / "models2", cache_root=root / "cache",
                         backbone=tiny_backbone, config=TrainConfig(epochs=4), progress=False)
    a = first.classifier.head.state_dict()
    b = second.classifier.head.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert second.metadata["threshold"] == first.metadata["threshold"]
    assert second.metadata["timing"]["backbone_texts_embedded"] == 0  # warm cache


def test_a_warm_retraining_by_folder_never_loads_the_encoder(tiny_backbone_dir, tmp_path,
                                                             monkeypatch):
    """Trained twice by folder name with the same cache: the second run knows the encoder
    from the first (DeferredBackbone) and, every text being cached, never loads it; the
    model it writes is the same, and says the same about its backbone."""
    from transformers import AutoModel

    from spamguard.ml.backbone import DeferredBackbone

    def train(models: str):
        return train_model(sample_data(), models_dir=tmp_path / models,
                           cache_root=tmp_path / "cache", backbone=str(tiny_backbone_dir),
                           config=TrainConfig(epochs=3), progress=False)

    first = train("one")

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder was loaded")

    monkeypatch.setattr(AutoModel, "from_pretrained", refuse)
    second = train("two")
    assert isinstance(second.classifier.backbone, DeferredBackbone)
    assert second.metadata["timing"]["backbone_texts_embedded"] == 0
    assert second.metadata["backbone"] == first.metadata["backbone"]
    a, b = first.classifier.head.state_dict(), second.classifier.head.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert second.metadata["threshold"] == first.metadata["threshold"]
    monkeypatch.undo()  # a text the cache has not seen loads the encoder then
    texts = ["a message neither run has seen"]
    np.testing.assert_allclose(second.classifier.predict_proba(texts),
                               first.classifier.predict_proba(texts), atol=1e-6)


def test_save_load_round_trip(trained, tiny_backbone):
    _, result = trained
    texts = ["WIN a £500 prize, call 09061701461", "see you at lunch"]
    loaded = SpamClassifier.load(result.directory, backbone=tiny_backbone)
    np.testing.assert_allclose(loaded.predict_proba(texts),
                               result.classifier.predict_proba(texts), atol=1e-6)
    assert loaded.threshold == result.metadata["threshold"]


def test_save_syncs_every_file_before_the_rename(trained, tmp_path, monkeypatch):
    import os

    from spamguard.ml import classifier as classifier_module

    _, result = trained
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(classifier_module.os, "fsync",
                        lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(classifier_module.os, "replace",
                        lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    saved = result.classifier.save(tmp_path / "v1")
    renamed = events.index(("replace", str(saved)))
    synced_before = {Path(path).name for kind, path in events[:renamed] if kind == "fsync"}
    assert {p.name for p in saved.iterdir()} <= synced_before
    assert ("fsync", str(tmp_path)) in events[renamed:]  # the rename itself


NO_SPACE = "Error while serializing: I/O error: No space left on device (os error 28)"


def _safetensors_full(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError(NO_SPACE)  # what safetensors says of a full disk: no OSError


def _copy_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(("name", "full"), [("save_file", _safetensors_full),
                                            ("shutil.copyfile", _copy_full)],
                         ids=["safetensors", "report-copy"])
def test_a_full_disk_while_saving_is_one_line_and_leaves_no_temporary_folder(
        trained, tmp_path, monkeypatch, name, full):
    from spamguard.errors import ModelError
    from spamguard.ml import classifier as classifier_module

    _, result = trained
    report = tmp_path / "report.md"
    report.write_text("report")
    monkeypatch.setattr(f"{classifier_module.__name__}.{name}", full)
    models = tmp_path / "models"
    with pytest.raises(ModelError) as raised:
        result.classifier.save(models / "v1", extra_files={"report.md": report})
    assert str(raised.value) == (f"cannot write model version v1 to {models}: "
                                 "No space left on device")
    assert raised.value.exit_code == 2
    assert list(models.iterdir()) == []  # no .tmp-v1@host-pid left for a later retrain


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["022", "002"])
def test_saved_weights_and_cache_shards_get_the_umask_mode(trained, tmp_path, umask):
    """safetensors writes 0600; retraining may run as another user than the service, which
    must still read a version it promoted (and the shared embedding cache)."""
    import os
    import stat

    from spamguard.ml.embeddings import EmbeddingCache

    _, result = trained
    old = os.umask(umask)
    try:
        saved = result.classifier.save(tmp_path / "v1")
        cache = EmbeddingCache(tmp_path / "cache", "hash", "mean", 128)
        cache.put(["some text"], np.zeros((1, 4), dtype=np.float32))
    finally:
        os.umask(old)
    shards = list(cache.dir.glob("*.safetensors"))
    assert len(shards) == 1 and (saved / "lexical.safetensors").is_file()
    modes = {path.name: stat.S_IMODE(path.stat().st_mode)
             for path in [*saved.iterdir(), *shards] if path.is_file()}
    assert "head.safetensors" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_load_refuses_a_different_backbone(trained, tmp_path):
    from spamguard.errors import ModelError
    from spamguard.ml.backbone import load_backbone

    _, result = trained
    other = load_backbone(str(make_tiny_backbone_dir(tmp_path / "other", seed=7)))
    with pytest.raises(ModelError, match="backbone mismatch"):
        SpamClassifier.load(result.directory, backbone=other)


def test_a_version_whose_head_is_unreadable_is_refused_before_the_backbone_loads(
        trained, tmp_path, monkeypatch):
    import shutil

    from spamguard.errors import ModelError
    from spamguard.ml import classifier

    _, result = trained
    broken = shutil.copytree(result.directory, tmp_path / "broken")
    (broken / "head.safetensors").write_bytes(b"not safetensors")

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded for a version that cannot serve")

    monkeypatch.setattr(classifier, "load_backbone", no_backbone)
    with pytest.raises(ModelError, match="cannot read head.safetensors"):
        SpamClassifier.load(broken)


def test_hidden_size_768_backbone_trains_and_classifies(tmp_path):
    from spamguard.ml.backbone import load_backbone

    wide = load_backbone(str(make_tiny_backbone_dir(tmp_path / "wide", hidden_size=768)))
    assert wide.hidden_size == 768
    result = train_model(sample_data(2), models_dir=tmp_path / "models", cache_root=None,
                         backbone=wide, config=TrainConfig(epochs=2), progress=False)
    # mean-last3: three layers of 768
    assert result.metadata["input_dim"] == 3 * 768 + len(result.metadata["features"])
    loaded = SpamClassifier.load(result.directory)  # loads the backbone by its recorded path
    assert len(loaded.classify(["hello"])) == 1


def test_bad_blend_settings_in_model_json_are_a_model_error(trained, tiny_backbone, tmp_path):
    import shutil

    from spamguard.errors import ModelError

    _, result = trained
    copy = tmp_path / "copy"
    shutil.copytree(result.directory, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["blend"]["head_scale"] = 0
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="bad blend settings"):
        SpamClassifier.load(copy, backbone=tiny_backbone)


def test_threshold_ties_at_the_budget_edge_are_not_blocked():
    labels = np.array([0] * 10 + [1] * 3)
    # Three ham tie at 0.8; a budget of one ham cannot be met by blocking some of them.
    scores = np.array([0.1] * 7 + [0.8, 0.8, 0.8] + [0.9, 0.8, 0.95])
    threshold, info = choose_threshold(labels, scores, max_ham_fpr=0.1)
    assert threshold > 0.8 and info["val_ham_fpr"] == 0.0


def test_report_on_other_data_uses_the_versions_own_lexical_half(trained, tmp_path):
    from spamguard.ml.evaluation import evaluate_version

    _, result = trained
    data = tmp_path / "other.tsv"
    data.write_text("spam\tWIN a £500 prize, call 09061701461 now\nham\tsee you at lunch\n"
                    "ham\tok thanks\nspam\tFREE entry, txt WIN to 87121\n", encoding="utf-8")
    # The version's recorded training data ("sample") is not a file: only the lexical half
    # it carries can stand in for the baseline.
    summary, markdown = evaluate_version(result.directory, data, tmp_path / "out")
    assert "TF-IDF + SVM" in summary
    assert "trained on the version's training split" in markdown.read_text()


def test_head_trains_on_one_thread_and_gives_the_same_bytes_on_any_core_count(monkeypatch):
    from spamguard.ml.adamw import AdamW
    from spamguard.ml.head_fit import fit_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 64)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0.8).astype(np.int64)
    seen = []
    real_step = AdamW.step

    def step(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(AdamW, "step", step)
    before = torch.get_num_threads()
    states = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        fit = fit_head(x[:240], y[:240], x[240:], y[240:], TrainConfig(epochs=3))
        states.append(fit.head.state_dict())
        assert torch.get_num_threads() == threads  # restored afterwards
    torch.set_num_threads(before)
    assert set(seen) == {1}
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("foreach", [True, False])
def test_our_adamw_trains_the_bytes_torchs_adamw_trains(monkeypatch, foreach):
    """fit_head's AdamW (spamguard.ml.adamw, made to skip torch.optim's start-up) must do
    torch.optim.AdamW's arithmetic exactly, its multi-tensor path and the per-tensor loop
    PyTorch picks on a CPU by default alike, or trained heads would change."""
    from spamguard.ml import head_fit

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 96)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0.8).astype(np.int64)
    config = TrainConfig(epochs=4, lr=3e-3, weight_decay=0.05)
    ours = head_fit.fit_head(x[:240], y[:240], x[240:], y[240:], config)
    made = []

    def torch_adamw(params, **options):
        made.append(options)
        return torch.optim.AdamW(params, foreach=foreach, **options)

    monkeypatch.setattr(head_fit, "AdamW", torch_adamw)
    theirs = head_fit.fit_head(x[:240], y[:240], x[240:], y[240:], config)
    assert made == [{"lr": 3e-3, "weight_decay": 0.05}]
    state = ours.head.state_dict()
    assert ours.history == theirs.history
    assert all(torch.equal(state[k], theirs.head.state_dict()[k]) for k in state)


def test_fitting_a_head_does_not_import_torchs_compiler():
    """torch.optim imports torch._dynamo (about 2 s); a warm retraining cannot afford it."""
    code = ("import sys, numpy as np\n"
            "from spamguard.ml.head_fit import fit_head\n"
            "from spamguard.ml.train import TrainConfig\n"
            "x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)\n"
            "y = (x[:, 0] > 0).astype(np.int64)\n"
            "fit_head(x[:40], y[:40], x[40:], y[40:], TrainConfig(epochs=2))\n"
            "print('torch._dynamo' in sys.modules)\n")
    assert python_prints(code) == ["False"]


def test_adamw_refuses_what_it_does_not_handle():
    from spamguard.ml.adamw import AdamW

    with pytest.raises(ValueError, match="no parameters"):
        AdamW([])
    with pytest.raises(ValueError, match="real-valued"):
        AdamW([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))])
    layer = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="needs a gradient"):
        AdamW(layer.parameters()).step()


def test_class_weights_balance_summed_sample_weights():
    labels = np.array([0] * 6 + [1] * 4)
    ones = class_weights(labels, np.ones(10))
    torch.testing.assert_close(ones, class_weights(labels))
    weighted = class_weights(labels, np.array([1.0] * 4 + [5.0] * 2 + [1.0] * 4))
    # ham sums to 14, spam to 4: each class then carries half of the total 18
    assert float(weighted[0] * 14) == pytest.approx(9)
    assert float(weighted[1] * 4) == pytest.approx(9)


def _conflicting_examples():
    """Two clusters; the second holds messages labelled both ways (as when moderators say
    a kind of message the base data calls spam is legitimate)."""
    rng = np.random.default_rng(3)
    centre = np.zeros(16, dtype=np.float32)
    centre[0] = 3.0
    x = np.vstack([rng.normal(size=(120, 16)) - centre, rng.normal(size=(120, 16)) + centre,
                   rng.normal(size=(40, 16)) + centre]).astype(np.float32)
    y = np.array([0] * 120 + [1] * 120 + [0] * 40, dtype=np.int64)
    return x, y, np.r_[np.zeros(240, bool), np.ones(40, bool)]


def test_sample_weights_pull_the_head_towards_the_weighted_messages():
    from spamguard.ml.head_fit import fit_head

    x, y, marked = _conflicting_examples()
    config = TrainConfig(epochs=15, patience=15)
    x_val, y_val = x[::7], y[::7]

    def spam_share_of_marked(weight: float | None) -> float:
        weights = None if weight is None else np.where(marked, weight, 1.0)
        fit = fit_head(x, y, x_val, y_val, config, sample_weight=weights)
        with torch.inference_mode():
            return float(fit.head(torch.from_numpy(x[marked])).argmax(1).float().mean())

    assert spam_share_of_marked(None) > 0.5  # 120 spam outvote 40 ham
    assert spam_share_of_marked(1.0) == spam_share_of_marked(None)  # same loss, all 1
    assert spam_share_of_marked(10.0) < 0.5  # counted ten times, the 40 win


def test_sample_weights_must_be_one_positive_number_per_message():
    from spamguard.ml.head_fit import fit_head

    x, y, _ = _conflicting_examples()
    for weights in (np.ones(5), np.r_[np.ones(279), 0.0]):
        with pytest.raises(ValueError, match="one positive weight per training message"):
            fit_head(x, y, x[:20], y[:20], TrainConfig(epochs=1), sample_weight=weights)


def test_sample_weights_pull_the_svm_baseline_too():
    from spamguard.ml.baseline import TfidfSvmBaseline

    texts = [f"claim your prize code {i} now" for i in range(30)]
    texts += [f"see you at lunch {i}" for i in range(30)]
    texts += [f"your login code {i} now" for i in range(6)]
    labels = [1] * 30 + [0] * 36
    texts += [f"your login code is {i} claim now" for i in range(6)]
    labels += [1] * 6
    probe = ["your login code 99 now"]
    plain = TfidfSvmBaseline(random_state=0).fit(texts, labels).decision_function(probe)[0]
    weights = [1.0] * 60 + [20.0] * 6 + [1.0] * 6
    weighted = TfidfSvmBaseline(random_state=0).fit(texts, labels, sample_weight=weights)
    assert weighted.decision_function(probe)[0] < plain


@pytest.mark.parametrize(("asked", "marked", "others", "weight"), [
    (10, 60, 2700, 10.0),     # a few reviews count the full weight
    (10, 1000, 2700, 2.7),    # together they never outweigh the base messages
    (10, 5000, 2700, 1.0),    # and a review never counts less than a base message
    (1, 60, 2700, 1.0),
    (10, 0, 2700, 1.0),
])
def test_review_weight_is_capped_by_the_other_messages(asked, marked, others, weight):
    from spamguard.ml.train import review_weight

    assert review_weight(asked, marked, others) == pytest.approx(weight)


def test_training_says_when_duplicates_disagree_on_the_label(tmp_path, tiny_backbone):
    from spamguard.ml.data import LabelledData

    data = sample_data()
    extra = [data.texts[0].upper(), data.texts[0] + "!"]  # copies of a spam text, as ham
    doubled = LabelledData(data.texts + extra, np.r_[data.labels, [0, 0]])
    for source, conflicts in ((data, 0), (doubled, 2)):
        lines = []
        train_model(source, models_dir=tmp_path / "models", cache_root=None,
                    backbone=tiny_backbone, config=TrainConfig(epochs=1, lexical=False),
                    progress=False, log=lines.append)
        notes = [line for line in lines if "had the other label" in line]
        assert notes == ([f"train: note: {conflicts} duplicate(s) of a text had the other "
                          "label; each such text is trained as spam (the spam label wins)"]
                         if conflicts else [])


def test_weighted_class_weights_need_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        class_weights(np.zeros(5, dtype=np.int64), np.ones(5))


def test_report_says_it_measures_the_test_split(trained):
    _, result = trained
    stored = json.loads((result.directory / "report.json").read_text())
    assert stored["split"] == "test" and stored["data_file"] is None
    n, n_spam = stored["model"]["n"], stored["model"]["n_spam"]
    assert (n, n_spam) == (result.metadata["metrics"]["test"]["n"],
                           result.metadata["metrics"]["test"]["n_spam"])
    assert f"## Headline (test split: {n} messages, {n_spam} spam)\n" in (
        result.directory / "report.md").read_text()


def test_a_version_trained_with_the_baseline_in_a_child_is_the_same(trained, tiny_backbone,
                                                                    tmp_path, monkeypatch):
    """On two cores a large enough training set has the baseline fitted in a child process
    while the head trains (spamguard.ml.baseline_job): the version must not change."""
    from spamguard.ml import baseline_job

    monkeypatch.setattr(baseline_job, "usable_cores", lambda: 2)
    monkeypatch.setattr(baseline_job, "CHILD_FROM", 1)
    started = []
    real_start = baseline_job.start_baseline

    def start(*args, **kwargs):
        started.append(job := real_start(*args, **kwargs))
        return job

    monkeypatch.setattr("spamguard.ml.train.start_baseline", start)
    _, here = trained
    said = []
    child = train_model(sample_data(), models_dir=tmp_path / "models",
                        cache_root=tmp_path / "cache", backbone=tiny_backbone,
                        config=TrainConfig(epochs=4), data_source="sample", progress=False,
                        log=said.append)
    assert started[0].process is not None  # the child did the fit ...
    assert not [line for line in said if "baseline's process" in line]  # ... and did not fail
    for name in ("head.safetensors", "lexical.safetensors", "lexical.json"):
        assert (child.directory / name).read_bytes() == (here.directory / name).read_bytes()
    assert child.metadata["metrics"] == here.metadata["metrics"]
    assert child.metadata["threshold"] == here.metadata["threshold"]
