"""Failed admin logins per network address (``SPAMGUARD_LOGIN_FAILURE_LIMIT``).

The per-account lockout (5 failures in a row) stops guessing one account's password, but
not password spraying: one common password tried once on each of many accounts never
locks any of them. This counts failures per client address (behind a proxy, the address
``SPAMGUARD_TRUST_PROXY`` lets through) in the API rate limiter's store, and refuses that
address's logins, right or wrong, once the allowance is used up. A successful login costs
nothing. With the default ``memory://`` store each gunicorn worker counts on its own.
"""

from __future__ import annotations

import time

from flask import current_app, request
from limits import parse_many

SCOPE = "admin-login-failures"


def _limits():
    return parse_many(current_app.config["SPAMGUARD"].login_failure_limit)


def _strategy():
    return current_app.extensions["spamguard.limiter"].limiter


def _address() -> str:
    return request.remote_addr or "unknown"


def blocked_minutes() -> int | None:
    """Minutes until this address may try again, or None when it may now."""
    address = _address()
    waits = [_wait(limit, address) for limit in _limits()
             if not _strategy().test(limit, SCOPE, address)]
    return max(waits) if waits else None


def _wait(limit, address: str) -> int:
    """Whole minutes (at least 1) until ``limit``'s window for ``address`` resets."""
    reset_at, _ = _strategy().get_window_stats(limit, SCOPE, address)
    return max(1, -(-int(reset_at - time.time()) // 60))


def count_failure() -> None:
    """Count one failed login from this address."""
    for limit in _limits():
        _strategy().hit(limit, SCOPE, _address())
