"""The documented bench command lines: a wrong --model or --data is one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("script", "option", "says"), [
    ("throughput.py", "--model", "model version folder {} does not exist (moved or deleted?)"),
    ("batch_dependence.py", "--model",
     "model version folder {} does not exist (moved or deleted?)"),
    ("crossval.py", "--data", "{}: cannot read (No such file or directory)"),
])
def test_a_wrong_path_is_one_error_line(tmp_path, script, option, says):
    missing = tmp_path / "no-such-thing"
    env = {**os.environ, "SPAMGUARD_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), option,
                             str(missing), "--quick"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {says.format(missing)}\n", result.stderr
    assert result.stdout == ""
