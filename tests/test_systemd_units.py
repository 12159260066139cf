"""The systemd units the docs give (docs/service.md, docs/retraining.md): systemd accepts
them, and each ExecStart is a spamguard command line this release understands."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from spamguard.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = "/srv/spamguard/.venv/bin/spamguard"  # where the docs install it
UNITS = {  # unit file name -> the doc that gives it
    "spamguard.service": "docs/service.md",
    "spamguard-retrain.service": "docs/retraining.md",
    "spamguard-retrain.timer": "docs/retraining.md",
}


def unit_text(name: str) -> str:
    """The ```ini block that follows the first mention of /etc/systemd/system/NAME."""
    doc = (ROOT / UNITS[name]).read_text(encoding="utf-8")
    start = doc.index(f"/etc/systemd/system/{name}")
    block = re.search(r"```ini\n(.*?)```", doc[start:], re.DOTALL)
    assert block, f"no ini block after {name} in {UNITS[name]}"
    return block.group(1)


def exec_lines(text: str) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in text.splitlines()
            if line.startswith("ExecStart=")]


@pytest.mark.parametrize("name", [n for n in UNITS if n.endswith(".service")])
def test_each_exec_start_is_a_command_this_release_parses(name):
    cli = build_cli()
    lines = exec_lines(unit_text(name))
    assert lines
    for argv in lines:
        assert argv[0] == INSTALLED
        command = cli.get_command(click.Context(cli), argv[1])
        rest = argv[2:]
        while isinstance(command, click.Group):  # "models prune ..."
            command, rest = command.commands[rest[0]], rest[1:]
        with command.make_context(argv[1], list(rest)) as context:  # raises on a bad option
            assert context.params


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path):
    spamguard = Path(sys.executable).with_name("spamguard")
    assert spamguard.is_file()
    for name in UNITS:
        text = unit_text(name).replace(INSTALLED, str(spamguard))
        (tmp_path / name).write_text(text, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
                          capture_output=True, text=True, timeout=60)
    # Lines about units of the machine itself (not ours) are not this test's business.
    ours = [line for line in (done.stdout + done.stderr).splitlines()
            if any(n in line for n in UNITS)]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr
