"""The Flask application factory (flaskr style): defaults, then environment, then overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, jsonify

from spamguard.config import PLACEHOLDER_SECRET, Settings, load_settings
from spamguard.errors import SpamguardError
from spamguard.extensions import Database

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
BLUEPRINTS = ("spamguard.webhook", "spamguard.api", "spamguard.ops", "spamguard.admin")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` overrides settings (tests pass ``home``, ``database_url``...).

    Keys of ``config`` that are not :class:`~spamguard.config.Settings` fields are kept in
    ``settings.extra`` and also copied into ``app.config`` (e.g. ``TESTING``).
    """
    settings = load_settings(config)
    check_secret(settings, testing=bool(settings.extra.get("TESTING")))
    app = Flask(__name__, template_folder=str(WEB_DIR / "templates"),
                static_folder=str(WEB_DIR / "static"), static_url_path="/static")
    app.config.update(SECRET_KEY=settings.secret_key,
                      MAX_CONTENT_LENGTH=settings.max_request_bytes,
                      SPAMGUARD=settings, **settings.extra)
    settings.home.mkdir(parents=True, exist_ok=True)
    Database().init_app(app)
    for module_name in BLUEPRINTS:
        _register(app, module_name)

    @app.errorhandler(SpamguardError)
    def _user_error(exc: SpamguardError):
        return jsonify(error=str(exc)), 400

    return app


def check_secret(settings: Settings, *, testing: bool) -> None:
    """Refuse the placeholder secret key outside development and tests."""
    if settings.secret_key == PLACEHOLDER_SECRET and settings.env != "development" and not testing:
        raise SpamguardError("SPAMGUARD_SECRET_KEY is not set: set it to a long random string "
                             "(or SPAMGUARD_ENV=development for local use)")


def _register(app: Flask, module_name: str) -> None:
    """Register ``module_name.bp`` (and run its ``init_app`` if it has one)."""
    from importlib import import_module

    module = import_module(module_name)
    if hasattr(module, "init_app"):
        module.init_app(app)
    app.register_blueprint(module.bp)
