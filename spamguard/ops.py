"""Operations: ``/healthz``, ``/metrics``, one JSON log line per request, JSON errors.

Metrics use prometheus_client; with ``PROMETHEUS_MULTIPROC_DIR`` set (``spamguard serve``
sets it) every gunicorn worker writes its samples there and ``/metrics`` sums them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    url_for,
)
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from spamguard.db import database_busy, database_cannot_write, database_unavailable
from spamguard.extensions import db_session, get_db
from spamguard.intake import json_error, unavailable
from spamguard.metrics import Metrics
from spamguard.services import messages
from spamguard.services.model_provider import DRAIN_BACKOFF_SECONDS, provider_for

bp = Blueprint("ops", __name__)
access_log = logging.getLogger("spamguard.access")
log = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/webhook/", "/healthz")  # machines' paths: errors in JSON
DATABASE_RETRY_SECONDS = 5  # Retry-After of a 503 for a busy or unreachable database
CANNOT_WRITE_RETRY_SECONDS = 60  # ... for one that cannot write (a person must free space)
# The last "cannot write" of this worker (monotonic time, error line): /healthz reports it
# for a while, since its own SELECT 1 passes on a full disk or a read-only standby.
WRITE_FAILURE = "spamguard.write_failure"
WRITE_FAILURE_SHOWN_SECONDS = 120


def init_app(app: Flask) -> None:
    """Install proxy handling, metrics, request logging, JSON errors and pending draining."""
    if app.config["SPAMGUARD"].trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)
    metrics = Metrics()
    app.extensions["spamguard.metrics"] = metrics
    app.extensions["spamguard.count_verdict"] = metrics.count_verdict
    _ensure_log_handler()
    # First of all before-request hooks: the rate limiter's (registered earlier, with the
    # API) looks up the key and may refuse, and that time belongs in the logged duration.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_after_request)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def _ensure_log_handler() -> None:
    """Send access lines and model events (``spamguard.model``: a worker loaded, failed to
    load or lost its model) to stderr, which gunicorn keeps, unless logging is set up
    already: a logger with a handler of its own is left alone, and when the root logger has
    handlers as the app is made (the operator's ``dictConfig``, gunicorn's
    ``--log-config-json``, a syslog or journald handler) the lines go to those."""
    root = logging.getLogger()
    for logger in (access_log, logging.getLogger("spamguard.model")):
        if logger.handlers:
            continue
        if root.handlers:
            # Propagation stays on, else the operator's handlers would never see a line; the
            # logger's level is the operator's if they gave it one, else INFO (the root's
            # WARNING would drop every line).
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
            continue
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # Not also to the root logger: a library that calls logging.info() (onnxruntime's
        # quantizer does) gives the root a handler, and every line would print twice.
        logger.propagate = False


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _after_request(response: Response) -> Response:
    """Log and count the request; drain pending messages after a model (re)load, and every
    ``SPAMGUARD_PENDING_RETRY_SECONDS`` while one is loaded."""
    started = g.get("request_started", time.perf_counter())
    duration = time.perf_counter() - started
    endpoint = request.endpoint or "unmatched"  # unmatched: no per-URL label explosion
    metrics, provider = current_app.extensions["spamguard.metrics"], provider_for(current_app)
    metrics.observe(endpoint, request.method, response.status_code, duration)
    metrics.set_model(provider.version_id)
    record = {"event": "request", "method": request.method, "path": request.path,
              "status": response.status_code, "duration_ms": round(duration * 1000, 2),
              "message_id": g.get("message_id"), "label": g.get("verdict_label"),
              "pid": os.getpid()}
    if "log_body" in g:
        record["body"] = g.log_body  # only when SPAMGUARD_LOG_BODIES is on
    access_log.info(json.dumps(record, ensure_ascii=False))
    if provider.drain_due():
        response.call_on_close(_drain_callback(current_app._get_current_object()))
    return response


def _drain_callback(app: Flask):
    """Return a function that classifies a batch of pending messages once the answer is sent."""

    def drain() -> None:
        provider = provider_for(app)
        classifier = provider.peek()
        if classifier is None or not provider.start_drain():
            return  # one drain at a time in this process
        batch = app.config["SPAMGUARD"].pending_drain_batch
        try:
            with app.app_context():
                with get_db().session_factory() as session:
                    count = app.extensions["spamguard.count_verdict"]
                    done = messages.classify_pending(session=session, classifier=classifier,
                                                     limit=batch,
                                                     on_verdict=lambda v: count(v.label))
        except DBAPIError as exc:
            # The answer is sent; an error here reached the WSGI server's log as "Error
            # handling request" with the SQL, and the messages waited for the next retry
            # (5 minutes). Say it in one line and try again soon.
            if not database_unavailable(exc):
                raise
            log.warning("pending messages not drained (database busy or unreachable: %s); "
                        "trying again in %.0f s", _first_line(exc), DRAIN_BACKOFF_SECONDS)
            provider.drain_failed()
            return
        if done >= batch:
            provider.drain_wanted = True  # more may wait: continue after the next request

    return drain


def is_admin_path(path: str) -> bool:
    """Whether ``path`` is under the admin UI (``/admin`` or ``/admin/...``)."""
    return path == "/admin" or path.startswith("/admin/")


def _wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES)


def _http_error(exc: HTTPException):
    """JSON errors for API and webhook paths; the admin UI's error page for an address
    under /admin that no admin page answers (the blueprint's own handler never sees a
    routing error); the usual pages elsewhere."""
    if is_admin_path(request.path):
        from spamguard.admin import routing_error

        return routing_error(exc)
    if not _wants_json():
        return exc
    headers = {k: v for k, v in exc.get_headers() if k.lower() in {"allow", "retry-after"}}
    message = exc.description or exc.name
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"request body too large: the limit is {limit} bytes"
    elif exc.code == 429:
        message = f"rate limit exceeded ({exc.description}); retry later"
    response = json_error(message, exc.code or 500, **headers)
    if exc.code == 429 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(_retry_after())
    return response


def _retry_after() -> int:
    """Seconds until the breached rate-limit window resets (Flask-Limiter knows it; it
    keeps the request's limit in its own context, not on ``g``, where an earlier version
    looked, so every 429 said 60 s, even under a limit of 2 a second)."""
    limiter = current_app.extensions.get("spamguard.limiter")
    current = limiter.current_limit if limiter is not None else None
    if current is None:
        return 60
    return max(1, current.reset_at - int(time.time()))


def _first_line(exc: DBAPIError) -> str:
    """The driver's error class and first line: PostgreSQL's DETAIL lines can quote the row
    (the SMS body and numbers included)."""
    first = (str(exc.orig).strip().splitlines() or [""])[0]
    return f"{type(exc.orig).__name__}: {first}"


def _unexpected_error(exc: Exception):
    """Log the traceback; API and webhook callers get a JSON 500 without internals (a 503
    with Retry-After when the database is only busy or unreachable)."""
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if not _wants_json():
        raise exc  # other areas keep Flask's own handling (and tests see the traceback)
    if database_unavailable(exc):
        current_app.logger.warning("database busy or unreachable on %s %s: %s (answered 503)",
                                   request.method, request.path, _first_line(exc))
        return unavailable("the database is busy or unreachable; try again shortly (a "
                           "retried message with the same id is stored once)",
                           retry_after=DATABASE_RETRY_SECONDS)
    if database_cannot_write(exc):
        current_app.extensions[WRITE_FAILURE] = (time.monotonic(), _first_line(exc))
        current_app.logger.error("the database cannot write on %s %s: %s (answered 503)",
                                 request.method, request.path, _first_line(exc))
        return unavailable("the database cannot store anything now (a full disk, or "
                           "read-only); try again later (a retried message with the same "
                           "id is stored once)", retry_after=CANNOT_WRITE_RETRY_SECONDS)
    if isinstance(exc, DBAPIError) and not current_app.config["SPAMGUARD"].log_bodies:
        # The driver's text can quote the row (PostgreSQL: "DETAIL: Failing row contains
        # (...)", with the SMS body and numbers): log its first line and the stack only.
        current_app.logger.error(
            "unhandled database error on %s %s: %s (details hidden; "
            "SPAMGUARD_LOG_BODIES=1 logs them)\n%s", request.method, request.path,
            _first_line(exc), "".join(traceback.format_tb(exc.__traceback__)))
    else:
        current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return json_error("internal error; the message, if accepted, is kept", 500)


@bp.get("/")
def index() -> Response:
    """A person opening the server's address wants the admin UI (it asks to log in)."""
    return redirect(url_for("admin.dashboard"))


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on any page without an icon link (a JSON answer, say):
    send them to the admin UI's icon rather than a 404 in their console."""
    return redirect(url_for("static", filename="favicon.svg"), 301)


@bp.get("/healthz")
def healthz() -> Response:
    """Database reachable (200) or not (503), or unable to write lately (503: a full disk
    or a read-only standby answers SELECT 1); whether a model is loaded and which version."""
    try:
        session = db_session()
        session.execute(text("SELECT 1"))
        classifier = provider_for(current_app).get(session=session)
        pending = messages.count_pending(session=session)
    except Exception as exc:  # the database is down or busy: report, don't crash
        if database_busy(exc):  # it answers: its connections are fine, keep them
            return jsonify(status="error", database=f"busy: {_first_line(exc)}"), 503
        get_db().dispose()
        return jsonify(status="error", database=f"unreachable: {type(exc).__name__}"), 503
    failed = current_app.extensions.get(WRITE_FAILURE)
    if failed is not None and time.monotonic() - failed[0] < WRITE_FAILURE_SHOWN_SECONDS:
        ago = round(time.monotonic() - failed[0])
        return jsonify(status="error",
                       database=f"cannot write ({ago} s ago): {failed[1]}"), 503
    provider = provider_for(current_app)
    model = {"loaded": classifier is not None, "version": provider.version_id,
             "error": provider.last_error}
    status = "ok" if classifier is not None else "degraded"
    return jsonify(status=status, database="ok", model=model, pending=pending)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format (all workers' samples in multiprocess mode)."""
    body, content_type = current_app.extensions["spamguard.metrics"].render()
    return Response(body, content_type=content_type)
