"""Counted nouns agree with their number; messages are sentences."""

import pytest

from spamguard.wording import counted, sentence


@pytest.mark.parametrize(("n", "noun", "plural", "expected"), [
    (0, "campaign", None, "0 campaigns"), (1, "campaign", None, "1 campaign"),
    (2, "distinct text", None, "2 distinct texts"), (1, "worker", None, "1 worker"),
    (3, "match", "matches", "3 matches"), (1, "match", "matches", "1 match"),
])
def test_counted(n, noun, plural, expected):
    assert counted(n, noun, plural) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("no user 7", "No user 7."), ("Password not changed: it is wrong.", "Password not "
                                  "changed: it is wrong."),
    ("  done. ", "Done."), ("Role not changed: role must be one of a, b", "Role not "
                             "changed: role must be one of a, b."),
])
def test_sentence(text, expected):
    assert sentence(text) == expected
