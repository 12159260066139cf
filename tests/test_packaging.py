"""A wheel (``pip install .`` or ``pip install git+https://...``) carries web/, migrations/
and data/ inside the package and runs from them, not from a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spamguard.shipped import SHIPPED, shipped_dir

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files(folder: str) -> set[str]:
    """The files of ``folder`` a clone has (git's list; the tree itself without git)."""
    try:
        listed = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts]
    return set(listed)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            str(ROOT), "-w", str(out)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{built.stderr[-3000:]}")
    (path,) = out.glob("spamguard-*.whl")
    return path


def test_the_wheel_carries_every_shipped_file_and_the_whole_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in SHIPPED:
        expected = {f"spamguard/_shipped/{name}" for name in _tracked_files(folder)}
        assert expected and expected <= names, sorted(expected - names)
    package = _tracked_files("spamguard")
    assert package <= names, sorted(package - names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_an_installed_wheel_runs_from_its_own_folders(wheel, tmp_path):
    """Installed apart from the checkout: the schema comes from the wheel's migrations, the
    admin page from its templates, the default training data from its data folder."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGUARD_")}
    env.update({"PYTHONPATH": str(target), "SPAMGUARD_HOME": str(tmp_path / "home"),
                "SPAMGUARD_ENV": "development"})
    # Not from the checkout: python -m puts the working folder first on the path.
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 300}
    upgraded = subprocess.run([sys.executable, "-m", "spamguard", "db", "upgrade"], **run)
    assert upgraded.returncode == 0, upgraded.stderr
    script = """
import spamguard, spamguard.app, spamguard.config, spamguard.db
from spamguard.app import create_app
print(spamguard.__file__)
print(spamguard.app.WEB_DIR)
print(spamguard.db.migrations_dir())
print(spamguard.config.DEFAULT_DATA.is_file() and spamguard.config.DEFAULT_DATA)
page = create_app().test_client().get("/admin/login")
print(page.status_code, b'name="password"' in page.data)
"""
    shown = subprocess.run([sys.executable, "-c", script], **run)
    assert shown.returncode == 0, shown.stderr
    package, web, migrations, data, page = shown.stdout.strip().splitlines()
    inside = target / "spamguard"
    assert Path(package) == inside / "__init__.py"
    assert Path(web) == inside / "_shipped" / "web"
    assert Path(migrations) == inside / "_shipped" / "migrations"
    assert Path(data) == inside / "_shipped" / "data" / "sms_spam_collection.tsv"
    assert page == "200 True"


def test_a_checkout_uses_the_folders_beside_the_package():
    for folder in SHIPPED:
        assert shipped_dir(folder) == ROOT / folder
    with pytest.raises(ValueError, match="not a shipped folder"):
        shipped_dir("tests")
