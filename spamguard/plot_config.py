"""A writable place for matplotlib's configuration and font cache.

The report's plots (training) and the dashboard's chart (admin UI) use matplotlib. Under an
account without a writable home (a system user for the service or cron: ``/nonexistent``),
matplotlib warned twice in every process that it made a temporary folder, and rebuilt its
font list there each time. Such a process now points ``MPLCONFIGDIR`` at the instance's
cache instead, where the font list is built once.
"""

from __future__ import annotations

import os
from pathlib import Path


def _writable(path: Path) -> bool:
    """Whether ``path`` is, or could be made as, a writable folder."""
    for folder in (path, *path.parents):
        if folder.exists():
            return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    return False


def _defaults() -> list[Path]:
    """matplotlib's own config and cache folders (XDG on Linux, else under the home)."""
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry
        return []
    config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    cache = os.environ.get("XDG_CACHE_HOME") or str(home / ".cache")
    return [Path(config) / "matplotlib", Path(cache) / "matplotlib"]


def use_writable_config(cache_dir: Path) -> None:
    """Set ``MPLCONFIGDIR`` to ``cache_dir/matplotlib`` when it is unset and matplotlib's
    own folders cannot be written (call before matplotlib is imported)."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    defaults = _defaults()
    if defaults and all(_writable(path) for path in defaults):
        return
    target = Path(cache_dir) / "matplotlib"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # matplotlib then makes its temporary folder, and says so, as before
    os.environ["MPLCONFIGDIR"] = str(target)
