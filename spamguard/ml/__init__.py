"""The model core: no Flask, no database.

Public API::

    from spamguard.ml import SpamClassifier, load_backbone, load_labelled, train_model

    result = train_model(load_labelled("data/sms_spam_collection.tsv"),
                         models_dir="instance/models", cache_root="instance/cache")
    classifier = SpamClassifier.load(result.directory)
    classifier.classify(["WIN a FREE prize! Call 09061701461 now"])

Submodules are imported on first use, so importing :mod:`spamguard.ml` loads no model
and no torch.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "SpamClassifier": "spamguard.ml.classifier",
    "load_backbone": "spamguard.ml.backbone",
    "Backbone": "spamguard.ml.backbone",
    "load_labelled": "spamguard.ml.data",
    "load_texts": "spamguard.ml.data",
    "train_model": "spamguard.ml.train",
    "TrainConfig": "spamguard.ml.train",
    "TfidfSvmBaseline": "spamguard.ml.baseline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
