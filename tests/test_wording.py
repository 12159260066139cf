"""Counted nouns agree with their number."""

import pytest

from spamguard.wording import counted


@pytest.mark.parametrize(("n", "noun", "plural", "expected"), [
    (0, "campaign", None, "0 campaigns"), (1, "campaign", None, "1 campaign"),
    (2, "distinct text", None, "2 distinct texts"), (1, "worker", None, "1 worker"),
    (3, "match", "matches", "3 matches"), (1, "match", "matches", "1 match"),
])
def test_counted(n, noun, plural, expected):
    assert counted(n, noun, plural) == expected
