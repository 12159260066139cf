"""``python -m spamguard``: the same as the ``spamguard`` command."""

from spamguard.cli import main

main()
