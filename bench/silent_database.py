"""How long a request waits on a PostgreSQL server whose host goes silent.

Usage (root, with iptables, and a PostgreSQL the URL reaches on port 5432)::

    python bench/silent_database.py postgresql+psycopg://user:pass@127.0.0.1:5432/db

For each setting it opens a pooled connection, drops every packet to and from port 5432
(``iptables -I INPUT ... -j DROP``: the kernel answers nothing, as with a partition or a
host that died), runs ``SELECT 1`` on the pool as a request would, and times how long it
takes to fail. The rules are removed afterwards, also on an error. Settings: spamguard's
defaults (TCP keepalives and a 15 s ``tcp_user_timeout``, spamguard.db) and the same with
them switched off in the URL (what the service did before December 2026). Prints a
Markdown table; nothing here is a test (it needs root and changes the firewall).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

from sqlalchemy import text

from spamguard.db import make_engine

RULES = (["-p", "tcp", "--dport", "5432", "-j", "DROP"],
         ["-p", "tcp", "--sport", "5432", "-j", "DROP"])
SETTINGS = {"spamguard defaults": "", "keepalives off": "keepalives=0&tcp_user_timeout=0"}


def with_query(url: str, query: str) -> str:
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def time_silent_failure(url: str, give_up_s: float) -> tuple[str, float]:
    """Seconds until a pooled request fails once the server goes silent, and how."""
    engine = make_engine(url, request_timeouts=True)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # now pooled
    outcome: dict[str, str] = {}

    def request() -> None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            outcome["what"] = "answered"
        except Exception as exc:  # noqa: BLE001 (the error is the measurement)
            outcome["what"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:70]}"

    for rule in RULES:
        subprocess.run(["iptables", "-I", "INPUT", *rule], check=True)
    started = time.monotonic()
    try:
        worker = threading.Thread(target=request, daemon=True)
        worker.start()
        worker.join(give_up_s)
        waited = time.monotonic() - started
    finally:
        for rule in RULES:
            subprocess.run(["iptables", "-D", "INPUT", *rule], check=True)
    return outcome.get("what", f"still waiting after {give_up_s:.0f} s"), waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="PostgreSQL URL on port 5432")
    parser.add_argument("--give-up", type=float, default=90.0,
                        help="stop waiting after this many seconds")
    args = parser.parse_args()
    rows = []
    for name, query in SETTINGS.items():
        what, waited = time_silent_failure(with_query(args.url, query), args.give_up)
        rows.append(f"| {name} | {waited:.1f} | {what} |")
        print(rows[-1], file=sys.stderr)
    print("| setting | seconds until the request fails | outcome |\n| --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
