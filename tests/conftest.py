"""Shared pytest setup: fixtures live in one plugin module per area."""

pytest_plugins = [
    "tests.fixtures_ml",
    "tests.fixtures_db",
    "tests.fixtures_app",
    "tests.fixtures_admin",
    "tests.fixtures_retrain",
    "tests.fixtures_service",
]
