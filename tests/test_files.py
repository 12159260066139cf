"""Tests for spamguard.ml.files: the umask read without a race, and published file modes."""

from __future__ import annotations

import builtins
import os
import stat

import pytest

from spamguard.ml import files


@pytest.fixture
def umask_0027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_umask_is_read_from_proc_without_setting_it(umask_0027, monkeypatch):
    monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("umask changed"))
    assert files.current_umask() == 0o027
    assert files.usual_mode() == 0o640


def test_umask_falls_back_to_setting_and_restoring_it(umask_0027, monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert files.current_umask() == 0o027
    monkeypatch.undo()
    assert files.current_umask() == 0o027  # restored


def test_replace_durably_publishes_with_the_usual_mode(umask_0027, tmp_path):
    tmp = tmp_path / "x.tmp"
    tmp.write_bytes(b"data")
    tmp.chmod(0o600)  # as mkstemp and safetensors leave it
    files.replace_durably(tmp, tmp_path / "x")
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o640
