"""The baseline fitted in a child process while the head trains: the same model to the
bit as a fit in the process, and a fit in the process whenever the child cannot help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spamguard.ml import baseline_job
from spamguard.ml.baseline_job import fit_baseline, start_baseline
from tests.fixtures_ml import sample_data


@pytest.fixture
def parts():
    data = sample_data(4)
    weights = np.where(np.arange(len(data)) % 5 == 0, 2.5, 1.0)
    return (data.texts[:30], data.labels[:30], 7, weights[:30],  # fit_baseline's arguments
            {"val": data.texts[30:38], "test": data.texts[38:]})


@pytest.fixture
def two_cores(monkeypatch):
    """A machine where the child is used, even for these few texts."""
    monkeypatch.setattr(baseline_job, "usable_cores", lambda: 2)
    monkeypatch.setattr(baseline_job, "CHILD_FROM", 1)


def _files(model, folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    return {path.name: path.read_bytes() for path in model.save(folder)}


def test_the_childs_fit_is_the_fit_in_this_process_to_the_bit(parts, tmp_path, two_cores):
    said = []
    job = start_baseline(*parts, say=said.append)
    assert job.process is not None and job.done is None  # it really went to a child
    child = job.result(said.append)
    assert said == []  # the child's fit, not a fit here after the child failed
    here = fit_baseline(*parts)
    assert child.scores.keys() == here.scores.keys() == {"val", "test"}
    for name in here.scores:
        assert np.array_equal(child.scores[name], here.scores[name])
    assert _files(child.model, tmp_path / "child") == _files(here.model, tmp_path / "here")
    assert not job.folder.exists()  # its folder is removed once read


def test_a_child_that_fails_is_said_and_the_fit_done_here(parts, monkeypatch, two_cores):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    said = []
    job = start_baseline(*parts)
    fitted = job.result(said.append)
    assert said == ["train: note: the baseline's process failed (exit 1); fitting it here"]
    expected = fit_baseline(*parts)
    assert np.array_equal(fitted.scores["test"], expected.scores["test"])
    assert not job.folder.exists()


def test_a_child_that_cannot_start_means_a_fit_here(parts, monkeypatch, two_cores):
    def no_process(*_args, **_kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    said = []
    job = start_baseline(*parts, say=said.append)
    assert job.process is None and job.done is not None
    assert said[0].startswith("train: note: could not start the baseline's process (")
    assert job.result() is job.done


@pytest.mark.parametrize(("cores", "child_from"), [(1, 1), (2, 31)])
def test_on_one_core_or_few_texts_the_fit_is_done_here(parts, monkeypatch, cores, child_from):
    monkeypatch.setattr(baseline_job, "usable_cores", lambda: cores)
    monkeypatch.setattr(baseline_job, "CHILD_FROM", child_from)  # the parts have 30 texts
    job = start_baseline(*parts)
    assert job.process is None and job.folder is None and job.done is not None


def test_cancel_stops_the_child_and_removes_its_folder(parts, monkeypatch, two_cores,
                                                       tmp_path):
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nexec sleep 60\n")
    slow.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(slow))
    job = start_baseline(*parts)
    assert job.process.poll() is None and job.folder.exists()
    job.cancel()  # what train_model does when the head's training fails
    assert job.process.returncode == -9 and not job.folder.exists()


def test_no_room_for_the_childs_folder_means_a_fit_here(parts, monkeypatch, two_cores):
    import errno
    import tempfile

    def no_room(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", no_room)
    said = []
    job = start_baseline(*parts, say=said.append)
    assert job.process is None and job.done is not None
    assert said == ["train: note: could not start the baseline's process ([Errno 28] No "
                    "space left on device); fitting it here"]


def test_an_interrupt_while_starting_the_child_leaves_no_folder(parts, monkeypatch,
                                                                two_cores, tmp_path):
    import tempfile

    made = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(Path(real_mkdtemp(*args, dir=tmp_path, **kwargs)))
        return str(made[-1])

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM (the CLI raises a KeyboardInterrupt)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(subprocess, "Popen", interrupted)
    with pytest.raises(KeyboardInterrupt):
        start_baseline(*parts)
    assert len(made) == 1 and not made[0].exists()


def test_the_child_runs_the_spamguard_this_process_runs(tmp_path):
    """`python -m spamguard` in a checkout imports the checkout's spamguard from the current
    folder; the child, in its own folder, must not import another (installed) one."""
    import os
    import shutil

    import spamguard

    checkout = tmp_path / "checkout"
    shutil.copytree(Path(spamguard.__file__).parent, checkout / "spamguard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    job_file = checkout / "spamguard" / "ml" / "baseline_job.py"
    code = job_file.read_text(encoding="utf-8")
    marked = code.replace("for name, scores in fitted.scores.items()}",  # only this copy's
                          "for name, scores in {**fitted.scores, 'copy': [0.0]}.items()}")
    assert marked != code
    job_file.write_text(marked, encoding="utf-8")
    program = ("import sys\n"
               "from spamguard.ml import baseline_job\n"
               "assert baseline_job.__file__.startswith(sys.argv[1])\n"
               "baseline_job.usable_cores = lambda: 2\n"
               "baseline_job.CHILD_FROM = 1\n"
               "texts = ['WIN a FREE prize call now', 'see you at lunch'] * 5\n"
               "job = baseline_job.start_baseline(texts, [1, 0] * 5, 0, None, {'val': texts},\n"
               "                                  say=print)\n"
               "print(sorted(job.result(print).scores))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", program, str(checkout)], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['copy', 'val']"]


def test_what_a_successful_child_writes_to_stderr_is_shown(parts, monkeypatch, two_cores,
                                                           tmp_path, capsys):
    """scikit-learn's warnings (a ConvergenceWarning) reach the user as from a fit here."""
    python = tmp_path / "warning-python"
    python.write_text(f"#!/bin/sh\necho 'ConvergenceWarning: liblinear failed to "
                      f"converge' >&2\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    said = []
    start_baseline(*parts).result(said.append)
    assert said == [] and "ConvergenceWarning: liblinear" in capsys.readouterr().err
