"""Time and peak memory of campaign grouping (``spamguard.services.campaigns.group_vectors``).

Run from the repository root::

    python bench/campaigns.py [--sizes 2000,8000,16000,30000] [--dim 384]

Each size is measured in a fresh process (peak memory is per process) on two shapes of
data: one campaign of distinct but near-identical texts (every pair similar: the case whose
pairs grow with the square of its size) and unrelated texts (no pair similar).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import table  # noqa: E402  (bench scripts share the table printer)


def measure(n: int, dim: int, shape: str) -> dict[str, float]:
    """Group ``n`` vectors of ``shape`` ("campaign" or "unrelated") in this process."""
    import numpy as np

    from spamguard.services.campaigns import group_vectors

    rng = np.random.default_rng(0)
    if shape == "campaign":
        vectors = rng.normal(size=dim) + 0.05 * rng.normal(size=(n, dim))
    else:
        vectors = rng.normal(size=(n, dim))
    vectors = vectors.astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    groups = group_vectors(vectors)
    return {"seconds": time.perf_counter() - started, "groups": int(groups.max()) + 1,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,8000,16000,30000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--one", nargs=2, metavar=("N", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.dim, args.one[1])))
        return
    rows = []
    for shape in ("campaign", "unrelated"):
        for n in (int(x) for x in args.sizes.split(",")):
            out = subprocess.run([sys.executable, __file__, "--dim", str(args.dim), "--one",
                                  str(n), shape], check=True, capture_output=True, text=True)
            result = json.loads(out.stdout)
            rows.append([shape, str(n), str(result["groups"]), f"{result['seconds']:.1f}",
                         f"{result['peak_mb']:.0f}", f"{result['grew_mb']:.0f}"])
    print(table(["data", "distinct texts", "groups", "seconds", "process peak MB",
                 "grouping added MB"], rows))


if __name__ == "__main__":
    main()
