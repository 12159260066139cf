"""Where the folders that ship with spamguard are: ``web/``, ``migrations/`` and ``data/``.

In a source checkout (and an editable install) they sit beside the ``spamguard/`` package,
as the project's layout has them. A wheel (``pip install .`` or ``pip install
git+https://...``) cannot put folders beside a package in site-packages, so it carries them
inside it, under ``spamguard/_shipped/`` (``pyproject.toml``, hatch's ``force-include``).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED = ("web", "migrations", "data")


def shipped_dir(name: str) -> Path:
    """Return the folder ``name`` (one of :data:`SHIPPED`): the wheel's copy inside the
    package if there is one, else the one beside the package.

    The wheel's copy wins: in site-packages a folder called ``data`` or ``web`` beside the
    package may belong to some other distribution. When neither exists, the source layout's
    path is returned, so the caller's own "not found" error names a real place to look.
    """
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not a shipped folder ({', '.join(SHIPPED)})")
    inside = PACKAGE_DIR / "_shipped" / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name
