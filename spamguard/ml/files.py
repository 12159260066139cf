"""Crash-safe files for the model core: fsync before a rename, and folder locks.

Model versions, cached embeddings and exported ONNX graphs are all written to a
temporary name and renamed into place, so no reader sees half a file. A rename alone
does not survive a power cut, though: the file's data may not be on disk yet, and what
is left is a zero-length or truncated file under the final name. Syncing the file before
the rename, and the folder after it, closes that gap.

A file written through a temporary name also needs its mode set: ``tempfile.mkstemp`` and
safetensors' ``save_file`` create it 0600, whatever the umask. Retraining often runs as
another user than the web service (a root crontab, systemd ``User=``), which could then not
read the version it promoted. :func:`replace_durably` and :func:`give_usual_mode` give a
published file the mode ``open()`` would have: ``0o666 & ~umask``.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it.

    ``os.umask`` can only be read by setting it, and for that instant any other thread
    creating a file gets the temporary value. Linux (4.7 and later) shows it in
    ``/proc/self/status``; only where that is missing is it set and restored, under a lock
    (which keeps this module's own callers apart, not other code's)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o077)  # the strictest guess for the instant it is set
        os.umask(umask)
    return umask


def usual_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def give_usual_mode(path: str | Path) -> None:
    """Set ``path`` to :func:`usual_mode` (for files created 0600 by mkstemp or safetensors)."""
    os.chmod(path, usual_mode())


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(exc: BaseException) -> OSError | None:
    """``exc`` as an OSError: itself, or safetensors' SafetensorError of a failed write
    ("Error while serializing: I/O error: No space left on device (os error 28)"), which is
    not an OSError; None for anything else."""
    if isinstance(exc, OSError):
        return exc
    match = _OS_ERROR.search(str(exc))
    if match is None or type(exc).__name__ != "SafetensorError":
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


def sync_file(path: str | Path) -> None:
    """fsync one file's data to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def sync_folder(folder: Path, *, files: bool = True) -> None:
    """fsync the files directly in ``folder`` (unless ``files`` is False), then the folder
    itself (POSIX; skipped where a directory cannot be opened), so a rename into or out of
    it is on disk too."""
    for path in folder.iterdir() if files else ():
        if path.is_file():
            sync_file(path)
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def temp_beside(path: Path) -> str:
    """A new empty file (mode 0600) in ``path``'s folder, named after it, to write and then
    :func:`replace_durably` onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def replace_durably(tmp: str | Path, final: Path) -> None:
    """Rename a finished ``tmp`` file to ``final`` so that, after a crash, ``final`` is
    either the old file or the whole new one; ``final`` gets :func:`usual_mode`."""
    give_usual_mode(tmp)
    sync_file(tmp)
    os.replace(tmp, final)
    sync_folder(final.parent, files=False)


@contextmanager
def folder_lock(folder: Path, name: str = ".lock", *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder/name`` (processes on one host).

    Yields True when the lock is held; with ``wait=False`` it yields False at once
    instead of waiting for another holder (the caller then skips its work).
    """
    with open(folder / name, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
