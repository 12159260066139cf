"""Errors a user can fix: the CLI prints them as one line and exits non-zero."""

import errno

# A full, read-only or forbidden disk does not heal by itself: exit 2 ("a person must fix
# this"), with one line and no traceback, instead of 1 ("retry next time").
NEEDS_A_PERSON = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM,
                            errno.EDQUOT})


class SpamguardError(Exception):
    """A problem the user can act on (bad file, missing model, wrong setting).

    ``cli_hint`` ends the message as the CLI shows it (``str(exc)``: "see `spamguard
    models`"); the admin UI shows :meth:`for_ui`, the message with ``ui_hint`` instead.
    ``field`` names what was wrong when it was one value asked of the user ("password",
    "repeated", "sender"...): the admin UI marks that field of its form.
    """

    exit_code = 2

    def __init__(self, message: str = "", *, cli_hint: str = "", ui_hint: str = "",
                 field: str = "") -> None:
        self.message, self.cli_hint, self.ui_hint = message, cli_hint, ui_hint
        self.field = field
        super().__init__(message + cli_hint)

    def for_ui(self) -> str:
        """The message with the admin UI's hint (no command lines)."""
        return self.message + self.ui_hint


class DataError(SpamguardError):
    """A data file that cannot be read as labelled or unlabelled messages."""


class ModelError(SpamguardError):
    """A model version or backbone that cannot be loaded or used."""


class DatabaseError(SpamguardError):
    """A database that cannot be reached or used."""


class NoDatabaseError(DatabaseError):
    """No SQLite database where settings point: a command that only reads (or retrain, which
    must not start a new instance) says where it looked instead of creating one there."""

    def __init__(self, path, setting: str, *, empty: bool = False) -> None:
        found = " (the file there is empty)" if empty else ""
        super().__init__(f"no spamguard database at {path}{found}: check {setting}; to start "
                         "a new instance there instead, `spamguard train` or "
                         "`spamguard db upgrade` makes one")


class DatabaseUnavailableError(DatabaseError):
    """A database that does not answer (down, refused, timed out): worth retrying later, so a
    scheduler sees the "retry" exit code 1 rather than 2 ("a person must fix this")."""

    exit_code = 1


class SchemaOutOfDateError(DatabaseError):
    """A database whose schema revision is not the one this code needs."""

    def __init__(self, current: str | None, head: str, *, newer: bool = False) -> None:
        self.current = current
        self.head = head
        at = current or "empty"
        if newer:
            message = (f"database schema is newer than this spamguard (at {at}, know {head}): "
                       "upgrade spamguard")
        else:
            message = (f"database schema is out of date (at {at}, need {head}): "
                       "run `spamguard db upgrade`")
        super().__init__(message)


class RegistryError(SpamguardError):
    """A model version that cannot be registered, promoted, rolled back or rejected."""


class ConcurrentActivationError(RegistryError):
    """Two activations raced and this one lost; trying again is the fix."""

    exit_code = 1


class VersionNotFoundError(RegistryError):
    """A model version id that is not in the registry."""


class LockHeldError(SpamguardError):
    """A named lock (e.g. ``retrain``) that another live process holds."""

    exit_code = 4


class LockLostError(SpamguardError):
    """A lock this process held was taken over (it expired while the work ran)."""

    exit_code = 1
