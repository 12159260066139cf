"""Flask extensions bound in the factory; nothing here touches a database at import."""

from __future__ import annotations

import os

from flask import Flask, current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from spamguard.db import make_engine, make_session_factory


class Database:
    """One engine per process (created after a fork), one session per request."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._engine: Engine | None = None
        self._factory: sessionmaker[Session] | None = None

    def init_app(self, app: Flask) -> None:
        app.extensions["spamguard.db"] = self
        app.teardown_appcontext(self._teardown)

    @property
    def engine(self) -> Engine:
        """The process's engine (rebuilt in a forked worker so no connection is shared)."""
        if self._engine is None or self._pid != os.getpid():
            settings = current_app.config["SPAMGUARD"]
            # Bound values (SMS bodies, numbers) reach error logs only with log_bodies on.
            self._engine = make_engine(settings.resolved_database_url,
                                       hide_parameters=not settings.log_bodies,
                                       request_timeouts=True)
            self._factory = make_session_factory(self._engine)
            self._pid = os.getpid()
        return self._engine

    @property
    def session_factory(self) -> sessionmaker[Session]:
        self.engine  # noqa: B018  (builds the factory with the engine)
        assert self._factory is not None
        return self._factory

    def session(self) -> Session:
        """The request's session (closed at the end of the app context)."""
        if "spamguard_session" not in g:
            g.spamguard_session = self.session_factory()
        return g.spamguard_session

    def dispose(self) -> None:
        """Drop the engine (tests and shutdown)."""
        if self._engine is not None:
            self._engine.dispose()
        self._engine = self._factory = None

    @staticmethod
    def _teardown(_exc: BaseException | None) -> None:
        session = g.pop("spamguard_session", None)
        if session is not None:
            session.close()


def get_db() -> Database:
    """The app's :class:`Database`."""
    return current_app.extensions["spamguard.db"]


def db_session() -> Session:
    """Shortcut for the current request's session."""
    return get_db().session()
