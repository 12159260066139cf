"""The blend of the BERT head's logit and the TF-IDF + SVM score."""

import numpy as np
import pytest

from spamguard.ml.blend import Blend, head_logit


def test_head_logit_is_log_odds():
    log_probs = np.log(np.array([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]]))
    np.testing.assert_allclose(head_logit(log_probs), np.log([0.25, 1.0, 9.0]))


def test_fit_scales_each_half_by_its_spread_and_calibrates():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 300 + [1] * 40)
    logits = np.where(labels == 1, 6.0, -6.0) + rng.normal(0, 3, labels.size)
    lexical = np.where(labels == 1, 0.8, -0.8) + rng.normal(0, 0.5, labels.size)
    blend = Blend.fit(logits, lexical, labels)
    assert blend.head_scale == pytest.approx(logits.std())
    assert blend.lexical_scale == pytest.approx(lexical.std())
    assert blend.platt_a > 0
    z = blend.score(logits, lexical)
    # Each half contributes on the same scale: unit spread each.
    assert (logits / blend.head_scale).std() == pytest.approx(1.0)
    probs = blend.probability(z)
    assert ((0 <= probs) & (probs <= 1)).all()
    assert np.all(np.diff(probs[np.argsort(z)]) >= 0)  # calibration keeps the order
    # Calibrated: the mean probability is close to the spam share.
    assert probs.mean() == pytest.approx(labels.mean(), abs=0.02)
    assert blend.boundary == pytest.approx(float(blend.probability(np.zeros(1))[0]))


def test_json_round_trip():
    blend = Blend(head_scale=4.5, lexical_scale=0.7, platt_a=2.5, platt_b=-0.2)
    assert Blend.from_json(blend.to_json()) == blend


def test_degenerate_validation_data_does_not_divide_by_zero():
    blend = Blend.fit(np.zeros(5), np.ones(5), np.array([0, 0, 0, 0, 0]))
    assert blend.head_scale == 1.0 and blend.lexical_scale == 1.0
    assert blend.platt_a == 1.0 and blend.platt_b == 0.0
    # Scores that fall as spam rises get no calibration that would flip decisions.
    inverted = Blend.fit(np.array([3.0, 2, -2, -3]), np.array([1.0, 1, -1, -1]),
                         np.array([0, 0, 1, 1]))
    assert inverted.platt_a == 1.0


@pytest.mark.parametrize("data", [{}, {"head_scale": "x", "lexical_scale": 1, "platt_a": 1,
                                       "platt_b": 0},
                                  {"head_scale": 0, "lexical_scale": 1, "platt_a": 1,
                                   "platt_b": 0},
                                  {"head_scale": 1, "lexical_scale": 1, "platt_a": -2,
                                   "platt_b": 0},
                                  {"head_scale": float("nan"), "lexical_scale": 1,
                                   "platt_a": 1, "platt_b": 0}])
def test_bad_settings_are_refused(data):
    with pytest.raises(ValueError, match="bad blend settings"):
        Blend.from_json(data)
