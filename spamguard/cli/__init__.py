"""The ``spamguard`` command: a thin Click layer over :mod:`spamguard.ml` and the services.

Each sub-module registers its commands in :func:`build_cli`; user errors
(:class:`~spamguard.errors.SpamguardError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import sys

import click

from spamguard.errors import SpamguardError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SpamguardError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `spamguard classify | head`: the reader has gone
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
            sys.exit(1)
        except OSError as exc:  # a full disk, a folder that is a file, no permission
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(2)


def build_cli() -> click.Group:
    """Assemble the command group (imports are local so ``--help`` stays fast)."""

    @click.group(cls=_Group)
    @click.version_option(package_name="spamguard")
    def cli() -> None:
        """SMS spam detection: train, classify, serve, moderate, retrain."""

    from spamguard.cli import (
        db_commands,
        ml_commands,
        model_commands,
        retrain_commands,
        service_commands,
        user_commands,
    )

    for module in (ml_commands, db_commands, model_commands, service_commands, user_commands,
                   retrain_commands):
        module.register(cli)
    return cli


def main() -> None:
    build_cli()(prog_name="spamguard")
