"""Tests for the TF-IDF + linear SVM baseline."""

import numpy as np
import pytest

from spamguard.ml.baseline import TfidfSvmBaseline

SPAM = [
    "WINNER! You have won a FREE prize. Call 09061701461 now to claim",
    "URGENT: your mobile number has won £2000 cash. Text CLAIM to 81010",
    "Free entry in a weekly comp to win cup final tickets. Txt WIN to 87121",
    "Congratulations you won a free holiday! Call now to claim your prize",
    "You have been selected for a £500 reward. Reply CLAIM to 80062 now",
    "FREE ringtones! Text TONE to 85023 to claim your free prize today",
]
HAM = [
    "Are we still meeting for lunch tomorrow?",
    "I'll be home late tonight, don't wait up",
    "Can you pick up some milk on the way back",
    "Happy birthday! Hope you have a lovely day",
    "Sorry I missed your call, I was in a meeting",
    "Ok see you at the station at six",
    "Did you finish the report for Monday?",
    "Thanks for dinner last night, it was great",
]


@pytest.fixture
def fitted() -> TfidfSvmBaseline:
    return TfidfSvmBaseline().fit(SPAM + HAM, [1] * len(SPAM) + [0] * len(HAM))


def test_init_only_stores_params():
    model = TfidfSvmBaseline(C=0.5, class_weight=None, random_state=3)
    assert (model.C, model.class_weight, model.random_state) == (0.5, None, 3)
    assert TfidfSvmBaseline().class_weight == "balanced"
    assert not hasattr(model, "pipeline_")


def test_fit_returns_self_and_separates_obvious_spam(fitted):
    assert isinstance(fitted, TfidfSvmBaseline)
    new_spam = ["Claim your FREE prize now! Call 09061701999 to win cash"]
    new_ham = ["Shall we meet for lunch at the station tomorrow?"]
    assert fitted.predict(new_spam + new_ham).tolist() == [1, 0]
    scores = fitted.decision_function(new_spam + new_ham)
    assert scores.dtype == float and scores.shape == (2,)
    assert scores[0] > 0 > scores[1]


def test_predict_matches_decision_function_at_zero(fitted):
    texts = SPAM + HAM
    predictions = fitted.predict(texts)
    assert predictions.dtype.kind == "i"
    np.testing.assert_array_equal(predictions, fitted.decision_function(texts) >= 0)
    assert predictions.tolist() == [1] * len(SPAM) + [0] * len(HAM)


def test_deterministic(fitted):
    again = TfidfSvmBaseline().fit(SPAM + HAM, [1] * len(SPAM) + [0] * len(HAM))
    texts = ["free prize call now", "see you at lunch"]
    np.testing.assert_array_equal(fitted.decision_function(texts), again.decision_function(texts))


def test_unfitted_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfSvmBaseline().predict(["hello"])


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="labels"):
        TfidfSvmBaseline().fit(["a", "b"], [1])


def test_save_and_load_give_the_same_scores_without_pickle(fitted, tmp_path):
    paths = fitted.save(tmp_path)
    assert sorted(p.name for p in paths) == ["lexical.json", "lexical.safetensors"]
    assert not list(tmp_path.glob("*.pkl"))
    loaded = TfidfSvmBaseline.load(tmp_path)
    texts = SPAM + HAM + ["unseen words entirely, zzz qqq", ""]
    np.testing.assert_array_equal(loaded.decision_function(texts),
                                  fitted.decision_function(texts))
    assert loaded.C == fitted.C and loaded.class_weight == fitted.class_weight


def test_load_of_broken_files_is_a_clear_error(fitted, tmp_path):
    fitted.save(tmp_path)
    (tmp_path / "lexical.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="unreadable lexical model"):
        TfidfSvmBaseline.load(tmp_path)
    with pytest.raises(ValueError, match="unreadable lexical model"):
        TfidfSvmBaseline.load(tmp_path / "missing")


def test_save_before_fit_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfSvmBaseline().save(tmp_path)


def test_decision_function_equals_the_pipelines_own(fitted):
    texts = SPAM + HAM + ["", "zzz"]
    np.testing.assert_allclose(fitted.decision_function(texts),
                               fitted.pipeline_.decision_function(texts), rtol=0, atol=1e-12)


@pytest.mark.parametrize("damage", ["truncated weights", "nan coef", "flat coef", "format",
                                    "short idf", "ngram range", "duplicate terms"])
def test_damaged_files_fail_at_load_not_later(fitted, tmp_path, damage):
    import json

    from safetensors.numpy import load_file, save_file

    fitted.save(tmp_path)
    meta_path, weights_path = tmp_path / "lexical.json", tmp_path / "lexical.safetensors"
    meta, arrays = json.loads(meta_path.read_text()), load_file(str(weights_path))
    if damage == "truncated weights":
        weights_path.write_bytes(weights_path.read_bytes()[:100])
    elif damage == "nan coef":
        arrays["coef"][0, 3] = np.nan
    elif damage == "flat coef":
        arrays["coef"] = arrays["coef"][0].copy()
    elif damage == "format":
        meta["format"] = 99
    elif damage == "short idf":
        arrays["idf_word"] = arrays["idf_word"][:-1].copy()
    elif damage == "ngram range":
        meta["params"]["char_ngram_range"] = [2, 5, 7]
    elif damage == "duplicate terms":
        meta["vocabularies"]["word"][1] = meta["vocabularies"]["word"][0]
    if damage != "truncated weights":
        save_file(arrays, str(weights_path))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unreadable lexical model"):
        TfidfSvmBaseline.load(tmp_path)
