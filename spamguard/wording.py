"""Small wording helpers shared by the CLI and the admin UI."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in agreement: "1 campaign", "2 campaigns", "0 campaigns"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def megabytes(size: int) -> str:
    """A size in bytes as the commands and pages that free disk space say it: "5.2 MB"."""
    return f"{size / 1e6:.1f} MB"


def sentence(text: str) -> str:
    """``text`` as one sentence, as the admin UI's messages are: its first letter
    capitalised and one full stop at the end ("no user 7" -> "No user 7.", and a text that
    already ends with a full stop does not get a second)."""
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "."
