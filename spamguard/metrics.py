"""Prometheus metrics for one app: requests, latency, verdicts and the loaded model version.

Each app gets its own registry (tests build many apps). In multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported, as ``spamguard serve``
does) samples go to files in that folder and :meth:`Metrics.render` aggregates all workers.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)


log = logging.getLogger(__name__)


def never_fails(record: Callable[..., None]) -> Callable[..., None]:
    """Make a recording method log instead of raise: a request must not fail (nor a
    stored message be answered with a 500) because a metric could not be written, e.g.
    when a temporary-file cleaner removed the multiprocess folder. Logged once per
    process and kind of error, so a broken folder does not flood the log."""

    @functools.wraps(record)
    def guarded(self: Metrics, *args: Any, **kwargs: Any) -> None:
        try:
            record(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (metrics are never worth a failed request)
            kind = type(exc).__name__
            if kind not in self.failures:
                log.warning("metrics: not recorded (%s: %s); requests are served as usual",
                            kind, exc)
            self.failures[kind] = self.failures.get(kind, 0) + 1

    return guarded


def multiprocess_dir() -> str | None:
    """The multiprocess folder, when one is configured and exists."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and os.path.isdir(path) else None


class Metrics:
    """The service's metrics, registered on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("spamguard_http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("spamguard_http_request_duration_seconds",
                                 "HTTP request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.verdicts = Counter("spamguard_verdicts", "Verdicts stored, by label", ["label"],
                                registry=self.registry)
        # livemax: a version shows 1 while any live worker serves it.
        self.model = Gauge("spamguard_model_loaded", "Model version loaded by workers (1)",
                           ["version"], registry=self.registry, multiprocess_mode="livemax")
        self._model_version: str | None = None
        self.failures: dict[str, int] = {}  # recordings lost, by kind of error

    @never_fails
    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one request and record its latency."""
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    @never_fails
    def count_verdict(self, label: str) -> None:
        """Count one stored verdict."""
        self.verdicts.labels(label).inc()

    @never_fails
    def set_model(self, version: str | None) -> None:
        """Record which version this process serves (the old one drops to 0)."""
        if version == self._model_version:
            return
        if self._model_version is not None:
            self.model.labels(self._model_version).set(0)
        if version is not None:
            self.model.labels(version).set(1)
        self._model_version = version

    def render(self) -> tuple[bytes, str]:
        """Return the exposition text (summed over workers in multiprocess mode)."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry), CONTENT_TYPE_LATEST
