"""Time ``spamguard train`` with a warm embedding cache, as a user runs it (issue 2's target:
retraining with a warm cache within 15 s on 2 cores), and once from an empty cache (target
3 min; about 35 s).

Usage::

    python bench/warm_train.py [--runs N] [--home DIR] [--data FILE] [--backbone DIR]

Each run is the command in a new process (the spamguard Python imports: set PYTHONPATH
to a checkout to time that one), start-up, imports, registration and the report's
files included (wall clock). Without ``--home`` a throw-away instance is made and its first
run, from an empty cache, is timed too; with ``--home`` the instance's cache is used as it
is. A plain fp32 ``torch.mm`` is timed before and after, so a reader can tell a slow host
from a slow change. Prints a table; timing assertions never go in tests.

Columns (from each version's ``model.json`` timing): split (deduplicate, group near-exact
copies, split), load backbone (deferred on a warm cache), embed, head (its training),
baseline added (what the TF-IDF + SVM fit added: about 0 when a child process fitted it
while the head trained), train_model (all of those and choosing the threshold), outside
(start-up imports, the database, writing the report's files, exit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import run_main, table  # noqa: E402  (bench scripts share these)

TARGET_WARM_S, TARGET_COLD_S = 15.0, 180.0
PARTS = ("prepare_s", "load_backbone_s", "embed_s", "train_head_s", "baseline_s", "total_s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm runs (default 5)")
    parser.add_argument("--home", type=Path, help="instance folder to train in "
                        "(default: a new temporary one, whose first run is cold)")
    parser.add_argument("--data", type=Path, help="labelled TSV/CSV (default: the shipped data)")
    parser.add_argument("--backbone", help="backbone folder or hub id (default: the packaged one)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    # spamguard train runs in the instance folder (train_once): paths relative to here
    # would be read there
    for name in ("data", "home"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    if args.backbone is not None and Path(args.backbone).exists():  # a folder, not a hub id
        args.backbone = str(Path(args.backbone).resolve())
    return args


def matmul_gflops(size: int = 2048, repeats: int = 4) -> float:
    """A plain fp32 matrix product's GFLOP/s on this machine now (best of three)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return repeats * 2 * size**3 / best / 1e9


def train_once(home: Path, args: argparse.Namespace) -> dict[str, float]:
    """One ``spamguard train`` in a new process: its wall clock and model.json's timing."""
    command = [sys.executable, "-m", "spamguard", "train"]
    if args.data is not None:
        command += ["--data", str(args.data)]
    if args.backbone is not None:
        command += ["--backbone", args.backbone]
    env = {**os.environ, "SPAMGUARD_HOME": str(home)}
    env.pop("SPAMGUARD_DATABASE_URL", None)
    if env.get("PYTHONPATH"):  # `PYTHONPATH=. python bench/warm_train.py` in a checkout
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(entry) if entry else entry
                                            for entry in env["PYTHONPATH"].split(os.pathsep))
    start = time.perf_counter()
    # cwd: the spamguard timed is the one Python imports (PYTHONPATH first), not a
    # checkout that happens to be the current folder (`-m` puts it first on the path)
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=home)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"spamguard train failed (exit {done.returncode}):\n{done.stderr}")
    folder = Path(done.stdout.split("\nmodel ", 1)[1].split(" in ", 1)[1].splitlines()[0])
    timing = json.loads((folder / "model.json").read_text(encoding="utf-8"))["timing"]
    return {"wall_s": wall, **{k: float(timing.get(k, 0.0)) for k in PARTS},  # 0: older
            "embedded": float(timing["backbone_texts_embedded"])}


def rows_for(runs: list[tuple[str, dict[str, float]]]) -> list[list[str]]:
    return [[name, f"{r['wall_s']:.1f}", *(f"{r[k]:.1f}" for k in PARTS),
             f"{r['wall_s'] - r['total_s']:.1f}", str(int(r["embedded"]))]
            for name, r in runs]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spamguard-warm-train-") as scratch:
        home = args.home or Path(scratch)
        home.mkdir(parents=True, exist_ok=True)
        before = matmul_gflops()
        runs: list[tuple[str, dict[str, float]]] = []
        if args.home is None:
            print("training from an empty cache (about 35 s)...", file=sys.stderr)
            runs.append(("cold", train_once(home, args)))
        for number in range(1, args.runs + 1):
            print(f"warm run {number} of {args.runs}...", file=sys.stderr)
            runs.append((f"warm {number}", train_once(home, args)))
        after = matmul_gflops()
    print(table(["run", "wall s", "split s", "load backbone s", "embed s", "head s",
                 "baseline added s", "train_model s", "outside s", "texts embedded"],
                rows_for(runs)))
    warm = [r["wall_s"] for name, r in runs if name.startswith("warm")]
    within = sum(w <= TARGET_WARM_S for w in warm)
    print(f"\nwarm runs: {min(warm):.1f}-{max(warm):.1f} s wall clock, median "
          f"{statistics.median(warm):.1f} s; {within} of {len(warm)} within the "
          f"{TARGET_WARM_S:.0f} s target")
    if runs[0][0] == "cold":
        cold = runs[0][1]["wall_s"]
        print(f"empty cache: {cold:.1f} s (target {TARGET_COLD_S:.0f} s)")
    print(f"torch.mm fp32 2048x2048: {before:.0f} GFLOP/s before, {after:.0f} after "
          "(a slower host shows here)")


if __name__ == "__main__":
    run_main(main)
