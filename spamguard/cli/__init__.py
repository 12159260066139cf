"""The ``spamguard`` command: a thin Click layer over :mod:`spamguard.ml` and the services.

Each sub-module registers its commands, imported when one of them is used
(:data:`COMMAND_MODULES`); user errors
(:class:`~spamguard.errors.SpamguardError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys

import click

from spamguard.errors import SpamguardError


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``systemctl stop``, ``timeout``), raised where the command is, as
    Ctrl-C raises KeyboardInterrupt: the same ``finally`` blocks and context managers run
    (a half-written export or backup is removed, a child process is stopped), where the
    default action ended the process on the spot."""


def _stop_cleanly_on_sigterm() -> None:
    """Raise :class:`Terminated` on SIGTERM. ``retrain`` installs its own handler (it
    records the run as failed) and gunicorn its own under ``serve``; both replace this."""

    def handler(_signum: int, _frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, handler)


def _say_terminated() -> None:
    click.echo("error: stopped by SIGTERM", err=True)
    sys.exit(128 + signal.SIGTERM)


class _OneLineUsageError(click.ClickException):
    """A Click usage error said in one line: Click's own takes three or four (usage,
    a "Try --help" hint, a blank line, the error)."""

    def __init__(self, error: click.UsageError, path: str) -> None:
        path = error.ctx.command_path if error.ctx else path
        message = " ".join(error.format_message().split())
        super().__init__(f"{path}: {message} (see '{path} --help')")
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _usage_error_in_one_line(error: click.UsageError, path: str) -> click.ClickException:
    """``path``: the command the error is about when Click does not say (a missing option
    value is raised without its context)."""
    if isinstance(error, click.exceptions.NoArgsIsHelpError):
        return error  # a bare group prints its help, as asked
    return _OneLineUsageError(error, path)


class _Group(click.Group):
    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:  # `spamguard --bad-option`
            raise _usage_error_in_one_line(exc, self.name or "spamguard") from None

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta["spamguard.command_path"] = f"{ctx.command_path} {name}"
        ctx.meta["spamguard.command"] = command
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # an unknown command, a bad option or value
            path = ctx.meta.get("spamguard.command_path", ctx.command_path)
            error = _usage_error_in_one_line(exc, path)
            command = ctx.meta.get("spamguard.command")
            if getattr(command, "summary_prefix", None) and isinstance(error, _OneLineUsageError):
                # a scheduled command's last stdout line is its summary, whatever went wrong
                click.echo(f"{command.summary_prefix}: failed: {error.format_message()}")
            raise error from None
        except SpamguardError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Terminated:  # the command's cleanups have run on the way out
            _say_terminated()
        except click.Abort as exc:  # Click's prompts turn an interrupt into Abort
            if isinstance(exc.__context__, Terminated):
                _say_terminated()
            raise
        except BrokenPipeError:  # `spamguard classify | head`: the reader has gone
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
            sys.exit(1)
        except OSError as exc:  # a full disk, a folder that is a file, no permission
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(2)


# Which module registers each top-level command: a command imports only its own module
# (and what that needs), not every other command's (0.4 s of a warm `train`; more for
# the small commands). tests/test_cli_service.py checks this against the modules.
COMMAND_MODULES = {
    "api-key": "service_commands", "audit": "audit_commands", "backup": "backup_commands",
    "cache": "model_commands", "campaigns": "user_commands",
    "classify": "ml_commands", "classify-pending": "service_commands", "db": "db_commands",
    "evalset": "retrain_commands", "export": "export_commands",
    "messages": "message_commands", "models": "model_commands",
    "promote": "model_commands", "promotion": "promotion_commands",
    "report": "ml_commands", "retrain": "retrain_commands", "rollback": "model_commands",
    "senders": "sender_commands", "serve": "service_commands", "train": "ml_commands",
    "user": "user_commands",
}


class _LazyGroup(_Group):
    """The top-level group: a command's module is imported when the command is asked for
    (``--help`` asks for all of them)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            load_commands(self, COMMAND_MODULES[cmd_name])
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in COMMAND_MODULES:  # Click's "Did you mean" reads .commands
            for module_name in sorted(set(COMMAND_MODULES.values())):
                load_commands(self, module_name)
        return super().resolve_command(ctx, args)


def load_commands(cli: click.Group, module_name: str) -> None:
    """Register the commands of ``spamguard.cli.<module_name>`` on ``cli`` (once)."""
    import importlib

    loaded = cli.__dict__.setdefault("_spamguard_loaded", set())
    if module_name not in loaded:
        loaded.add(module_name)
        importlib.import_module(f"spamguard.cli.{module_name}").register(cli)


def build_cli() -> click.Group:
    """The command group; each command's module is imported when it is used."""

    @click.group("spamguard", cls=_LazyGroup)
    @click.version_option(package_name="spamguard")
    def cli() -> None:
        """SMS spam detection: train, classify, serve, moderate, retrain."""

    return cli


def _quick_exit() -> None:
    """Spare the interpreter's last garbage collections at exit (registered first, so it
    runs after every other exit handler): with torch and scikit-learn loaded they took
    0.8-1.1 s of a 12 s warm ``train``. Objects still alive then are freed by reference
    counting as before; only cycles are left to the process's end."""
    atexit.register(gc.freeze)


def main() -> None:
    from spamguard.cpus import limit_threads

    limit_threads()  # before any command imports torch (a container's CPU quota)
    _stop_cleanly_on_sigterm()
    _quick_exit()
    build_cli()(prog_name="spamguard")
