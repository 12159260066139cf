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


@pytest.mark.parametrize("variant, word_digits, char_digits", [
    ("digits0", False, False), ("digits0-word", False, True), ("char16", True, True)])
def test_digit_variants_choose_which_vectorizer_sees_digits(variant, word_digits, char_digits):
    model = crossval.LexicalModel(crossval.lexical_spec(variant)).fit(TEXTS, LABELS)
    word, char = (set(v.vocabulary_) for v in model.vectorizers_)
    assert ("08712460324" in word) is word_digits
    assert ("00000000000" in word) is not word_digits
    assert any(any(c in "123456789" for c in gram) for gram in char) is char_digits
    assert model.decision_function(["Call 07000111222 now"]).shape == (1,)


@pytest.mark.parametrize("variant, word_cased, char_cased", [
    ("cased-char", False, True), ("cased", True, True), ("char16", False, False)])
def test_case_variants_choose_which_vectorizer_keeps_capitals(variant, word_cased, char_cased):
    model = crossval.LexicalModel(crossval.lexical_spec(variant)).fit(TEXTS, LABELS)
    word, char = (set(v.vocabulary_) for v in model.vectorizers_)
    assert ("WIN" in word) is word_cased
    assert ("win" in word) is not word_cased
    assert any(any(c.isupper() for c in gram) for gram in char) is char_cased
