"""Fit the TF-IDF + SVM baseline in a child process while the head trains.

The child is ``python -c CHILD_CODE ROOT FOLDER`` (:func:`main`; ``python -m
spamguard.ml.baseline_job FOLDER`` does the same with whatever spamguard is on the path).

The head trains on one torch thread (:func:`spamguard.ml.head_fit.one_thread`), so on two
cores the other one is idle for those 4 s; the baseline's fit and scoring (about 1.2 s,
pure-Python n-gram counting) run there instead. A thread cannot do it: the baseline holds
the GIL so much that the head, which lets go of it in every torch call, slowed from 3.8 to
5.5 s. The child gets the texts and labels in JSON and hands back the fitted model in its
usual files (``lexical.json``, ``lexical.safetensors``: :meth:`TfidfSvmBaseline.save`)
and the scores in safetensors: nothing is unpickled. The result is the model an in-process
fit gives, to the bit (``tests/test_baseline_job.py``).

On one core, for a small training set, or when the child cannot be started or fails, the
baseline is fitted in this process as before (a failure is said: :meth:`BaselineJob.result`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spamguard.child_processes import dies_with_parent
from spamguard.cpus import usable_cores

INPUT, SCORES = "input.json", "scores.safetensors"
# Fewest training messages for which a child pays: it first spends about 1.3 s starting
# Python and importing scikit-learn, which only a long enough head training hides (the
# default's 3,145 messages: 3.6 s); on a few hundred an in-process fit takes 0.1 s.
CHILD_FROM = 2000
# The child runs the spamguard this process runs: a checkout's, found on the current folder
# by `python -m spamguard` (or on a relative PYTHONPATH), is not on the child's path (its
# current folder is its temporary one), where an installed copy would fit another baseline.
CHILD_CODE = ("import sys\n"
              "root = sys.argv[1]\n"
              "if root not in sys.path:\n"
              "    sys.path.insert(0, root)\n"
              "from spamguard.ml.baseline_job import main\n"
              "main(sys.argv[2:])\n")


@dataclass
class FittedBaseline:
    """The fitted TF-IDF + SVM model and its scores of each part it was asked to score."""

    model: object  # TfidfSvmBaseline
    scores: dict[str, np.ndarray]


def fit_baseline(texts: Sequence[str], labels: Sequence[int], seed: int,
                 sample_weight: Sequence[float] | None,
                 to_score: dict[str, Sequence[str]]) -> FittedBaseline:
    """Fit the baseline on ``texts`` and score each of ``to_score``'s parts (in this process)."""
    from spamguard.ml.baseline import TfidfSvmBaseline

    model = TfidfSvmBaseline(random_state=seed).fit(texts, labels, sample_weight=sample_weight)
    return FittedBaseline(model, {name: model.decision_function(part)
                                  for name, part in to_score.items()})


@dataclass
class BaselineJob:
    """A baseline fit under way: in a child process, or done already in this one."""

    arguments: tuple
    folder: Path | None = None
    process: subprocess.Popen | None = None
    done: FittedBaseline | None = None

    def result(self, say: Callable[[str], None] = lambda _line: None) -> FittedBaseline:
        """Wait for the fit; if the child failed, fit here (and say why)."""
        if self.done is not None:
            return self.done
        try:
            _, problem = self.process.communicate()
            if self.process.returncode == 0:
                self.done = _read_result(self.folder)
                if problem:  # scikit-learn's warnings, as an in-process fit would show them
                    sys.stderr.write(problem.decode("utf-8", "replace"))
                return self.done
            lines = problem.decode("utf-8", "replace").strip().splitlines()
            say("train: note: the baseline's process failed (" + (lines[-1] if lines else
                f"exit {self.process.returncode}") + "); fitting it here")
        finally:
            self.cancel()
        self.done = fit_baseline(*self.arguments)
        return self.done

    def cancel(self) -> None:
        """Stop the child (if running) and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_baseline(texts: Sequence[str], labels: Sequence[int], seed: int,
                   sample_weight: Sequence[float] | None, to_score: dict[str, Sequence[str]],
                   *, say: Callable[[str], None] = lambda _line: None) -> BaselineJob:
    """Start fitting the baseline in a child process when a second core is free for it
    and there are :data:`CHILD_FROM` texts or more; else fit it now.
    :meth:`BaselineJob.result` gives the fit either way."""
    arguments = (list(texts), [int(v) for v in labels], int(seed),
                 None if sample_weight is None else [float(w) for w in sample_weight],
                 {name: list(part) for name, part in to_score.items()})
    if usable_cores() < 2 or len(arguments[0]) < CHILD_FROM:
        return BaselineJob(arguments, done=fit_baseline(*arguments))
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="spamguard-baseline-"))
        (folder / INPUT).write_text(json.dumps(dict(zip(
            ("texts", "labels", "seed", "sample_weight", "to_score"), arguments,
            strict=True))), encoding="utf-8")
        process = subprocess.Popen([sys.executable, "-c", CHILD_CODE, package_root(),
                                    str(folder)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   cwd=folder,  # `-c` puts the cwd first on sys.path
                                   preexec_fn=dies_with_parent())
    except BaseException as exc:  # no room for the folder or the input, no process to be had
        if folder is not None:  # (or Ctrl-C, SIGTERM: the folder must not stay behind)
            shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        say(f"train: note: could not start the baseline's process ({exc}); fitting it here")
        return BaselineJob(arguments, done=fit_baseline(*arguments))
    return BaselineJob(arguments, folder, process)


def package_root() -> str:
    """The folder this process imported spamguard from (as on sys.path: not resolved)."""
    import spamguard

    return os.path.dirname(os.path.dirname(os.path.abspath(spamguard.__file__)))


def _read_result(folder: Path) -> FittedBaseline:
    from safetensors.numpy import load_file

    from spamguard.ml.baseline import TfidfSvmBaseline

    return FittedBaseline(TfidfSvmBaseline.load(folder), load_file(str(folder / SCORES)))


def main(argv: Sequence[str] | None = None) -> None:
    """The child: read the folder's input, fit, write the model and the scores there."""
    from safetensors.numpy import save_file

    folder = Path((sys.argv[1:] if argv is None else argv)[0])
    given = json.loads((folder / INPUT).read_text(encoding="utf-8"))
    fitted = fit_baseline(given["texts"], given["labels"], given["seed"],
                          given["sample_weight"], given["to_score"])
    fitted.model.save(folder)
    save_file({name: np.ascontiguousarray(scores, dtype=np.float64)
               for name, scores in fitted.scores.items()}, str(folder / SCORES))


if __name__ == "__main__":
    main()
