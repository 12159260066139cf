"""Simple non-text signals that a sentence embedding blurs: links, numbers, money, shouting.

Concatenated with the backbone's embedding, they let the head see what spam looks like on
the surface. All values are scaled to roughly [0, 1].
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_URL = re.compile(r"(https?://|www\.|\b[\w-]+\.(com|net|org|co\.uk|biz|info|ly)\b)", re.I)
_PHONE = re.compile(r"(?<!\d)(\+?\d[\d\s-]{8,}\d)(?!\d)")
_SHORTCODE = re.compile(r"(?<!\d)\d{5}(?!\d)")
_CURRENCY = re.compile(r"[£$€¥₹]|\b(usd|gbp|eur|pounds?|dollars?)\b|\d+p\b", re.I)

FEATURE_NAMES = (
    "has_url",
    "has_phone",
    "has_shortcode",
    "has_currency",
    "digit_ratio",
    "upper_ratio",
    "log_length",
    "exclamations",
)


def message_features(texts: Sequence[str]) -> np.ndarray:
    """Return a float32 array (len(texts), len(FEATURE_NAMES))."""
    return np.asarray([_one(t) for t in texts], dtype=np.float32).reshape(
        len(texts), len(FEATURE_NAMES))


def _one(text: str) -> list[float]:
    n = max(len(text), 1)
    letters = [c for c in text if c.isalpha()]
    return [
        float(bool(_URL.search(text))),
        float(bool(_PHONE.search(text))),
        float(bool(_SHORTCODE.search(text))),
        float(bool(_CURRENCY.search(text))),
        sum(c.isdigit() for c in text) / n,
        sum(c.isupper() for c in letters) / max(len(letters), 1),
        math.log1p(len(text)) / math.log1p(1600),
        min(text.count("!"), 5) / 5,
    ]
