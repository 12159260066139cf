"""Also-train files: messages that always join the training part (``spamguard train
--also-train``, ``SPAMGUARD_ALSO_TRAIN``), the shipped data/present_day.tsv, and retraining
with them (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spamguard.cli import build_cli
from spamguard.config import SHIPPED_ALSO_TRAIN, load_settings, parse_also_train
from spamguard.db import session_scope
from spamguard.errors import DataError
from spamguard.ml.also_train import (
    ALSO_TRAIN_ORIGIN,
    is_also_train,
    load_also_train,
    retraining_paths,
    with_also_train,
)
from spamguard.ml.data import dedupe, load_labelled, normalise, split, text_hash
from spamguard.ml.evaluation import texts_seen_by
from spamguard.services.evalset import load_evalset
from spamguard.services.retrain import run_retrain
from tests.fixtures_ml import sample_data
from tests.fixtures_retrain import base_rows, store_reviews, write_labelled

ROOT = Path(__file__).resolve().parents[1]
PRESENT_DAY = ROOT / "data" / "present_day.tsv"

MODERN = [
    ("ham", "Your sign-in code is 482913. It expires in 10 minutes. Never share it."),
    ("ham", "Reminder: dental check-up Tue 14 Jan 09:40 at Brookside Dental. Reply C to cancel"),
    ("ham", "Your parcel will arrive today between 13:00 and 15:00. Track: parcelly.com/t/88"),
    ("spam", "Parcel held: unpaid fee 1.99 GBP. Pay now at parcel-redeliver-fee.top/uk"),
    ("spam", "Hi mum my phone broke, this is my new number, can you text me on WhatsApp"),
    ("spam", "Northbank: a new payee was added. If not you, verify at northbank-secure.info"),
]


def _write(path: Path, rows, header: bool = True) -> Path:
    """A TSV with a header and a third column, or without either (label, text)."""
    lines = (["label\ttext\tkind"] + [f"{label}\t{text}\tx" for label, text in rows]
             if header else [f"{label}\t{text}" for label, text in rows])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- naming the files ---------------------------------------------------------------------

@pytest.mark.parametrize("values, expected", [
    ([], None), ([""], None), (["  "], None),
    (["none"], []), (["NONE"], []),
    ([f"a.tsv{os.pathsep}b.csv"], [Path("a.tsv"), Path("b.csv")]),
    (["a.tsv", "b.csv"], [Path("a.tsv"), Path("b.csv")]),
    (["present-day"], [SHIPPED_ALSO_TRAIN["present-day"]]),
])
def test_files_are_named_by_path_by_none_or_by_the_shipped_name(values, expected):
    assert parse_also_train(values) == expected


def test_the_shipped_name_is_a_file_that_ships():
    assert SHIPPED_ALSO_TRAIN["present-day"].is_file()


def test_none_with_a_file_is_refused_at_start():
    with pytest.raises(ValueError, match="'none' means no also-train file"):
        parse_also_train(["none", "a.tsv"])
    with pytest.raises(ValueError, match=r"^SPAMGUARD_ALSO_TRAIN='none:a.tsv' is not valid"):
        load_settings(environ={"SPAMGUARD_ALSO_TRAIN": f"none{os.pathsep}a.tsv"})
    assert load_settings(environ={}).also_train_paths is None
    assert load_settings(environ={"SPAMGUARD_ALSO_TRAIN": "none"}).also_train_paths == []


# -- reading and joining them -------------------------------------------------------------

def test_files_are_read_with_marked_origins_and_a_record_each(tmp_path):
    first = _write(tmp_path / "one.tsv", MODERN[:4])
    second = _write(tmp_path / "two.tsv", MODERN[4:], header=False)
    also = load_also_train([first, second])
    assert len(also) == 6 and all(is_also_train(o) for o in also.data.origins)
    assert also.data.origins[0] == f"{ALSO_TRAIN_ORIGIN}one.tsv:2"
    assert [f["path"] for f in also.files] == [str(first.resolve()), str(second.resolve())]
    assert [(f["total"], f["spam"], f["ham"]) for f in also.files] == [(4, 1, 3), (2, 2, 0)]
    assert also.hash != load_also_train([first]).hash
    assert len(load_also_train([])) == 0


def test_a_bad_file_names_itself_and_the_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\ttext\nham\tfine\nmaybe\tunsure\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:3: unknown label"):
        load_also_train([bad])


def test_a_text_in_both_stays_with_the_main_data_and_is_split_with_it(tmp_path):
    base = sample_data()
    shared = base.texts[0]
    also = load_also_train([_write(tmp_path / "x.tsv", [("spam", shared), *MODERN])])
    unique, _ = dedupe(with_also_train(base, also))
    assert len(unique) == len(base) + len(MODERN)
    assert not is_also_train(unique.origins[unique.texts.index(shared)])
    marked = np.array([is_also_train(o) for o in unique.origins])
    parts = split(unique, always_train=marked)
    alone = split(dedupe(base)[0])
    # Validation and test are the main data's own split, untouched by the extra messages.
    assert parts.val.texts == alone.val.texts and parts.test.texts == alone.test.texts
    assert set(also.data.texts[1:]) <= set(parts.train.texts)


def test_a_text_in_both_keeps_the_main_datas_label(tmp_path):
    # An also-train file must not relabel validation or test: the threshold and the report
    # stay those of the main data (before, spam won, so a ham of the main data that the
    # file calls spam was scored as spam in the test split).
    base = sample_data()
    hams = [t for t, label in zip(base.texts, base.labels, strict=True) if label == 0]
    also = load_also_train([_write(tmp_path / "x.tsv", [("spam", t) for t in hams])])
    joined = with_also_train(base, also)
    assert joined.texts == base.texts and (joined.labels == base.labels).all()
    unique, stats = dedupe(joined)
    assert stats.label_conflicts == 0
    alone = split(dedupe(base)[0])
    parts = split(unique, always_train=np.array([is_also_train(o) for o in unique.origins]))
    assert parts.test.labels.tolist() == alone.test.labels.tolist()
    assert parts.val.labels.tolist() == alone.val.labels.tolist()


def test_retraining_uses_the_named_files_or_the_active_versions(tmp_path):
    kept = _write(tmp_path / "kept.tsv", MODERN)
    metadata = {"data": {"also_train": {"files": [{"path": str(kept)}], "in_training": 6}}}
    assert retraining_paths([], metadata) == []  # SPAMGUARD_ALSO_TRAIN=none
    assert retraining_paths([Path("other.tsv")], metadata) == [Path("other.tsv")]
    assert retraining_paths(None, metadata) == [kept]
    assert retraining_paths(None, {"data": {}}) == [] and retraining_paths(None, None) == []
    kept.unlink()
    with pytest.raises(DataError, match=r"trained with --also-train .*kept\.tsv, which is "
                                        r"gone.*SPAMGUARD_ALSO_TRAIN"):
        retraining_paths(None, metadata)


def test_a_shipped_file_is_found_in_this_install_not_where_it_was_recorded(
        tmp_path, monkeypatch):
    # Trained from one install (a checkout, a venv), retrained from another: a reinstall
    # into a new venv, a restore on another machine.
    old_install, new_install = tmp_path / "old", tmp_path / "new"
    for folder in (old_install, new_install):
        folder.mkdir()
        _write(folder / "present_day.tsv", MODERN)
    monkeypatch.setitem(SHIPPED_ALSO_TRAIN, "present-day", old_install / "present_day.tsv")
    also = load_also_train(parse_also_train(["present-day"]))
    assert also.files[0]["shipped"] == "present-day"
    metadata = {"data": {"also_train": {"files": also.files, "in_training": 6}}}
    (old_install / "present_day.tsv").unlink()
    monkeypatch.setitem(SHIPPED_ALSO_TRAIN, "present-day", new_install / "present_day.tsv")
    assert retraining_paths(None, metadata) == [new_install / "present_day.tsv"]
    # A file of the user's own is never taken for a shipped one.
    own = load_also_train([_write(tmp_path / "present_day.tsv", MODERN)])
    assert "shipped" not in own.files[0]


def test_the_shipped_base_data_is_found_in_this_install_too(tmp_path, monkeypatch):
    # As the shipped also-train file: a version from `spamguard train` records the shipped
    # data's path in the install that trained it. After a reinstall or a restore elsewhere
    # the split is still rebuilt, from this install's copy, so the first retraining's
    # evaluation set keeps out what the active version trained on.
    from spamguard.ml import evaluation
    from spamguard.ml.data import data_hash

    old_install, new_install = tmp_path / "old" / "data", tmp_path / "new" / "data"
    for folder in (old_install, new_install):
        folder.mkdir(parents=True)
        write_labelled(folder / "sms_spam_collection.tsv", base_rows(4))
    recorded = old_install / "sms_spam_collection.tsv"
    metadata = {"data": {"source": str(recorded), "hash": data_hash(load_labelled(recorded))},
                "config": {"split_seed": 2018}}
    before = evaluation.version_split(metadata)
    recorded.unlink()
    monkeypatch.setattr(evaluation, "DEFAULT_DATA", new_install / "sms_spam_collection.tsv")
    after = evaluation.version_split(metadata)
    assert after is not None and after.test.texts == before.test.texts
    assert after.train.texts == before.train.texts
    # Not the same data (another release's file): the split is lost, as before.
    write_labelled(new_install / "sms_spam_collection.tsv", base_rows(4)[3:])
    assert evaluation.version_split(metadata) is None
    # A file of the user's own that is gone is never taken for the shipped one.
    write_labelled(new_install / "sms_spam_collection.tsv", base_rows(4))
    own = tmp_path / "mine.tsv"
    write_labelled(own, base_rows(4))
    mine = {**metadata, "data": {**metadata["data"], "source": str(own)}}
    own.unlink()
    assert evaluation.version_split(mine) is None


# -- the shipped file ---------------------------------------------------------------------

def test_the_shipped_present_day_file_is_clean_and_apart_from_the_other_data():
    data = load_labelled(PRESENT_DAY)
    assert (len(data), int(data.labels.sum())) == (470, 220)
    assert len(dedupe(data)[0]) == len(data)  # no duplicates within
    rows = list(csv.reader(PRESENT_DAY.open(encoding="utf-8"), delimiter="\t"))
    assert rows[0] == ["label", "text", "kind"] and all(len(r) == 3 and r[2] for r in rows[1:])
    shipped = {normalise(t) for t in load_labelled(ROOT / "data" / "sms_spam_collection.tsv").texts}
    bench = {normalise(r[2]) for name in ("fresh_sms.tsv", "fresh_sms_holdout.tsv")
             for r in list(csv.reader((ROOT / "bench" / name).open(encoding="utf-8"),
                                      delimiter="\t"))[1:]}
    keys = {normalise(t) for t in data.texts}
    # Not a copy of the 2012 data, and never of the sets the README measures it on.
    assert not keys & shipped and not keys & bench


# -- training with them ---------------------------------------------------------------------

def test_training_keeps_them_in_training_and_weights_only_the_weighted(
        tmp_path, tiny_backbone, monkeypatch):
    import spamguard.ml.train as train_module

    seen = {}
    real_fit = train_module.fit_head

    def recording_fit(*args, sample_weight=None, **kwargs):
        seen["weights"] = sample_weight
        return real_fit(*args, sample_weight=sample_weight, **kwargs)

    monkeypatch.setattr(train_module, "fit_head", recording_fit)
    also = load_also_train([_write(tmp_path / "modern.tsv", MODERN)])
    base = sample_data()
    reviews = [f"review about {day} lunch" for day in ("monday", "tuesday", "friday")]
    data = with_also_train(base, also)
    data.texts += reviews
    data.labels = np.concatenate([data.labels, np.zeros(3, np.int64)])
    data.origins += [f"review:{i}" for i in range(3)]
    result = train_module.train_model(
        data, models_dir=tmp_path / "models", cache_root=None, backbone=tiny_backbone,
        config=train_module.TrainConfig(epochs=2), progress=False,
        always_train=lambda o: o.startswith("review:") or is_also_train(o),
        weighted=lambda o: o.startswith("review:"), always_train_weight=5.0,
        also_train_files=also.files)
    weights = seen["weights"]
    assert sorted(np.unique(weights).tolist()) == [1.0, 5.0]
    assert int((weights == 5.0).sum()) == 3  # the reviews, not the also-train messages
    record = result.metadata["data"]["also_train"]
    assert record == {"files": also.files, "in_training": 6}
    assert result.metadata["data"]["always_train"] == 9
    report = (result.directory / "report.md").read_text()
    assert "| always in training (also-train files) | 6 messages of modern.tsv (3 spam) |" in report
    on_disk = json.loads((result.directory / "model.json").read_text())
    assert on_disk["data"]["also_train"]["files"][0]["path"] == str(
        (tmp_path / "modern.tsv").resolve())


@pytest.fixture
def cli_home(tmp_path, tiny_backbone_dir):
    data = write_labelled(tmp_path / "base.tsv", base_rows(4))
    env = {"SPAMGUARD_HOME": str(tmp_path / "instance"), "SPAMGUARD_DATABASE_URL": "",
           "SPAMGUARD_BACKBONE": str(tiny_backbone_dir), "SPAMGUARD_ALSO_TRAIN": ""}
    return tmp_path, data, env


def _cli(env, args):
    return CliRunner().invoke(build_cli(), args, env=env)


def _trained(result) -> dict:
    """The model.json of the version a ``train`` command says it wrote (two trained in
    the same second have ids that do not sort by time)."""
    folder = re.search(r"^model \S+ \(\w+\) in (.+)$", result.stdout, re.MULTILINE)
    assert folder, result.output
    return json.loads((Path(folder.group(1)) / "model.json").read_text())


def test_train_command_takes_also_train_from_the_option_or_the_setting(cli_home):
    tmp_path, data, env = cli_home
    modern = _write(tmp_path / "modern.tsv", MODERN)
    result = _cli(env, ["train", "--data", str(data), "--epochs", "2",
                        "--also-train", str(modern)])
    assert result.exit_code == 0, result.output
    assert ("train: 6 messages of modern.tsv (3 spam) always in training (--also-train)"
            in result.stderr)
    assert "(6 of them always)" in result.stderr
    metadata = _trained(result)
    assert metadata["data"]["also_train"]["in_training"] == 6
    # The version's split is rebuilt with them: a report on them says it trained on them,
    # and retraining's evaluation set is chosen away from them.
    assert {text_hash(t) for _, t in MODERN} <= texts_seen_by(metadata)
    report = _cli(env, ["report", "--data", str(modern)])
    assert report.exit_code == 0, report.output
    assert "6 of 6 messages in" in report.stderr and "could not check" not in report.output
    modern.write_text(modern.read_text() + "ham\tone more line\tx\n", encoding="utf-8")
    assert texts_seen_by(metadata) is None  # changed since: cannot be rebuilt
    # The setting is the default; --also-train none overrides it.
    with_setting = {**env, "SPAMGUARD_ALSO_TRAIN": str(modern)}
    modern = _write(tmp_path / "modern.tsv", MODERN)
    result = _cli(with_setting, ["train", "--data", str(data), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    # It says what named them: an operator who typed no --also-train sees the setting.
    assert ("train: 6 messages of modern.tsv (3 spam) always in training "
            "(SPAMGUARD_ALSO_TRAIN)") in result.stderr
    result = _cli(with_setting, ["train", "--data", str(data), "--epochs", "2",
                                 "--also-train", "none"])
    assert result.exit_code == 0 and "always in training" not in result.stderr
    assert "also_train" not in _trained(result)["data"]


def test_train_command_takes_a_file_name_with_the_path_separator_in_it(cli_home):
    # --also-train is repeatable: each value is one file, only the setting is a list.
    tmp_path, data, env = cli_home
    odd = _write(tmp_path / f"modern{os.pathsep}2024.tsv", MODERN)
    assert parse_also_train([str(odd)], split=False) == [odd]
    result = _cli(env, ["train", "--data", str(data), "--epochs", "1", "--also-train", str(odd)])
    assert result.exit_code == 0, result.output
    assert _trained(result)["data"]["also_train"]["files"][0]["path"] == str(odd.resolve())


@pytest.mark.parametrize("args, setting, message", [
    (["--also-train", "none", "--also-train", "{modern}"], "",
     "'none' means no also-train file"),
    (["--also-train", "{missing}"], "", "missing.tsv: cannot read"),
    ([], "{missing}", "missing.tsv: cannot read"),
    ([], "{bad}", "bad.tsv:2: unknown label 'maybe' (expected ham/spam or 0/1) (named by "
                  "SPAMGUARD_ALSO_TRAIN)"),
])
def test_train_command_errors_are_one_line(cli_home, args, setting, message):
    tmp_path, data, env = cli_home
    modern = _write(tmp_path / "modern.tsv", MODERN)
    (tmp_path / "bad.tsv").write_text("ham\tfine\nmaybe\tunsure\n", encoding="utf-8")
    names = dict(modern=modern, missing=tmp_path / "missing.tsv", bad=tmp_path / "bad.tsv")
    args = [a.format(**names) for a in args]
    env = {**env, "SPAMGUARD_ALSO_TRAIN": setting.format(**names)}
    result = _cli(env, ["train", "--data", str(data), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "instance" / "models").exists() or not any(
        (tmp_path / "instance" / "models").iterdir())


# -- retraining with them (both databases) -------------------------------------------------

def _candidate_metadata(outcome) -> dict:
    return json.loads((Path(outcome.counts["candidate_dir"]) / "model.json").read_text())


def test_retraining_trains_with_the_setting_and_keeps_them_out_of_the_evaluation_set(
        retrain, retrain_settings, db_session_factory, tmp_path):
    modern = _write(tmp_path / "modern.tsv", MODERN)
    settings = replace(retrain_settings, also_train=str(modern))
    outcome = run_retrain(session_factory=db_session_factory, settings=settings,
                          progress=False)
    assert outcome.status == "promoted", outcome.summary
    record = _candidate_metadata(outcome)["data"]["also_train"]
    assert record["in_training"] == 6 and record["files"][0]["path"] == str(modern.resolve())
    assert outcome.counts["training"]["also_train_messages"] == 6
    assert outcome.counts["training"]["base_unique"] == len(base_rows())
    with session_scope(db_session_factory) as session:
        held_out = load_evalset(session).hashes
    assert not held_out & {text_hash(text) for _, text in MODERN}

    # Unset, the next run trains as the active version was trained: with the same file.
    store_reviews(db_session_factory, [(f"lunch plan for {day} works", "ham")
                                       for day in ("monday", "tuesday", "friday")])
    lines: list[str] = []
    outcome = retrain(log=lines.append)
    assert outcome.status in ("promoted", "rejected"), outcome.summary
    assert _candidate_metadata(outcome)["data"]["also_train"]["in_training"] == 6
    # The log says it kept them, and what named them (nothing in the environment did).
    assert any(line.startswith("retrain: note: 6 messages of modern.tsv (3 spam) always in "
                               "training (the active version ") for line in lines), lines

    # The file gone: one line that says what to do, exit 2, even with nothing new to learn.
    if outcome.status == "rejected":
        return  # the active version is still the first one, trained with the file too
    modern.unlink()
    outcome = retrain()
    assert outcome.status == "failed" and outcome.exit_code == 2
    assert "modern.tsv, which is gone" in outcome.summary


def test_a_changed_also_train_file_is_trained_on_without_new_reviews(
        retrain, retrain_settings, db_session_factory, tmp_path):
    modern = _write(tmp_path / "modern.tsv", MODERN[:4])
    settings = replace(retrain_settings, also_train=str(modern))

    def run(**kwargs):
        return run_retrain(session_factory=db_session_factory, settings=settings,
                           progress=False, **kwargs)

    assert run().status == "promoted"
    assert run().status == "skipped"  # nothing new
    _write(modern, MODERN)
    lines: list[str] = []
    outcome = run(log=lines.append)
    assert outcome.status in ("promoted", "rejected"), outcome.summary
    assert any("the also-train files changed since the last run" in line for line in lines)
    assert not any("base data" in line for line in lines)
    assert run().status == "skipped"


def test_a_run_from_before_also_train_files_counts_as_none(
        retrain, retrain_settings, db_session_factory, tmp_path):
    from spamguard.models import TrainingRun
    assert retrain().status == "promoted"
    with session_scope(db_session_factory) as session:  # as a run of an older release
        run = session.get(TrainingRun, 1)
        run.counts = {k: v for k, v in run.counts.items() if k != "also_train_hash"}
    assert retrain().status == "skipped"  # none then, none now: nothing changed
    # An upgrade that adds a file: the next run trains with it.
    settings = replace(retrain_settings, also_train=str(_write(tmp_path / "m.tsv", MODERN)))
    lines: list[str] = []
    outcome = run_retrain(session_factory=db_session_factory, settings=settings,
                          progress=False, log=lines.append)
    assert outcome.status in ("promoted", "rejected")
    assert any("the also-train files changed" in line for line in lines)


def test_a_file_the_setting_names_that_cannot_be_read_fails_the_run_in_one_line(
        retrain_settings, db_session_factory, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("ham\tfine\nmaybe\tunsure\n", encoding="utf-8")
    outcome = run_retrain(session_factory=db_session_factory, progress=False,
                          settings=replace(retrain_settings, also_train=str(bad)))
    assert outcome.status == "failed" and outcome.exit_code == 2
    assert "bad.tsv:2: unknown label" in outcome.summary
    assert "(named by SPAMGUARD_ALSO_TRAIN)" in outcome.summary


def test_run_sh_says_when_the_setting_cannot_change_the_model_it_serves(cli_home):
    """scripts/run.sh trains a first model only: SPAMGUARD_ALSO_TRAIN on an instance that
    serves a model trained with other files changes nothing now, and it says so."""
    import shutil
    import subprocess
    import sys

    tmp_path, data, env = cli_home
    modern = _write(tmp_path / "modern.tsv", MODERN)
    # run.sh in a copy of the tree, whose setup.sh does nothing and whose spamguard runs
    # this checkout's (and only says what `serve` would do).
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run.sh", tree / "scripts" / "run.sh")
    (tree / "scripts" / "setup.sh").write_text("true\n")
    bin_dir = tree / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    spamguard = bin_dir / "spamguard"
    spamguard.write_text(f'#!/bin/sh\n[ "$1" = serve ] && {{ echo "would serve"; exit 0; }}\n'
                         f'exec "{sys.executable}" -m spamguard "$@"\n')
    spamguard.chmod(0o755)

    def run_sh(also_train: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(tree / "scripts" / "run.sh")], capture_output=True, text=True,
            timeout=120, env={**os.environ, **env, "SPAMGUARD_ALSO_TRAIN": also_train,
                              "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])})

    assert _cli(env, ["train", "--data", str(data), "--epochs", "1"]).exit_code == 0
    done = run_sh(str(modern))
    assert done.returncode == 0 and "would serve" in done.stdout, done.stderr
    assert "is already active, trained with other also-train files" in done.stderr
    assert "Present-day examples on a running instance" in done.stderr
    assert "already active" not in run_sh("").stderr  # nothing named: nothing to say
    assert "already active" not in run_sh("none").stderr  # trained with none, as asked
    # A model trained with the file: the setting asks for what is served.
    trained = _cli(env, ["train", "--data", str(data), "--epochs", "1",
                         "--also-train", str(modern)])
    version = re.search(r"^model (\S+) ", trained.stdout, re.MULTILINE).group(1)
    assert _cli(env, ["promote", version]).exit_code == 0
    done = run_sh(str(modern))
    assert done.returncode == 0 and "already active" not in done.stderr, done.stderr


def test_a_mistyped_shipped_name_is_told_the_names(tmp_path, monkeypatch):
    """A helper's walkthrough: `--also-train present-dya` said only that the file could not
    be read; a bare name that is no file now hears of present-day and none."""
    from spamguard.errors import DataError
    from spamguard.ml.also_train import load_also_train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"present-dya: cannot read .*\(named by --also-train; "
                       r"the shipped examples are named present-day, and none means no "
                       r"file\)"):
        load_also_train([Path("present-dya")], "--also-train")
    with pytest.raises(DataError) as elsewhere:  # a path elsewhere: no such hint
        load_also_train([tmp_path / "gone" / "x.tsv"], "--also-train")
    assert "present-day" not in str(elsewhere.value)
