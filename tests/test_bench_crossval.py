"""bench/crossval.py's lexical variants read the text they say they read."""

import numpy as np
import pytest

from tests.bench_modules import load_bench

crossval = load_bench("crossval")

TEXTS = ["Call 08712460324 now to claim", "see you at 7", "Call 09061701461 for your prize",
         "ok thanks", "WIN cash, text 80888", "running late, 10 mins"]
LABELS = np.array([1, 0, 1, 0, 1, 0])


def test_zero_digits_keeps_a_number_shape_and_lower_cases():
    assert crossval.zero_digits("Call 0871-246 NOW") == "call 0000-000 now"


def has_digit(gram):
    return any(c in "123456789" for c in gram)


def has_capital(gram):
    return any(c.isupper() for c in gram)


# variant, a word its word vectorizer keeps, one it must not have, a test on char n-grams and
# whether some char n-gram passes it
VARIANTS = [
    ("digits0", "00000000000", "08712460324", has_digit, False),
    ("digits0-word", "00000000000", "08712460324", has_digit, True),
    ("char16", "08712460324", "00000000000", has_digit, True),
    ("cased-char", "win", "WIN", has_capital, True),
    ("cased", "WIN", "win", has_capital, True),
    ("char16", "win", "WIN", has_capital, False),
]


@pytest.mark.parametrize("variant, word_in, word_out, char_test, char_found", VARIANTS)
def test_lexical_variants_choose_what_each_vectorizer_reads(variant, word_in, word_out,
                                                            char_test, char_found):
    model = crossval.LexicalModel(crossval.lexical_spec(variant)).fit(TEXTS, LABELS)
    word, char = (set(v.vocabulary_) for v in model.vectorizers_)
    assert word_in in word
    assert word_out not in word
    assert any(char_test(gram) for gram in char) is char_found
    assert model.decision_function(["Call 07000111222 now"]).shape == (1,)
