"""Shared CLI state: settings are loaded once per invocation, not at import."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import click

from spamguard.config import Settings, load_settings
from spamguard.plot_config import use_writable_config


class NumberRange(click.FloatRange):
    """click's FloatRange, refusing NaN as well: ``nan`` passes every bound check (each
    comparison with it is False), so ``--margin nan`` or ``--days nan`` went on to fail
    deep inside, or to compare nothing."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


class Day(click.DateTime):
    """A UTC day written YYYY-MM-DD. click's DateTime said that "2026-02-30" "does not
    match the format '%Y-%m-%d'", which it does: the day is what does not exist."""

    name = "YYYY-MM-DD"

    def __init__(self) -> None:
        super().__init__(formats=["%Y-%m-%d"])

    def convert(self, value, param, ctx):
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            try:
                return super().convert(value.strip(), param, ctx)
            except click.BadParameter:
                self.fail(f"{value!r}: there is no such day", param, ctx)
        return super().convert(value, param, ctx)


class CliContext:
    """Lazily built settings (and anything else commands share)."""

    @cached_property
    def settings(self) -> Settings:
        try:
            settings = load_settings()
        except ValueError as exc:
            from spamguard.errors import SpamguardError

            raise SpamguardError(str(exc)) from exc
        use_writable_config(settings.cache_dir)  # before a command imports matplotlib
        return settings


pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (a person), not a pipe or a file."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no stream (pythonw, daemons), or a closed one
        return False


@contextmanager
def session_factory_for(ctx: CliContext, *, create: bool = True) -> Iterator:
    """Yield a session factory on a current schema.

    A missing SQLite file is created, unless ``create`` is False (commands that only read):
    then it raises :class:`~spamguard.errors.NoDatabaseError` naming the absolute path,
    rather than leaving a new empty instance wherever the command happened to run.
    """
    from spamguard.db import (
        empty_sqlite_file,
        make_session_factory,
        missing_sqlite_file,
        new_sqlite_removed_on_failure,
        open_database,
    )
    from spamguard.errors import NoDatabaseError

    url = ctx.settings.resolved_database_url
    if not create and (missing := missing_sqlite_file(url) or empty_sqlite_file(url)):
        setting = ("SPAMGUARD_DATABASE_URL" if ctx.settings.database_url else
                   f"SPAMGUARD_HOME (now {ctx.settings.home.resolve()}), and set "
                   "SPAMGUARD_DATABASE_URL if the service uses PostgreSQL (it is not set "
                   "here: cron and systemd do not read your shell's settings)")
        raise NoDatabaseError(missing.resolve(), setting, empty=missing.exists())
    with new_sqlite_removed_on_failure(url):  # a refused command leaves no new instance
        engine = open_database(url, create_if_empty=create,
                               hide_parameters=not ctx.settings.log_bodies)
        try:
            yield make_session_factory(engine)
        finally:
            engine.dispose()


@contextmanager
def transaction(ctx: CliContext, *, create: bool = True) -> Iterator:
    """Yield a session in one transaction (committed on success) on a current schema
    (``create`` as for :func:`session_factory_for`)."""
    from spamguard.db import session_scope

    with session_factory_for(ctx, create=create) as factory, session_scope(factory) as session:
        yield session
