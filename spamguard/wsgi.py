"""WSGI entry point for servers other than ``spamguard serve``: ``spamguard.wsgi:app``.

Importing this module builds the app from the environment and refuses an out-of-date
schema; it loads no model (each worker loads the active version on first use).
"""

from __future__ import annotations

from spamguard.app import create_app
from spamguard.serving import check_ready

app = create_app()
check_ready(app.config["SPAMGUARD"])
