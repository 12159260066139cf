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
from spamguard.ml.data import Split, dedupe, load_labelled
from spamguard.ml.near_duplicates import split_keeping_copies

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
    parser.add_argument("--sweep", action="store_true",
                        help="also time spamguard fp32 at batch sizes 1 to 128")
    parser.add_argument("--quick", action="store_true", help="a quarter of the test split, "
                        "1 repeat, 25 latency samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.latency_samples = 1, 25
    return args


def load_split(path: Path, quick: bool) -> Split:
    """The split training uses (dedupe, near-exact copies together, seed 2018); --quick
    keeps every 4th val/test text."""
    parts, _ = split_keeping_copies(dedupe(load_labelled(path))[0], seed=2018,
                                    always_train=None, grouped=True)
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


def median_seconds(fn: Callable[[], object], repeats: int, warm: bool = True) -> float:
    """Median wall time of ``fn`` (after one warm-up call unless ``warm`` is False)."""
    if warm:
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


def interleaved_seconds(jobs: dict[str, Callable[[], object]], repeats: int
                        ) -> dict[str, float]:
    """Median wall time of each job, the jobs taking turns within each repeat.

    A burst of other load on the machine then hits every contender, not just one row.
    """
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            times[name].append(median_seconds(fn, 1, warm=False))
    return {name: statistics.median(t) for name, t in times.items()}


def throughput_rows(args, classifiers: dict[str, SpamClassifier], pipe, baseline,
                    texts: list[str]) -> list[list[str]]:
    """Messages/s (batched) and single-message latency for every contender."""
    tok = {"truncation": True, "max_length": 128}
    batched: dict[str, Callable[[], object]] = {
        name: (lambda c=clf: c.predict_proba(texts)) for name, clf in classifiers.items()}
    batched["transformers pipeline (b=32)"] = lambda: pipe(texts, batch_size=32, **tok)
    batched["transformers pipeline (b=1)"] = lambda: pipe(texts, batch_size=1, **tok)
    batched["TF-IDF + linear SVM (1 thread)"] = lambda: baseline.decision_function(texts)
    single: dict[str, Callable[[str], object]] = {
        name: (lambda t, c=clf: c.predict_proba([t])) for name, clf in classifiers.items()}
    single["transformers pipeline (b=1)"] = lambda t: pipe(t, **tok)
    single["TF-IDF + linear SVM (1 thread)"] = lambda t: baseline.decision_function([t])
    for clf in classifiers.values():  # warm-up on a slice: a full pass would double the cost
        clf.predict_proba(texts[:64])
    pipe(texts[:64], batch_size=32, **tok)
    seconds = interleaved_seconds(batched, args.repeats)
    sizes = {name: str(clf.encoder.batch_size) for name, clf in classifiers.items()}
    sizes |= {"transformers pipeline (b=32)": "32", "transformers pipeline (b=1)": "1"}
    rows = []
    for name, took in seconds.items():
        latency = (latency_ms(single[name], texts, args.latency_samples)
                   if name in single else None)
        rows.append([name, sizes.get(name, "all"), f"{len(texts) / took:.0f}",
                     *((f"{x:.2f}" if x < 10 else f"{x:.1f}" for x in latency) if latency
                       else ("", ""))])
    return rows


def padding_note(clf: SpamClassifier, texts: list[str]) -> str:
    """Token slots each batching computes: why length-sorting beats input order."""
    from spamguard.ml.embeddings import length_batches

    ids = clf.backbone.tokenizer(texts, truncation=True, max_length=clf.encoder.max_length)
    lengths = np.array([len(x) for x in ids["input_ids"]])
    size = clf.encoder.batch_size
    in_order = [np.arange(i, min(i + size, len(texts))) for i in range(0, len(texts), size)]
    slots = [sum(len(b) * int(lengths[b].max()) for b in batches)
             for batches in (length_batches(lengths, size), in_order)]
    return (f"token slots at batch {size}: {lengths.sum()} real, {slots[0]} length-sorted "
            f"(spamguard), {slots[1]} in input order (pipeline)")


def sweep_rows(args, clf: SpamClassifier, texts: list[str]) -> list[list[str]]:
    """Messages/s of spamguard fp32 by batch size (length-sorted batches throughout)."""
    rows = []
    for batch in (1, 8, 16, 32, 64, 128):
        clf.encoder.batch_size = batch
        rate = len(texts) / median_seconds(lambda: clf.predict_proba(texts), args.repeats)
        rows.append([str(batch), f"{rate:.0f}"])
    clf.encoder.batch_size = args.batch_size
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
    """Achieved GFLOP/s of the backbone forward passes next to a plain fp32 torch.mm.

    The contenders take turns within each repeat, so a change in the machine's other load
    hits all of them rather than skewing the ratio.
    """
    from torch.utils.flop_counter import FlopCounterMode

    size = 1024 if args.quick else 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    batches = forward_batches(next(iter(classifiers.values())), texts)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        for batch in batches:
            next(iter(classifiers.values())).backbone.model(**batch)
    flops = counter.get_total_flops()  # matmuls + attention, padding included

    def forward(model: torch.nn.Module) -> None:
        with torch.inference_mode():
            for batch in batches:
                model(**batch)

    mm_name = f"torch.mm fp32 {size}x{size} (x4)"
    jobs = {mm_name: lambda: [torch.mm(a, b) for _ in range(4)]}
    for name, clf in classifiers.items():
        jobs[f"{name} backbone forward"] = lambda m=clf.backbone.model: forward(m)
    jobs[mm_name]()  # warm-up (the forwards were warmed by the FLOP count and earlier tables)
    seconds = interleaved_seconds(jobs, max(3, args.repeats))
    rates = {name: (4 * 2 * size**3 if name == mm_name else flops) / took / 1e9
             for name, took in seconds.items()}
    mm = next(iter(rates.values()))
    rows = [[name, f"{rate:.1f}", f"{rate / mm:.0%}"] for name, rate in rates.items()]
    rows.append([f"(counted: {flops / 1e9:.1f} GFLOP for {len(texts)} messages, "
                 f"{sum(int(b['attention_mask'].sum()) for b in batches)} real tokens)", "", ""])
    return rows


def accuracy_rows(classifiers: dict[str, SpamClassifier], baseline, parts: Split
                  ) -> tuple[list[list[str]], str]:
    """Spam F1, MCC and ham FPR on validation and test: what each runtime costs, if anything.

    Returns:
        The rows, and a note on how far each variant's probabilities moved from the first's.
    """
    from spamguard.ml.report import evaluate

    reference = next(iter(classifiers))
    moved: dict[str, float] = {name: 0.0 for name in classifiers if name != reference}
    flipped: dict[str, int] = dict.fromkeys(moved, 0)
    rows, total = [], 0
    threshold = classifiers[reference].threshold
    for part in ("val", "test"):
        data = getattr(parts, part)
        probs = {name: clf.predict_proba(data.texts) for name, clf in classifiers.items()}
        for name, clf in classifiers.items():
            m = evaluate(data.labels, probs[name], clf.threshold)
            rows.append([f"{name} ({part})", f"{m['spam_f1']:.4f}", f"{m['mcc']:.4f}",
                         f"{m['ham_fpr']:.2%}"])
        m = evaluate(data.labels, baseline.decision_function(data.texts), 0.0,
                     probabilities=False)
        rows.append([f"TF-IDF + SVM ({part})", f"{m['spam_f1']:.4f}", f"{m['mcc']:.4f}",
                     f"{m['ham_fpr']:.2%}"])
        for name in moved:
            moved[name] = max(moved[name], float(np.abs(probs[name] - probs[reference]).max()))
            flipped[name] += int(((probs[name] >= threshold)
                                  != (probs[reference] >= threshold)).sum())
        total += len(data.texts)
    return rows, "\n".join(
        f"{name} vs {reference} on val+test: {flipped[name]} of {total} decisions differ, "
        f"largest probability change {moved[name]:.4f}" for name in moved)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable as text, pasteable into bench/README.md)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def run_main(main: Callable[[], object]) -> None:
    """Run a bench script's ``main``: a user error (a wrong ``--model`` or ``--data``) is
    one line on stderr and exit 2, as in the ``spamguard`` command, not a traceback."""
    from spamguard.errors import SpamguardError

    try:
        main()
    except SpamguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run every measurement and print the tables."""
    from transformers.utils import logging as hf_logging

    from spamguard.config import load_settings
    from spamguard.ml.backbone import resolve
    from spamguard.ml.baseline import TfidfSvmBaseline
    from spamguard.ml.onnx_runtime import resolve_runtime, with_runtime

    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao notices
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    parts = load_split(args.data, args.quick)
    test = parts.test
    with tempfile.TemporaryDirectory() as tmp:
        version_dir = find_model(args, tmp)
        fp32 = SpamClassifier.load(version_dir, batch_size=args.batch_size)

        def variant(runtime: str, int8: bool) -> SpamClassifier:
            backbone = with_runtime(fp32.backbone, runtime, folder=Path(tmp) / "onnx",
                                    int8=int8)
            return SpamClassifier(backbone=backbone, head=fp32.head, metadata=fp32.metadata,
                                  batch_size=args.batch_size, lexical=fp32.lexical)

        classifiers = {"spamguard fp32 (torch)": fp32,
                       "spamguard fp32 (onnx, service default)": variant("onnx", False),
                       "spamguard int8 (torch)": variant("torch", True),
                       "spamguard int8 (onnx, --quantize)": variant("onnx", True),
                       "spamguard bf16 (torch-bf16)": variant("torch-bf16", False)}
    pipe = hf_pipeline(resolve(fp32.backbone.name)[1])
    baseline = TfidfSvmBaseline(random_state=42).fit(parts.train.texts, parts.train.labels)
    print(f"model {fp32.version} ({fp32.backbone.name}); {len(test.texts)} test messages; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of "
          f"{args.repeats} run(s), {args.latency_samples} latency samples\n")
    rows = throughput_rows(args, classifiers, pipe, baseline, test.texts)
    print(table(["classifier", "batch", "messages/s", "p50 ms (1 msg)", "p99 ms (1 msg)"],
                rows))
    rates = {row[0]: float(row[2]) for row in rows}
    pipeline = rates["transformers pipeline (b=32)"]
    print("\nspamguard vs pipeline (b=32), target >= 3x: " + ", ".join(
        f"{name.removeprefix('spamguard ')} {rates[name] / pipeline:.2f}x"
        for name in classifiers))
    # what classify would pick: with AVX512-BF16 but no AMX, the choice kept (or measured)
    # in SPAMGUARD_HOME's graph folder
    batch_default = resolve_runtime("auto", backbone=fp32.backbone,
                                    folder=load_settings().onnx_dir)
    label = {"onnx": "spamguard fp32 (onnx, service default)",
             "torch-bf16": "spamguard bf16 (torch-bf16)"}[batch_default]
    print(f"`spamguard classify` default on this CPU (--runtime auto -> {batch_default}): "
          f"{rates[label] / pipeline:.2f}x the pipeline")
    print(padding_note(fp32, test.texts) + "\n")
    print(table(["compute", "GFLOP/s", "of torch.mm"], gflops_rows(args, classifiers,
                                                                   test.texts)))
    print("(int8 and bf16 rows: fp32-equivalent FLOPs per second; target for fp32 >= 60%)\n")
    if args.sweep:
        print(table(["spamguard fp32 batch size", "messages/s"], sweep_rows(args, fp32,
                                                                           test.texts)) + "\n")
    rows, note = accuracy_rows(classifiers, baseline, parts)
    print(table(["accuracy (same head and threshold)", "spam F1", "MCC", "ham FPR"], rows))
    print(note)


if __name__ == "__main__":
    run_main(main)
