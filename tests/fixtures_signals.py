"""Run ``spamguard`` as its own process, hold it at a known point, and signal it: what
SIGTERM (``systemctl stop``, ``timeout``) and SIGKILL leave behind is only seen that way.

No fixed sleeps: the command is held by a ``hook`` (Python run before the command, which
patches a step to touch a marker file and wait), and the test waits for the marker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATIENCE = 120.0  # seconds; only reached when something is wrong


def hold_at(module: str, name: str, marker: Path) -> str:
    """A hook making ``module.name`` touch ``marker`` and then wait (until signalled)."""
    return (f"import time, pathlib, {module} as held\n"
            f"def holding(*args, **kwargs):\n"
            f"    pathlib.Path({str(marker)!r}).touch()\n"
            f"    time.sleep({PATIENCE})\n"
            f"    raise SystemExit('held too long')\n"
            f"held.{name} = holding\n")


def start(args: list[str], *, env: dict[str, str], hook: str = "") -> subprocess.Popen:
    """``spamguard ARGS`` through :func:`spamguard.cli.main` (as the installed command and
    ``python -m spamguard`` run it), after ``hook``."""
    code = (f"{hook}\nimport sys\nfrom spamguard.cli import main\n"
            f"sys.argv = ['spamguard', *{args!r}]\nmain()\n")
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def wait_for(path: Path, process: subprocess.Popen) -> None:
    """Wait until ``path`` exists; fail (with the command's output) if the command ends
    first or it takes far too long."""
    deadline = time.monotonic() + PATIENCE
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"ended ({process.returncode}) before {path}: {out}{err}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
    """Send ``signum`` and return (exit status, stdout, stderr)."""
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no one reaped yet counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def gone(pid: int) -> bool:
    """Wait (a while at most) for ``pid`` to end; whether it did."""
    deadline = time.monotonic() + 30
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # never leave it behind the test
            return False
        time.sleep(0.02)
    return True
