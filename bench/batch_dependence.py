"""Does a message's score depend on the other messages in its batch? fp32 vs int8 vs bf16.

Run from the repository root (about 1-2 minutes on 2 cores; ``--quick`` a quarter)::

    python bench/batch_dependence.py [--model VERSION_DIR] [--quick]

Dynamic int8 quantisation picks each activation scale from the whole input tensor, that
is from every message of the batch, so an int8 score moves with its companions; fp32 and
bf16 compute each message on its own (up to float rounding). For each runtime the
validation and test messages are scored three ways: in length-sorted batches of 32 (as
``classify`` does), one at a time (as the webhook does), and in shuffled batches of 32;
the table gives the largest probability difference and the decisions that flip. The
model is found as in ``bench/throughput.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import DATA, find_model, load_split, run_main, table  # noqa: E402

VARIANTS = {"fp32 (onnx, service default)": ("onnx", False),
            "int8 (onnx, --quantize)": ("onnx", True), "int8 (torch)": ("torch", True),
            "bf16 (torch-bf16)": ("torch-bf16", False)}


def scores_three_ways(clf, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """Spam probabilities of ``texts`` batched, alone and in shuffled batches."""
    batched = clf.predict_proba(texts)
    alone = np.array([clf.predict_proba([text])[0] for text in texts])
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = np.empty(len(texts))
    for start in range(0, len(texts), batch_size):
        chunk = order[start:start + batch_size]
        shuffled[chunk] = clf.predict_proba([texts[i] for i in chunk])
    return {"batched": batched, "alone": alone, "shuffled": shuffled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model version directory")
    parser.add_argument("--data", type=Path, default=DATA, help="labelled TSV/CSV")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="every 4th val/test message")
    args = parser.parse_args()
    from spamguard.ml.backbone_variants import native_bf16
    from spamguard.ml.classifier import SpamClassifier

    parts = load_split(args.data, args.quick)
    texts = parts.val.texts + parts.test.texts
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = find_model(args, tmp)
        for name, (runtime, int8) in VARIANTS.items():
            if runtime == "torch-bf16" and not native_bf16():
                rows.append([name, "skipped: no bf16 units", "", "", ""])
                continue
            clf = SpamClassifier.load(model, runtime=runtime, quantize=int8,
                                      onnx_dir=Path(tmp) / "onnx", batch_size=args.batch_size)
            got = scores_three_ways(clf, texts, args.batch_size)
            spam = {way: p >= clf.threshold for way, p in got.items()}
            rows.append([name,
                         f"{np.abs(got['batched'] - got['alone']).max():.2g}",
                         f"{np.abs(got['batched'] - got['shuffled']).max():.2g}",
                         str(int((spam["batched"] != spam["alone"]).sum())),
                         str(int((spam["batched"] != spam["shuffled"]).sum()))])
            print(f"{name}: done", file=sys.stderr)
    print(f"{len(texts)} validation and test messages, batches of {args.batch_size}")
    print(table(["runtime", "largest change alone", "largest change shuffled",
                 "flips alone", "flips shuffled"], rows))


if __name__ == "__main__":
    run_main(main)
