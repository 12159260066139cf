"""Shared CLI state: settings are loaded once per invocation, not at import."""

from __future__ import annotations

from functools import cached_property

import click

from spamguard.config import Settings, load_settings


class CliContext:
    """Lazily built settings (and anything else commands share)."""

    @cached_property
    def settings(self) -> Settings:
        try:
            return load_settings()
        except ValueError as exc:
            from spamguard.errors import SpamguardError

            raise SpamguardError(str(exc)) from exc


pass_ctx = click.make_pass_decorator(CliContext, ensure=True)
