"""``spamguard train``, ``classify`` and ``report`` from the command line."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamguard.cli import build_cli
from tests.fixtures_ml import python_prints, sample_data
from tests.fixtures_retrain import DATABASE_FAILURES


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_backbone_dir):
    """An instance folder with one model trained through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "train.tsv"
    sample = sample_data()
    data.write_text("".join(f"{'spam' if y else 'ham'}\t{t}\n"
                            for t, y in zip(sample.texts, sample.labels, strict=True)))
    env = {"SPAMGUARD_HOME": str(root / "instance"), "SPAMGUARD_DATABASE_URL": ""}
    result = CliRunner().invoke(build_cli(), ["train", "--data", str(data), "--backbone",
                                              str(tiny_backbone_dir), "--epochs", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "TF-IDF + SVM" in result.output and "(active)" in result.output
    return env, root


def run(env, args, input=None):
    return CliRunner().invoke(build_cli(), args, env=env, input=input)


def test_classify_stdin_writes_json_lines_in_order(home):
    env, _ = home
    texts = ["WIN a free prize now, call 09061701461", "see you at lunch", "ok"]
    result = run(env, ["classify", "-"], input="\n".join(texts) + "\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in rows] == texts
    for row in rows:
        assert set(row) == {"text", "label", "spam_probability"}
        assert row["label"] in {"spam", "ham"} and 0.0 <= row["spam_probability"] <= 1.0


@pytest.mark.parametrize("args", [["classify"], ["classify", "-"]])
def test_classify_from_a_terminal_says_it_reads_standard_input(home, monkeypatch, args):
    from spamguard.cli import ml_commands

    prompt = "reading messages from standard input, one a line; end with Ctrl-D"
    env, _ = home
    piped = run(env, args, input="hi\n")  # CliRunner's stdin is no terminal
    assert piped.exit_code == 0 and prompt not in piped.stderr
    monkeypatch.setattr(ml_commands, "stdin_is_a_terminal", lambda: True, raising=False)
    typed = run(env, args, input="hi\n")
    assert typed.exit_code == 0 and len(typed.stdout.splitlines()) == 1
    assert typed.stderr.splitlines()[0] == prompt


def test_classify_empty_input_prints_nothing_and_succeeds(home, monkeypatch):
    from spamguard.ml.classifier import SpamClassifier

    def no_load(*args, **kwargs):
        raise AssertionError("the model is not needed for no messages")

    monkeypatch.setattr(SpamClassifier, "load", no_load)
    env, _ = home
    result = CliRunner().invoke(build_cli(), ["classify", "-"], env=env, input="\n  \n")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no messages" in result.stderr


def test_classify_csv_with_text_column(home, tmp_path):
    env, _ = home
    source = tmp_path / "in.csv"
    source.write_text('id,text\n1,"hello, friend"\n2,WIN NOW\n')
    result = run(env, ["classify", str(source)])
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["text"] for x in result.output.splitlines()] == [
        "hello, friend", "WIN NOW"]


def test_classify_format_option_reads_a_table_from_stdin(home):
    env, _ = home
    source = "message id,text\n1,hello friend\n"
    assert len(run(env, ["classify", "-"], input=source).output.splitlines()) == 2
    result = run(env, ["classify", "--format", "csv", "-"], input=source)
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["text"] for x in result.output.splitlines()] == ["hello friend"]


def test_classify_reads_a_quoted_header_from_stdin(home):
    """`printf '"label","text"\\n"spam","win"\\n' | spamguard classify -` classified both
    lines, quotes and all, as plain-text messages."""
    result = run(home[0], ["classify", "--runtime", "torch", "-"],
                 input='"label","text"\n"spam","win"\n')
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["text"] for x in result.stdout.splitlines()] == ["win"]
    assert "as a table with the header" in result.stderr


def test_classify_refuses_a_row_with_an_empty_text(home):
    result = run(home[0], ["classify", "-"], input='id,text\n1,hi\n2,""\n')
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "error: <stdin>:3: empty text"


def test_classify_with_explicit_model_dir(home):
    env, root = home
    version_dir = next((root / "instance" / "models").iterdir())
    result = run(env, ["classify", "--model", str(version_dir), "-"], input="hi\n")
    assert result.exit_code == 0 and json.loads(result.output)["text"] == "hi"


def test_train_no_lexical_makes_a_head_only_version(home, tiny_backbone_dir, monkeypatch):
    env, root = home
    monkeypatch.chdir(root)  # relative paths are recorded absolute
    result = run(env, ["train", "--data", "train.tsv", "--backbone",
                       str(tiny_backbone_dir), "--epochs", "2", "--no-lexical"])
    assert result.exit_code == 0, result.output
    assert "BERT head alone" not in result.output and "TF-IDF + SVM" in result.output
    # Stage lines on stderr: with no terminal there are no progress bars to show life.
    stages = [line for line in result.stderr.splitlines() if line.startswith("train: ")]
    assert [line.split(":")[1].split()[0] for line in stages] == [  # "0": all 56 cached
        "56", "48", "loading", "embedding", "0", "training", "choosing"]
    assert stages[1] == ("train: 48 near-exact copies in 13 groups, each group kept on one "
                         "side of the split")
    newest = max((root / "instance" / "models").iterdir(), key=lambda p: p.name)
    meta = json.loads((newest / "model.json").read_text())
    assert meta["config"]["lexical"] is False and "blend" not in meta
    assert meta["data"]["source"] == str((root / "train.tsv").resolve())
    assert not (newest / "lexical.json").exists()
    shown = run(env, ["classify", "--model", str(newest), "-"], input="hi\n")
    assert shown.exit_code == 0 and json.loads(shown.output)["text"] == "hi"


def test_report_shows_stored_and_new_reports(home, tmp_path):
    env, root = home
    shown = run(env, ["report"])
    assert shown.exit_code == 0 and "spam F1" in shown.output
    test_file = tmp_path / "test.tsv"
    test_file.write_text("spam\tFREE prize!! call 09061701461 now\nham\tlunch at 1?\n")
    made = run(env, ["report", "--data", str(test_file), "--out", str(tmp_path / "rep")])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "rep" / "report.md").exists()
    assert (tmp_path / "rep" / "confusion_matrix.png").exists()


STORED_REPORT = ["confusion_matrix.png", "pr_curve.png", "report.json", "report.md"]


def _active_version_dir(root: Path) -> Path:
    return min((root / "instance" / "models").iterdir(), key=lambda p: p.name)  # home's own


def test_report_out_without_data_copies_the_stored_report(home, tmp_path):
    env, root = home
    version = _active_version_dir(root)
    out = tmp_path / "shared" / "report"  # made, parents too
    result = run(env, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == STORED_REPORT
    for name in STORED_REPORT:
        assert (out / name).read_bytes() == (version / name).read_bytes(), name
    assert "spam F1" in result.stdout
    assert result.stdout.rstrip().endswith(f"report: {out / 'report.md'}")
    # Again into the same folder: the files are replaced, nothing else is touched.
    (out / "report.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    again = run(env, ["report", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert (out / "report.json").read_bytes() == (version / "report.json").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted([*STORED_REPORT, "notes.txt"])


def test_report_refuses_to_write_into_a_model_version_folder(home, tmp_path):
    """From an audit: `report --data X --out <version folder>` replaced that version's
    test-split report (which the admin UI shows) with X's, exit 0."""
    import shutil

    env, root = home
    version = _active_version_dir(root)
    before = {name: (version / name).read_bytes() for name in STORED_REPORT}
    test_file = tmp_path / "test.tsv"
    test_file.write_text("spam\tFREE prize!! call 09061701461 now\nham\tlunch at 1?\n")
    other = tmp_path / "other-version"  # another version's report into this one's folder
    shutil.copytree(version, other)
    for args in (["--data", str(test_file)], ["--model", str(other)]):
        result = run(env, ["report", *args, "--out", str(version)])
        assert result.exit_code == 2, result.output
        assert "is a model version's folder" in result.output
    assert {name: (version / name).read_bytes() for name in STORED_REPORT} == before


def test_report_on_a_bad_file_leaves_no_empty_folder(home, tmp_path):
    """From an audit: each failed `report --data` left an empty folder under reports/."""
    env, root = home
    bad = tmp_path / "bad.tsv"
    bad.write_text("maybe\tunknown label\n")
    result = run(env, ["report", "--data", str(bad)])
    assert result.exit_code == 2 and "unknown label" in result.output
    reports = _active_version_dir(root) / "reports"
    assert not reports.exists() or not any(reports.iterdir())


def test_report_out_copies_listed_images_but_nothing_outside_the_version(home, tmp_path):
    import shutil

    env, root = home
    version = tmp_path / "version"
    shutil.copytree(_active_version_dir(root), version)
    stored = json.loads((version / "report.json").read_text())
    stored["files"] = {**stored["files"], "calibration": "calibration.png",
                       "escape": "../outside.png", "hidden": ".hidden.png"}
    (version / "report.json").write_text(json.dumps(stored))
    for name in ("calibration.png", ".hidden.png"):
        (version / name).write_bytes(b"png")
    (tmp_path / "outside.png").write_bytes(b"png")
    (version / "pr_curve.png").unlink()  # a listed file that is gone is skipped
    out = tmp_path / "out"
    result = run(env, ["report", "--model", str(version), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "calibration.png", "confusion_matrix.png", "report.json", "report.md"]
    # --out naming the version directory itself: nothing to copy, no error.
    same = run(env, ["report", "--model", str(version), "--out", str(version)])
    assert same.exit_code == 0, same.output
    assert f"report: {version / 'report.md'}" in same.stdout


def test_report_out_with_a_damaged_stored_report_copies_nothing(home, tmp_path):
    import shutil

    env, root = home
    version = tmp_path / "version"
    shutil.copytree(_active_version_dir(root), version)
    (version / "report.json").write_text("[]")
    result = run(env, ["report", "--model", str(version), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "unreadable report" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_report_on_its_own_training_data_says_how_much_it_saw(home, tmp_path):
    env, root = home
    meta = json.loads((_active_version_dir(root) / "model.json").read_text())
    seen = meta["data"]["split"]["train"]["total"] + meta["data"]["split"]["val"]["total"]
    lines = (root / "train.tsv").read_text().splitlines()
    # The training file, again in other dress (same normalised text), and two new messages.
    dressed = [f"{label}\t{text.upper()}!!" for label, text in
               (line.split("\t", 1) for line in lines)]
    new = ["spam\tzebra quantum voucher xyzzy", "ham\tthe heron flew over the quarry"]
    test_file = tmp_path / "overlap.tsv"
    test_file.write_text("\n".join(lines + dressed + new) + "\n")
    total = 2 * len(lines) + 2
    assert 0 < seen < len(lines)  # the test split is not counted
    out = tmp_path / "rep"
    result = run(env, ["report", "--data", str(test_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {2 * seen} of {total} messages in {test_file} were in this "
                     "version's training or validation data; its numbers overstate how it "
                     "does on new messages"]
    report = json.loads((out / "report.json").read_text())
    assert report["overlap"] == {"checked": True, "messages": total, "seen": 2 * seen}
    assert (f"| seen in training or validation | {2 * seen} of {total} messages: the "
            "numbers overstate how it does on new messages |") in (out / "report.md").read_text()
    assert "note:" not in result.stdout


def _report_on_two_new_messages(home, tmp_path, name: str):
    """`spamguard report --data` on a file of two messages no version saw; the result and
    the file."""
    env, _ = home
    test_file = tmp_path / name
    test_file.write_text("spam\tzebra quantum voucher xyzzy\nham\tthe heron flew over\n")
    result = run(env, ["report", "--data", str(test_file), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    return result, test_file


def test_report_on_new_messages_has_no_overlap_note(home, tmp_path):
    result, _ = _report_on_two_new_messages(home, tmp_path, "new.tsv")
    assert "note:" not in result.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["overlap"] == {"checked": True, "messages": 2, "seen": 0}
    assert "| seen in training or validation | 0 of 2 messages |" in (
        tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "{bad}"], "unknown label"),
    (["train", "--data", "{tiny}"], "need at least 6 of each class"),
    # A fresh home has no database: said with its path, and nothing is created there.
    (["classify", "--model", "no-such-version", "-"], "no spamguard database at "),
    (["classify", "-"], "check SPAMGUARD_HOME"),
    (["train", "--data", "{good}", "--backbone", "/nonexistent/model"],
     "cannot load backbone"),
])
def test_user_errors_are_one_line_and_non_zero(tmp_path, args, message):
    bad = tmp_path / "bad.tsv"
    bad.write_text("ham\thi\nmeh\tthere\n")
    good = tmp_path / "good.tsv"
    good.write_text("".join(f"ham\thello number {i}\nspam\tWIN prize {i}\n" for i in "abcdefgh"))
    tiny = tmp_path / "tiny.tsv"
    tiny.write_text("ham\thi\nspam\tWIN\n")
    args = [a.format(bad=bad, good=good, tiny=tiny) for a in args]
    env = {"SPAMGUARD_HOME": str(tmp_path / "instance"), "SPAMGUARD_DATABASE_URL": ""}
    result = run(env, args, input="hi\n")
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    if args[0] == "classify":
        assert not (tmp_path / "instance" / "spamguard.db").exists()


def _drop_pooling(version):
    meta = json.loads((version / "model.json").read_text())
    del meta["pooling"]
    (version / "model.json").write_text(json.dumps(meta))


def _wrong_input_dim(version):
    meta = json.loads((version / "model.json").read_text())
    meta["input_dim"] += 1
    (version / "model.json").write_text(json.dumps(meta))


def _setting(field, value):
    def damage(version):
        meta = json.loads((version / "model.json").read_text())
        meta[field] = value
        (version / "model.json").write_text(json.dumps(meta))
    return damage


def _truncate_head(version):
    weights = version / "head.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


@pytest.mark.parametrize("damage, message", [
    (_drop_pooling, "missing or invalid pooling"),
    (_wrong_input_dim, "does not fit model.json"),
    (_truncate_head, "cannot read head.safetensors"),
    (_setting("threshold", float("nan")), "threshold nan is not a probability"),
    (_setting("threshold", 1.5), "threshold 1.5 is not a probability"),
    (_setting("pooling", "max"), "unknown pooling 'max'"),
    (_setting("max_length", 0), "max_length 0 is not between 1 and"),
    (_setting("max_length", True), "missing or invalid max_length"),
    (_setting("features", "digits"), "features is not a list of names"),
])
def test_damaged_version_is_one_line(home, tmp_path, damage, message):
    import shutil

    env, root = home
    version = tmp_path / "version"
    shutil.copytree(next((root / "instance" / "models").iterdir()), version)
    damage(version)
    result = run(env, ["classify", "--model", str(version), "-"], input="hi\n")
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_damaged_stored_report_is_one_line(home, tmp_path):
    import shutil

    env, root = home
    version = tmp_path / "version"
    shutil.copytree(next((root / "instance" / "models").iterdir()), version)
    (version / "report.json").write_text('{"model": ')
    result = run(env, ["report", "--model", str(version)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "unreadable report" in result.output


@pytest.mark.parametrize("command", [["report"], ["classify", "-"]])
def test_a_registered_version_whose_folder_is_gone_says_so(home, tmp_path, command):
    import shutil
    import sqlite3

    env, root = home
    instance = tmp_path / "instance"
    shutil.copytree(root / "instance", instance, ignore=shutil.ignore_patterns("cache"))
    with sqlite3.connect(instance / "spamguard.db") as db:
        version = db.execute("SELECT id FROM model_versions WHERE status = 'active'").fetchone()[0]
        db.execute("UPDATE model_versions SET directory = ? WHERE id = ?",
                   (str(tmp_path / "gone"), version))
    result = run({**env, "SPAMGUARD_HOME": str(instance)}, command, input="hi\n")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.stderr == (f"error: model version {version}: its folder {tmp_path / 'gone'} "
                             "does not exist (moved or deleted?)\n")


def test_classify_without_any_model_says_what_to_do(tmp_path):
    env = {"SPAMGUARD_HOME": str(tmp_path / "instance"), "SPAMGUARD_DATABASE_URL": ""}
    result = run(env, ["classify", "-"], input="hi\n")
    assert result.exit_code != 0
    assert "spamguard train" in result.output


def test_default_data_path_is_the_shipped_file():
    from spamguard.cli.ml_commands import DEFAULT_DATA

    assert Path(DEFAULT_DATA).is_file()


def test_classify_output_is_one_object_a_line_whatever_the_text(home):
    texts = ["call me\u2028later", "ok\x85bye", "para\u2029graph"]
    result = run(home[0], ["classify", "--runtime", "torch", "-"], input="\n".join(texts) + "\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # str.splitlines breaks at U+2028, U+0085 too
    assert [json.loads(line)["text"] for line in lines] == texts


def test_classify_says_when_it_took_the_first_line_for_a_header(home):
    result = run(home[0], ["classify", "--runtime", "torch", "-"],
                 input="Sure,text\nhello, how are you\n")
    assert result.exit_code == 0, result.output
    assert "reading <stdin> as a table with the header 'Sure,text'" in result.stderr
    assert "--format text" in result.stderr
    plain = run(home[0], ["classify", "--runtime", "torch", "--format", "text", "-"],
                input="Sure,text\nhello, how are you\n")
    assert [json.loads(line)["text"] for line in plain.stdout.splitlines()] == [
        "Sure,text", "hello, how are you"]
    assert "note:" not in plain.stderr


def test_file_system_errors_are_one_line(home, tmp_path):
    env, root = home
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    test_file = tmp_path / "test.tsv"
    test_file.write_text("spam\tFREE prize!! call 09061701461 now\nham\tlunch at 1?\n")
    result = run(env, ["report", "--data", str(test_file), "--out", str(blocker / "sub")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == f"error: {blocker / 'sub'}: Not a directory"


def test_train_refuses_an_unwritable_models_folder_before_training(tmp_path, tiny_backbone_dir,
                                                                  monkeypatch):
    import spamguard.ml.train as train

    monkeypatch.setattr(train, "fit_head", lambda *a, **k: pytest.fail("trained anyway"))
    home = tmp_path / "instance"
    home.mkdir()
    (home / "models").write_text("a file where the models folder should be")
    good = tmp_path / "good.tsv"
    good.write_text("".join(f"ham\thello number {i}\nspam\tWIN prize {i}\n" for i in "abcdefgh"))
    env = {"SPAMGUARD_HOME": str(home), "SPAMGUARD_DATABASE_URL": ""}
    result = run(env, ["train", "--data", str(good), "--backbone", str(tiny_backbone_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Not a directory" in result.output or "File exists" in result.output


def test_train_refuses_an_out_of_date_database_before_training(tmp_path, tiny_backbone_dir,
                                                               monkeypatch):
    """After an upgrade that adds a migration, `train` before `db upgrade` says so at once
    (it used to train, write an orphan version folder, then fail on the schema)."""
    import sqlite3

    import spamguard.ml.train as train
    from spamguard.db import head_revision

    monkeypatch.setattr(train, "fit_head", lambda *a, **k: pytest.fail("trained anyway"))
    home = tmp_path / "instance"
    home.mkdir()
    with sqlite3.connect(home / "spamguard.db") as connection:  # tables, no revision
        connection.execute("CREATE TABLE legacy (id INTEGER PRIMARY KEY)")
    good = tmp_path / "good.tsv"
    good.write_text("".join(f"ham\thello number {i}\nspam\tWIN prize {i}\n" for i in "abcdefgh"))
    env = {"SPAMGUARD_HOME": str(home), "SPAMGUARD_DATABASE_URL": ""}
    result = run(env, ["train", "--data", str(good), "--backbone", str(tiny_backbone_dir)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: database schema is out of date (at empty, need {head_revision()}): "
        "run `spamguard db upgrade`")
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def _train_in(tmp_path, tiny_backbone_dir):
    """``spamguard train`` (one epoch) on a new instance under ``tmp_path``."""
    good = tmp_path / "good.tsv"
    good.write_text("".join(f"ham\thello number {i}\nspam\tWIN prize {i}\n" for i in "abcdefgh"))
    env = {"SPAMGUARD_HOME": str(tmp_path / "instance"), "SPAMGUARD_DATABASE_URL": ""}
    return run(env, ["train", "--data", str(good), "--backbone", str(tiny_backbone_dir),
                     "--epochs", "1"])


def test_train_on_a_full_disk_is_one_line_and_leaves_no_temporary_folder(
        tmp_path, tiny_backbone_dir, monkeypatch):
    from safetensors import SafetensorError

    from spamguard.ml import classifier as classifier_module

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr(classifier_module, "save_file", full)
    result = _train_in(tmp_path, tiny_backbone_dir)
    models = tmp_path / "instance" / "models"
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: cannot write model version ")
    assert last.endswith(f" to {models}: No space left on device")
    assert list(models.iterdir()) == []


@pytest.mark.parametrize(("orig", "exit_code", "said"), DATABASE_FAILURES)
def test_train_whose_database_fails_while_registering_is_one_line(
        tmp_path, tiny_backbone_dir, monkeypatch, orig, exit_code, said):
    """The version is written, not registered: the line names its folder."""
    from tests.fixtures_retrain import database_fails

    database_fails(monkeypatch, orig())  # the first commit is the registration's
    result = _train_in(tmp_path, tiny_backbone_dir)
    assert result.exit_code == exit_code and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    (folder,) = (tmp_path / "instance" / "models").iterdir()
    assert result.output.strip().splitlines()[-1] == (
        f"error: model version {folder.name} was written to {folder} but not registered: "
        f"{said} (`spamguard promote {folder}` registers it and makes it active)")


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_train_seed_out_of_range_is_a_usage_error(tmp_path, seed):
    env = {"SPAMGUARD_HOME": str(tmp_path / "instance"), "SPAMGUARD_DATABASE_URL": ""}
    result = run(env, ["train", "--seed", seed])
    assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output


@pytest.mark.parametrize(("args", "line"), [
    (["trian"], "error: spamguard: No such command 'trian'. (Did you mean one of: 'retrain', "
     "'train'?) (see 'spamguard --help')"),
    (["--bogus"], "error: spamguard: No such option '--bogus'. (see 'spamguard --help')"),
    (["train", "--foo"], "error: spamguard train: No such option '--foo'. "
     "(see 'spamguard train --help')"),
    (["classify", "--runtime", "gpu"], "error: spamguard classify: Invalid value for "
     "'--runtime': 'gpu' is not one of 'auto', 'onnx', 'torch', 'torch-bf16'. "
     "(see 'spamguard classify --help')"),
    (["report", "--model"], "error: spamguard report: Option '--model' requires an argument. "
     "(see 'spamguard report --help')"),
    (["user", "create"], "error: spamguard user create: Missing argument 'NAME'. "
     "(see 'spamguard user create --help')"),
])
def test_a_usage_error_is_one_line(tmp_path, args, line):
    env = {"SPAMGUARD_HOME": str(tmp_path / "instance"), "SPAMGUARD_DATABASE_URL": ""}
    result = run(env, args)
    assert result.exit_code == 2
    assert result.output.splitlines() == [line]


def test_a_bare_group_still_prints_its_help(tmp_path):
    result = run({"SPAMGUARD_HOME": str(tmp_path / "instance")}, ["user"])
    assert "Manage admin UI accounts." in result.output and "Commands:" in result.output


def test_max_length_beyond_the_backbone_is_one_line(tmp_path, tiny_backbone_dir):
    env = {"SPAMGUARD_HOME": str(tmp_path / "instance"), "SPAMGUARD_DATABASE_URL": ""}
    good = tmp_path / "good.tsv"
    good.write_text("".join(f"ham\thello number {i}\nspam\tWIN prize {i}\n" for i in "abcdefgh"))
    result = run(env, ["train", "--data", str(good), "--backbone", str(tiny_backbone_dir),
                       "--max-length", "512"])  # the tiny backbone has 256 positions
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "max length 512 is more than backbone" in result.output
    assert "(256 positions)" in result.output


def test_report_on_a_head_only_version_whose_training_file_broke(home, tiny_backbone_dir,
                                                                  tmp_path, monkeypatch):
    env, root = home
    data = tmp_path / "train.tsv"
    data.write_text((root / "train.tsv").read_text())
    result = run(env, ["train", "--data", str(data), "--backbone", str(tiny_backbone_dir),
                       "--epochs", "2", "--no-lexical"])
    assert result.exit_code == 0, result.output
    version = json.loads((max((root / "instance" / "models").iterdir(),
                              key=lambda p: p.name) / "model.json").read_text())["version"]
    with data.open("a") as handle:
        handle.write("bogus\n")  # the recorded training file no longer parses
    test_file = tmp_path / "test.tsv"
    test_file.write_text("spam\tFREE prize!! call 09061701461 now\nham\tlunch at 1?\n")
    made = run(env, ["report", "--model", version, "--data", str(test_file),
                     "--out", str(tmp_path / "rep")])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "rep" / "report.md").exists()
    # Its training data cannot be rebuilt, so the overlap is not known: said, and recorded.
    notes = [line for line in made.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: could not check {test_file} against this version's training "
                     "and validation data (its recorded data file is gone or changed, or it "
                     "was retrained with reviews); its numbers may overstate how it does on "
                     "new messages"]
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["overlap"] == {"checked": False, "messages": 2, "seen": None}


def test_promote_of_the_active_version_says_nothing_changed(home):
    env, _ = home
    listed = run(env, ["models", "--json"])
    active = next(json.loads(line)["version"] for line in listed.output.splitlines()
                  if json.loads(line)["status"] == "active")
    result = run(env, ["promote", active])
    assert result.exit_code == 0
    assert result.output.strip() == f"{active} is already the active version; nothing changed"
    table = run(env, ["models"]).output
    assert "%" in table.splitlines()[1]  # ham FPR in percent, as in reports


def test_train_help_names_the_backbone_setting() -> None:
    """--backbone defaults to SPAMGUARD_BACKBONE (README), then the packaged model."""
    text = " ".join(CliRunner().invoke(build_cli(), ["train", "--help"]).output.split())
    assert "(default: SPAMGUARD_BACKBONE, else the packaged all-MiniLM-L6-v2)" in text


def test_classify_with_stdin_closed_is_one_line(tmp_path):
    """`spamguard classify <&-`: no file named and nothing to read (sys.stdin is None)."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "spamguard", "classify"], capture_output=True, text=True,
        env={**os.environ, "SPAMGUARD_HOME": str(tmp_path / "home")},
        preexec_fn=lambda: os.close(0), timeout=120)
    assert (result.returncode, result.stderr) == (
        2, "error: standard input is closed: give a FILE to classify\n")
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("args", [
    ["train", "--max-ham-fpr", "nan"],
    ["retrain", "--margin", "nan"],
    ["campaigns", "rebuild", "--similarity", "NaN"],
    ["models", "compare", "v1", "--days", "-nan"],
])
def test_a_number_option_refuses_nan(tmp_path, args):
    """click's FloatRange lets NaN through: every bound check compares False."""
    result = CliRunner().invoke(build_cli(), args, env={"SPAMGUARD_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert f"{args[-1]!r} is not a number" in result.stderr
    assert not (tmp_path / "spamguard.db").exists()


def test_report_on_a_file_names_the_file_not_the_test_split(home, tmp_path):
    _, test_file = _report_on_two_new_messages(home, tmp_path, "fresh.tsv")
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["split"] is None and report["data_file"] == str(test_file)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Headline (fresh.tsv: 2 messages, 1 spam)\n" in md and "test split" not in md


def test_the_command_freezes_the_garbage_collector_after_the_other_exit_handlers():
    """The interpreter's last collections took about 1 s of a warm `train` (torch and
    scikit-learn loaded); main() freezes the collector once the exit handlers have run."""
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
            "sys.argv = ['spamguard', '--version']\n"
            "from spamguard.cli import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('frozen before exit:', gc.get_freeze_count() > 0)\n")
    assert python_prints(code)[-2:] == ["frozen before exit: False",
                                             "frozen at exit: True"]
