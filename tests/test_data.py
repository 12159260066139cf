"""Loading, validation, normalisation, deduplication and splitting of labelled data."""

from pathlib import Path

import numpy as np
import pytest

from spamguard.errors import DataError
from spamguard.ml.data import (
    data_hash,
    dedupe,
    load_labelled,
    load_texts,
    normalise,
    split,
)

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "sms_spam_collection.tsv"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_shipped_data_loads_with_expected_counts():
    data = load_labelled(SHIPPED)
    assert data.counts() == {"total": 4862, "ham": 4220, "spam": 642}


@pytest.mark.parametrize("name, content", [
    ("a.tsv", "ham\thello there\nspam\tWIN cash now\n"),
    ("a.csv", "label,text\nham,hello there\nspam,\"WIN cash, now\"\n"),
    ("a.csv", "text,label\nhello there,0\n\"WIN cash, now\",1\n"),
    ("a.txt", "label\ttext\nham\thello there\nspam\tWIN cash now\n"),
])
def test_load_formats(tmp_path, name, content):
    data = load_labelled(write(tmp_path, name, content))
    assert list(data.labels) == [0, 1]
    assert data.texts[0] == "hello there"


def test_tab_inside_unquoted_message_is_kept(tmp_path):
    data = load_labelled(write(tmp_path, "a.tsv", "ham\tone\ttwo\n"))
    assert data.texts == ["one\ttwo"]


@pytest.mark.parametrize("name, content, expected", [
    ("bad.tsv", "ham\thi\nmaybe\tsomething\n", "bad.tsv:2: unknown label 'maybe'"),
    ("bad.tsv", "ham\thi\nspam\t   \n", "bad.tsv:2: empty text"),
    ("bad.tsv", "ham\thi\nspam\n", "bad.tsv:2: expected a label and a text column"),
    ("bad.csv", "label,body2\nham,hi\n", "bad.csv:1: header has no text column"),
    ("bad.tsv", b"ham\thi\nspam\t\xff\xfe bad\n", "bad.tsv:2: not valid UTF-8"),
    ("bad.tsv", "", "no messages found"),
])
def test_bad_files_name_file_line_and_problem(tmp_path, name, content, expected):
    with pytest.raises(DataError, match=expected.replace("(", r"\(")):
        load_labelled(write(tmp_path, name, content))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_labelled(tmp_path / "nope.tsv")


def test_load_texts_plain_and_table(tmp_path):
    assert load_texts(write(tmp_path, "in.txt", "hello\n\nWIN now, call\n")) == [
        "hello", "WIN now, call"]
    assert load_texts(write(tmp_path, "in.csv", "id,text\n1,\"hi, you\"\n2,bye\n")) == [
        "hi, you", "bye"]
    with pytest.raises(DataError, match="'text' column"):
        load_texts(write(tmp_path, "in.tsv", "id\tbody\n1\thi\n"))


def test_normalise_groups_near_duplicates():
    assert normalise("WIN £100 now!!  Call 0800") == normalise("win £250 now call 0900")
    assert normalise("Hello there") != normalise("Hello where")


def test_dedupe_counts_and_conflicts():
    from spamguard.ml.data import LabelledData

    data = LabelledData(["Win 100 now!", "win 200 now", "hello", "HELLO!", "bye"],
                        np.array([1, 1, 0, 1, 0]))
    unique, stats = dedupe(data)
    assert (stats.input, stats.unique, stats.removed, stats.label_conflicts) == (5, 3, 2, 1)
    assert dict(zip(unique.texts, unique.labels, strict=True)) == {
        "Win 100 now!": 1, "hello": 1, "bye": 0}


def test_split_is_stratified_disjoint_and_seeded():
    data, _ = dedupe(load_labelled(SHIPPED))
    parts = split(data)
    sizes = [len(parts.train), len(parts.val), len(parts.test)]
    assert sum(sizes) == len(data) and abs(sizes[1] - sizes[2]) <= 1
    keys = [{normalise(t) for t in p.texts} for p in (parts.train, parts.val, parts.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    for part in (parts.train, parts.val, parts.test):
        assert 0.10 < part.labels.mean() < 0.15
    assert split(data).test.texts == parts.test.texts


def test_data_hash_ignores_order_but_not_labels():
    from spamguard.ml.data import LabelledData

    a = LabelledData(["x", "y"], np.array([0, 1]))
    b = LabelledData(["y", "x"], np.array([1, 0]))
    c = LabelledData(["x", "y"], np.array([1, 1]))
    assert data_hash(a) == data_hash(b) != data_hash(c)
