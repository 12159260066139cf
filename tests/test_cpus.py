"""CPU counts that see a container's CPU quota (spamguard.cpus)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spamguard import cpus
from spamguard.cpus import limit_threads, quota_cpus, usable_cores

V2_SELF = "0::/system.slice/spamguard.service\n"
V1_SELF = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"


def v2(root, path: str, value: str) -> None:
    folder = root / path.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.max").write_text(value + "\n")


def v1(root, path: str, quota: int, period: int = 100000, name: str = "cpu,cpuacct") -> None:
    folder = root / name / path.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period}\n")


@pytest.mark.parametrize(("value", "expected"), [
    ("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5),
    ("50000 100000", 0.5), ("garbage", None), ("0 100000", None), ("", None)])
def test_cgroup_v2_quota_of_the_own_group(tmp_path, value, expected):
    v2(tmp_path, "/system.slice/spamguard.service", value)
    assert quota_cpus(tmp_path, V2_SELF) == expected


def test_the_tightest_of_the_group_and_its_parents_counts(tmp_path):
    v2(tmp_path, "/", "max 100000")
    v2(tmp_path, "/system.slice", "100000 100000")
    v2(tmp_path, "/system.slice/spamguard.service", "300000 100000")
    assert quota_cpus(tmp_path, V2_SELF) == 1.0


def test_a_container_sees_its_own_group_as_the_root(tmp_path):
    v2(tmp_path, "/", "250000 100000")  # /proc/self/cgroup names a path not mounted here
    assert quota_cpus(tmp_path, "0::/kubepods/pod1/container2\n") == 2.5


@pytest.mark.parametrize(("quota", "period", "expected"), [(-1, 100000, None),
                                                          (200000, 100000, 2.0),
                                                          (50000, 50000, 1.0)])
def test_cgroup_v1_cfs_quota(tmp_path, quota, period, expected):
    v1(tmp_path, "/docker/abc", quota, period)
    assert quota_cpus(tmp_path, V1_SELF) == expected


def test_no_cgroup_files_mean_no_quota(tmp_path):
    assert quota_cpus(tmp_path, "") is None
    assert quota_cpus(tmp_path / "missing", V2_SELF) is None


@pytest.mark.parametrize(("quota", "affinity", "expected"), [
    (None, 8, 8), (2.0, 8, 2), (1.5, 8, 2), (0.25, 8, 1), (16.0, 4, 4)])
def test_usable_cores_is_affinity_capped_by_the_quota(tmp_path, monkeypatch, quota, affinity,
                                                      expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(affinity)))
    if quota is not None:
        v2(tmp_path, "/", f"{int(quota * 100000)} 100000")
    assert usable_cores(tmp_path, "0::/\n") == expected


def test_limit_threads_sets_omp_only_below_the_host_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    environ: dict[str, str] = {}
    assert limit_threads(environ, cores=2) == 2 and environ == {"OMP_NUM_THREADS": "2"}
    environ = {"OMP_NUM_THREADS": "6"}  # the user's choice stands
    assert limit_threads(environ, cores=2) is None and environ == {"OMP_NUM_THREADS": "6"}
    environ = {}
    assert limit_threads(environ, cores=8) is None and environ == {}


def test_the_cli_limits_torch_threads_before_importing_it(tmp_path):
    """A process that cannot see a quota here gets one by replacing usable_cores: torch,
    imported by the command after main() ran, then uses that many threads."""
    code = ("import sys, spamguard.cpus as c\n"
            "c.usable_cores = lambda *a, **k: 1\n"
            "from spamguard.cli import main\n"
            "sys.argv = ['spamguard', 'threads-probe']\n"
            "import click, spamguard.cli as cli\n"
            "original = cli.build_cli\n"
            "def build():\n"
            "    group = original()\n"
            "    @group.command('threads-probe')\n"
            "    def probe():\n"
            "        import torch\n"
            "        click.echo(torch.get_num_threads())\n"
            "    return group\n"
            "cli.build_cli = build\n"
            "main()\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs a host with 2 or more CPUs to tell 1 thread from the default")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_usable_cores_reads_this_machine():
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    assert cpus.quota_cpus() is None or cpus.quota_cpus() > 0


@pytest.mark.parametrize(("cores", "workers"), [(1, 2), (3, 3), (16, 4)])
def test_default_workers_follow_the_usable_cores(monkeypatch, cores, workers):
    from spamguard.serving import default_workers

    monkeypatch.setattr(cpus, "usable_cores", lambda: cores)
    assert default_workers() == workers


def test_a_cgroup_folder_that_cannot_be_searched_means_no_quota(tmp_path, monkeypatch):
    """stat() of a folder under one without search permission fails with EACCES (an LSM
    denial, a mode-0700 group as another user): Path.is_dir() raises that before Python
    3.14, and main() would then fail on every command."""
    v1(tmp_path, "/docker/abc", 200000)
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if "docker" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    assert quota_cpus(tmp_path, V1_SELF) is None
    assert usable_cores(tmp_path, V1_SELF) >= 1
