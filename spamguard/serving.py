"""Run the app under gunicorn: start-up checks and the gunicorn application (no Click here)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from spamguard.config import Settings
from spamguard.errors import SpamguardError


def check_ready(settings: Settings) -> None:
    """Refuse to start with the placeholder secret or an out-of-date schema (one line each).

    A brand-new SQLite database is created; an existing one is never upgraded silently.
    """
    from spamguard.app import check_secret
    from spamguard.db import open_database

    check_secret(settings, testing=False)
    check_rate_limit_store(settings.rate_limit_storage_uri)  # before a database is created
    open_database(settings.resolved_database_url, create_if_empty=True).dispose()


def check_rate_limit_store(uri: str) -> None:
    """Refuse a rate-limit store the workers could not use: they would boot, fail and take
    gunicorn down after it had already said it was serving."""
    from limits.errors import ConfigurationError
    from limits.storage import storage_from_string

    shown = redact_uri(uri)  # the message goes to the journal: no password in it

    def refuse(problem: str) -> SpamguardError:
        return SpamguardError(f"SPAMGUARD_RATE_LIMIT_STORAGE_URI={shown!r}: "
                              f"{problem.replace(uri, shown)}")

    try:
        reachable = storage_from_string(uri).check()
    except ConfigurationError as exc:
        raise refuse(str(exc)) from None
    except Exception as exc:  # the store's client library failing to connect
        raise refuse(f"cannot use it ({type(exc).__name__}: {exc})") from None
    if not reachable:
        raise refuse("the store does not answer")


def redact_uri(uri: str) -> str:
    """``uri`` with its password (if any) shown as ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def check_address(host: str, port: int) -> None:
    """Refuse an address gunicorn could not listen on (one line): gunicorn itself retries
    for five seconds, logs ten lines and exits 1 when the port is taken or the host unknown."""
    import errno
    import socket

    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SpamguardError(f"cannot listen on {where}: {exc.strerror or exc}"
                             " (--host takes an address or name of this machine)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            hint = (" (another service, or another `spamguard serve`, uses it: stop it or "
                    "choose another --port)" if exc.errno == errno.EADDRINUSE else "")
            raise SpamguardError(f"cannot listen on {where}: {exc.strerror or exc}{hint}"
                                 ) from None


def host_port(host: str, port: int) -> str:
    """``host:port`` as gunicorn's bind and a URL take it: an IPv6 address in brackets
    (gunicorn read ``::1:8000`` as host ``::1:8000`` with an empty port, and exited)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def default_workers() -> int:
    """2 to 4 workers: one per usable core (a container's CPU quota counted), at least two
    so a slow request never blocks all."""
    from spamguard.cpus import usable_cores

    return max(2, min(4, usable_cores()))


def gunicorn_options(*, host: str, port: int, workers: int, timeout: int) -> dict[str, Any]:
    """Gunicorn settings: no preload (each worker builds the app and loads the model itself)."""
    return {
        "bind": host_port(host, port),
        "workers": workers,
        "worker_class": "sync",
        "preload_app": False,
        "timeout": timeout,  # the first request in a worker loads the model (seconds)
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,  # spamguard.access writes one JSON line per request instead
        "errorlog": "-",
        "child_exit": _child_exit,
        "post_worker_init": _one_torch_thread,
        # gunicorn 27's runtime control socket lives at one path per user (~/.gunicorn), so
        # two instances on a host would share it, and it is state outside SPAMGUARD_HOME.
        "control_socket_disable": True,
        # Gunicorn itself believes X-Forwarded-Proto from 127.0.0.1 by default, whatever
        # SPAMGUARD_TRUST_PROXY says: a proxy on the same host passing on a client's header
        # would let the client choose the scheme the webhook signature is checked against.
        # Proxy headers are the app's decision alone (ProxyFix when the setting is on).
        "forwarded_allow_ips": "",
    }


def _one_torch_thread(_worker: Any) -> None:
    """Give each worker one torch thread: workers already use every core between them, and
    extra intra-op threads only spin against each other."""
    import torch

    from spamguard.config import load_settings

    torch.set_num_threads(load_settings().torch_threads)  # checked before gunicorn starts


def _child_exit(_server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def run_gunicorn(settings: Settings, options: dict[str, Any]) -> None:
    """Serve ``create_app()`` with gunicorn until stopped, with a fresh metrics folder."""
    from gunicorn.app.base import BaseApplication

    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="spamguard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Each worker is one request at a time: one torch thread each avoids oversubscribing cores.
    # (main() may have set the quota's CPUs already: the workers still get one each.)
    from spamguard.cpus import omp_threads_chosen

    if not omp_threads_chosen():
        os.environ["OMP_NUM_THREADS"] = "1"

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            from spamguard.app import create_app

            return create_app()

    master = os.getpid()
    try:
        Application().run()
    finally:
        # Workers are forked inside run(), and one that exits (SIGTERM, a reload, a timed-out
        # request) leaves through this block too: only the master may remove the folder all
        # workers write to, or every later request fails to record its metrics.
        if metrics_dir and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
