"""ML fixtures: a tiny randomly initialised BERT (seconds, not minutes) and models on it.

``tiny_backbone_dir`` is a real model directory (config, safetensors weights, the packaged
uncased WordPiece tokenizer), so the same loading code as production is exercised.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def python_prints(code: str) -> list[str]:
    """The lines a fresh Python process running ``code`` prints (what a command does at
    start-up and exit cannot be seen from inside the test's process)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    return done.stdout.splitlines()


SPAM = [
    "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now",
    "FREE entry to win a brand new phone! Text WIN to 87121 now",
    "URGENT: your account is suspended, visit http://bit.ly/verify-now",
    "Congratulations you've been selected for a $500 voucher, reply YES",
    "Claim your free ringtone now! Txt TONE to 80082 £1.50/msg",
    "You have 1 new voicemail. Call 0906 123 4567 now to listen £2/min",
]
HAM = [
    "Are we still on for lunch tomorrow?",
    "I'll be home late tonight, don't wait up",
    "Can you pick up some milk on the way back",
    "Happy birthday! Hope you have a great day",
    "Ok see you at the station at 6",
    "Did you finish the report for Monday?",
    "Thanks for dinner last night, it was lovely",
    "Running 10 mins late sorry",
]


def make_tiny_backbone_dir(path: Path, hidden_size: int = 32, seed: int = 0,
                           pooler: bool = True, layers: int = 3) -> Path:
    """Save a random BERT (3 layers: the default pooling reads the last three) with the
    packaged tokenizer to ``path`` (``pooler=False``: a checkpoint without pooler weights,
    as many sentence encoders are saved)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from spamguard.ml.backbone import default_backbone_path

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(default_backbone_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size,
                        num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=hidden_size * 2, max_position_embeddings=256)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def edited_backbone_copy(source, target, *, config=None, tokenizer=None):
    """A copy of a backbone folder with some config.json / tokenizer_config.json entries
    changed in place (the weights stay byte for byte the same)."""
    import json
    import shutil

    shutil.copytree(source, target)
    for name, changes in (("config.json", config), ("tokenizer_config.json", tokenizer)):
        if changes:
            path = target / name
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return target


def sample_data(repeats: int = 4):
    """Labelled messages with variation, so dedupe keeps them all."""
    from spamguard.ml.data import LabelledData

    texts, labels = [], []
    for i in range(repeats):
        for text in SPAM:
            texts.append(f"{text} ref {chr(97 + i)}{'x' * i}")
            labels.append(1)
        for text in HAM:
            texts.append(f"{text} {'please ' * i}{chr(97 + i)}")
            labels.append(0)
    return LabelledData(texts, np.asarray(labels, dtype=np.int64))


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A tiny random BERT saved as a model directory (hidden size 32)."""
    return make_tiny_backbone_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_backbone(tiny_backbone_dir):
    """The tiny BERT loaded and frozen."""
    from spamguard.ml.backbone import load_backbone

    return load_backbone(str(tiny_backbone_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_backbone) -> Path:
    """A complete model version trained on the tiny backbone (reused across tests: copy
    it before changing it)."""
    from spamguard.ml.train import TrainConfig, train_model

    root = tmp_path_factory.mktemp("tiny-models")
    result = train_model(sample_data(), models_dir=root / "models", cache_root=root / "cache",
                         backbone=tiny_backbone, config=TrainConfig(epochs=3),
                         data_source="tests sample", progress=False)
    return result.directory


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_dir, tiny_backbone):
    """The tiny model loaded for classification."""
    from spamguard.ml.classifier import SpamClassifier

    return SpamClassifier.load(tiny_model_dir, backbone=tiny_backbone)
