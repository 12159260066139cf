"""Small wording helpers shared by the CLI and the admin UI."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in agreement: "1 campaign", "2 campaigns", "0 campaigns"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
