"""Service fixtures: API keys in the app's database and signed Twilio requests."""

from __future__ import annotations

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


def post_signed(client, params: dict, **sign_kwargs):
    """Post ``params`` to the webhook signed for ``sign_kwargs`` (url, token)."""
    return client.post("/webhook/twilio", data=params,
                       headers={"X-Twilio-Signature": sign(params, **sign_kwargs)})
