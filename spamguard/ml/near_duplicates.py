"""Group near-exact copies of a message, so a split keeps each group on one side.

Deduplication (:func:`spamguard.ml.data.dedupe`) keeps one message per normalised text,
but one campaign's copies also differ by a space ("150ppm" / "150 ppm"), a dropped letter
("ree entry" / "Free entry"), or a number written out: an audit found 24 of the 79 spam
of the test split with a copy at least 90% alike in training or validation, so the test
score partly measured memory. Here two messages are near-exact copies when their compact
keys (the normalised text without spaces) are equal, or at least :data:`RATIO` alike by
:class:`difflib.SequenceMatcher`; groups are the connected pairs.

Comparing every pair with difflib would take minutes, so only pairs whose character
trigrams have a cosine of at least :data:`CANDIDATE_COSINE` are compared (on the shipped
data every pair at :data:`RATIO` had a cosine of 0.6 or more).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

import numpy as np

from spamguard.errors import DataError
from spamguard.ml.data import LabelledData, Split, always_train_count, normalise, split

RATIO = 0.9
CANDIDATE_COSINE = 0.5
CHUNK = 1000  # rows of the cosine matrix made at once (CHUNK x messages floats)


def compact_key(text: str) -> str:
    """The normalised text without spaces: "150 ppm" and "150ppm" share it."""
    return normalise(text).replace(" ", "")


def near_duplicate_groups(texts: Sequence[str]) -> np.ndarray:
    """One group id per text (0, 1, ... in order of first member); near-exact copies
    (see the module's docstring) share one. A text without a letter or digit is alone."""
    keys = [compact_key(text) for text in texts]
    forest = _Forest(len(keys))
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key:
            forest.join(first.setdefault(key, i), i)
    for a, b in _candidate_pairs(keys):
        # difflib is the slow part: a pair already joined through others needs none (one
        # campaign's hundreds of copies are compared about once each, not pairwise)
        if not forest.joined(a, b) and _alike(keys[a], keys[b]):
            forest.join(a, b)
    return forest.numbered()


def _candidate_pairs(keys: list[str]) -> Iterator[tuple[int, int]]:
    """Pairs (a < b) of different keys whose character trigrams have a cosine of at least
    :data:`CANDIDATE_COSINE`, a block of rows at a time against the rows after them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if sum(len(key) >= 3 for key in keys) < 2:
        return
    vectors = TfidfVectorizer(analyzer="char", ngram_range=(3, 3), lowercase=False,
                              dtype=np.float32).fit_transform(keys)
    for start in range(0, len(keys), CHUNK):
        cosine = (vectors[start:start + CHUNK] @ vectors[start:].T).toarray()
        rows, cols = np.nonzero(cosine >= CANDIDATE_COSINE)
        for a, b in zip((rows + start).tolist(), (cols + start).tolist(), strict=True):
            if b > a and keys[a] != keys[b]:
                yield a, b


def _alike(a: str, b: str) -> bool:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.real_quick_ratio() >= RATIO and matcher.ratio() >= RATIO


class _Forest:
    """Union-find over ``count`` items; each set's root is its smallest member."""

    def __init__(self, count: int):
        self.parent = list(range(count))

    def root(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def joined(self, a: int, b: int) -> bool:
        return self.root(a) == self.root(b)

    def join(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def numbered(self) -> np.ndarray:
        """Each item's set, numbered 0, 1, ... in order of the sets' first members."""
        number: dict[int, int] = {}
        return np.array([number.setdefault(self.root(i), len(number))
                         for i in range(len(self.parent))], dtype=np.int64)


def split_keeping_copies(data: LabelledData, *, seed: int, always_train: np.ndarray | None,
                         grouped: bool, with_test: bool = True
                         ) -> tuple[Split, np.ndarray | None]:
    """:func:`~spamguard.ml.data.split` of deduplicated ``data``, with its near-exact copies
    kept on one side when ``grouped`` (training's rule since December 2026); the groups
    too (None when not grouped).

    When the groups are too few to put both classes in validation and test (one campaign
    as all the spam), the messages are split one by one, as before, and the groups are
    None: the caller says so.
    """
    if grouped:
        groups = split_groups(data.texts, always_train
                              if always_train_count(data, always_train) else None)
        try:
            return split(data, seed=seed, always_train=always_train, groups=groups,
                         with_test=with_test), groups
        except DataError:
            pass
    return split(data, seed=seed, always_train=always_train, with_test=with_test), None


def split_groups(texts: Sequence[str], always_train: np.ndarray | None = None) -> np.ndarray:
    """Group ids for :func:`spamguard.ml.data.split`: near-exact copies share one among the
    messages it splits; each ``always_train`` one (training whatever the split) is alone,
    and is not compared (a retraining's thousands of reviews cost nothing here)."""
    if always_train is None or not np.any(always_train):
        return near_duplicate_groups(texts)
    marked = np.asarray(always_train, dtype=bool)
    others = np.flatnonzero(~marked)
    groups = np.empty(len(texts), dtype=np.int64)
    groups[others] = near_duplicate_groups([texts[i] for i in others])
    groups[marked] = len(others) + np.arange(int(marked.sum()))
    return groups


def group_counts(groups: np.ndarray) -> dict[str, int]:
    """How many groups have more than one message, and how many messages they hold."""
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, dtype=np.int64)
    shared = sizes[sizes > 1]
    return {"groups": int(len(shared)), "messages": int(shared.sum())}


def near_note(counts: dict[str, float]) -> str:
    """How a report states the groups: "201 messages in 82 groups (90% alike or more)"."""
    return (f"{counts['messages']} messages in {counts['groups']} groups "
            f"({counts['ratio']:.0%} alike or more)")
