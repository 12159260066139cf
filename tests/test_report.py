"""Tests for evaluation metrics, the terminal summary and the written report files."""

import json

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef, roc_auc_score

from spamguard.ml.report import REPORT_FILES, evaluate, render_summary, write_report

# 6 ham, 4 spam. At 0.5: ham -> 1 false positive (0.6); spam -> 1 false negative (0.4).
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
SCORES = [0.1, 0.2, 0.3, 0.05, 0.45, 0.6, 0.9, 0.8, 0.7, 0.4]
BASELINE_SCORES = [-1.2, -0.8, -0.3, -1.5, 0.2, -0.1, 1.1, 0.4, -0.2, 0.9]


@pytest.fixture
def model_result() -> dict:
    return evaluate(Y_TRUE, SCORES, 0.5)


@pytest.fixture
def baseline_result() -> dict:
    return evaluate(Y_TRUE, BASELINE_SCORES, 0.0, probabilities=False)


def test_evaluate_known_numbers(model_result):
    r = model_result
    assert r["confusion_matrix"] == {"labels": ["ham", "spam"], "matrix": [[5, 1], [1, 3]]}
    assert r["ham_fpr"] == pytest.approx(1 / 6)
    assert r["spam_precision"] == pytest.approx(3 / 4)
    assert r["spam_recall"] == pytest.approx(3 / 4)
    assert r["spam_f1"] == pytest.approx(3 / 4)
    assert r["accuracy"] == pytest.approx(0.8)
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 14 / 24
    assert r["mcc"] == pytest.approx(14 / 24)
    pred = (np.array(SCORES) >= 0.5).astype(int)
    assert r["mcc"] == pytest.approx(matthews_corrcoef(Y_TRUE, pred))
    # 22 of the 24 spam/ham pairs are ranked right (hams 0.6 and 0.45 outrank the 0.4 spam).
    assert r["roc_auc"] == pytest.approx(22 / 24)
    assert r["roc_auc"] == pytest.approx(roc_auc_score(Y_TRUE, SCORES))
    assert (r["n"], r["n_spam"], r["n_ham"], r["threshold"]) == (10, 4, 6, 0.5)
    assert r["classification_report"]["spam"]["support"] == 4
    assert "spam" in r["classification_report_text"]


def test_evaluate_is_json_safe(model_result):
    assert json.loads(json.dumps(model_result, allow_nan=False)) == model_result


def test_threshold_is_inclusive():
    assert evaluate([0, 1], [0.2, 0.5], 0.5)["spam_recall"] == 1.0


@pytest.mark.parametrize(
    ("labels", "matrix", "ham_fpr"),
    [([0, 0, 0], [[1, 2], [0, 0]], 2 / 3), ([1, 1, 1], [[0, 0], [1, 2]], None)],
)
def test_single_class_has_no_ranking_metrics(labels, matrix, ham_fpr):
    r = evaluate(labels, [0.1, 0.7, 0.9], 0.5)
    assert r["roc_auc"] is None and r["average_precision"] is None
    assert r["confusion_matrix"]["matrix"] == matrix
    assert r["ham_fpr"] == (None if ham_fpr is None else pytest.approx(ham_fpr))
    assert r["mcc"] is None  # undefined with one class, not 0
    json.dumps(r, allow_nan=False)


def test_undefined_spam_metrics_are_none_and_shown_as_na(recwarn):
    all_ham = evaluate([0, 0, 0], [0.1, 0.2, 0.3], 0.5)  # no spam, none predicted
    assert (all_ham["spam_precision"], all_ham["spam_recall"], all_ham["spam_f1"]) == (
        None, None, None)
    assert not [w for w in recwarn if "single label" in str(w.message)]
    missed = evaluate([0, 1], [0.1, 0.2], 0.5)  # spam exists, none predicted
    assert missed["spam_precision"] is None and missed["spam_recall"] == 0.0
    assert missed["spam_f1"] == 0.0
    assert "spam F1" in render_summary(all_ham) and "n/a" in render_summary(all_ham)


@pytest.mark.parametrize(
    ("y_true", "scores", "kwargs", "match"),
    [
        ([0, 1], [0.5], {}, "equal-length"),
        ([0, 2], [0.1, 0.9], {}, "labels"),
        ([0, 1], [-1.0, 2.0], {}, "outside"),
    ],
)
def test_evaluate_rejects_bad_input(y_true, scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(y_true, scores, 0.5, **kwargs)


def test_render_summary(model_result, baseline_result):
    text = render_summary(model_result, baseline_result)
    header = text.splitlines()[0]
    assert "spamguard" in header and "TF-IDF + SVM" in header
    assert "16.67%" in text  # the model's ham FPR
    assert "ham FPR" in text and "MCC" in text
    assert "TF-IDF" not in render_summary(model_result)


def test_write_report_files(tmp_path, model_result, baseline_result):
    paths = write_report(
        tmp_path / "run",
        title="Test run",
        model=model_result,
        baseline=baseline_result,
        y_true=Y_TRUE,
        model_scores=SCORES,
        baseline_scores=np.array(BASELINE_SCORES),
        info={"messages": 10, "duplicates removed": 2, "data": tmp_path / "x|y.tsv"},
    )
    assert paths == {kind: tmp_path / "run" / name for kind, name in REPORT_FILES.items()}
    data = json.loads(paths["json"].read_text())
    assert {"title", "info", "model", "baseline", "files"} <= data.keys()
    assert data["model"] == model_result and data["baseline"] == baseline_result
    assert data["info"]["duplicates removed"] == 2
    for kind in ("pr_curve", "confusion_matrix"):
        assert paths[kind].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    md = paths["markdown"].read_text()
    assert md.startswith("# Test run")
    assert "| duplicates removed | 2 |" in md and "x\\|y.tsv" in md
    assert "| metric | spamguard | TF-IDF + SVM |" in md
    assert "| ham FPR | 16.67% |" in md
    assert md.count("```text") == 2
    assert "(pr_curve.png)" in md and "(confusion_matrix.png)" in md


def test_write_report_model_only(tmp_path, model_result):
    paths = write_report(
        tmp_path, title="Solo", model=model_result, y_true=Y_TRUE, model_scores=SCORES
    )
    assert all(p.exists() for p in paths.values())
    assert json.loads(paths["json"].read_text())["baseline"] is None
    assert "TF-IDF" not in paths["markdown"].read_text()


def test_write_report_extra_entries_go_into_report_json(tmp_path, model_result):
    overlap = {"checked": True, "messages": 6, "seen": 2}
    paths = write_report(tmp_path, title="Extra", model=model_result, y_true=Y_TRUE,
                         model_scores=SCORES, extra={"overlap": overlap})
    stored = json.loads(paths["json"].read_text())
    assert stored["overlap"] == overlap and stored["title"] == "Extra"


def test_write_report_when_nothing_is_predicted_spam(tmp_path):
    """`spamguard report --data` on a small file the model calls all ham: spam precision
    is undefined, so the curve has no operating point (it crashed matplotlib)."""
    y_true, scores = [0, 1, 0], [0.1, 0.3, 0.2]
    result = evaluate(y_true, scores, 0.5)
    assert result["spam_precision"] is None and result["spam_recall"] == 0.0
    paths = write_report(tmp_path, title="All ham", model=result, y_true=y_true,
                         model_scores=scores)
    assert paths["pr_curve"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "| spam precision | n/a |" in paths["markdown"].read_text()


def test_write_report_needs_baseline_scores(tmp_path, model_result, baseline_result):
    with pytest.raises(ValueError, match="together"):
        write_report(
            tmp_path,
            title="t",
            model=model_result,
            baseline=baseline_result,
            y_true=Y_TRUE,
            model_scores=SCORES,
        )


def test_report_says_which_split_or_file_it_measures(tmp_path, model_result):
    """The headline and report.json name what they were measured on: the version's test
    split (training's report) or the file ``spamguard report --data`` evaluated."""
    paths = write_report(tmp_path / "train", title="t", model=model_result, y_true=Y_TRUE,
                         model_scores=SCORES)
    stored = json.loads(paths["json"].read_text())
    assert stored["split"] == "test" and stored["data_file"] is None
    assert (stored["model"]["n"], stored["model"]["n_spam"]) == (10, 4)
    assert "## Headline (test split: 10 messages, 4 spam)\n" in paths["markdown"].read_text()
    data_file = tmp_path / "fresh.tsv"
    paths = write_report(tmp_path / "other", title="t", model=model_result, y_true=Y_TRUE,
                         model_scores=SCORES, data_file=data_file)
    stored = json.loads(paths["json"].read_text())
    assert stored["split"] is None and stored["data_file"] == str(data_file)
    md = paths["markdown"].read_text()
    assert "## Headline (fresh.tsv: 10 messages, 4 spam)\n" in md and "test split" not in md
