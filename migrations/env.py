"""Alembic environment: runs migrations on a connection given by spamguard, or from settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from spamguard.models import Base
from spamguard.services.text_search import include_in_autogenerate
from spamguard.sqltypes import UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Render spamguard's column types as plain SQLAlchemy ones in new revisions."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Connection) -> None:
    """Run the migrations in one transaction (SQLite too: see make_migration_engine)."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
        include_name=include_in_autogenerate,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Use spamguard's connection, or open one for the configured database (alembic CLI)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    from spamguard.config import load_settings
    from spamguard.db import ensure_sqlite_parent, make_migration_engine

    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    url = config.get_main_option("sqlalchemy.url") or load_settings().resolved_database_url
    ensure_sqlite_parent(url)
    engine = make_migration_engine(url)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run `spamguard db upgrade`")
run_online()
