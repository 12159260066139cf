"""matplotlib's folders under an account without a writable home (spamguard.plot_config)."""

import os
import subprocess
import sys

import pytest

from spamguard.plot_config import use_writable_config


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_home_that_cannot_be_written_sends_matplotlib_to_the_cache(tmp_path, clean_env):
    home = tmp_path / "not-a-folder"
    home.write_text("a file: nothing can be made under it, even by root")
    clean_env.setenv("HOME", str(home))
    use_writable_config(tmp_path / "cache")
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "cache" / "matplotlib")
    assert (tmp_path / "cache" / "matplotlib").is_dir()


def test_a_writable_home_or_a_set_variable_is_left_alone(tmp_path, clean_env):
    clean_env.setenv("HOME", str(tmp_path / "home"))  # missing, but can be made
    use_writable_config(tmp_path / "cache")
    assert "MPLCONFIGDIR" not in os.environ
    clean_env.setenv("HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("x")
    clean_env.setenv("MPLCONFIGDIR", "/chosen/by/the/operator")
    use_writable_config(tmp_path / "cache")
    assert os.environ["MPLCONFIGDIR"] == "/chosen/by/the/operator"


@pytest.mark.parametrize("start", [
    "from spamguard.app import create_app\ncreate_app({'TESTING': True})",  # the service
    "from spamguard.cli.context import CliContext\nCliContext().settings",  # every command
])
def test_the_command_line_and_the_service_set_it_before_matplotlib_loads(tmp_path, start):
    """In a fresh process whose home is a file: no warning from matplotlib, and its font
    list kept under SPAMGUARD_HOME/cache."""
    home = tmp_path / "home-file"
    home.write_text("x")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SPAMGUARD_", "XDG_")) and k != "MPLCONFIGDIR"}
    env.update(HOME=str(home), SPAMGUARD_HOME=str(tmp_path / "instance"),
               SPAMGUARD_ENV="development")
    code = (start + "\nimport matplotlib\nfrom matplotlib.figure import Figure\n"
            "Figure().text(0, 0, 'x')\nprint(matplotlib.get_configdir())\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "instance" / "cache" / "matplotlib")
    assert "Matplotlib" not in done.stderr and "MPLCONFIGDIR" not in done.stderr
