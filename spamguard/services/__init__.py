"""The product's operations as plain functions taking ``session=`` and keyword arguments.

The CLI, the web app and the tests call the same functions; none of them commits: the caller
owns the transaction (``spamguard.db.session_scope``).
"""
