"""Throughput benchmark: spamguard vs the transformers pipeline vs TF-IDF, and GFLOP/s.

Run from the repository root (about 3-5 minutes on 2 quiet cores; ``--quick`` about 1)::

    python bench/throughput.py [--model VERSION_DIR] [--threads N] [--repeats R] [--quick]

Without ``--model`` it uses the active model of ``SPAMGUARD_HOME`` if there is one, else it
trains a version into a temporary folder first (not timed). Every number is the median of
``--repeats`` runs; other load on the machine makes them noisy, so compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from spamguard.ml.classifier import SpamClassifier
from spamguard.ml.data import Split, dedupe, load_labelled, split

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "sms_spam_collection.tsv"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model version directory")
    parser.add_argument("--data", type=Path, default=DATA, help="labelled TSV/CSV")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3, help="runs per number (median)")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="spamguard batch size")
    parser.add_argument("--quick", action="store_true", help="a quarter of the test split, "
                        "1 repeat, 25 latency samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.latency_samples = 1, 25
    return args


def load_split(path: Path, quick: bool) -> Split:
    """The split training uses (dedupe, seed 2018); --quick keeps every 4th val/test text."""
    parts = split(dedupe(load_labelled(path))[0], seed=2018)
    if quick:  # every 4th message keeps the length mix and both classes
        parts.val, parts.test = (d.subset(range(0, len(d), 4)) for d in (parts.val, parts.test))
    return parts


def find_model(args: argparse.Namespace, tmp: str) -> Path:
    """The version to benchmark: --model, the active one, or a freshly trained one."""
    if args.model:
        return args.model
    from spamguard.config import load_settings
    from spamguard.db import make_engine, make_session_factory, session_scope
    from spamguard.services import registry

    settings = load_settings()
    if (settings.home / "spamguard.db").exists() or settings.database_url:
        factory = make_session_factory(make_engine(settings.resolved_database_url))
        with session_scope(factory) as session:
            version = registry.active_version(session)
            if version is not None:
                return Path(version.directory)
    from spamguard.ml.train import train_model

    print("no --model and no active model: training one (not timed) ...", file=sys.stderr)
    result = train_model(load_labelled(args.data), models_dir=Path(tmp) / "models",
                         cache_root=Path(tmp) / "cache", progress=False)
    return result.directory


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency_ms(fn: Callable[[str], object], texts: Sequence[str], samples: int
               ) -> tuple[float, float]:
    """p50 and p99 in ms of ``fn`` on one message at a time (cycling through ``texts``)."""
    fn(texts[0])
    times = []
    for i in range(samples):
        start = time.perf_counter()
        fn(texts[i % len(texts)])
        times.append(time.perf_counter() - start)
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    return float(p50), float(p99)


def hf_pipeline(backbone_dir: str):
    """transformers' text-classification pipeline on the same encoder (random head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(backbone_dir, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    return pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)


def throughput_rows(args, classifiers: dict[str, SpamClassifier], pipe, baseline,
                    texts: list[str]) -> list[list[str]]:
    """Messages/s (batched) and single-message latency for every contender."""
    n, reps, samples = len(texts), args.repeats, args.latency_samples
    tok = {"truncation": True, "max_length": 128}
    rows = []
    for name, clf in classifiers.items():
        rate = n / median_seconds(lambda c=clf: c.predict_proba(texts), reps)
        p50, p99 = latency_ms(lambda t, c=clf: c.predict_proba([t]), texts, samples)
        rows.append([name, str(clf.encoder.batch_size), f"{rate:.0f}", f"{p50:.1f}",
                     f"{p99:.1f}"])
    for batch in (32, 1):
        rate = n / median_seconds(lambda b=batch: pipe(texts, batch_size=b, **tok), reps)
        rows.append([f"transformers pipeline (b={batch})", str(batch), f"{rate:.0f}", "", ""])
    p50, p99 = latency_ms(lambda t: pipe(t, **tok), texts, samples)
    rows[-1][3:] = [f"{p50:.1f}", f"{p99:.1f}"]
    rate = n / median_seconds(lambda: baseline.decision_function(texts), reps)
    p50, p99 = latency_ms(lambda t: baseline.decision_function([t]), texts, samples)
    rows.append(["TF-IDF + linear SVM (1 thread)", "all", f"{rate:.0f}", f"{p50:.2f}",
                 f"{p99:.2f}"])
    return rows


def forward_batches(clf: SpamClassifier, texts: list[str]) -> list[dict]:
    """Tokenised, length-sorted, padded batches exactly as ``encode`` builds them."""
    from spamguard.ml.embeddings import length_batches

    tokenizer = clf.backbone.tokenizer
    encoded = tokenizer(texts, truncation=True, max_length=clf.encoder.max_length)
    order = length_batches([len(x) for x in encoded["input_ids"]], clf.encoder.batch_size)
    return [tokenizer.pad({k: [encoded[k][i] for i in b] for k in encoded.keys()},
                          return_tensors="pt") for b in order]


def gflops_rows(args, classifiers: dict[str, SpamClassifier], texts: list[str]
                ) -> list[list[str]]:
    """Achieved GFLOP/s of the backbone forward passes next to a plain fp32 torch.mm."""
    from torch.utils.flop_counter import FlopCounterMode

    size = 1024 if args.quick else 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    mm = 2 * size**3 / median_seconds(lambda: torch.mm(a, b), max(5, args.repeats)) / 1e9
    fp32 = next(iter(classifiers.values()))
    batches = forward_batches(fp32, texts)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        for batch in batches:
            fp32.backbone.model(**batch)
    flops = counter.get_total_flops()  # matmuls + attention, padding included
    rows = [[f"torch.mm fp32 {size}x{size}", f"{mm:.1f}", "100%"]]
    for name, clf in classifiers.items():
        def forward(model=clf.backbone.model):
            with torch.inference_mode():
                for batch in batches:
                    model(**batch)
        rate = flops / median_seconds(forward, args.repeats) / 1e9
        rows.append([f"{name} backbone forward", f"{rate:.1f}", f"{rate / mm:.0%}"])
    rows.append([f"(counted: {flops / 1e9:.1f} GFLOP for {len(texts)} messages, "
                 f"{sum(int(b['attention_mask'].sum()) for b in batches)} real tokens)", "", ""])
    return rows


def accuracy_rows(classifiers: dict[str, SpamClassifier], baseline, parts: Split
                  ) -> list[list[str]]:
    """Spam F1, MCC and ham FPR on validation and test: what quantisation costs, if anything."""
    from spamguard.ml.report import evaluate

    rows = []
    for part in ("val", "test"):
        data = getattr(parts, part)
        for name, clf in classifiers.items():
            m = evaluate(data.labels, clf.predict_proba(data.texts), clf.threshold)
            rows.append([f"{name} ({part})", f"{m['spam_f1']:.4f}", f"{m['mcc']:.4f}",
                         f"{m['ham_fpr']:.2%}"])
        m = evaluate(data.labels, baseline.decision_function(data.texts), 0.0,
                     probabilities=False)
        rows.append([f"TF-IDF + SVM ({part})", f"{m['spam_f1']:.4f}", f"{m['mcc']:.4f}",
                     f"{m['ham_fpr']:.2%}"])
    return rows


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable as text, pasteable into bench/README.md)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def main(argv: Sequence[str] | None = None) -> None:
    """Run every measurement and print the tables."""
    from transformers.utils import logging as hf_logging

    from spamguard.ml.backbone import quantize_backbone, resolve
    from spamguard.ml.baseline import TfidfSvmBaseline

    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao notices
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    parts = load_split(args.data, args.quick)
    test = parts.test
    with tempfile.TemporaryDirectory() as tmp:
        version_dir = find_model(args, tmp)
        fp32 = SpamClassifier.load(version_dir, batch_size=args.batch_size)
        int8 = SpamClassifier(backbone=quantize_backbone(fp32.backbone), head=fp32.head,
                              metadata=fp32.metadata, batch_size=args.batch_size)
    classifiers = {"spamguard fp32": fp32, "spamguard int8 (--quantize)": int8}
    pipe = hf_pipeline(resolve(fp32.backbone.name)[1])
    baseline = TfidfSvmBaseline(random_state=42).fit(parts.train.texts, parts.train.labels)
    print(f"model {fp32.version} ({fp32.backbone.name}); {len(test.texts)} test messages; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of "
          f"{args.repeats} run(s), {args.latency_samples} latency samples\n")
    rows = throughput_rows(args, classifiers, pipe, baseline, test.texts)
    print(table(["classifier", "batch", "messages/s", "p50 ms (1 msg)", "p99 ms (1 msg)"],
                rows))
    speedup = float(rows[0][2]) / float(rows[2][2]), float(rows[1][2]) / float(rows[2][2])
    print(f"\nspamguard vs pipeline (b=32): fp32 {speedup[0]:.2f}x, int8 {speedup[1]:.2f}x "
          "(target >= 3x)\n")
    print(table(["compute", "GFLOP/s", "of torch.mm"], gflops_rows(args, classifiers,
                                                                   test.texts)))
    print("(int8 rows: fp32-equivalent FLOPs per second; target for fp32 >= 60%)\n")
    print(table(["accuracy (same head and threshold)", "spam F1", "MCC", "ham FPR"],
                accuracy_rows(classifiers, baseline, parts)))


if __name__ == "__main__":
    main()
