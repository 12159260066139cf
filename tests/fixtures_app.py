"""App fixtures (flaskr style): ``app``, ``client`` and ``runner`` on a fresh database with
the tiny model registered as the active version. Parametrised over SQLite and PostgreSQL
through ``migrated_db_url``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def app_home(tmp_path: Path) -> Path:
    """The instance folder of the test app."""
    home = tmp_path / "instance"
    home.mkdir()
    return home


@pytest.fixture
def install_model(app_home: Path, migrated_db_url: str):
    """Copy a model version into the app's models folder and register it."""

    def install(source: Path, *, activate: bool = True) -> str:
        from spamguard.db import make_engine, make_session_factory, session_scope
        from spamguard.services import registry

        target = app_home / "models" / source.name
        if not target.exists():
            shutil.copytree(source, target)
        engine = make_engine(migrated_db_url)
        try:
            with session_scope(make_session_factory(engine)) as session:
                version = registry.register_version(session=session, version_dir=target,
                                                    activate_if_none=activate)
                if activate and version.status != "active":
                    registry.promote(session=session, version_id=version.id)
                return version.id
        finally:
            engine.dispose()

    return install


@pytest.fixture
def app_config(app_home: Path, migrated_db_url: str) -> dict:
    """Overrides for ``create_app`` (extend in a test before asking for ``app``)."""
    return {"TESTING": True, "home": app_home, "database_url": migrated_db_url,
            "secret_key": "test-secret-" + "s" * 32, "twilio_auth_token": "test-twilio-token"}


@pytest.fixture
def app(app_config: dict, install_model, tiny_model_dir: Path):
    """The app with the tiny model active."""
    from spamguard.app import create_app

    install_model(tiny_model_dir)
    app = create_app(app_config)
    yield app
    app.extensions["spamguard.db"].dispose()


@pytest.fixture
def app_without_model(app_config: dict):
    """The app with no model version at all (classification must stay pending)."""
    from spamguard.app import create_app

    app = create_app(app_config)
    yield app
    app.extensions["spamguard.db"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()
