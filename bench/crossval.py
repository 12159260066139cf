"""Cross-validated accuracy of the training recipe on train+val (never the test split).

Run from the repository root (about 5 minutes on 2 cores with a warm embedding cache;
``--quick`` about 1)::

    python bench/crossval.py [--data PATH] [--folds 5] [--repeats 4] [--quick]
                             [--head-share 0.3,0.5,0.7] [--svm-c 0.3,1,3]
                             [--boundary=-0.4,0,0.2] [--layers 6,5,4] [--pooling mean]
                             [--lexical char16,nbsvm,lr] [--refit] [--concat-layers 4,5,6]
                             [--head-seeds 3,5] [--head-lr 1e-4,1e-3] [--weight-decay 0,0.1]
                             [--stop-on auc,ap] [--per-repeat]

The test split is what `spamguard train` reports once; choosing settings by it would tune to
it. This script redoes, in every fold, what training does with the validation split: a
stratified inner 15% of the fold's training part stops the head early, scales the blend
and sets the threshold (natural boundary, raised only for the ham false-positive budget).
Each candidate differs from the default in one setting. MCC, F1 and ham FPR pool the five
folds of a repeat; the table shows the mean over repeats, the worst repeat, and the mean
difference to the default with its spread over repeats. Embeddings come from the instance's
cache (``SPAMGUARD_HOME``), so a second run skips the backbone; ``--layers`` mean-pools an
earlier encoder layer instead of the last ones (a backbone that stops there would be
faster); ``--pooling`` tries another pooling of the whole backbone (``mean``: the recipe
until December 2026, the last layer alone).

Structural candidates (each combination of the ones asked for is a row): ``--lexical``
swaps the blend's lexical half for a variant (:data:`LEXICAL_VARIANTS`; each is also shown
alone, at its natural boundary 0); ``--refit`` refits the head (for the inner part's best
epoch count, same seed) and the lexical half on the whole fold training part after the
inner 15% has set the epochs, blend scales and threshold; ``--concat-layers`` feeds the head
the pooled embeddings of several encoder layers side by side.

Head-training candidates (each a blend row and a BERT head alone row): ``--head-seeds K``
trains K heads with seeds 42 to 42+K-1 on the same data and early stopping (the first is
the default's head) and scores with the mean of their logits; ``--head-lr`` and
``--weight-decay`` change one setting of the head's AdamW; ``--stop-on auc,ap`` keeps the
head of the epoch with the best inner-validation ROC AUC or average precision of its spam
logit instead of the lowest loss (same patience, counted from that best; ties keep the
earlier epoch), and prints under the table how the kept epochs spread over the folds.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, matthews_corrcoef
from sklearn.model_selection import (
    RepeatedStratifiedKFold,
    StratifiedGroupKFold,
    train_test_split,
)
from sklearn.svm import LinearSVC

from spamguard.ml.backbone import Backbone, load_backbone
from spamguard.ml.baseline import TfidfSvmBaseline
from spamguard.ml.blend import Blend, head_logit
from spamguard.ml.classifier import build_inputs
from spamguard.ml.data import dedupe, group_units, load_labelled, normalise
from spamguard.ml.embeddings import CachedEncoder
from spamguard.ml.features import FEATURE_NAMES
from spamguard.ml.head import BertArch
from spamguard.ml.head_fit import SELECTIONS, fit_head, fit_head_epochs
from spamguard.ml.near_duplicates import near_duplicate_groups, split_keeping_copies
from spamguard.ml.threshold import choose_threshold
from spamguard.ml.train import TrainConfig
from spamguard.ml.version_files import DEFAULT_POOLING, POOLINGS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "sms_spam_collection.tsv"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import run_main, table  # noqa: E402  (bench scripts share these)


@dataclass(frozen=True)
class Candidate:
    """One setting of the recipe; the default is head share 0.5, C 1, boundary 0, last layer."""

    name: str
    head_share: float = 0.5
    svm_c: float = 1.0
    boundary: float = 0.0
    layer: int | tuple[int, ...] | None = None  # None: the last layer; a tuple: side by side
    kind: str = "blend"  # "blend", "head" (BERT head alone) or "svm" (lexical half alone)
    lexical: str | None = None  # a --lexical variant instead of TfidfSvmBaseline(C=svm_c)
    refit: bool = False  # test scores from models refitted on the whole fold training part
    pooling: str | None = None  # None: the recipe's (last layer) or mean (earlier layers)
    head_seeds: int = 1  # K > 1: the mean logit of K heads, seeds 42 to 42+K-1
    lr: float | None = None  # None: TrainConfig's (AdamW learning rate of the head)
    weight_decay: float | None = None  # None: TrainConfig's
    stop_on: str = "loss"  # what picks the head's kept epoch (train.SELECTIONS)
    extra: float = 0.0  # > 0: the --extra-train messages join every fold's training part,
    # each counting this much in the head's and the SVM's loss

    @property
    def source(self) -> tuple:
        """What the head reads: (layer or layers, pooling)."""
        return self.layer, self.pooling

    @property
    def training(self) -> tuple:
        """How its head is trained: (source, number of seeds, learning rate, weight decay,
        epoch selection)."""
        return (self.source, self.head_seeds, self.lr, self.weight_decay, self.stop_on,
                self.extra)


@dataclass(frozen=True)
class LexicalSpec:
    """A lexical half: word 1-2 grams plus char n-grams, optionally NB-scaled, linear model."""

    char_analyzer: str = "char_wb"
    char_range: tuple[int, int] = (2, 5)
    binary: bool = False  # 0/1 n-gram presence instead of sublinear TF-IDF (l2-normalised)
    nb: bool = False  # scale each feature by the naive-Bayes log-count ratio (NB-SVM)
    model: str = "svm"  # "svm": LinearSVC; "lr": LogisticRegression (liblinear)
    C: float = 1.0
    # Digit shapes: "keep" (as the baseline), "zero" (every digit read as 0 by both
    # vectorizers, so 08712460324 and 09061701461 share their n-grams), "zero-word" (the
    # word vectorizer only; char n-grams keep the digits).
    digits: str = "keep"
    # Letter case: "lower" (as the baseline), "char" (char n-grams keep capitals, so "FREE"
    # and "free" differ; words are lower-cased), "both" (words keep capitals too).
    case: str = "lower"


# Each also accepts "@C", e.g. "lr@3". All use class_weight="balanced" like the baseline.
LEXICAL_VARIANTS = {
    "char16": LexicalSpec(char_analyzer="char", char_range=(1, 6)),
    "char26": LexicalSpec(char_analyzer="char", char_range=(2, 6)),
    "nbsvm": LexicalSpec(nb=True),  # baseline features x NB ratio, LinearSVC
    "nbsvm-bin": LexicalSpec(binary=True, nb=True, C=0.1),  # Wang & Manning: binary x r
    "nblr": LexicalSpec(nb=True, model="lr", C=10.0),
    "nblr-bin": LexicalSpec(binary=True, nb=True, model="lr", C=1.0),
    "lr": LexicalSpec(model="lr", C=10.0),  # baseline features, logistic regression
    "digits0": LexicalSpec(digits="zero"),  # baseline, every digit read as 0
    "digits0-word": LexicalSpec(digits="zero-word"),  # ... by the word vectorizer only
    "cased-char": LexicalSpec(case="char"),  # baseline, char n-grams keep capitals
    "cased": LexicalSpec(case="both"),  # baseline, words and char n-grams keep capitals
}

_DIGIT = re.compile(r"\d")


def zero_digits(text: str) -> str:
    """Lower-case ``text`` and read every digit as 0: a number's shape, not its value."""
    return _DIGIT.sub("0", text.lower())


def lexical_spec(text: str) -> LexicalSpec:
    name, _, c = text.partition("@")
    if name not in LEXICAL_VARIANTS:
        raise argparse.ArgumentTypeError(f"unknown lexical variant {name!r}; known: "
                                         f"{', '.join(LEXICAL_VARIANTS)}")
    spec = LEXICAL_VARIANTS[name]
    return replace(spec, C=float(c)) if c else spec


class LexicalModel:
    """Fit/decision_function like TfidfSvmBaseline, for a :class:`LexicalSpec`."""

    def __init__(self, spec: LexicalSpec, random_state: int = 0) -> None:
        self.spec, self.random_state = spec, random_state

    def _features(self, texts: list[str], fit: bool = False):
        if fit:
            s = self.spec
            extra = (dict(binary=True, use_idf=False, norm=None) if s.binary
                     else dict(sublinear_tf=True))
            word_pre = zero_digits if s.digits in ("zero", "zero-word") else None
            char_pre = zero_digits if s.digits == "zero" else None
            self.vectorizers_ = [
                TfidfVectorizer(analyzer="word", ngram_range=(1, 2),
                                lowercase=s.case != "both", preprocessor=word_pre, **extra),
                TfidfVectorizer(analyzer=s.char_analyzer, ngram_range=s.char_range,
                                lowercase=s.case == "lower", preprocessor=char_pre,
                                **extra)]
            parts = [v.fit_transform(texts) for v in self.vectorizers_]
        else:
            parts = [v.transform(texts) for v in self.vectorizers_]
        x = sparse.hstack(parts, format="csr")
        return x.multiply(self.ratio_).tocsr() if self.spec.nb and not fit else x

    def fit(self, texts: Sequence[str], labels: np.ndarray) -> LexicalModel:
        y = np.asarray(labels, dtype=int)
        x = self._features(list(texts), fit=True)
        if self.spec.nb:  # r = log((p / |p|_1) / (q / |q|_1)), alpha = 1 (Wang & Manning)
            p = 1.0 + np.asarray(x[y == 1].sum(axis=0)).ravel()
            q = 1.0 + np.asarray(x[y == 0].sum(axis=0)).ravel()
            self.ratio_ = np.log((p / p.sum()) / (q / q.sum()))
            x = x.multiply(self.ratio_).tocsr()
        if self.spec.model == "lr":
            self.model_ = LogisticRegression(C=self.spec.C, solver="liblinear",
                                             class_weight="balanced", max_iter=1000)
        else:
            self.model_ = LinearSVC(C=self.spec.C, class_weight="balanced",
                                    random_state=self.random_state, max_iter=5000)
        self.model_.fit(x, y)
        return self

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model_.decision_function(self._features(list(texts))),
                          dtype=float)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="labelled TSV/CSV")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7, help="fold assignment seed")
    parser.add_argument("--head-share", type=floats, default=[],
                        help="blend weights of the head to try (default recipe: 0.5)")
    parser.add_argument("--svm-c", type=floats, default=[], help="SVM C values to try (1)")
    parser.add_argument("--boundary", type=floats, default=[],
                        help="decision boundaries in blended-score units to try (0); "
                        "negative values need '=': --boundary=-0.4,0.2")
    parser.add_argument("--layers", type=ints, default=[],
                        help="encoder layers to mean-pool instead of the last ones")
    parser.add_argument("--pooling", type=lambda t: [x for x in t.split(",") if x.strip()],
                        default=[], help="poolings of the whole backbone to try instead of "
                        f"the recipe's {DEFAULT_POOLING} ({', '.join(POOLINGS)})")
    parser.add_argument("--lexical", type=lambda t: [x for x in t.split(",") if x.strip()],
                        default=[], help="lexical halves to try: "
                        f"{', '.join(LEXICAL_VARIANTS)} (each may end in @C)")
    parser.add_argument("--refit", action="store_true",
                        help="also refit head and lexical half on the whole fold training "
                        "part after the inner 15%% has chosen epochs, scales and threshold")
    parser.add_argument("--concat-layers", type=ints, default=[],
                        help="encoder layers whose pooled embeddings the head sees side by "
                        "side, e.g. 4,5,6")
    parser.add_argument("--head-seeds", type=ints, default=[],
                        help="seed ensembles to try: K heads (seeds 42 to 42+K-1), their mean "
                        "logit as the head's score, e.g. 3,5")
    parser.add_argument("--head-lr", type=floats, default=[],
                        help=f"head learning rates to try ({TrainConfig.lr:g})")
    parser.add_argument("--weight-decay", type=floats, default=[],
                        help=f"head AdamW weight decays to try ({TrainConfig.weight_decay:g})")
    parser.add_argument("--stop-on", type=lambda t: [x for x in t.split(",") if x.strip()],
                        default=[], help="what else picks the head's kept epoch instead of "
                        "the lowest inner-validation loss: auc (ROC AUC), ap (average "
                        "precision) of its spam logit")
    parser.add_argument("--extra-train", type=Path, default=None,
                        help="labelled TSV/CSV whose messages join the training part of "
                        "every fold (never its inner validation part or its test part), as "
                        "`spamguard train --also-train` does: rows for the default, each half "
                        "alone and the head alone with them")
    parser.add_argument("--extra-weight", type=floats, default=[1.0],
                        help="how much each --extra-train message counts in the losses; one "
                        "set of rows per weight (1)")
    parser.add_argument("--per-repeat", action="store_true",
                        help="also print each candidate's MCC difference in every repeat")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the heads (1 is fastest for a 400->512 MLP)")
    parser.add_argument("--quick", action="store_true", help="3 folds x 1 repeat")
    parser.add_argument("--ungrouped", action="store_true",
                        help="split, folds and inner parts as before December 2026: near-"
                        "exact copies may land on both sides, and the ham budget is 0.2%% "
                        "of each inner part's ham (0 messages there)")
    args = parser.parse_args(argv)
    if args.quick:
        args.folds, args.repeats = 3, 1
    if args.folds < 2 or args.repeats < 1:
        parser.error("--folds must be at least 2 and --repeats at least 1")
    try:
        for variant in args.lexical:
            lexical_spec(variant)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--lexical: {exc}")
    unknown = [p for p in args.pooling if p not in POOLINGS]
    if unknown:
        parser.error(f"--pooling: unknown {', '.join(unknown)} (choose from "
                     f"{', '.join(POOLINGS)})")
    if len(args.concat_layers) == 1:
        parser.error("--concat-layers needs at least two layers")
    if any(k < 1 for k in args.head_seeds):
        parser.error("--head-seeds: each ensemble needs at least one head")
    if any(lr <= 0 for lr in args.head_lr):
        parser.error("--head-lr: learning rates must be positive")
    if any(wd < 0 for wd in args.weight_decay):
        parser.error("--weight-decay: weight decays must not be negative")
    unknown = [s for s in args.stop_on if s not in SELECTIONS]
    if unknown:
        parser.error(f"--stop-on: unknown {', '.join(unknown)} (choose from "
                     f"{', '.join(SELECTIONS)})")
    # loss is the default's own rows
    args.stop_on = [s for s in dict.fromkeys(args.stop_on) if s != "loss"]
    return args


def candidates(args: argparse.Namespace) -> list[Candidate]:
    """The default, the two halves alone, and one candidate per setting asked for (the
    head-training ones also as the head alone); the structural options (--lexical,
    --refit, --concat-layers) add every combination."""
    out = [Candidate("blend (default)"), Candidate("BERT head alone", kind="head"),
           Candidate("TF-IDF + SVM alone", kind="svm")]
    out += [Candidate(f"blend, head share {w:g}", head_share=w) for w in args.head_share]
    out += [Candidate(f"blend, SVM C {c:g}", svm_c=c) for c in args.svm_c]
    out += [Candidate(f"blend, boundary {b:+g}", boundary=b) for b in args.boundary]
    out += [Candidate(f"blend, encoder layer {k}", layer=k) for k in args.layers]
    out += [Candidate(f"blend, pooling {p}", pooling=p) for p in args.pooling]
    heads = ([(f"{k} head seed{'s' if k > 1 else ''}", dict(head_seeds=k))
              for k in args.head_seeds]
             + [(f"head lr {lr:g}", dict(lr=lr)) for lr in args.head_lr]
             + [(f"weight decay {wd:g}", dict(weight_decay=wd)) for wd in args.weight_decay]
             + [(f"stop on {s}", dict(stop_on=s)) for s in args.stop_on])
    for label, setting in heads:
        out += [Candidate(f"BERT head alone, {label}", kind="head", **setting),
                Candidate(f"blend, {label}", **setting)]
    refits = [False, True] if args.refit else [False]
    for refit in refits:
        suffix = ", fit on fit+val" if refit else ""
        if refit:
            out.append(Candidate("TF-IDF + SVM alone" + suffix, kind="svm", refit=True))
        out += [Candidate(f"lexical {v} alone{suffix}", kind="svm", lexical=v, refit=refit)
                for v in args.lexical]
    concat = tuple(args.concat_layers) or None
    if concat:
        out.append(Candidate(f"BERT head alone, layers {'+'.join(map(str, concat))}",
                             kind="head", layer=concat))
    for layer in [None, concat] if concat else [None]:
        for lexical in [None, *args.lexical]:
            for refit in refits:
                parts = ([f"layers {'+'.join(map(str, layer))}"] if layer else []) + (
                    [f"lexical {lexical}"] if lexical else []) + (
                    ["refit on fit+val"] if refit else [])
                if parts:
                    out.append(Candidate("blend, " + ", ".join(parts), layer=layer,
                                         lexical=lexical, refit=refit))
    for w in args.extra_weight if args.extra_train else []:
        tag = "extra training" + (f" x{w:g}" if w != 1 else "")
        out += [Candidate(f"blend + {tag}", extra=w),
                Candidate(f"BERT head alone + {tag}", kind="head", extra=w),
                Candidate(f"TF-IDF + SVM alone + {tag}", kind="svm", extra=w)]
    return out


def extra_messages(path: Path, known: list[str]) -> tuple[list[str], np.ndarray]:
    """The --extra-train messages, deduplicated, without any whose normalised text is one of
    ``known`` (the data cross-validated), so no fold tests on a text it trained on."""
    extra = dedupe(load_labelled(path))[0]
    seen = {normalise(t) for t in known}
    keep = [i for i, t in enumerate(extra.texts) if normalise(t) not in seen]
    print(f"--extra-train: {len(keep)} of {len(extra.texts)} distinct messages "
          f"({int(extra.labels[keep].sum())} spam) join every fold's training part",
          file=sys.stderr)
    return [extra.texts[i] for i in keep], extra.labels[keep].astype(np.int64)


def truncated(backbone: Backbone, layers: int) -> Backbone:
    """A copy of ``backbone`` that stops after its first ``layers`` encoder layers."""
    model = copy.deepcopy(backbone.model)
    total = len(model.encoder.layer)
    if not 1 <= layers <= total:
        raise SystemExit(f"--layers: this backbone has encoder layers 1 to {total}")
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    return replace(backbone, model=model, variant=f"first-{layers}-layers")


def head_inputs(texts: list[str], cands: list[Candidate]) -> dict:
    """Head inputs (pooled embedding + message features) for each source the candidates use:
    the whole backbone with the recipe's pooling (or a --pooling one), an earlier layer
    mean-pooled, or several layers mean-pooled side by side, then the features once."""
    backbone = load_backbone(None)
    home = Path(os.environ.get("SPAMGUARD_HOME", ROOT / "instance"))
    config = TrainConfig()
    total = len(backbone.model.encoder.layer)
    n_features = len(FEATURE_NAMES) if config.features else 0
    made: dict[tuple, np.ndarray] = {}

    def single(layer: int | None, pooling: str) -> np.ndarray:
        layer = None if layer == total else layer
        if (layer, pooling) not in made:
            source = backbone if layer is None else truncated(backbone, layer)
            encoder = CachedEncoder(source, home / "cache", pooling=pooling,
                                    max_length=config.max_length, batch_size=config.batch_size)
            made[layer, pooling] = build_inputs(encoder, texts, list(FEATURE_NAMES)
                                                if config.features else [])
        return made[layer, pooling]

    out = {}
    for layer, pooling in sorted({c.source for c in cands}, key=str):
        if isinstance(layer, tuple):
            atoms = [single(k, "mean") for k in layer]
            out[layer, pooling] = np.concatenate(
                [a[:, :a.shape[1] - n_features] for a in atoms]
                + [atoms[0][:, atoms[0].shape[1] - n_features:]], axis=1)
        else:
            out[layer, pooling] = single(layer, pooling or (config.pooling if layer is None
                                                            else "mean"))
    return out


def logits(head: BertArch, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head_logit(head(torch.from_numpy(x)).numpy())


def head_config(config: TrainConfig, lr: float | None, weight_decay: float | None,
                seed: int) -> TrainConfig:
    """``config`` with a candidate's head seed, learning rate and weight decay."""
    return replace(config, seed=seed, lr=config.lr if lr is None else lr,
                   weight_decay=config.weight_decay if weight_decay is None else weight_decay)


def mean_logits(members: list[tuple]) -> tuple:
    """A seed ensemble's (val, test, refitted test) logits: the mean of its heads'."""
    return tuple(None if parts[0] is None else np.mean(parts, axis=0)
                 for parts in zip(*members, strict=True))


def lexical_model(c: float, variant: str | None, seed: int):
    if variant is None:
        return TfidfSvmBaseline(random_state=seed, C=c)
    return LexicalModel(lexical_spec(variant), random_state=seed)


def fold_indices(args: argparse.Namespace, labels: np.ndarray, groups: np.ndarray):
    """(training part, test part) of each fold of each repeat; a group of near-exact
    copies stays in one part (lone messages: as RepeatedStratifiedKFold deals them)."""
    if args.ungrouped:
        yield from RepeatedStratifiedKFold(n_splits=args.folds, n_repeats=args.repeats,
                                           random_state=args.seed).split(labels, labels)
        return
    seeds = np.random.RandomState(args.seed).randint(np.iinfo(np.int32).max,
                                                      size=args.repeats)
    for seed in seeds:
        folds = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=seed)
        yield from folds.split(labels, labels, groups[:len(labels)])


def inner_split(train: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The fold's inner 15% (early stopping, blend scales, threshold), stratified, with each
    group of copies on one side, as training's split keeps them."""
    members, unit_labels = group_units(labels[train], groups[train])
    fit_u, val_u = train_test_split(np.arange(len(members)), test_size=0.15, random_state=k,
                                    stratify=unit_labels)
    return (np.array([train[i] for u in fit_u for i in members[u]]),
            np.array([train[i] for u in val_u for i in members[u]]))


def ham_budget(args: argparse.Namespace, val_labels: np.ndarray, labels: np.ndarray):
    """The ham false-positive budget of an inner part: as many ham as training's own
    validation split may block (0.2% of its ham, rounded down: 1 of about 590), since an
    inner part's 400 ham would allow none. ``--ungrouped``: 0.2% of the inner part."""
    max_fpr = TrainConfig().max_ham_fpr
    allowed = int(np.floor(max_fpr * int((val_labels == 0).sum()) + 1e-9))

    def budget(val_idx: np.ndarray) -> float:
        if args.ungrouped:
            return max_fpr
        inner_ham = int((labels[val_idx] == 0).sum())
        return max(max_fpr, (allowed + 0.5) / inner_ham) if inner_ham else max_fpr

    return budget


def run(args: argparse.Namespace) -> str:
    everything = dedupe(load_labelled(args.data))[0]
    parts, _ = split_keeping_copies(everything, seed=2018, always_train=None,
                                    grouped=not args.ungrouped)
    texts = parts.train.texts + parts.val.texts
    labels = np.concatenate([parts.train.labels, parts.val.labels]).astype(np.int64)
    groups = (np.arange(len(labels)) if args.ungrouped
              else near_duplicate_groups(texts))  # the folds keep copies together too
    budget = ham_budget(args, parts.val.labels, labels)
    cross = len(labels)  # the folds split these; extra messages come after them
    extra_idx = np.arange(0)
    if args.extra_train:
        extra_texts, extra_labels = extra_messages(args.extra_train, everything.texts)
        extra_idx = np.arange(cross, cross + len(extra_texts))
        texts = texts + extra_texts
        labels = np.concatenate([labels, extra_labels])
    cands = candidates(args)
    inputs = head_inputs(texts, cands)
    torch.set_num_threads(args.threads)
    config = TrainConfig()
    predicted = {c.name: np.zeros((args.repeats, cross), dtype=int) for c in cands}
    refit_layers = {c.source for c in cands if c.refit}
    refit_lexical = {(c.svm_c, c.lexical) for c in cands if c.refit}
    # head key -> per fold (kept epoch, epochs trained, seconds)
    kept: dict[tuple, list] = defaultdict(list)
    started = time.perf_counter()
    for k, (train, test) in enumerate(fold_indices(args, labels[:cross], groups)):
        rep = k // args.folds
        fit_idx, val_idx = inner_split(train, labels, groups, k)
        fits = {w: (fit_idx, None) if not w else (np.concatenate([fit_idx, extra_idx]),
                   None if w == 1 else np.concatenate([np.ones(len(fit_idx)),
                                                       np.full(len(extra_idx), w)]))
                for w in {c.extra for c in cands}}
        # (source, lr, weight decay, epoch selection, seed) -> one head's (val logits, test
        # logits, test logits of the refitted head); seed ensembles share their heads
        members: dict[tuple, tuple] = {}
        head = {}  # Candidate.training -> (val logits, test logits, refitted test logits)
        for setting in sorted({c.training for c in cands}, key=str):
            source, seeds, lr, weight_decay, stop_on, extra = setting
            x, (fit_idx, weights) = inputs[source], fits[extra]
            for seed in range(config.seed, config.seed + seeds):
                key = (source, lr, weight_decay, stop_on, seed, extra)
                if key in members:
                    continue
                trained = head_config(config, lr, weight_decay, seed)
                mark = time.perf_counter()
                fit = fit_head(x[fit_idx], labels[fit_idx], x[val_idx], labels[val_idx],
                               trained, progress=False, select=stop_on,
                               sample_weight=weights)
                kept[key].append((fit.best_epoch, len(fit.history),
                                  time.perf_counter() - mark))
                refitted = None
                if source in refit_layers:  # the inner part's epoch count, on fit + val
                    refitted = logits(fit_head_epochs(x[train], labels[train],
                                                      fit.best_epoch + 1, trained), x[test])
                members[key] = (logits(fit.head, x[val_idx]), logits(fit.head, x[test]),
                                refitted)
            head[setting] = mean_logits([members[source, lr, weight_decay, stop_on, seed, extra]
                                         for seed in range(config.seed, config.seed + seeds)])
        svm = {}  # (C, lexical variant) -> (val scores, test scores, test scores refitted)
        for c, variant, extra in sorted({(c.svm_c, c.lexical, c.extra) for c in cands},
                                        key=str):
            fit_idx, weights = fits[extra]
            model = lexical_model(c, variant, config.seed)
            model = (model.fit([texts[i] for i in fit_idx], labels[fit_idx]) if weights is None
                     else model.fit([texts[i] for i in fit_idx], labels[fit_idx],
                                    sample_weight=weights))
            refitted = None
            if (c, variant) in refit_lexical:
                refitted = lexical_model(c, variant, config.seed).fit(
                    [texts[i] for i in train], labels[train]).decision_function(
                    [texts[j] for j in test])
            svm[c, variant, extra] = (*(model.decision_function([texts[j] for j in i])
                                 for i in (val_idx, test)), refitted)
        for cand in cands:
            # Validation scores (scales, thresholds) always come from the models fitted
            # without the inner part; with refit the test scores come from the refitted ones.
            (hv, ht, htr), (sv, st, str_) = (head[cand.training],
                                             svm[cand.svm_c, cand.lexical, cand.extra])
            if cand.refit:
                ht, st = htr, str_
            if cand.kind == "svm":
                predicted[cand.name][rep, test] = st >= 0
                continue
            if cand.kind == "head":  # as trained alone: probability 0.5 plus the budget
                threshold, _ = choose_threshold(labels[val_idx], hv, budget(val_idx), 0.0)
                predicted[cand.name][rep, test] = ht >= threshold
                continue
            # The shipped Blend with each scale divided by twice its share: share 0.5 is the
            # shipped sum of the scaled halves, and the boundary keeps its units.
            w = cand.head_share
            blend = Blend(head_scale=hv.std() / (2 * w), lexical_scale=sv.std() / (2 * (1 - w)))
            bv, bt = blend.score(hv, sv), blend.score(ht, st)
            threshold, _ = choose_threshold(labels[val_idx], bv, budget(val_idx),
                                            cand.boundary)
            predicted[cand.name][rep, test] = bt >= threshold
        print(f"fold {k + 1}/{args.folds * args.repeats} "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    out = report(args, labels[:cross], cands, predicted)
    if args.stop_on:
        out += "\n" + kept_epochs(kept, ["loss", *args.stop_on], config.seed)
    return out


def kept_epochs(kept: dict[tuple, list], stops: list[str], seed: int) -> str:
    """How the default head's kept epoch (0-based) spreads over the folds per selection."""
    lines = ["Kept epoch of the default head (0-based; seed "
             f"{seed}) over the folds, by what picks it:", ""]
    for stop in stops:
        runs = kept[(None, None), None, None, stop, seed, 0.0]
        best = np.array([r[0] for r in runs])
        trained = np.array([r[1] for r in runs])
        counts = np.bincount(best)
        spread = " ".join(f"{e}:{n}" for e, n in enumerate(counts) if n)
        lines.append(f"- stop on {stop}: mean {best.mean():.2f}, median {np.median(best):g}, "
                     f"min {best.min()}, max {best.max()}; epochs trained mean "
                     f"{trained.mean():.1f}; head training {sum(r[2] for r in runs):.0f} s; "
                     f"histogram (epoch:folds) {spread}")
    return "\n".join(lines) + "\n"


def report(args, labels: np.ndarray, cands: list[Candidate], predicted) -> str:
    """The table: pooled metrics per repeat, their mean, worst repeat, and gap to default."""
    ham = labels == 0

    def per_repeat(name: str) -> np.ndarray:
        return np.array([[matthews_corrcoef(labels, p), f1_score(labels, p),
                          (p[ham] == 1).mean(), ((p == 0) & ~ham).sum(), (p[ham] == 1).sum()]
                         for p in predicted[name]])

    default = per_repeat(cands[0].name)[:, 0]
    rows, gaps = [], []
    for cand in cands:
        m = per_repeat(cand.name)
        gap = m[:, 0] - default
        gaps.append([cand.name, *(f"{g:+.4f}" for g in gap),
                     f"{(gap > 0).sum()} of {len(gap)}"])
        rows.append([cand.name, f"{m[:, 0].mean():.4f}", f"{m[:, 0].min():.4f}",
                     f"{gap.mean():+.4f} ± {gap.std():.4f}", f"{m[:, 1].mean():.4f}",
                     f"{100 * m[:, 2].mean():.2f}%", f"{m[:, 3].mean():.1f}",
                     f"{m[:, 4].mean():.1f}"])
    head = (f"{len(labels)} train+val messages ({int(labels.sum())} spam); "
            f"{args.folds} folds x {args.repeats} repeats (seed {args.seed})")
    out = head + "\n\n" + table(
        ["candidate", "MCC", "worst repeat", "MCC vs default", "spam F1", "ham FPR",
         "spam missed", "ham blocked"], rows) + "\n"
    if args.per_repeat:
        out += "\nMCC vs default in each repeat:\n\n" + table(
            ["candidate", *(f"repeat {r + 1}" for r in range(args.repeats)), "ahead in"],
            gaps[1:]) + "\n"
    return out


def main(argv: Sequence[str] | None = None) -> None:
    print(run(parse_args(argv)))


if __name__ == "__main__":
    run_main(main)
