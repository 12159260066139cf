"""The real packaged all-MiniLM-L6-v2 backbone on a small sample of the shipped data."""

from pathlib import Path

import numpy as np
import pytest

from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.data import LabelledData, load_labelled
from spamguard.ml.train import TrainConfig, train_model

pytestmark = pytest.mark.integration
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "sms_spam_collection.tsv"


def small_sample(n_ham: int = 160, n_spam: int = 60) -> LabelledData:
    data = load_labelled(SHIPPED)
    ham = np.flatnonzero(data.labels == 0)[:n_ham]
    spam = np.flatnonzero(data.labels == 1)[:n_spam]
    return data.subset(np.concatenate([ham, spam]))


def test_real_backbone_trains_a_useful_model(tmp_path):
    result = train_model(small_sample(), models_dir=tmp_path / "models",
                         cache_root=tmp_path / "cache", config=TrainConfig(epochs=15),
                         progress=False)
    meta = result.metadata
    assert meta["backbone"]["name"] == "all-MiniLM-L6-v2"
    assert meta["backbone"]["hidden_size"] == 384
    assert meta["metrics"]["test"]["roc_auc"] > 0.9

    loaded = SpamClassifier.load(result.directory, cache_root=tmp_path / "cache")
    out = loaded.classify([
        "URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot! "
        "Txt the word: CLAIM to No: 81010",
        "Sorry I missed your call, I'll ring you back after dinner",
    ])
    assert [o["label"] for o in out] == ["spam", "ham"]
