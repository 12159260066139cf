"""bench/warm_train.py runs `spamguard train` in the instance folder: what it hands the
command must not depend on the folder the bench was started in."""

import os
import subprocess

import pytest

from tests.bench_modules import load_bench


def test_relative_paths_reach_the_command_as_the_user_meant_them(tmp_path, monkeypatch):
    bench = load_bench("warm_train")
    (tmp_path / "data.tsv").write_text("label\ttext\nham\thi\n", encoding="utf-8")
    (tmp_path / "backbone").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["src", str(tmp_path / "other")]))
    args = bench.parse_args(["--data", "data.tsv", "--home", "home", "--backbone", "backbone"])
    seen = {}

    def run(command, *, env, cwd, **_kwargs):
        seen.update(command=command, env=env, cwd=cwd)
        return subprocess.CompletedProcess(command, 1, "", "stopped by the test")

    monkeypatch.setattr(bench.subprocess, "run", run)
    with pytest.raises(SystemExit, match="stopped by the test"):
        bench.train_once(args.home, args)
    assert seen["command"][-4:] == ["--data", str(tmp_path / "data.tsv"),
                                    "--backbone", str(tmp_path / "backbone")]
    assert seen["env"]["SPAMGUARD_HOME"] == str(seen["cwd"]) == str(tmp_path / "home")
    assert seen["env"]["PYTHONPATH"] == os.pathsep.join([str(tmp_path / "src"),
                                                        str(tmp_path / "other")])
    assert bench.parse_args(["--backbone", "some-org/some-bert"]).backbone == (
        "some-org/some-bert")  # a hub id, not a folder
