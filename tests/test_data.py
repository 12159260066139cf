"""Loading, validation, normalisation, deduplication and splitting of labelled data."""

import re
from pathlib import Path

import numpy as np
import pytest

from spamguard.errors import DataError
from spamguard.ml.data import (
    LabelledData,
    check_trainable,
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
    ("all.csv", "label,text\nham,hi\n,not labelled\n",  # as `export --all` writes one
     "all.csv:3: unknown label '' (expected ham/spam or 0/1; a file from `spamguard export "
     "--all` has rows nobody labelled"),
    ("bad.tsv", "ham\thi\nspam\t   \n", "bad.tsv:2: empty text"),
    ("bad.tsv", "ham\thi\nspam\n", "bad.tsv:2: expected a label and a text column"),
    ("bad.csv", "label,body2\nham,hi\n", "bad.csv:1: header has no text column"),
    ("nolabel.csv", "id,text\n1,hi\n", "(found: id, text; name it category or class or "
                                         "is_spam or label)"),
    ("bad.tsv", b"ham\thi\nspam\t\xff\xfe bad\n", "bad.tsv:2: not valid UTF-8"),
    ("bad.tsv", "", "no messages found"),
])
def test_bad_files_name_file_line_and_problem(tmp_path, name, content, expected):
    with pytest.raises(DataError, match=re.escape(expected)):
        load_labelled(write(tmp_path, name, content))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_labelled(tmp_path / "nope.tsv")


def test_load_texts_plain_and_table(tmp_path):
    assert load_texts(write(tmp_path, "in.txt", "hello\n\nWIN now, call\n")) == [
        "hello", "WIN now, call"]
    assert load_texts(write(tmp_path, "in.csv", "id,text\n1,\"hi, you\"\n2,bye\n")) == [
        "hi, you", "bye"]
    # From an audit: a `Label,Message` file trained but could not be classified.
    assert load_texts(write(tmp_path, "in.tsv", "id\tBody\n1\thi\n")) == ["hi"]
    assert load_texts(write(tmp_path, "lm.csv", "Label,Message\nham,hi\n")) == ["hi"]
    # The column training reads: "text" before message, body and sms, wherever it stands.
    assert load_texts(write(tmp_path, "both.csv", "message,text\nyes,no\n")) == ["no"]
    # Piped in (no suffix), a `Label,Message` header is a table too, not three messages.
    assert load_texts(write(tmp_path, "piped", "Label,Message\nham,hi\nspam,WIN\n")) == [
        "hi", "WIN"]
    with pytest.raises(DataError, match="needs a header with a text column .named body or "
                                        "message or sms or text.*spamguard report --data"):
        load_texts(write(tmp_path, "in2.tsv", "ham\thi\n"))


def test_plain_text_with_commas_is_not_taken_for_a_table(tmp_path):
    lines = ["Text, me when you are free", "sure, see you at 6, ok",
             "WIN cash now, call 09061701461"]
    assert load_texts(write(tmp_path, "plain.txt", "\n".join(lines) + "\n")) == lines
    # a real header still makes a table without a .csv suffix (e.g. on standard input)
    assert load_texts(write(tmp_path, "stdin", "id,text\n1,hi\n")) == ["hi"]
    assert load_texts(write(tmp_path, "stdin2", "id\tText\n1\thi\n")) == ["hi"]
    assert load_texts(write(tmp_path, "pandas", ",text\n0,hello there\n")) == ["hello there"]
    # a header name with a space needs the format said outright
    spaced = write(tmp_path, "spaced", "message id,text\n1,hello\n")
    assert load_texts(spaced) == ["message id,text", "1,hello"]
    assert load_texts(spaced, input_format="csv") == ["hello"]
    assert load_texts(write(tmp_path, "t.csv", "a,b\n"), input_format="text") == ["a,b"]


def test_unquoted_delimiter_in_the_last_column_is_put_back(tmp_path):
    data = load_labelled(write(tmp_path, "a.csv", "spam,WIN cash, call 0800 now\n"))
    assert data.texts == ["WIN cash, call 0800 now"]
    data = load_labelled(write(tmp_path, "b.csv", "label,text\nspam,WIN cash, call now\n"))
    assert data.texts == ["WIN cash, call now"]
    data = load_labelled(write(tmp_path, "c.tsv", "label\ttext\nspam\tWIN\tnow\n"))
    assert data.texts == ["WIN\tnow"]
    assert load_texts(write(tmp_path, "in.csv", "id,text\n1,hi, you\n")) == ["hi, you"]
    # a trailing delimiter is not part of the message
    assert load_texts(write(tmp_path, "t.csv", "id,text\n1,hi,\n2,yo,,\n")) == ["hi", "yo"]
    assert load_labelled(write(tmp_path, "t2.csv", "label,text\nspam,win now,\n")
                         ).texts == ["win now"]


def test_unquoted_delimiter_before_the_last_column_is_an_error(tmp_path):
    with pytest.raises(DataError, match="a.csv:2: 3 fields where 2 were expected"):
        load_labelled(write(tmp_path, "a.csv", "text,label\nhi, you,0\n"))
    with pytest.raises(DataError, match="in.csv:2: 3 fields where 2 were expected"):
        load_texts(write(tmp_path, "in.csv", "text,id\nhi, you,1\n"))


def test_huge_field_and_unreadable_input_are_data_errors(tmp_path):
    big = "x" * 200_000
    assert load_texts(write(tmp_path, "big.csv", f"text\n{big}\n")) == [big]
    assert load_labelled(write(tmp_path, "big.tsv", f"ham\t{big}\n")).texts == [big]
    with pytest.raises(DataError, match="cannot read"):
        load_texts(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="cannot read"):
        load_texts(tmp_path)  # a directory


def test_too_small_to_split_is_a_data_error(monkeypatch):
    import spamguard.ml.data as data_module
    from spamguard.ml.data import LabelledData

    five = LabelledData([f"message {i}" for i in range(10)], np.array([0] * 5 + [1] * 5))
    with pytest.raises(DataError, match="only 5 distinct ham"):
        split(five)  # refused up front: 6 of each is the least that always splits
    six = LabelledData([f"message {i}" for i in range(12)], np.array([0] * 6 + [1] * 6))
    assert len(split(six).test) == 2
    monkeypatch.setattr(data_module, "check_trainable", lambda data, source="data": None)
    with pytest.raises(DataError, match="cannot split 5 ham and 5 spam"):
        split(five)  # the split's own guard, should the two ever disagree


def test_normalise_groups_near_duplicates():
    assert normalise("WIN £100 now!!  Call 0800") == normalise("win £250 now call 0900")
    assert normalise("Hello there") != normalise("Hello where")


def test_normalise_sees_through_html_entities_and_invisible_characters():
    assert normalise("I'll be there til &lt;#&gt; ok") == normalise("I'll be there til <#> ok")
    assert normalise("FR\u200bEE entry") == normalise("free entry")  # zero-width space
    assert normalise("pre\u00admium offer") == normalise("premium offer")  # soft hyphen
    assert normalise("fish &amp; chips") == normalise("fish & chips")


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


def test_messages_marked_always_train_never_reach_validation_or_test():
    data, _ = dedupe(load_labelled(SHIPPED))
    marked = np.zeros(len(data), dtype=bool)
    marked[::9] = True
    parts = split(data, always_train=marked)
    chosen = {data.texts[i] for i in np.flatnonzero(marked)}
    assert chosen <= set(parts.train.texts)
    assert not chosen & (set(parts.val.texts) | set(parts.test.texts))
    rest = split(data.subset(np.flatnonzero(~marked)))  # the others split as they would alone
    assert (parts.val.texts, parts.test.texts) == (rest.val.texts, rest.test.texts)
    assert parts.train.texts == rest.train.texts + sorted(chosen, key=data.texts.index)
    assert len(parts.train) + len(parts.val) + len(parts.test) == len(data)
    no_marks = split(data, always_train=np.zeros(len(data), dtype=bool))
    assert no_marks.test.texts == split(data).test.texts


def test_too_few_unmarked_messages_to_split_split_everything():
    from spamguard.ml.data import LabelledData, always_train_count

    texts = [f"spam offer {i}" for i in range(12)] + [f"hello friend {i}" for i in range(12)]
    data = LabelledData(texts, np.array([1] * 12 + [0] * 12))
    marked = np.array([True] * 10 + [False] * 14)  # 2 unmarked spam: cannot be split
    assert always_train_count(data, marked) == 0
    assert split(data, always_train=marked).test.texts == split(data).test.texts
    marked[:10] = False
    marked[:4] = True  # 8 unmarked spam, 12 ham: enough
    assert always_train_count(data, marked) == 4
    assert set(texts[:4]) <= set(split(data, always_train=marked).train.texts)


def test_data_hash_ignores_order_but_not_labels():
    from spamguard.ml.data import LabelledData

    a = LabelledData(["x", "y"], np.array([0, 1]))
    b = LabelledData(["y", "x"], np.array([1, 0]))
    c = LabelledData(["x", "y"], np.array([1, 1]))
    assert data_hash(a) == data_hash(b) != data_hash(c)


@pytest.mark.parametrize("name, content", [
    ("d.tsv", "ham\thello\rworld\r\nspam\tWIN now\r\n"),
    ("d.csv", 'label,text\nham,hello\rworld\nspam,"WIN\rnow"\n'),
])
def test_a_lone_carriage_return_stays_inside_its_message(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode())
    data = load_labelled(path)
    assert data.texts == ["hello\rworld", "WIN now" if name.endswith("tsv") else "WIN\rnow"]
    assert data.labels.tolist() == [0, 1]


def test_a_file_with_carriage_return_line_endings_still_splits(tmp_path):
    path = tmp_path / "mac.tsv"
    path.write_bytes(b"ham\thi there\rspam\tWIN now\r")
    assert load_labelled(path).texts == ["hi there", "WIN now"]


def test_classify_input_keeps_a_lone_carriage_return(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text\n1,see you\rat 6\n2,ok\n")
    assert load_texts(path) == ["see you\rat 6", "ok"]


def test_errors_name_the_file_line_after_multi_line_messages(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('label,text\nham,"first line\nsecond line\nthird line"\nspam,"a\nb"\n'
                    'hma,oops typo\n')
    with pytest.raises(DataError, match=r"multi.csv:7: unknown label 'hma'"):
        load_labelled(path)
    good = tmp_path / "good.csv"
    good.write_text('label,text\nham,"two\nlines"\nspam,WIN\n')
    assert load_labelled(good).origins == ["good.csv:2", "good.csv:4"]


def test_plain_text_with_carriage_return_line_endings_is_one_message_a_line(tmp_path):
    path = tmp_path / "mac.txt"
    path.write_bytes(b"hello\rWIN a FREE prize call 09061701461\r")
    assert load_texts(path) == ["hello", "WIN a FREE prize call 09061701461"]


def test_an_unterminated_quote_is_an_error_not_a_swallowed_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('id,text\n1,"unterminated\n2,ok\n3,fine\n')
    with pytest.raises(DataError, match=r"bad.csv:2: a quote opened in this row is never closed"):
        load_texts(path)
    labelled = tmp_path / "bad-labels.csv"
    labelled.write_text('label,text\nham,"unterminated\nspam,WIN\n')
    with pytest.raises(DataError, match="bad-labels.csv:2: a quote opened"):
        load_labelled(labelled)


@pytest.mark.parametrize("content, says", [
    # From an audit: the quote opened in row 3 closed at row 5's quote, so csv's lenient
    # reading made one message (with row 3's label) of rows 3-5, and training went on with
    # 2 rows fewer, exit 0.
    ('label,text\nham,ok\nham,"Sorry I will call later\nspam,WIN cash\n'
     'spam,"Free entry" to win\nham,ok thanks\n',
     r"open.csv:3: a quote opened in this row runs on to line 5 "),
    # From a review: 'ham,"Sorry...' closed by 'My new TV is 55"' is valid CSV, one ham
    # message of three rows; inside it, a line shaped like a labelled row gives it away.
    ('label,text\nham,ok\nham,"Sorry I will call later\n'
     'spam,WINNER! claim now\nham,My new TV is 55"\nham,bye\n',
     r"open.csv:3: the quoted message in this row runs over 3 lines, and its line 2 looks "
     r"like a row"),
])
def test_a_quote_left_open_is_an_error_not_merged_rows(tmp_path, content, says):
    labelled = tmp_path / "open.csv"
    labelled.write_text(content)
    with pytest.raises(DataError, match=says):
        load_labelled(labelled)


def test_a_quote_left_open_in_messages_to_classify_is_an_error(tmp_path):
    texts = tmp_path / "open-texts.csv"
    texts.write_text('id,text\n1,"Sorry I will call later\n2,see you at 6\n'
                     '3,"Free entry" to win\n4,ok thanks\n')
    with pytest.raises(DataError, match=r"open-texts.csv:2: a quote opened"):
        load_texts(texts)


def test_a_proper_multi_line_message_beside_an_unrelated_quirk_still_loads(tmp_path):
    """From a review: the first version of the check above refused any file with both."""
    path = tmp_path / "mixed.csv"
    path.write_text('label,text\nham,"line one\nline two"\nham,ok\nspam,"WIN" a prize now\n')
    assert load_labelled(path).texts == ["line one\nline two", "ok", "WIN a prize now"]


def test_a_row_short_of_the_text_column_says_how_short(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("label,text\nhello there\n")
    with pytest.raises(DataError, match=r"in.csv:2: 1 field\(s\), but the header puts 'text' "
                                        r"in column 2"):
        load_texts(path)


@pytest.mark.parametrize("content, texts", [
    # "CSV (Macintosh)": rows end in CR, a cell holds an LF line break
    (b'label,text\rham,"line1\nline2"\rspam,win now\rham,hi there\r',
     ["line1\nline2", "win now", "hi there"]),
    # a quote that ends before the message does: csv's lenient reading, as always
    (b'label,text\nham,"Hello" he said\nspam,win now\n', ["Hello he said", "win now"]),
])
def test_csv_quirks_that_always_loaded_still_load(tmp_path, content, texts):
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    assert load_labelled(path).texts == texts


@pytest.mark.parametrize("ham, spam, expected", [
    (2, 0, "only 2 distinct ham and 0 distinct spam message(s)"),
    (9, 0, "only 0 distinct spam message(s)"),
    (3, 9, "only 3 distinct ham message(s)"),
])
def test_too_few_messages_names_every_short_class(ham, spam, expected):
    texts = [f"ham message {chr(97 + i)}" for i in range(ham)] + [
        f"spam offer {chr(97 + i)}" for i in range(spam)]
    data = LabelledData(texts, np.array([0] * ham + [1] * spam))
    with pytest.raises(DataError) as caught:
        check_trainable(data, "x.tsv")
    assert str(caught.value) == (f"x.tsv: {expected} after removing duplicates; "
                                 "need at least 6 of each class")


def test_enough_of_each_class_is_trainable():
    data = LabelledData([f"m {chr(97 + i)}" for i in range(12)], np.array([0] * 6 + [1] * 6))
    check_trainable(data)  # no error


SHIPPED_DATA_HASH = "a81e7407253d9028eaf9817a3b01889e1c1cd3459e1493365dd9db268c0c096b"


def test_shipped_data_reads_exactly_as_it_always_has():
    """The shipped model's split depends on these texts, byte for byte. 75 of its messages
    are in spreadsheet quoting (``"Superb Thought- ""Be grateful..."``) and stay so: line
    139 ends in a bare quote, so the file's quotes are its messages' own."""
    data = load_labelled(SHIPPED)
    assert data_hash(data) == SHIPPED_DATA_HASH
    assert sum(t.startswith('"') and '""' in t for t in data.texts) == 75
    assert data.texts[138].endswith('Gud ni8"')


@pytest.mark.parametrize("content, texts", [
    # Excel and LibreOffice quote a field with a quote, tab or line break in it.
    ('label\ttext\nham\t"He said ""hi"""\nspam\tWIN now\n', ['He said "hi"', "WIN now"]),
    ('ham\t"""Quoted"" start"\nspam\tWIN\tnow\n', ['"Quoted" start', "WIN\tnow"]),
    ('label\ttext\nham\t"one\ttwo"\nspam\t"WIN ""now"""\n', ["one\ttwo", 'WIN "now"']),
    ('label\ttext\r\nham\t"first line\r\nsecond ""line"""\r\nspam\tWIN\r\n',
     ['first line\r\nsecond "line"', "WIN"]),
    ('text\tlabel\n"two\nlines"\tham\n"WIN"\tspam\n', ["two\nlines", "WIN"]),
    # LibreOffice's "quote all text cells": quoted names (numbers are not quoted)
    ('"label"\t"text"\n"ham"\t"hi there"\n"spam"\t"WIN"\n', ["hi there", "WIN"]),
    ('"label"\t"text"\n0\t"hi there"\n1\t"WIN"\n', ["hi there", "WIN"]),
])
def test_a_tsv_saved_by_a_spreadsheet_is_unquoted(tmp_path, content, texts):
    assert load_labelled(write(tmp_path, "sheet.tsv", content)).texts == texts


def test_a_tsv_written_by_a_csv_writer_reads_back_as_written(tmp_path):
    import csv
    import io

    rows = [["ham", 'He said "hi"'], ["spam", "WIN\tnow"], ["ham", "two\nlines"],
            ["ham", '"'], ["spam", 'x"'], ["ham", "plain"], ["spam", "a\r\nb"]]
    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\r\n").writerows(rows)
    data = load_labelled(write(tmp_path, "written.tsv", out.getvalue()))
    assert data.texts == [text for _, text in rows]
    assert data.origins == [f"written.tsv:{n}" for n in (1, 2, 3, 5, 6, 7, 8)]


def test_errors_after_a_multi_line_spreadsheet_field_name_the_right_line(tmp_path):
    path = write(tmp_path, "multi.tsv", 'label\ttext\nham\t"one\ntwo\nthree"\nhma\toops\n')
    with pytest.raises(DataError, match=r"multi.tsv:5: unknown label 'hma'"):
        load_labelled(path)
    texts = write(tmp_path, "in.tsv", 'id\ttext\n1\t"a\nb"\n2\n')
    with pytest.raises(DataError, match=r"in.tsv:4: 1 field\(s\), but the header puts"):
        load_texts(texts)


@pytest.mark.parametrize("content, texts", [
    # a bare quote anywhere: a spreadsheet would have quoted that field, so the quotes
    # are the messages' own (the shipped data set is such a file)
    ('ham\t"Superb ""quote"""\nham\tGud ni8"\n', ['"Superb ""quote"""', 'Gud ni8"']),
    ('ham\t"Sorry I will call later\nham\tMy TV is 55"\n',
     ['"Sorry I will call later', 'My TV is 55"']),
    # quoted, but nothing a spreadsheet would have quoted
    ('ham\t"hello"\nspam\tWIN now\n', ['"hello"', "WIN now"]),
    ('ham\t""\nspam\tWIN now\n', ['""', "WIN now"]),
    # a first message in quotes that happens to be a column name is no header
    ('ham\t"text"\nspam\tWIN now\n', ['"text"', "WIN now"]),
])
def test_tsv_quotes_that_are_the_messages_own_are_kept(tmp_path, content, texts):
    assert load_labelled(write(tmp_path, "raw.tsv", content)).texts == texts


def test_a_multi_line_quoted_field_holding_a_tab_is_not_joined(tmp_path):
    """Each line such a field covers could be a row of its own; the old error stays."""
    path = write(tmp_path, "tab.tsv", 'label\ttext\nham\t"one\ttwo\nthree"\n')
    with pytest.raises(DataError, match="tab.tsv:3: expected a label and a text column"):
        load_labelled(path)


def test_a_one_column_tsv_to_classify_is_never_joined_over_lines(tmp_path):
    """Every line of one column is a row: nothing tells a line break in a message from
    two messages that start and end with a quote. So the opening quote is a bare one, and
    the file's quotes are all kept."""
    path = write(tmp_path, "one.tsv", 'text\n"see you\nat 6"\n"He said ""hi"""\n')
    assert load_texts(path) == ['"see you', 'at 6"', '"He said ""hi"""']
    path = write(tmp_path, "two.tsv", 'text\n"He said ""hi"""\n')
    assert load_texts(path) == ['He said "hi"']


def test_classify_reads_a_spreadsheet_tsv_like_training(tmp_path):
    path = write(tmp_path, "in.tsv", 'id\ttext\n1\t"He said ""hi"""\n2\t"two\nlines"\n3\tok\n')
    assert load_texts(path) == ['He said "hi"', "two\nlines", "ok"]


@pytest.mark.parametrize("source, texts", [
    (b'"label","text"\n"spam","win"\n', ["win"]),
    (b'"id",text\n1,"hi, you"\n', ["hi, you"]),
    (b'"","text"\n0,hello\n', ["hello"]),  # pandas' index column, all quoted
    (b'"id"\t"text"\n1\t"He said ""hi"""\n', ['He said "hi"']),
    # quoted names over messages with bare quotes: the names are still names
    (b'"id"\t"text"\n1\tGud ni8"\n', ['Gud ni8"']),
])
def test_a_quoted_header_on_standard_input_is_a_header(source, texts):
    notices = []
    assert load_texts(Path("<stdin>"), source, notice=notices.append) == texts
    assert len(notices) == 1 and "as a table" in notices[0]


def test_a_quoted_header_is_a_header_for_training_too(tmp_path):
    for name, content in [("q.csv", '"label","text"\n"spam","win"\n'),
                          ("q", '"label","text"\n"spam","win"\n'),
                          ("q.tsv", '"label"\t"text"\nspam\tGud ni8"\n')]:
        assert load_labelled(write(tmp_path, name, content)).texts[0] in {"win", 'Gud ni8"'}


def test_a_text_column_is_read_wherever_it_stands(tmp_path):
    """A file with both "body" and "text" columns was read from whichever came first, so
    `classify` scored the body column of 'body,text' without a word."""
    table = "body,text\nIGNORED-BODY,WIN cash now\n"
    assert load_texts(write(tmp_path, "in.csv", table)) == ["WIN cash now"]
    assert load_texts(Path("<stdin>"), table.encode()) == ["WIN cash now"]
    labelled = load_labelled(write(tmp_path, "l.csv", "class,sms,label,message\n"
                                                      "ham,not this,spam,this one\n"))
    assert (labelled.texts, list(labelled.labels)) == (["this one"], [1])


def test_a_quoted_message_that_is_no_header_stays_plain_text():
    assert load_texts(Path("<stdin>"), b'"Hi, you" there\nok\n') == ['"Hi, you" there', "ok"]
    assert load_texts(Path("<stdin>"), b'"text"\tid 2\n') == ['"text"\tid 2']
    assert load_texts(Path("<stdin>"), b'Sure,"text me\nok\n') == ['Sure,"text me', "ok"]
    assert load_texts(Path("<stdin>"), b'Sure,"text" me\n') == ['Sure,"text" me']


@pytest.mark.parametrize("name, content, line", [
    ("in.csv", 'id,text\n1,""\n2,hi\n', 2),
    ("in.csv", "id,text\n1,hi\n2,\n", 3),
    ("in.csv", 'id,text\n1,"  "\n', 2),
    ("in.tsv", "id\ttext\n1\t\n", 2),
    ("in.tsv", 'id\ttext\n1\t"a ""b"""\n2\t""\n', 3),  # a spreadsheet's empty quoted cell
    ("in", 'id,text\n1,"line\nbreak"\n2,\n', 4),
])
def test_an_empty_text_to_classify_names_its_line(tmp_path, name, content, line):
    """As training does: a row with other cells but no text is refused, not classified
    as "" (blank lines and rows with nothing in any cell are skipped, as before)."""
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / name))}:{line}: "
                                        r"empty text$"):
        load_texts(write(tmp_path, name, content))


def test_blank_rows_to_classify_are_still_skipped(tmp_path):
    assert load_texts(write(tmp_path, "in.csv", "id,text\n,\n\n1,hi\n")) == ["hi"]


@pytest.mark.parametrize("content, line", [
    ('label,text\nspam,""\nham,hi\n', 2),
    ("label,text\nham,hi\nspam,\n", 3),
    ('spam,""\nham,hi\n', 1),
    ('label,text,id\nspam,,1\n', 2),
    ('"label"\t"text"\n"ham"\t"hi"\n"spam"\t""\n', 3),
])
def test_an_empty_text_to_train_on_names_its_line(tmp_path, content, line):
    name = "e.tsv" if "\t" in content else "e.csv"
    with pytest.raises(DataError, match=rf"{name}:{line}: empty text$"):
        load_labelled(write(tmp_path, name, content))
