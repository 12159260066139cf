"""Loading a backbone by hub id: the local hub cache first, and a quick check that the
hub can be reached before the hub client spends about 50 s retrying to learn it cannot.
"""

from __future__ import annotations

import logging
import os


def hub_load(load):
    """``load`` a hub id from the local hub cache first, then (unless HF_HUB_OFFLINE) from
    the hub: offline, the hub client retries for about 50 s and logs a dozen lines before it
    fails, which a copy already on disk never needs."""
    try:
        return load(local_files_only=True)
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
    problem = hub_unreachable()
    if problem is not None:  # the hub client would spend about 50 s retrying to learn this
        raise OSError(f"not in the local hub cache, and {problem}; copy the model to a "
                      "folder on this machine and give its path")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # the retry warnings; the final error is ours to say
    try:
        return load()
    finally:
        hub_log.setLevel(level)


# The variables a proxy for the hub is usually set with (urllib's getproxies() reads these,
# any other *_proxy, and on macOS and Windows the system's settings, as the hub client does).
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why this machine cannot open a connection to the model hub (``HF_ENDPOINT``), or
    None when it can, or when a proxy is configured for the endpoint's scheme (the proxy
    decides, not us).

    The whole check takes at most about ``timeout`` seconds. The name lookup runs in a
    daemon thread (no socket timeout bounds it), left to finish on its own when it is
    slower; then each address the name has is tried with an equal share of the time left,
    so one that drops packets (broken IPv6, say) does not use up the time of the next.
    """
    import socket
    import threading
    import time
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    proxies = getproxies()  # what the hub client (httpx or requests) goes by
    if proxies.get(endpoint.scheme) or proxies.get("all"):
        return None
    deadline = time.monotonic() + timeout
    found: dict[str, object] = {}

    def lookup() -> None:
        try:
            if not endpoint.hostname:
                raise ValueError("no host name")
            port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
            found["addresses"] = [info[4][:2] for info in socket.getaddrinfo(
                endpoint.hostname, port, type=socket.SOCK_STREAM)]
        except (OSError, UnicodeError, ValueError) as exc:  # no DNS, a bad endpoint
            found["error"] = exc

    thread = threading.Thread(target=lookup, name="hub-lookup", daemon=True)
    thread.start()
    thread.join(timeout)
    error = found.get("error")
    addresses = found.get("addresses", [])
    for index, address in enumerate(addresses):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            socket.create_connection(address, timeout=left / (len(addresses) - index)).close()
        except OSError as exc:  # refused, unreachable, timed out
            error = exc
        else:
            return None
    if error is None:
        reason = f"no answer within {timeout:g} s"
    else:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return f"the hub ({constants.ENDPOINT}) cannot be reached ({reason})"
