"""`spamguard serve` for real (gunicorn, two workers): a worker that exits does not break the
others, and the metrics folder all workers share lives as long as the master."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from spamguard import serving
from tests.fixtures_service import sign, twilio_params


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _workers(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _post(url: str, form: dict, headers: dict) -> int:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(condition, what: str, seconds: float = 120) -> None:
    """Wait for ``condition``; a request that is refused or times out (a worker still
    loading its model on a busy machine) counts as not yet."""
    deadline = time.monotonic() + seconds
    while not _holds(condition):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _holds(condition) -> bool:
    try:
        return bool(condition())
    except OSError:  # URLError, a refused connection, a read that timed out
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_worker_that_exits_leaves_the_service_answering(db_backend, migrated_db_url,
                                                          tmp_path) -> None:
    if db_backend != "sqlite":
        pytest.skip("the process model does not depend on the database; run once")
    port = _free_port()
    temporary = tmp_path / "tmp"  # where serve makes its metrics folder
    temporary.mkdir()
    env = {**os.environ, "SPAMGUARD_HOME": str(tmp_path / "home"),
           "SPAMGUARD_DATABASE_URL": migrated_db_url, "SPAMGUARD_SECRET_KEY": "s" * 40,
           "HF_HUB_OFFLINE": "1", "TMPDIR": str(temporary),
           "SPAMGUARD_TWILIO_AUTH_TOKEN": "test-twilio-token"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "spamguard", "serve", "--port",
                               str(port), "--workers", "2"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: len(_workers(server.pid)) == 2, "two workers")
        _wait(lambda: _status(f"{base}/metrics") == 200, "the service to answer")
        (shared,) = temporary.glob("spamguard-metrics-*")
        first = _workers(server.pid)
        os.kill(min(first), signal.SIGTERM)  # as a timeout, reload or OOM kill would end it
        _wait(lambda: len(_workers(server.pid)) == 2 and _workers(server.pid) != first,
              "a replacement worker")
        assert shared.is_dir(), "a worker's exit removed the folder every worker writes to"
        statuses = [_status(f"{base}/healthz") for _ in range(8)]
        statuses += [_status(f"{base}/metrics") for _ in range(4)]
        assert 500 not in statuses, statuses
        # Proxy headers are the app's call (SPAMGUARD_TRUST_PROXY, off here), not gunicorn's:
        # it must not believe X-Forwarded-Proto because the request came from 127.0.0.1.
        params = twilio_params("which scheme?")
        webhook = f"{base}/webhook/twilio"
        as_https = sign(params, url=webhook.replace("http://", "https://"))
        assert _post(webhook, params, {"X-Twilio-Signature": as_https,
                                       "X-Forwarded-Proto": "https"}) == 403
        assert _post(webhook, params, {"X-Twilio-Signature": sign(params, url=webhook)}) == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert not shared.exists(), "the master removes its metrics folder when it stops"


def test_a_worker_leaving_run_keeps_the_metrics_folder(monkeypatch) -> None:
    """The forked worker runs run_gunicorn's clean-up too: it must leave the folder."""
    from gunicorn.app.base import BaseApplication

    for name in ("PROMETHEUS_MULTIPROC_DIR", "OMP_NUM_THREADS"):  # run_gunicorn sets both
        monkeypatch.setenv(name, "")  # (so that undo() restores them as they were)
        monkeypatch.delenv(name)
    folders = []

    def worker_exits(self) -> None:
        folders.append(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
        monkeypatch.setattr(os, "getpid", lambda: -1)  # now "in" a forked worker
        raise SystemExit(0)

    monkeypatch.setattr(BaseApplication, "run", worker_exits)
    with pytest.raises(SystemExit):
        serving.run_gunicorn(None, {})
    monkeypatch.undo()
    assert folders[0].is_dir()
    folders[0].rmdir()


@pytest.mark.parametrize(("user_value", "worker_value"), [(None, "1"), ("3", "3")])
def test_workers_get_one_omp_thread_even_under_a_cpu_quota(monkeypatch, user_value,
                                                           worker_value) -> None:
    """main() sets OMP_NUM_THREADS from a CPU quota (spamguard.cpus.limit_threads) before
    serve runs: that must not replace serve's one thread per worker, while a value the
    user set still stands."""
    from gunicorn.app.base import BaseApplication

    from spamguard import cpus

    for name in ("PROMETHEUS_MULTIPROC_DIR", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    if user_value is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", user_value)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(cpus, "usable_cores", lambda *a, **k: 4)
    monkeypatch.setattr(cpus, "_set_here", None)
    cpus.limit_threads()  # what main() does first: a 4-CPU quota on an 8-CPU host
    seen = []
    monkeypatch.setattr(BaseApplication, "run",
                        lambda self: seen.append(os.environ["OMP_NUM_THREADS"]))
    serving.run_gunicorn(None, {})
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    monkeypatch.undo()
    assert not Path(folder).exists()
    assert seen == [worker_value]
