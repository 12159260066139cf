"""/healthz, /metrics, request logs, pending draining after a model appears."""

from __future__ import annotations

import json
import logging
import time

import pytest

from spamguard.models import Message
from tests.fixtures_service import (
    SERVICE_LOGGERS,
    count_rows,
    create_key,
    post_signed,
    twilio_params,
)

pytestmark = pytest.mark.usefixtures("reuse_backbones")


def test_healthz_reports_database_and_model(client):
    data = client.get("/healthz").get_json()
    assert data["status"] == "ok" and data["database"] == "ok"
    assert data["model"]["loaded"] and data["model"]["version"]
    assert data["pending"] == 0


def test_healthz_without_model_is_degraded_but_up(app_without_model):
    response = app_without_model.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "degraded"
    assert response.get_json()["model"]["loaded"] is False


def test_healthz_database_down_is_503(make_app, tmp_path):
    app = make_app(database_url=f"sqlite:///{tmp_path}/missing/dir/x.db")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "error"


def test_healthz_says_busy_for_a_lock_and_keeps_the_pool(client, monkeypatch):
    """From an audit: a table lock (a migration) was reported as "unreachable" and threw
    the connection pool away."""
    import sqlite3

    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    from spamguard.extensions import get_db

    def locked(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))

    disposed = []
    with client.application.app_context():
        monkeypatch.setattr(type(get_db()), "dispose", lambda self: disposed.append(1))
    monkeypatch.setattr(Session, "execute", locked)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "busy: OperationalError: database is locked"
    assert not disposed


def test_metrics_count_requests_verdicts_and_model(client):
    post_signed(client, twilio_params())
    client.get("/nowhere")
    text = client.get("/metrics").data.decode()
    assert ('spamguard_http_requests_total{endpoint="webhook.twilio_inbound",method="POST",'
            'status="200"} 1.0') in text
    assert 'endpoint="unmatched"' in text
    assert "spamguard_http_request_duration_seconds_bucket" in text
    assert "spamguard_verdicts_total{label=" in text
    assert 'spamguard_model_loaded{version="' in text


def test_a_metric_that_cannot_be_written_fails_no_request(client, caplog, monkeypatch):
    """E.g. a temporary-file cleaner removed the multiprocess folder: requests are served
    (and the message stored), and the log says so once, not on every request."""
    metrics = client.application.extensions["spamguard.metrics"]

    def gone(*_args):
        raise FileNotFoundError(2, "No such file or directory", "/tmp/m/counter_1.db")

    for metric in (metrics.requests, metrics.latency, metrics.verdicts, metrics.model):
        monkeypatch.setattr(metric, "labels", gone)
    with caplog.at_level(logging.WARNING, logger="spamguard.metrics"):
        for body in ("first message", "second message"):
            assert post_signed(client, twilio_params(body)).status_code == 200
        assert client.get("/healthz").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "spamguard.metrics"]
    assert warnings == ["metrics: not recorded (FileNotFoundError: [Errno 2] No such file or "
                        "directory: '/tmp/m/counter_1.db'); requests are served as usual"]
    assert metrics.failures["FileNotFoundError"] >= 7  # 3 requests, 2 verdicts, model
    assert count_rows(client.application, Message) == 2


def test_one_json_log_line_per_request_without_body(client, caplog):
    body = "secret body text 12345"
    with caplog.at_level(logging.INFO, logger="spamguard.access"):
        post_signed(client, twilio_params(body))
    [line] = [r.getMessage() for r in caplog.records if r.name == "spamguard.access"]
    record = json.loads(line)
    assert record["path"] == "/webhook/twilio" and record["status"] == 200
    assert record["message_id"] and record["label"] in {"spam", "ham"}
    assert record["duration_ms"] >= 0
    assert body not in line


def test_bodies_logged_only_when_enabled(make_app, caplog):
    client = make_app(log_bodies=True).test_client()
    with caplog.at_level(logging.INFO, logger="spamguard.access"):
        post_signed(client, twilio_params("log me please"))
    assert any("log me please" in r.getMessage() for r in caplog.records)


def test_pending_messages_drained_once_a_model_loads(app_without_model, install_model,
                                                     tiny_model_dir):
    from dataclasses import replace

    app = app_without_model
    app.config["SPAMGUARD"] = replace(app.config["SPAMGUARD"], model_check_seconds=0)
    client = app.test_client()
    for _ in range(3):
        post_signed(client, twilio_params())
    assert client.get("/healthz").get_json()["pending"] == 3
    install_model(tiny_model_dir)
    response = client.get("/healthz")  # loads the model; the drain runs once the answer is sent
    response.close()
    assert client.get("/healthz").get_json()["pending"] == 0
    assert count_rows(app, Message) == 3
    metrics = client.get("/metrics").get_data(as_text=True)
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("spamguard_verdicts_total{"))
    assert counted == 3  # drained verdicts are counted like answered ones


def test_pending_after_a_failure_is_retried_while_the_model_stays(make_app, monkeypatch):
    """A message whose classification failed with a model loaded is tried again after
    SPAMGUARD_PENDING_RETRY_SECONDS, not only at the next model load."""
    from spamguard.services.model_provider import provider_for

    app = make_app(model_check_seconds=0, pending_retry_seconds=300)
    client = app.test_client()
    client.get("/healthz").close()  # loads the model (and drains nothing)
    provider = provider_for(app)
    now = [1000.0]
    monkeypatch.setattr(provider, "_clock", lambda: now[0])
    provider._drained_at = now[0]
    classifier = provider.peek()

    def out_of_memory(texts, progress=None):
        raise MemoryError("simulated")

    monkeypatch.setattr(classifier, "predict_proba", out_of_memory)
    post_signed(client, twilio_params("WIN a prize now")).close()
    monkeypatch.undo()  # the model works again, but nothing was reloaded
    monkeypatch.setattr(provider, "_clock", lambda: now[0])
    client.get("/healthz").close()
    assert client.get("/healthz").get_json()["pending"] == 1  # not due yet
    now[0] += 300
    client.get("/healthz").close()  # due: the drain runs once the answer is sent
    assert client.get("/healthz").get_json()["pending"] == 0


def test_a_drain_the_database_refuses_says_so_in_a_line_and_tries_after_the_next_request(
        make_app, monkeypatch, caplog):
    """From an audit: a lock or outage right after the answer made the drain's error reach
    gunicorn's log as "Error handling request" (with the SQL), and the message waited for
    the 5-minute retry."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from spamguard.services import messages as message_service
    from spamguard.services.model_provider import provider_for

    app = make_app(model_check_seconds=0)
    client = app.test_client()
    client.get("/healthz").close()  # loads the model
    provider = provider_for(app)
    classifier = provider.peek()
    monkeypatch.setattr(classifier, "predict_proba",
                        lambda texts, progress=None: (_ for _ in ()).throw(MemoryError()))
    post_signed(client, twilio_params("WIN a prize now")).close()  # stays pending
    monkeypatch.undo()
    provider.drain_wanted = True

    def locked(**_kwargs):
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

    original = message_service.classify_pending

    tries = []

    def locked_and_counted(**kwargs):
        tries.append(1)
        locked(**kwargs)

    now = [1000.0]
    monkeypatch.setattr(provider, "_clock", lambda: now[0])
    monkeypatch.setattr(message_service, "classify_pending", locked_and_counted)
    with caplog.at_level(logging.WARNING, logger="spamguard.ops"):
        client.get("/healthz").close()  # the drain runs once the answer is sent, and fails
    assert any("pending messages not drained" in r.getMessage() for r in caplog.records)
    # Not after every request (each would wait out a lock or connect timeout; a review
    # found 10 tries in 10 requests), and not in 5 minutes either: after 30 s.
    for _ in range(5):
        client.get("/metrics").close()
    assert len(tries) == 1
    now[0] += 30
    client.get("/metrics").close()
    assert len(tries) == 2
    monkeypatch.setattr(message_service, "classify_pending", original)
    now[0] += 30
    client.get("/healthz").close()
    assert client.get("/healthz").get_json()["pending"] == 0


def test_a_refused_api_call_is_timed_from_the_start(make_app, monkeypatch):
    """From an audit: 429s were logged with duration_ms 0.0, since the rate limiter's hook
    (which looks up the key) ran before the timer started."""
    from spamguard import api as api_module
    from spamguard.services import apikeys

    app = make_app(api_rate_limit="1 per minute")
    client = app.test_client()
    key = create_key(app)
    verify = apikeys.verify_api_key

    def slow_lookup(**kwargs):
        time.sleep(0.02)
        return verify(**kwargs)

    monkeypatch.setattr(api_module.apikeys, "verify_api_key", slow_lookup)
    from spamguard import ops

    lines = []
    monkeypatch.setattr(ops.access_log, "info", lines.append)
    headers = {"Authorization": f"Bearer {key}"}
    statuses = [client.get("/api/v1/messages/1", headers=headers).status_code
                for _ in range(2)]
    assert statuses == [404, 429]
    records = [json.loads(line) for line in lines]
    assert [r["status"] for r in records] == [404, 429]
    assert all(r["duration_ms"] >= 20 for r in records), records


def test_a_wrong_method_on_healthz_is_answered_in_json(client):
    """From an audit: POST /healthz got Flask's HTML 405 page; monitors read JSON."""
    response = client.post("/healthz")
    assert response.status_code == 405 and response.is_json
    assert "GET" in response.headers["Allow"] and response.get_json()["error"]


def test_admin_paths_keep_html_errors(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


def test_access_line_printed_once_even_when_a_library_configures_the_root_logger(tmp_path):
    """onnxruntime's quantizer calls logging.info(), which gives the root logger a handler;
    the access log must not then reach stderr twice."""
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from spamguard.app import create_app\n"
        f"app = create_app({{'home': {str(tmp_path)!r}, 'TESTING': True}})\n"
        "logging.info('a library talking')\n"
        "app.test_client().get('/healthz')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if '"path": "/healthz"' in line
             or '"path":"/healthz"' in line]
    assert len(lines) == 1, result.stderr


class _Keep(logging.Handler):
    """A root handler an operator set up (a syslog or journald one, say): keeps the JSON
    lines of the service's two loggers."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, dict]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in SERVICE_LOGGERS:
            self.lines.append((record.name, json.loads(record.getMessage())))


def test_access_lines_and_model_events_reach_the_root_handlers_an_operator_set_up(
        make_app, logging_setup):
    """Logging set up at the root before the app is made (dictConfig, gunicorn's
    --log-config-json) got neither access lines nor model events: the app turned
    propagation off. Now it adds no handler of its own and lets INFO through."""
    operator = _Keep()
    logging_setup.add_root_handler(operator)
    client = make_app(model_check_seconds=0).test_client()
    assert client.get("/healthz").status_code == 200
    assert [(name, line["event"]) for name, line in operator.lines] == [
        ("spamguard.model", "model_loaded"), ("spamguard.access", "request")]
    assert operator.lines[1][1]["path"] == "/healthz"
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        assert (logger.handlers, logger.propagate, logger.level) == ([], True, logging.INFO)


def test_a_level_the_operator_gave_a_service_logger_is_kept(make_app, logging_setup):
    operator = _Keep()
    logging_setup.add_root_handler(operator)
    logging.getLogger("spamguard.access").setLevel(logging.WARNING)  # no access lines
    client = make_app(model_check_seconds=0).test_client()
    assert client.get("/healthz").status_code == 200
    assert [(name, line["event"]) for name, line in operator.lines] == [
        ("spamguard.model", "model_loaded")]
    assert logging.getLogger("spamguard.access").level == logging.WARNING


def test_without_logging_set_up_the_service_writes_its_lines_to_stderr_alone(
        make_app, logging_setup):
    """No root handler when the app is made: a stderr handler of its own on each logger,
    not propagating (a library's later logging.basicConfig would print every line twice;
    see the subprocess test above)."""
    import sys

    with logging_setup.without_root_handlers():
        make_app()
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        [handler] = [handler for handler in logger.handlers
                     if handler not in logging.getLogger().handlers]  # not pytest's
        assert type(handler) is logging.StreamHandler and handler.stream is sys.stderr
        assert (logger.propagate, logger.level) == (False, logging.INFO)


def test_the_bare_address_leads_to_the_admin_ui(client):
    response = client.get("/")
    assert response.status_code == 302 and response.location.endswith("/admin/dashboard")


def test_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response.location.endswith("/static/favicon.svg")
    icon = client.get(response.location)
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    login = client.get("/admin/login").get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in login
