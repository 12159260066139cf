"""Per-process lazy model loader that follows the registry's active version.

A worker loads the active version on first use (never at import), re-checks the database at
most every ``check_seconds`` and switches to a newly activated version without a restart,
reusing the loaded backbone when the new version was trained on the same encoder. When no
version is active or loading fails it returns None, so callers keep messages pending.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spamguard.models import ModelVersion

# One JSON line per event (loaded, load failed, no active version), beside the access lines:
# an operator can see in the service's log when and how fast each worker switched model.
log = logging.getLogger("spamguard.model")
EXTENSION_KEY = "spamguard.model_provider"
# A drain the database refused is tried again after this long (ModelProvider.drain_failed).
DRAIN_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class ActiveRow:
    """The registry's view of the active version (what the provider compares against)."""

    id: str
    directory: str


class ModelProvider:
    """Hold this process's classifier and keep it in step with the active version."""

    def __init__(self, *, check_seconds: float = 5.0, cache_root: Path | None = None,
                 quantize: bool = False, runtime: str = "torch", onnx_dir: Path | None = None,
                 retry_seconds: float = 0.0, clock=time.monotonic,
                 log_events: bool = True) -> None:
        self.check_seconds = check_seconds
        # The events are the service's log lines; a command that reports a failure itself
        # turns them off (unconfigured, Python printed them on stderr beside its error).
        self.log_events = log_events
        self.retry_seconds = retry_seconds
        self.cache_root = cache_root
        self.quantize = quantize
        # The service classifies one message at a time, where ONNX Runtime has the lowest
        # latency and bf16 gains nothing, so "auto" means onnx here (not as for batches).
        self.runtime = "onnx" if runtime == "auto" else runtime
        self.onnx_dir = onnx_dir
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> ModelProvider:
        """A provider with the service's model settings (runtime, quantize, ONNX folder)."""
        options = {"check_seconds": settings.model_check_seconds,
                   "quantize": settings.quantize, "runtime": settings.runtime,
                   "onnx_dir": settings.onnx_dir,
                   "retry_seconds": settings.pending_retry_seconds}
        return cls(**{**options, **overrides})

    def reset(self) -> None:
        """Forget the loaded model (tests; also done automatically after a fork)."""
        self._pid = os.getpid()
        self._classifier: Any = None
        self._version_id: str | None = None
        self._checked_at: float | None = None
        self.last_error: str | None = None
        self._reported: tuple[str, ...] | None = None  # the last event logged (once each)
        self.loads = 0  # versions loaded by this process (tests and /healthz read it)
        self.backbone_reuses = 0
        self._last_reuse = False  # whether the last load kept the loaded backbone
        # Set on each load (pending messages may now be classifiable) and by a drain that
        # filled its batch (more may wait).
        self.drain_wanted = False
        self._drained_at: float | None = None
        self._drain_not_before = 0.0  # after a drain the database refused (drain_failed)

    @property
    def version_id(self) -> str | None:
        """The loaded version, or None."""
        return self._version_id if self._classifier is not None else None

    def peek(self) -> Any:
        """Return the loaded classifier without touching the database (None if none)."""
        return self._classifier if self._pid == os.getpid() else None

    def drain_due(self) -> bool:
        """Whether pending messages should be tried: a model is loaded and a drain is wanted,
        or the last try is ``retry_seconds`` old (messages whose classification failed while
        this model was loaded, e.g. after an out-of-memory error)."""
        if self.peek() is None:
            return False
        if self.drain_wanted:
            return self._clock() >= self._drain_not_before
        return (self.retry_seconds > 0 and self._drained_at is not None
                and self._clock() - self._drained_at >= self.retry_seconds)

    def drain_failed(self, backoff_seconds: float = DRAIN_BACKOFF_SECONDS) -> None:
        """Try the drain again ``backoff_seconds`` from now: soon, but not after every
        request, each of which would wait out the database's lock or connect timeout while
        it is busy (a migration) or down."""
        self.drain_wanted = True
        self._drain_not_before = self._clock() + backoff_seconds

    def start_drain(self) -> bool:
        """Claim a due drain for this process (one at a time); False when none is due."""
        with self._lock:
            if not self.drain_due():
                return False
            self.drain_wanted, self._drained_at = False, self._clock()
            return True

    def get(self, *, session: Session) -> Any:
        """Return the classifier for the active version, loading or switching when due."""
        if self._pid != os.getpid():
            self.reset()  # a forked child must not trust its parent's state
        if not self._due():
            return self._classifier
        with self._lock:
            if self._due():
                self._refresh(session)
        return self._classifier

    def _due(self) -> bool:
        return self._checked_at is None or self._clock() - self._checked_at >= self.check_seconds

    def _refresh(self, session: Session) -> None:
        """Compare the loaded version with the active one and load it when they differ."""
        self._checked_at = self._clock()
        active = read_active(session)
        if active is None:
            if self._classifier is not None:
                self._event(logging.WARNING, "no_active_model", keeping=self._version_id)
            return
        if active.id == self._version_id and self._classifier is not None:
            self._reported = None  # all is well: the next loss or failure is news again
            return
        started = time.perf_counter()
        try:
            self._classifier = self._load(active)
        except Exception as exc:  # any failure leaves messages pending, never a 500
            self.last_error = f"cannot load model {active.id}: {exc}"
            self._event(logging.ERROR, "model_load_failed", version=active.id,
                        serving=self.version_id, error=self.last_error)
            return
        previous, self._version_id, self.last_error = self._version_id, active.id, None
        self.loads += 1
        self.drain_wanted = True
        self._event(logging.INFO, "model_loaded", version=active.id, previous=previous,
                    seconds=round(time.perf_counter() - started, 3),
                    backbone_reused=self._last_reuse, runtime=self.runtime)

    def _event(self, level: int, event: str, **fields: Any) -> None:
        """Log one JSON line; a failure or a missing active version repeats at every check,
        so the same event is logged once until something else happens."""
        key = (event, *(str(value) for value in fields.values()))
        if not self.log_events or level > logging.INFO and key == self._reported:
            return
        self._reported = key
        log.log(level, json.dumps({"event": event, **fields, "pid": os.getpid()},
                                  ensure_ascii=False))

    def _load(self, active: ActiveRow) -> Any:
        """Load ``active``, reusing the current backbone when it is the same encoder (the
        loader decides, from the version's model.json)."""
        from spamguard.ml.classifier import SpamClassifier

        current = self._classifier.backbone if self._classifier is not None else None
        classifier = SpamClassifier.load(Path(active.directory), reusable=current,
                                         cache_root=self.cache_root, quantize=self.quantize,
                                         runtime=self.runtime, onnx_dir=self.onnx_dir)
        self._last_reuse = current is not None and classifier.backbone is current
        self.backbone_reuses += self._last_reuse
        return classifier


def read_active(session: Session) -> ActiveRow | None:
    """Return the active version's id and directory (one small query)."""
    row = session.execute(
        select(ModelVersion.id, ModelVersion.directory)
        .where(ModelVersion.status == "active")
    ).first()
    return ActiveRow(*row) if row is not None else None


def provider_for(app: Any) -> ModelProvider:
    """Return (creating on first use) the provider kept in ``app.extensions``."""
    provider = app.extensions.get(EXTENSION_KEY)
    if provider is None:
        provider = ModelProvider.from_settings(app.config["SPAMGUARD"])
        app.extensions[EXTENSION_KEY] = provider
    return provider
