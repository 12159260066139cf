"""Service fixtures: API keys in the app's database, signed Twilio requests, and the
logging set-up the service finds when it starts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count

import pytest
from twilio.request_validator import RequestValidator

TWILIO_URL = "http://localhost/webhook/twilio"
_sids = count(1)


def twilio_params(body: str = "Are we still on for lunch tomorrow?", **extra: str) -> dict:
    """An inbound-SMS form as Twilio sends it (a fresh MessageSid unless given)."""
    params = {"MessageSid": f"SM{next(_sids):032d}", "AccountSid": "AC" + "0" * 32,
              "From": "+15550001111", "To": "+15550002222", "Body": body, "NumMedia": "0"}
    params.update(extra)
    return params


def sign(params: dict, *, url: str = TWILIO_URL, token: str = "test-twilio-token") -> str:
    """The X-Twilio-Signature Twilio would send for ``params`` posted to ``url``."""
    return RequestValidator(token).compute_signature(url, params)


@pytest.fixture
def post_twilio(client):
    """Post a signed (by default) inbound SMS to the webhook."""

    def post(params: dict | None = None, *, signature: str | None = None, **kwargs):
        params = twilio_params() if params is None else params
        headers = kwargs.pop("headers", {})
        headers.setdefault("X-Twilio-Signature", signature or sign(params))
        return client.post("/webhook/twilio", data=params, headers=headers, **kwargs)

    return post


def create_key(app, name: str = "tests", scopes=None) -> str:
    """Create an API key (``scopes`` None: all) in ``app``'s database; return its plaintext."""
    from spamguard.extensions import get_db
    from spamguard.services import apikeys

    with app.app_context(), get_db().session_factory() as session:
        _row, plaintext = apikeys.create_api_key(session=session, name=name, scopes=scopes)
        session.commit()
    return plaintext


@pytest.fixture
def api_key(app) -> str:
    """A fresh API key for ``app``."""
    return create_key(app)


@pytest.fixture
def api(client, api_key):
    """``api(method, path, json=...)`` with the API key attached."""

    def call(method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {api_key}", **kwargs.pop("headers", {})}
        return client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)

    return call


def count_rows(app, model) -> int:
    """Rows in ``model``'s table of ``app``'s database."""
    from sqlalchemy import func, select

    from spamguard.extensions import get_db

    with app.app_context(), get_db().session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)))


@pytest.fixture(scope="session")
def _backbone_memo() -> dict:
    return {}


@pytest.fixture
def reuse_backbones(monkeypatch, _backbone_memo):
    """Load each backbone once per test session (every app would reload the same tiny one)."""
    from spamguard.ml import classifier

    real = classifier.load_backbone

    def load_once(name=None):
        if name not in _backbone_memo:
            _backbone_memo[name] = real(name)
        return _backbone_memo[name]

    monkeypatch.setattr(classifier, "load_backbone", load_once)


@pytest.fixture
def make_app(app_config, install_model, tiny_model_dir):
    """Build an app with the tiny model active and some settings changed."""
    from spamguard.app import create_app

    built = []

    def make(**overrides):
        install_model(tiny_model_dir)
        built.append(create_app({**app_config, **overrides}))
        return built[-1]

    yield make
    for app in built:
        app.extensions["spamguard.db"].dispose()


SERVICE_LOGGERS = ("spamguard.access", "spamguard.model")  # the two the app may set up


class LoggingSetup:
    """What the ``logging_setup`` fixture lets a test do to the root logger."""

    def __init__(self) -> None:
        self.root = logging.getLogger()
        self.added: list[logging.Handler] = []

    def add_root_handler(self, handler: logging.Handler) -> None:
        """Set logging up at the root, as an operator does before the app is made
        (``dictConfig``, gunicorn's ``--log-config-json``); taken off after the test."""
        self.root.addHandler(handler)
        self.added.append(handler)

    @contextmanager
    def without_root_handlers(self) -> Iterator[None]:
        """For the block, a root logger with no handler, as in a process where nothing set
        logging up (pytest's capturing handlers step aside, and are put back after)."""
        kept = self.root.handlers[:]
        for handler in kept:
            self.root.removeHandler(handler)
        try:
            yield
        finally:
            for handler in kept:
                self.root.addHandler(handler)


@pytest.fixture
def logging_setup() -> Iterator[LoggingSetup]:
    """The service's two loggers as in a fresh process (no handler, level NOTSET,
    propagating), and logging as it was after the test: their handlers, levels and
    propagation, the root's level, without the root handlers the test added.

    pytest attaches its capturing handlers to the root, and to every logger that does not
    propagate, for each phase of a test, and takes them off after the phase: a logger's
    handler that is also on the root is pytest's, neither removed nor put back here."""
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in SERVICE_LOGGERS]

    def own(logger: logging.Logger) -> list[logging.Handler]:
        return [handler for handler in logger.handlers if handler not in root.handlers]

    saved = [(own(logger), logger.level, logger.propagate) for logger in loggers]
    root_level = root.level
    for logger in loggers:
        for handler in own(logger):
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    setup = LoggingSetup()
    try:
        yield setup
    finally:
        for handler in setup.added:
            root.removeHandler(handler)
        root.setLevel(root_level)
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            for handler in own(logger):  # the app's, made during the test
                logger.removeHandler(handler)
                handler.close()
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def post_signed(client, params: dict, **sign_kwargs):
    """Post ``params`` to the webhook signed for ``sign_kwargs`` (url, token)."""
    return client.post("/webhook/twilio", data=params,
                       headers={"X-Twilio-Signature": sign(params, **sign_kwargs)})


@contextmanager
def database_dies_once_a_message_is_stored(app, error: str = "disk I/O error"):
    """From the commit that stores a message on, every statement of ``app`` fails with
    ``error`` (as the driver raises it): a server gone, a disk full, just after the store."""
    from sqlalchemy import event

    from spamguard.extensions import get_db

    with app.app_context():
        engine = get_db().engine
    inserted, dead = [], []

    def stored(_conn):
        if inserted:
            dead.append(True)

    def gone(_conn, _cursor, statement, _parameters, _context, _many):
        if dead:
            raise engine.dialect.loaded_dbapi.OperationalError(error)
        if statement.lstrip().upper().startswith("INSERT INTO MESSAGES"):
            inserted.append(True)

    event.listen(engine, "commit", stored)
    event.listen(engine, "before_cursor_execute", gone)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", gone)
        event.remove(engine, "commit", stored)
