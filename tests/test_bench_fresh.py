"""bench/fresh_sms.py reads its data file strictly and deals each category into halves."""

from collections import Counter

import pytest

from spamguard.errors import DataError
from tests.bench_modules import load_bench

fresh = load_bench("fresh_sms")


@pytest.mark.parametrize("path", [fresh.FRESH, fresh.HOLDOUT], ids=["dev", "holdout"])
def test_the_shipped_fresh_sets_read_and_each_category_splits_in_half(path):
    messages = fresh.read_fresh(path)
    assert len(messages) == 120 and sum(m.label for m in messages) == 60
    assert len({m.text for m in messages}) == 120
    folds = fresh.two_folds(messages, seed=0)
    for category in {m.category for m in messages}:
        dealt = Counter(f for f, m in zip(folds, messages, strict=True)
                        if m.category == category)
        assert abs(dealt[0] - dealt[1]) <= 1, category
    assert fresh.two_folds(messages, seed=0) == folds
    assert fresh.two_folds(messages, seed=1) != folds


def test_the_holdout_set_shares_no_text_with_the_dev_set_and_has_its_categories():
    dev, holdout = fresh.read_fresh(fresh.FRESH), fresh.read_fresh(fresh.HOLDOUT)
    assert not {m.text for m in dev} & {m.text for m in holdout}
    assert (Counter((m.label, m.category) for m in dev)
            == Counter((m.label, m.category) for m in holdout))


@pytest.mark.parametrize("content, says", [
    ("text\tlabel\n", "line 1: expected the header label, category, text"),
    ("label\tcategory\ttext\nspam\tparcel\n", "line 2: expected spam|ham"),
    ("label\tcategory\ttext\njunk\tparcel\thello\n", "line 2: expected spam|ham"),
    ("label\tcategory\ttext\nham\tpersonal\t  \n", "line 2: expected spam|ham"),
])
def test_a_bad_fresh_file_names_its_line(tmp_path, content, says):
    path = tmp_path / "fresh.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=says):
        fresh.read_fresh(path)
